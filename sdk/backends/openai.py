"""OpenAI Images API (and any OpenAI-compatible server through ``base_url``).

Wire format: ``POST {base_url}/images/generations``, JSON body, ``Authorization: Bearer``.
Source: https://platform.openai.com/docs/api-reference/images/create, as captured in
``provider_apis.md`` §1 (openai-python ``types/image_generate_params.py``, ``_base_client.py``).

Mapping: ``width``x``height`` must be one of the model's sizes (no other size is sent), except on
``gpt-image-2*``, which takes any size within :func:`free_size_error`'s rule;
``n`` -> ``n``; steps, guidance, seed and negative prompt do not exist in this API and are
refused. Responses: ``data[].b64_json`` or ``data[].url`` (dall-e with ``response_format=url``,
downloaded from allowed hosts). Errors: 400 ``moderation_blocked`` / ``content_policy_violation``
-> ContentRejected; 400 ``billing_hard_limit_reached`` and the 429 billing codes
(``insufficient_quota``, ``credit_balance_exhausted``, ``organization_usage_limit_exceeded``,
``organization_spend_limit_exceeded``, ``project_spend_limit_exceeded``, matched in
``error.code`` or ``error.type``) -> QuotaExceeded, not retried; any other 429 (``code:
"rate_limit_exceeded"``) -> RateLimited (``retry-after-ms`` / ``retry-after``). Sources for the
429s: https://help.openai.com/en/articles/5955604-troubleshooting-api-rate-limits-and-429-errors
(the billing codes; "Billing-related errors can still use the broader error.type value
insufficient_quota"; "Retrying a billing, spending, or quota error does not restore access") and
https://learn.microsoft.com/microsoft-cloud/dev/dev-proxy/concepts/openai-rate-limit-reached
(429 ``rate_limit_exceeded`` for requests or tokens per minute; an images-endpoint body with that
code is in chatboxai/chatbox#1361).

Edits (GPT image models: ``gpt-image-*``, ``chatgpt-image-*``): ``POST {base_url}/images/edits``,
multipart/form-data with the file parts ``image`` (the input, PNG/JPEG/WebP under 50 MB) and
``mask`` (a PNG under 4 MB, the input's size, whose fully transparent pixels mark the area to
edit: our white-means-repaint mask is converted), and the text fields ``model``, ``prompt``, ``n``,
``size`` (the caller's ``width``x``height`` under the generation rules, else ``auto``), ``quality``,
``output_format`` and ``input_fidelity`` (``high`` | ``low``; not on ``gpt-image-1-mini``). The
response is the generations' ``data[]`` with ``b64_json``. No strength, steps, seed or negative
prompt. Source: openai-python at e43b422 (``resources/images.py`` ``edit()``: multipart with
files extracted from ``image``, ``image[]`` for a list, and ``mask``; ``types/image_edit_params.py``
for the fields, limits and the mask rule). Unverified: edits are billed like generations (the
backend's ``price`` is used for both).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .._deadline import Deadline
from .._errors import BackendError, ContentRejected, InvalidOutput, PixelrouteError, QuotaExceeded, ValidationError
from .._types import GenerateRequest
from ._http import Call, Protocol, RemoteBackend, RemoteSettings, Reply
from ._presets import preset_max_n
from .base import Capabilities

if TYPE_CHECKING:
    from .._edit import EditRequest

#: sizes per model family (provider_apis.md §1 `size` row)
GPT_IMAGE_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
#: gpt-image-2 (and its dated snapshots) take any WxH within these bounds (see :func:`free_size_error`)
FREE_SIZE_PREFIX = "gpt-image-2"
FREE_SIZE_MULTIPLE = 16
FREE_SIZE_MAX_EDGE = 3840
FREE_SIZE_MAX_ASPECT = 3
FREE_SIZE_PIXELS = (655_360, 8_294_400)
DALLE3_SIZES = ((1024, 1024), (1792, 1024), (1024, 1792))
DALLE2_SIZES = ((256, 256), (512, 512), (1024, 1024))
#: models that take /images/edits in this backend (dall-e-2's square-PNG edits are not offered)
EDIT_MODEL_PREFIXES = ("gpt-image", "chatgpt-image")
#: ``mask``: "a valid PNG file, less than 4MB" (types/image_edit_params.py)
MAX_MASK_BYTES = 4_000_000

CONTENT_CODES = {"moderation_blocked", "content_policy_violation"}
#: billing errors: retrying cannot succeed (help.openai.com article 5955604 lists the 429 ones)
QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "credit_balance_exhausted",
               "organization_usage_limit_exceeded", "organization_spend_limit_exceeded",
               "project_spend_limit_exceeded"}


class OpenAISettings(RemoteSettings):
    """``kind = "openai"``: OpenAI images or an OpenAI-compatible server."""

    kind: Literal["openai"] = "openai"
    model: str | None = "gpt-image-1"
    api_key_env: str | None = "OPENAI_API_KEY"
    #: GPT image models: low | medium | high | auto; dall-e-3: standard | hd
    quality: str | None = None
    #: dall-e only: b64_json (default here, nothing to download) or url
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    moderation: Literal["low", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = None
    organization: str | None = None
    #: sizes a compatible server accepts, as "WxH"; empty = the model family's documented sizes
    sizes: list[str] = Field(default_factory=list)
    max_n: int | None = Field(default=None, ge=1, le=16)
    #: edits only: how closely to keep the input's features, faces especially (default: OpenAI's, low)
    input_fidelity: Literal["high", "low"] | None = None

    @model_validator(mode="after")
    def _fidelity_fits_model(self) -> OpenAISettings:
        if self.input_fidelity is not None and (self.model or "").startswith("gpt-image-1-mini"):
            raise ValueError(f"`input_fidelity` is not supported by model {self.model!r} (OpenAI: unsupported for "
                             "gpt-image-1-mini); leave it unset")
        return self

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: list[str]) -> list[str]:
        for text in value:
            width, sep, height = text.lower().partition("x")
            if not (sep and width.isdigit() and height.isdigit()):
                raise ValueError(f"`sizes` entries must look like '1024x1024' but one is {text!r}")
        return value


class OpenAIBackend(RemoteBackend):
    """OpenAI ``/images/generations``."""

    kind = "openai"
    Settings: ClassVar[type[RemoteSettings]] = OpenAISettings
    default_base_url = "https://api.openai.com/v1"
    # dall-e result URLs live on Azure blob storage (provider_apis.md §1: URLs expire after 60 min)
    default_download_hosts = ("*.blob.core.windows.net",)
    settings: OpenAISettings

    @classmethod
    def capabilities_for(cls, settings: RemoteSettings) -> Capabilities:
        assert isinstance(settings, OpenAISettings)
        model = settings.model or ""
        if settings.sizes:
            sizes = tuple(_parse_size(s) for s in settings.sizes)
        elif model.startswith("dall-e-3"):
            sizes = DALLE3_SIZES
        elif model.startswith("dall-e-2"):
            sizes = DALLE2_SIZES
        else:
            sizes = GPT_IMAGE_SIZES
        max_n = settings.max_n or preset_max_n("openai", model, 10)
        operations = ("generate", "edit") if model.startswith(EDIT_MODEL_PREFIXES) else ("generate",)
        if not settings.sizes and model.startswith(FREE_SIZE_PREFIX):
            return Capabilities(
                max_width=FREE_SIZE_MAX_EDGE, max_height=FREE_SIZE_MAX_EDGE, size_multiple=FREE_SIZE_MULTIPLE,
                max_n=max_n, default_width=1024, default_height=1024,
                supports_negative_prompt=False, supports_seed=False, supports_steps=False,
                supports_guidance=False, supports_scheduler=False, operations=operations,
            )
        return Capabilities(
            max_width=max(w for w, _ in sizes), max_height=max(h for _, h in sizes), size_multiple=1,
            max_n=max_n, default_width=1024, default_height=1024,
            supports_negative_prompt=False, supports_seed=False, supports_steps=False,
            supports_guidance=False, supports_scheduler=False, allowed_sizes=sizes, operations=operations,
        )

    def size_is_sent(self, request: GenerateRequest) -> bool:
        return not request.size_from_image  # an edit without a size asks for `auto`

    def supports_strength(self, request: EditRequest) -> bool:
        return False  # /images/edits has no strength (input_fidelity is a setting)

    def validate(self, request: GenerateRequest) -> None:
        super().validate(request)  # multiples of 16 and the edge limit for free sizes; the list otherwise
        if request.operation == "edit":
            self._check_edit_upload(request)  # type: ignore[arg-type]  # an EditRequest, by its operation
        if not self.capabilities.allowed_sizes and self.size_is_sent(request):
            why = free_size_error(*self.effective_size(request))
            if why:
                width, height = self.effective_size(request)
                raise ValidationError(f"`width`x`height` {why} for backend `{self.name}` (model "
                                      f"{self.settings.model}) but is {width}x{height}.",
                                      field="width", value=(width, height))

    def protocol(self, request: GenerateRequest, deadline: Deadline) -> Protocol:
        body = self.request_body(request)
        reply = yield Call("POST", "/images/generations", json=body, headers=self._headers())
        assert reply is not None
        return (yield from self._result(reply, request, body["size"]))

    def edit_protocol(self, request: EditRequest, deadline: Deadline) -> Protocol:
        fields, files = self.edit_parts(request)
        reply = yield Call("POST", "/images/edits", form=fields, files=files, headers=self._headers())
        assert reply is not None
        return (yield from self._result(reply, request, fields["size"]))

    def edit_parts(self, request: EditRequest) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
        """The exact multipart text fields and file parts of an edit (after :meth:`validate`)."""
        s = self.settings
        size = "auto" if request.size_from_image else "{}x{}".format(*self.effective_size(request))
        fields = {"model": s.model or "", "prompt": request.prompt, "n": str(request.n), "size": size}
        for name in ("quality", "output_format", "input_fidelity"):
            value = getattr(s, name)
            if value is not None:
                fields[name] = value
        files = {"image": (f"image.{request.image.format}", request.image.data, request.image.mime)}
        if request.mask is not None:
            files["mask"] = ("mask.png", request.mask.mask_png("transparent"), "image/png")
        return fields, files

    def _check_edit_upload(self, request: EditRequest) -> None:
        if request.mask is not None:
            self.check_upload("mask", len(request.mask.mask_png("transparent")), MAX_MASK_BYTES)

    def _result(self, reply: Reply, request: GenerateRequest, size: str) -> Generator[Call, Reply | None, Any]:
        """The images of a ``data[]`` answer (generations and edits answer alike), priced."""
        try:  # a 200 is charged (per image): whatever refuses it from here on still carries the cost
            data, items = self.result_list(reply)
            self.check_batch(len(items), request.n, reply)
            images = []
            for item in items:
                if isinstance(item, dict) and item.get("b64_json"):
                    images.append(self.decode_b64_image(item["b64_json"]))
                elif isinstance(item, dict) and isinstance(item.get("url"), str):
                    got = yield Call("GET", item["url"], download=True)
                    assert got is not None
                    images.append(self.decode_image(got.body))
                else:
                    raise self.error(InvalidOutput, "a `data` item has neither `b64_json` nor `url`", reply)
        except PixelrouteError as exc:
            self.billed(exc, self.estimate_cost(request))
            raise
        params: dict[str, Any] = {"size": size}
        params.update({k: data[k] for k in ("quality", "output_format") if k in data})
        return self.output(images, params=params, extra={"request_id": reply.headers.get("x-request-id")})

    def request_body(self, request: GenerateRequest) -> dict[str, Any]:
        """The exact JSON sent (after :meth:`validate`)."""
        s = self.settings
        width, height = self.effective_size(request)
        body: dict[str, Any] = {"model": s.model, "prompt": request.prompt, "n": request.n,
                                "size": f"{width}x{height}"}
        is_dalle = (s.model or "").startswith("dall-e")
        if is_dalle:
            body["response_format"] = s.response_format or "b64_json"
        for name in ("quality", "output_format", "moderation", "style"):
            value = getattr(s, name)
            if value is not None:
                body[name] = value
        return body

    def _headers(self) -> dict[str, str]:
        return {"OpenAI-Organization": self.settings.organization} if self.settings.organization else {}

    def error_for(self, reply: Reply) -> BackendError:
        message = self.provider_message(reply)
        data = reply.json_or_none()
        err = data.get("error") if isinstance(data, dict) else None
        # a billing 429 may carry a specific `code` with the broader `type: insufficient_quota`: read both
        codes = {str(err.get(k) or "") for k in ("code", "type")} if isinstance(err, dict) else set()
        if codes & CONTENT_CODES:
            return self.error(ContentRejected, message, reply)
        if codes & QUOTA_CODES:
            return self.error(QuotaExceeded, message, reply)
        return self.generic_error(reply, message)


def _parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def free_size_error(width: int, height: int) -> str | None:
    """Why ``width`` x ``height`` is outside gpt-image-2's free-size rule, or None when it fits.

    The rule, from openai-python ``types/image_generate_params.py`` (``size``, at e43b422): both
    edges divisible by 16, aspect ratio between 1:3 and 3:1, at most 3840x2160 ("the requested
    size must also satisfy the model's current pixel and edge limits", not spelt out there). The
    limits themselves, a longest edge of 3840 px and 655,360 to 8,294,400 pixels, come from
    third-party captures of OpenAI's guide that agree with each other (so 2160x3840 and 3200x2560
    are valid; 3840x2160 is the pixel maximum). Sizes above 2560x1440 are "experimental".
    """
    low, high = FREE_SIZE_PIXELS
    if max(width, height) > FREE_SIZE_MAX_ASPECT * min(width, height):
        return f"must have an aspect ratio between 1:{FREE_SIZE_MAX_ASPECT} and {FREE_SIZE_MAX_ASPECT}:1"
    if not low <= width * height <= high:
        return f"must hold between {low:,} and {high:,} pixels (3840x2160 at most)"
    return None
