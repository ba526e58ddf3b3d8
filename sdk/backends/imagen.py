"""Google Imagen through ``:predict``: the Gemini Developer API or Vertex AI.

Wire format: ``POST {base_url}/v1beta/models/{model}:predict`` with ``x-goog-api-key`` (Gemini
API), or ``POST https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/
{location}/publishers/google/models/{model}:predict`` with ``Authorization: Bearer <token>``
(Vertex; the token comes from ``api_key_env``). Body ``{"instances": [{"prompt"}], "parameters":
{...}}``; response ``predictions[].bytesBase64Encoded`` or ``raiFilteredReason``. Sources:
https://ai.google.dev/gemini-api/docs/imagen and
https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/imagen-api, as captured in
``provider_apis.md`` §4 (google-genai ``models.py`` request/response converters).

Mapping: size -> ``aspectRatio`` (1:1, 3:4, 4:3, 9:16, 16:9; nearest in |log(w/h)| within
``aspect_tolerance``, else refused); ``n`` -> ``sampleCount`` (1..4); ``guidance`` ->
``guidanceScale``; ``negative_prompt`` -> ``negativePrompt`` and ``seed`` -> ``seed`` (with
``addWatermark: false``) on Vertex only: the Gemini API refuses them, so do we. No steps.
``includeRaiReason`` is always sent so filtered images say so. Errors: a ``raiFilteredReason``,
fewer images than asked, no ``predictions`` or an ``IMAGE_SAFETY`` finish reason ->
ContentRejected; 429 ``RESOURCE_EXHAUSTED`` -> RateLimited, waiting ``Retry-After`` or the
``google.rpc.RetryInfo`` delay (shared with the gemini kind, :mod:`._google`).

Retired: Google shut down every Imagen model on 2026-08-17, on the Gemini API and on Vertex AI
alike ("All Imagen models shut down on August 17, 2026 ... for both the Gemini Developer API and
Agent Platform Gemini API (formerly Vertex AI)",
https://firebase.google.com/docs/ai-logic/imagen-models-migration; "Imagen ... is now shut down
and no longer available in the Gemini API", https://ai.google.dev/gemini-api/docs/imagen; every
``imagen-*`` and ``imagegeneration@*`` id is listed as a discontinued endpoint in
https://docs.cloud.google.com/vertex-ai/generative-ai/docs/image/set-output-resolution; and
googleapis/python-genai commit 43ef621 "Disable GenerateImages for Gemini API" makes the SDK
refuse it). So :meth:`ImagenBackend.validate` refuses an Imagen model on Google's own hosts
before anything is sent: the router skips the backend instead of paying a round trip for a 404.
A ``base_url`` you set yourself (a proxy or a compatible server) is still served. Unverified:
the 400 text for an RAI-blocked prompt, Retry-After headers, and whether filtered images are billed
(a refused 200 is counted at the request's price).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from .._deadline import Deadline
from .._errors import ContentRejected, InvalidOutput, PixelrouteError, ValidationError
from .._types import GenerateRequest
from ._google import GoogleBackend, GoogleSettings
from ._http import Call, Protocol, RemoteSettings, Reply, nearest_aspect
from .base import Capabilities

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1), "3:4": (3, 4), "4:3": (4, 3), "9:16": (9, 16), "16:9": (16, 9),
}
#: model ids Google shut down on 2026-08-17 (all of Imagen; see the module docstring)
RETIRED_PREFIXES = ("imagen-", "imagegeneration")
RETIRED_NOTE = ("Google shut down every Imagen model on 2026-08-17, on the Gemini API and Vertex AI "
                "(https://firebase.google.com/docs/ai-logic/imagen-models-migration)")


class ImagenSettings(GoogleSettings):
    """``kind = "imagen"``. Set ``vertex_project`` (and ``vertex_location``) to use Vertex AI."""

    kind: Literal["imagen"] = "imagen"
    model: str | None = "imagen-4.0-generate-001"
    #: Imagen 4: 1K | 2K (not on -fast)
    image_size: Literal["1K", "2K"] | None = None
    person_generation: Literal["dont_allow", "allow_adult", "allow_all"] | None = None
    safety_setting: str | None = None
    output_mime_type: Literal["image/png", "image/jpeg"] = "image/png"


class ImagenBackend(GoogleBackend):
    """Imagen ``:predict``."""

    kind = "imagen"
    method = "predict"
    Settings: ClassVar[type[RemoteSettings]] = ImagenSettings
    settings: ImagenSettings

    @classmethod
    def capabilities_for(cls, settings: RemoteSettings) -> Capabilities:
        vertex = bool(getattr(settings, "vertex_project", None))
        return Capabilities(max_width=16384, max_height=16384, size_multiple=1, max_n=4,
                            supports_negative_prompt=vertex, supports_seed=vertex, supports_steps=False,
                            supports_guidance=True, supports_scheduler=False)

    def validate(self, request: GenerateRequest) -> None:
        model = self.settings.model or ""
        if self.google_hosts and model.startswith(RETIRED_PREFIXES):
            raise ValidationError(f"`model` {model!r} cannot be served by backend `{self.name}`: {RETIRED_NOTE}. "
                                  "Use another backend, or set `base_url` to a server that still serves it.",
                                  field="model", value=model)
        super().validate(request)
        self.request_body(request)

    def request_body(self, request: GenerateRequest) -> dict[str, Any]:
        """The exact JSON sent."""
        s = self.settings
        width, height = self.effective_size(request)
        params: dict[str, Any] = {
            "sampleCount": request.n,
            "aspectRatio": nearest_aspect(width, height, ASPECT_RATIOS, s.aspect_tolerance, self.name),
            "includeRaiReason": True,
            "outputOptions": {"mimeType": s.output_mime_type},
        }
        if request.guidance is not None:
            params["guidanceScale"] = request.guidance
        if request.negative_prompt is not None:
            params["negativePrompt"] = request.negative_prompt
        if request.seed is not None:
            params["seed"] = request.seed
            params["addWatermark"] = False  # Vertex ignores `seed` while the watermark is on
        if s.image_size is not None:
            params["sampleImageSize"] = s.image_size
        if s.person_generation is not None:
            params["personGeneration"] = s.person_generation
        if s.safety_setting is not None:
            params["safetySetting"] = s.safety_setting
        return {"instances": [{"prompt": request.prompt}], "parameters": params}

    def protocol(self, request: GenerateRequest, deadline: Deadline) -> Protocol:
        body = self.request_body(request)
        reply = yield Call("POST", self.path(), json=body)
        assert reply is not None
        try:  # a 200 is charged (per image): whatever refuses it from here on still carries the cost
            images = self._images(reply, request.n)
        except PixelrouteError as exc:
            self.billed(exc, self.estimate_cost(request))
            raise
        return self.output(images, params={"aspect_ratio": body["parameters"]["aspectRatio"],
                                                    "guidance": request.guidance, "seed": request.seed})

    def _images(self, reply: Reply, asked: int) -> list[Any]:
        data = reply.json()
        if not isinstance(data, dict):
            raise self.error(InvalidOutput, "response JSON is not an object", reply)
        if "IMAGE_SAFETY" in {str(c.get("finishReason")) for c in data.get("candidates") or [] if isinstance(c, dict)}:
            raise self.error(ContentRejected, "output blocked by the safety filter (IMAGE_SAFETY)", reply)
        predictions = [p for p in data.get("predictions") or []
                       if isinstance(p, dict) and p.get("contentType") != "Positive Prompt"]
        reasons = [str(p["raiFilteredReason"]) for p in predictions if p.get("raiFilteredReason")]
        if reasons:
            raise self.error(ContentRejected, f"images filtered by the safety system: {reasons[0][:200]}", reply)
        encoded = [p["bytesBase64Encoded"] for p in predictions if p.get("bytesBase64Encoded")]
        self.check_batch(len(encoded), asked, reply)  # none at all included: every image was filtered
        return [self.decode_b64_image(text) for text in encoded]
