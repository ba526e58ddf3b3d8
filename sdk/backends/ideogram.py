"""Ideogram legacy generate API (models V_1, V_1_TURBO, V_2, V_2_TURBO, V_2A, V_2A_TURBO).

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
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from .._deadline import Deadline
from .._errors import BackendError, ContentRejected, InvalidOutput, ValidationError
from .._types import GenerateRequest
from ._http import Call, Protocol, RemoteBackend, RemoteSettings, Reply, nearest_aspect
from .base import Capabilities

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    f"ASPECT_{w}_{h}": (w, h)
    for w, h in ((1, 1), (16, 9), (9, 16), (3, 2), (2, 3), (4, 3), (3, 4), (16, 10), (10, 16), (1, 3), (3, 1))
}
NEGATIVE_PROMPT_MODELS = {"V_1", "V_1_TURBO", "V_2", "V_2_TURBO"}
MAX_SEED = 2_147_483_647


class IdeogramSettings(RemoteSettings):
    """``kind = "ideogram"``."""

    kind: Literal["ideogram"] = "ideogram"
    model: Literal["V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO"] = "V_2A"
    api_key_env: str | None = "IDEOGRAM_API_KEY"
    #: MagicPrompt rewrites prompts; OFF keeps the caller's prompt as written
    magic_prompt_option: Literal["AUTO", "ON", "OFF"] | None = "OFF"
    style_type: Literal["AUTO", "GENERAL", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME"] | None = None


class IdeogramBackend(RemoteBackend):
    """Ideogram ``/generate``."""

    kind = "ideogram"
    Settings: ClassVar[type[RemoteSettings]] = IdeogramSettings
    default_base_url = "https://api.ideogram.ai"
    default_download_hosts = ("ideogram.ai", "*.ideogram.ai")
    settings: IdeogramSettings

    @classmethod
    def capabilities_for(cls, settings: RemoteSettings) -> Capabilities:
        return Capabilities(max_width=16384, max_height=16384, size_multiple=1, max_n=8,
                            supports_negative_prompt=settings.model in NEGATIVE_PROMPT_MODELS,
                            supports_seed=True, supports_steps=False, supports_guidance=False)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Api-Key": key}

    def validate(self, request: GenerateRequest) -> None:
        super().validate(request)
        if request.seed is not None and request.seed > MAX_SEED:
            raise ValidationError(f"`seed` must be at most {MAX_SEED} for backend `{self.name}` but is "
                                  f"{request.seed}.", field="seed", value=request.seed)
        self.request_body(request)

    def request_body(self, request: GenerateRequest) -> dict[str, Any]:
        """The exact JSON sent."""
        s = self.settings
        width, height = self.effective_size(request)
        image_request: dict[str, Any] = {
            "prompt": request.prompt,
            "model": s.model,
            "aspect_ratio": nearest_aspect(width, height, ASPECT_RATIOS, s.aspect_tolerance, self.name),
            "num_images": request.n,
        }
        if request.seed is not None:
            image_request["seed"] = request.seed
        if request.negative_prompt is not None:
            image_request["negative_prompt"] = request.negative_prompt
        if s.magic_prompt_option is not None:
            image_request["magic_prompt_option"] = s.magic_prompt_option
        if s.style_type is not None:
            image_request["style_type"] = s.style_type
        return {"image_request": image_request}

    def protocol(self, request: GenerateRequest, deadline: Deadline) -> Protocol:
        body = self.request_body(request)
        reply = yield Call("POST", "/generate", json=body)
        assert reply is not None
        _, items = self.result_list(reply)
        if any(not isinstance(i, dict) or i.get("is_image_safe") is False for i in items):
            # an unsafe image has no pixels at its url; a partial batch is not what was asked for
            raise self.error(ContentRejected, "output failed the safety check (is_image_safe: false)", reply)
        images, seeds = [], []
        for item in items:
            url = item.get("url")
            if not isinstance(url, str) or not url:
                raise self.error(InvalidOutput, "a `data` item has no `url`", reply)
            got = yield Call("GET", url, download=True)
            assert got is not None
            images.append(self.decode_image(got.body))
            seeds.append(item.get("seed"))
        params = {"aspect_ratio": body["image_request"]["aspect_ratio"], "seed": seeds[0], "seeds": seeds,
                  "resolution": items[0].get("resolution")}
        return self.output(images, params=params)

    def error_for(self, reply: Reply) -> BackendError:
        message = self.provider_message(reply)
        if reply.status == 422:
            return self.error(ContentRejected, message or "prompt failed the safety check", reply)
        return self.generic_error(reply, message)
