"""Stability AI REST v2beta: Stable Image Ultra / Core and SD3.5 (``/stable-image/generate/*``).

Wire format: ``POST {base_url}/v2beta/stable-image/generate/{sd3|core|ultra}``, multipart/form-data
(required even without a file), ``authorization: Bearer``, ``accept: image/*`` (raw bytes, metadata
in ``finish-reason`` / ``seed`` headers) or ``accept: application/json`` (``{image, finish_reason,
seed}``). Source: https://platform.stability.ai/docs/api-reference, as captured in
``provider_apis.md`` §2.

Mapping: size -> ``aspect_ratio`` (nearest ratio in |log(w/h)| within ``aspect_tolerance``, else
refused; the provider chooses the pixel count, about 1 MP); ``negative_prompt``, ``seed``
(1..4294967294: Stability reads 0 as "random", so seed 0 is refused rather than silently
randomised); ``guidance`` -> ``cfg_scale`` (1..10, SD3.5 models only); ``model`` for sd3.5-*.
No ``steps`` and one image per call (``n`` = 1). A 200 is charged ("failed generations are not"), so a
refused one keeps the request's price as ``cost_usd``. Errors: ``finish_reason: CONTENT_FILTERED``
(a 200 with a blurred image) and 403 ``content_moderation`` -> ContentRejected; 402 ->
QuotaExceeded; 429 -> RateLimited, with a 60 s ``retry_after`` when no header says otherwise
(the documented 60-second lock-out). Still unverified (no Stability source found; searched the
platform.stability.ai reference copies, GitHub issues and code): whether a 429 carries
``Retry-After`` (we honour one if present, else wait 60 s), and the 402 body. Two independent
third-party captures agree on ``{"errors": ["You lack sufficient credits ..."], "id": ...,
"name": "payment_required"}``; we branch on the status, and ``errors`` becomes the message.

Edits. With a mask: ``POST {base_url}/v2beta/stable-image/edit/inpaint`` (any ``model``), file
parts ``image`` and ``mask`` (white = full inpainting strength, black = none: our convention as
is), text fields ``prompt``, ``output_format`` and, when set, ``negative_prompt``, ``seed``,
``style_preset``; no strength or cfg_scale. Without a mask: the generate endpoint in
image-to-image mode (``sd3.5-*``: ``mode=image-to-image``; ``ultra``: the ``image`` part alone),
file part ``image``, ``strength`` (the caller's, else 0.8) and the generation fields except
``aspect_ratio``; ``core`` takes no image, so its backends edit only with a mask. Inputs: PNG,
JPEG or WebP, every side at least 64 px and 4,096 to 9,437,184 pixels; the request at most 10 MiB.
Stability picks the output size (leave ``width``/``height`` unset). Responses and errors are the
generations'. Sources: Stability's OpenAPI document as generated into typed clients (index file id
46281288025, ``StableImageEditInpaintCreatePayload``: fields, mask rule, pixel limits) and
aj-foster/open-api-generator@252cb8f ``stability-ai/edit.ex`` (``/v2beta/stable-image/edit/inpaint``,
the 200/403/413/422/429 answers, "Flat rate of 3 credits"); ``mode``/``image``/``strength`` of
the generate endpoint are in ``provider_apis.md`` §2. Unverified: the inpaint output size (one copy
says 4 megapixels); the backend's ``price`` prices edits too (inpaint is billed 3 credits flat).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .._deadline import Deadline
from .._errors import BackendError, ContentRejected, InvalidOutput, PixelrouteError, RateLimited, ValidationError
from .._types import GenerateRequest
from ._http import Call, Protocol, RemoteBackend, RemoteSettings, Reply, nearest_aspect, retry_after
from .base import Capabilities

if TYPE_CHECKING:
    from .._edit import EditRequest

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1), "16:9": (16, 9), "9:16": (9, 16), "21:9": (21, 9), "9:21": (9, 21),
    "3:2": (3, 2), "2:3": (2, 3), "5:4": (5, 4), "4:5": (4, 5),
}
MAX_SEED = 4_294_967_294
#: the documented lock-out after a 429 ("timed out for 60 seconds")
RATE_LIMIT_LOCKOUT_S = 60.0
INPAINT_PATH = "/v2beta/stable-image/edit/inpaint"
#: edit inputs: "Every side must be at least 64 pixels", "between 4,096 and 9,437,184 pixels"
EDIT_MIN_SIDE = 64
EDIT_PIXELS = (4_096, 9_437_184)
#: "max request 10 MiB" (provider_apis.md §2)
MAX_REQUEST_BYTES = 10 * 1024 * 1024


class StabilitySettings(RemoteSettings):
    """``kind = "stability"``; ``model``: sd3.5-large, sd3.5-large-turbo, sd3.5-medium, sd3.5-flash, core, ultra."""

    kind: Literal["stability"] = "stability"
    model: str | None = "sd3.5-large"
    api_key_env: str | None = "STABILITY_API_KEY"
    #: ``image``: raw bytes (no base64 overhead); ``json``: base64 in a JSON body
    accept: Literal["image", "json"] = "image"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    style_preset: str | None = None


class StabilityBackend(RemoteBackend):
    """Stability v2beta Stable Image generation."""

    kind = "stability"
    Settings: ClassVar[type[RemoteSettings]] = StabilitySettings
    default_base_url = "https://api.stability.ai"
    settings: StabilitySettings

    @classmethod
    def capabilities_for(cls, settings: RemoteSettings) -> Capabilities:
        sd3 = _endpoint(settings.model) == "sd3"
        return Capabilities(max_width=16384, max_height=16384, size_multiple=1, max_n=1,
                            supports_negative_prompt=True, supports_seed=True, supports_steps=False,
                            supports_guidance=sd3, supports_scheduler=False, operations=("generate", "edit"))

    def size_is_sent(self, request: GenerateRequest) -> bool:
        return request.operation != "edit"  # Stability picks an edit's output size

    def supports_strength(self, request: EditRequest) -> bool:
        return request.mask is None  # image-to-image has `strength`; inpainting has none

    def validate(self, request: GenerateRequest) -> None:
        super().validate(request)
        if request.operation == "edit":
            self._validate_edit(request)  # type: ignore[arg-type]  # an EditRequest, by its operation
        if request.seed is not None and not 1 <= request.seed <= MAX_SEED:
            raise ValidationError(f"`seed` must be between 1 and {MAX_SEED} for backend `{self.name}` "
                                  f"(Stability reads 0 as random) but is {request.seed}.",
                                  field="seed", value=request.seed)
        if request.guidance is not None and not 1 <= request.guidance <= 10:
            raise ValidationError(f"`guidance` must be between 1 and 10 (cfg_scale) for backend `{self.name}` "
                                  f"but is {request.guidance}.", field="guidance", value=request.guidance)
        self.form_fields(request)  # the size rule refuses before anything is sent

    def _validate_edit(self, request: EditRequest) -> None:
        if not request.size_from_image:
            raise ValidationError(f"`width`/`height` cannot be honoured by backend `{self.name}`: Stability picks "
                                  "an edit's output size; leave them unset", field="width", value=request.width)
        if request.mask is None and _endpoint(self.settings.model) == "core":
            raise ValidationError(f"backend `{self.name}` (Stability core) edits only with a `mask` (inpainting); "
                                  "an sd3.5 or ultra model edits without one", field="mask", value=None)
        if request.mask is not None and request.guidance is not None:
            raise ValidationError(f"`guidance` cannot be honoured by backend `{self.name}` for a masked edit "
                                  f"(inpainting has no cfg_scale) but is {request.guidance}", field="guidance",
                                  value=request.guidance)
        width, height = request.image.size
        low, high = EDIT_PIXELS
        if min(width, height) < EDIT_MIN_SIDE or not low <= width * height <= high:
            raise ValidationError(f"`image` must have every side at least {EDIT_MIN_SIDE} px and {low:,} to {high:,} "
                                  f"pixels for backend `{self.name}` but is {width}x{height}",
                                  field="image", value=(width, height))
        upload = len(request.image.data) + (len(request.mask.mask_png("white")) if request.mask is not None else 0)
        self.check_upload("image", upload, MAX_REQUEST_BYTES)

    def edit_parts(self, request: EditRequest) -> tuple[str, dict[str, str], dict[str, tuple[str, bytes, str]]]:
        """The path, exact multipart text fields and file parts of an edit (after :meth:`validate`)."""
        s = self.settings
        files = {"image": (f"image.{request.image.format}", request.image.data, request.image.mime)}
        fields = {"prompt": request.prompt, "output_format": s.output_format}
        if request.mask is not None:
            path = INPAINT_PATH
            files["mask"] = ("mask.png", request.mask.mask_png("white"), "image/png")
        else:
            endpoint = _endpoint(s.model)
            path = f"/v2beta/stable-image/generate/{endpoint}"
            fields["strength"] = _number(request.effective_strength)
            if endpoint == "sd3":
                fields["mode"] = "image-to-image"
                if s.model:
                    fields["model"] = s.model
        fields.update(self._optional(request))
        return path, fields, files

    def _optional(self, request: GenerateRequest) -> dict[str, str]:
        fields = {}
        if request.negative_prompt is not None:
            fields["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            fields["seed"] = str(request.seed)
        if request.guidance is not None:
            fields["cfg_scale"] = _number(request.guidance)
        if self.settings.style_preset is not None:
            fields["style_preset"] = self.settings.style_preset
        return fields

    def form_fields(self, request: GenerateRequest) -> dict[str, str]:
        """The exact multipart fields sent."""
        s = self.settings
        width, height = self.effective_size(request)
        fields = {"prompt": request.prompt, "output_format": s.output_format,
                  "aspect_ratio": nearest_aspect(width, height, ASPECT_RATIOS, s.aspect_tolerance, self.name)}
        if _endpoint(s.model) == "sd3" and s.model:
            fields["model"] = s.model
        fields.update(self._optional(request))
        return fields

    def protocol(self, request: GenerateRequest, deadline: Deadline) -> Protocol:
        fields = self.form_fields(request)
        path = f"/v2beta/stable-image/generate/{_endpoint(self.settings.model)}"
        reply = yield Call("POST", path, form=fields, headers=self._accept_header())
        assert reply is not None
        return self._result(reply, request, {"aspect_ratio": fields["aspect_ratio"]})

    def edit_protocol(self, request: EditRequest, deadline: Deadline) -> Protocol:
        path, fields, files = self.edit_parts(request)
        reply = yield Call("POST", path, form=fields, files=files, headers=self._accept_header())
        assert reply is not None
        sent = {"strength": request.effective_strength} if "strength" in fields else {}
        return self._result(reply, request, sent)

    def _accept_header(self) -> dict[str, str]:
        return {"accept": "application/json" if self.settings.accept == "json" else "image/*"}

    def _result(self, reply: Reply, request: GenerateRequest, sent: dict[str, Any]) -> Any:
        """The image of a generate or edit answer (raw bytes or JSON), priced, with its metadata."""
        try:  # failed generations are not charged, a 200 is: a refusal from here on carries the cost
            if reply.headers.get("content-type", "").startswith("application/json"):
                data = reply.json()
                if not isinstance(data, dict):
                    raise self.error(InvalidOutput, "response JSON is not an object", reply)
                finish, seed, image_field = data.get("finish_reason"), data.get("seed"), data.get("image")
                self._check_finish(finish, reply)
                image = self.decode_b64_image(image_field)
            else:
                finish, seed = reply.headers.get("finish-reason"), reply.headers.get("seed")
                self._check_finish(finish, reply)
                image = self.decode_image(reply.body)
        except PixelrouteError as exc:
            self.billed(exc, self.estimate_cost(request))
            raise
        params: dict[str, Any] = {**sent, "seed": _int_or_none(seed), "guidance": request.guidance}
        return self.output([image], params=params)

    def _check_finish(self, finish: Any, reply: Reply) -> None:
        if finish == "CONTENT_FILTERED":
            raise self.error(ContentRejected, "output filtered by the content policy (CONTENT_FILTERED)", reply)
        if finish not in (None, "SUCCESS"):
            raise self.error(InvalidOutput, f"unexpected finish_reason {str(finish)[:40]!r}", reply)

    def error_for(self, reply: Reply) -> BackendError:
        message = self.provider_message(reply)
        data = reply.json_or_none()
        name = data.get("name") if isinstance(data, dict) else None
        if reply.status == 403 and name == "content_moderation":
            return self.error(ContentRejected, message, reply)
        if reply.status == 429:
            wait = retry_after(reply)
            return self.error(RateLimited, message or "rate limited", reply,
                              retry_after=RATE_LIMIT_LOCKOUT_S if wait is None else wait)
        return self.generic_error(reply, message)


def _endpoint(model: str | None) -> str:
    if model in ("core", "ultra"):
        return model
    return "sd3"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
