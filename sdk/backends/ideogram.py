"""Ideogram: the legacy generate API (models V_1, V_1_TURBO, V_2, V_2_TURBO, V_2A, V_2A_TURBO) and
Ideogram 3.0 (``model = "V_3"``, multipart; the request is built in :mod:`._ideogram_v3`).

Wire format: ``POST {base_url}/generate``, JSON ``{"image_request": {...}}``, header ``Api-Key``
(not Bearer); the response lists ``data[].url`` (expiring, downloaded at once from allowed hosts)
with ``is_image_safe`` and ``seed``. Source:
https://developer.ideogram.ai/api-reference/api-reference/generate, as captured in
``provider_apis.md`` §3a; rate limits https://developer.ideogram.ai/ideogram-api/rate-limits
(``backend_figures.md`` §3).

Mapping: size -> ``aspect_ratio`` ``ASPECT_W_H`` (nearest in |log(w/h)| within
``aspect_tolerance``, else refused; Ideogram picks the pixel count); ``n`` -> ``num_images``
(1..8); ``seed`` (0..2147483647); ``negative_prompt`` only on V_1/V_2 and their turbos. No steps
or guidance. Errors: 422 (prompt safety check) and any ``is_image_safe: false`` ->
ContentRejected; 429 (``inflight_limit``) -> RateLimited; 402 (``insufficient_funds`` /
``daily_limit``) -> QuotaExceeded. Error bodies, from Ideogram's own OpenAPI document (as
vendored in tryAGI/Ideogram ``src/libs/Ideogram/openapi.yaml`` at 449fa57): the 422 of
``/generate`` is ``GenerateImageSafetyError`` ``{"error": "<text>"}``, whose text becomes the
message; 400, 401 and 429 declare no body, and ``/generate`` declares no 402, so we branch on the
status code. The same document gives ``ImageRequest.model`` the default ``V_2``; ``model`` is
always sent anyway.

Ideogram 3.0 (``V_3``) answers the same ``data[]`` (``url`` null when ``is_image_safe`` is false) and
the same errors; a ``data`` item without a ``url`` is a withheld image there (ContentRejected). Its
``rendering_speed`` setting picks the price preset; FLASH has no published price, so a V_3 backend
on FLASH must set ``price`` itself (else the router would see it as free). Settings that one path
cannot send are refused when the backend is configured: ``rendering_speed`` other than DEFAULT on a
legacy model, and ``style_type`` values outside the model's list (RENDER_3D / ANIME are legacy only,
FICTION is V_3 only).

Edits (``model = "V_3"`` only; the legacy models generate only): inpainting with a mask and remix
without one, built in :mod:`._ideogram_v3`, which lists the fields and sources.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import model_validator

from .._deadline import Deadline
from .._errors import BackendError, ContentRejected, InvalidOutput, PixelrouteError, ValidationError
from .._types import GenerateRequest
from . import _ideogram_v3 as v3
from ._http import Call, Pause, Protocol, RemoteBackend, RemoteSettings, Reply, nearest_aspect
from .base import Capabilities

if TYPE_CHECKING:
    from .._edit import EditRequest

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    f"ASPECT_{w}_{h}": (w, h)
    for w, h in ((1, 1), (16, 9), (9, 16), (3, 2), (2, 3), (4, 3), (3, 4), (16, 10), (10, 16), (1, 3), (3, 1))
}
NEGATIVE_PROMPT_MODELS = {"V_1", "V_1_TURBO", "V_2", "V_2_TURBO", v3.MODEL}
LEGACY_STYLE_TYPES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME")
MAX_SEED = 2_147_483_647


class IdeogramSettings(RemoteSettings):
    """``kind = "ideogram"``."""

    kind: Literal["ideogram"] = "ideogram"
    #: V_3 is Ideogram 3.0 (its own endpoint, which takes no model field); the others use legacy /generate
    model: Literal["V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO", "V_3"] = "V_2A"
    api_key_env: str | None = "IDEOGRAM_API_KEY"
    #: MagicPrompt rewrites prompts; OFF keeps the caller's prompt as written (sent as `magic_prompt` on V_3)
    magic_prompt_option: Literal["AUTO", "ON", "OFF"] | None = "OFF"
    #: RENDER_3D and ANIME are legacy only; FICTION is V_3 only
    style_type: Literal["AUTO", "GENERAL", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME", "FICTION"] | None = None
    #: V_3 only: speed against quality, and the price (TURBO $0.03, DEFAULT $0.06, QUALITY $0.09 an image)
    rendering_speed: Literal["FLASH", "TURBO", "DEFAULT", "QUALITY"] = "DEFAULT"

    @model_validator(mode="after")
    def _fits_model(self) -> IdeogramSettings:
        v3_model = self.model == v3.MODEL
        if not v3_model and self.rendering_speed != "DEFAULT":
            raise ValueError(f"`rendering_speed` {self.rendering_speed!r} needs model {v3.MODEL!r} but model is "
                             f"{self.model!r}; legacy models pick their speed by name (e.g. V_2_TURBO)")
        if v3_model and self.rendering_speed == "FLASH" and not self.price.as_dict():
            # no preset price: unpriced, the router would take FLASH for free
            raise ValueError("`rendering_speed` 'FLASH' has no published API price (ideogram.ai/features/"
                             "api-pricing lists TURBO, DEFAULT and QUALITY); set this backend's `price`, "
                             "e.g. price = { per_image = 0.03 }")
        styles = v3.STYLE_TYPES if v3_model else LEGACY_STYLE_TYPES
        if self.style_type is not None and self.style_type not in styles:
            raise ValueError(f"`style_type` {self.style_type!r} is not offered by model {self.model!r}; "
                             f"it takes {', '.join(styles)}")
        return self


class IdeogramBackend(RemoteBackend):
    """Ideogram ``/generate`` (legacy models) and ``/v1/ideogram-v3/generate`` (``V_3``)."""

    kind = "ideogram"
    Settings: ClassVar[type[RemoteSettings]] = IdeogramSettings
    default_base_url = "https://api.ideogram.ai"
    default_download_hosts = ("ideogram.ai", "*.ideogram.ai")
    settings: IdeogramSettings

    @classmethod
    def capabilities_for(cls, settings: RemoteSettings) -> Capabilities:
        return Capabilities(max_width=16384, max_height=16384, size_multiple=1, max_n=8,
                            supports_negative_prompt=settings.model in NEGATIVE_PROMPT_MODELS,
                            supports_seed=True, supports_steps=False, supports_guidance=False,
                            operations=("generate", "edit") if settings.model == v3.MODEL else ("generate",))

    def size_is_sent(self, request: GenerateRequest) -> bool:
        return request.operation != "edit" or getattr(request, "mask", None) is None  # inpainting keeps the input's

    def supports_strength(self, request: EditRequest) -> bool:
        return request.mask is None  # remix's image_weight; inpainting has no strength

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Api-Key": key}

    def validate(self, request: GenerateRequest) -> None:
        super().validate(request)
        if request.seed is not None and request.seed > MAX_SEED:
            raise ValidationError(f"`seed` must be at most {MAX_SEED} for backend `{self.name}` but is "
                                  f"{request.seed}.", field="seed", value=request.seed)
        if request.operation == "edit":
            self._validate_edit(request)  # type: ignore[arg-type]  # an EditRequest, by its operation
        elif self.settings.model == v3.MODEL:
            self.form_fields(request)
        else:
            self.request_body(request)

    def _validate_edit(self, request: EditRequest) -> None:
        if request.mask is not None:
            if not request.size_from_image:
                raise ValidationError(f"`width`/`height` cannot be honoured by backend `{self.name}` for a masked "
                                      "edit: Ideogram inpaints at the input's size; leave them unset",
                                      field="width", value=request.width)
            if request.negative_prompt is not None:
                raise ValidationError(f"`negative_prompt` cannot be honoured by backend `{self.name}` for a masked "
                                      f"edit (inpainting has none) but is {request.negative_prompt!r}",
                                      field="negative_prompt", value=request.negative_prompt)
            self.check_upload("mask", len(request.mask.mask_png("black")), v3.MAX_FILE_BYTES)
        self.check_upload("image", len(request.image.data), v3.MAX_FILE_BYTES)
        self.edit_parts(request)  # the size rule of remix refuses before anything is sent

    def edit_parts(self, request: EditRequest) -> tuple[str, dict[str, str], dict[str, tuple[str, bytes, str]]]:
        """The path, exact multipart text fields and file parts of an edit."""
        return v3.edit_parts(self.settings, request, self.effective_size(request), self.name)

    def form_fields(self, request: GenerateRequest) -> dict[str, str]:
        """The exact multipart fields sent by model V_3."""
        return v3.form_fields(self.settings, request, self.effective_size(request), self.name)

    def request_body(self, request: GenerateRequest) -> dict[str, Any]:
        """The exact JSON sent."""
        s = self.settings
        width, height = self.effective_size(request)
        image_request: dict[str, Any] = {
            "prompt": request.prompt,
            "model": s.model,
            "aspect_ratio": nearest_aspect(width, height, ASPECT_RATIOS, s.aspect_tolerance, self.name),
            "num_images": request.n,
            **v3.optional_knobs(s, request, "magic_prompt_option"),
        }
        return {"image_request": image_request}

    def edit_protocol(self, request: EditRequest, deadline: Deadline) -> Protocol:
        path, fields, files = self.edit_parts(request)
        reply = yield Call("POST", path, form=fields, files=files)
        assert reply is not None
        sent: dict[str, Any] = {k: fields[k] for k in ("aspect_ratio", "rendering_speed", "image_weight")
                                if k in fields}
        return (yield from self._answer(reply, request, sent))

    def protocol(self, request: GenerateRequest, deadline: Deadline) -> Protocol:
        if self.settings.model == v3.MODEL:
            fields = self.form_fields(request)
            reply = yield Call("POST", v3.PATH, form=fields)
            # `resolution` in params is the one Ideogram reports, whichever of the two was sent
            sent: dict[str, Any] = {k: fields[k] for k in ("aspect_ratio", "rendering_speed") if k in fields}
        else:
            body = self.request_body(request)
            reply = yield Call("POST", "/generate", json=body)
            sent = {"aspect_ratio": body["image_request"]["aspect_ratio"]}
        assert reply is not None
        return (yield from self._answer(reply, request, sent))

    def _answer(self, reply: Reply, request: GenerateRequest, sent: dict[str, Any]) -> Protocol:
        """The images of a ``data[]`` answer (generate, inpaint and remix answer alike), priced."""
        try:  # a 200 is charged (per image): whatever refuses it from here on still carries the cost
            images, items = yield from self._download(reply, request.n)
        except PixelrouteError as exc:
            self.billed(exc, self.estimate_cost(request))
            raise
        seeds = [item.get("seed") for item in items]
        params = {**sent, "seed": seeds[0], "seeds": seeds, "resolution": items[0].get("resolution")}
        return self.output(images, params=params)

    def _download(self, reply: Reply, asked: int) -> Generator[Call | Pause, Reply | None, tuple[list[Any], list[Any]]]:
        """Fetch every image of a ``data[]`` answer; returns the images and the items."""
        _, items = self.result_list(reply)
        if any(not isinstance(i, dict) or i.get("is_image_safe") is False for i in items):
            # an unsafe image has no pixels at its url; a partial batch is not what was asked for
            raise self.error(ContentRejected, "output failed the safety check (is_image_safe: false)", reply)
        self.check_batch(len(items), asked, reply)
        # V_3 declares `url` nullable, empty exactly when the image is withheld; legacy has no such case
        missing = ContentRejected if self.settings.model == v3.MODEL else InvalidOutput
        images = []
        for item in items:
            url = item.get("url")
            if not isinstance(url, str) or not url:
                raise self.error(missing, "a `data` item has no `url` (no image was returned)", reply)
            got = yield Call("GET", url, download=True)
            assert got is not None
            images.append(self.decode_image(got.body))
        return images, items

    def error_for(self, reply: Reply) -> BackendError:
        message = self.provider_message(reply)
        if reply.status == 422:
            return self.error(ContentRejected, message or "prompt failed the safety check", reply)
        return self.generic_error(reply, message)
