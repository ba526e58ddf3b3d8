"""Google's Gemini image models ("Nano Banana") through ``:generateContent``: Gemini API or Vertex AI.

This is how Google serves image generation since it shut Imagen down on 2026-08-17 (see
:mod:`pixelroute.backends.imagen`). Models: ``gemini-2.5-flash-image`` (GA), ``gemini-3.1-flash-image``
and ``gemini-3-pro-image`` (their ``-preview`` ids are discontinued on Vertex, see below).

Wire format: ``POST {base_url}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``
(Gemini API), or ``POST https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/
{location}/publishers/google/models/{model}:generateContent`` (``aiplatform.googleapis.com`` for
``global``) with ``Authorization: Bearer <token>`` (Vertex; the token comes from ``api_key_env``).
Body ``{"contents": [{"role": "user", "parts": [{"text"}]}], "generationConfig": {"responseModalities":
["IMAGE"], "imageConfig": {"aspectRatio", "imageSize"?}, "seed"?}}``; the image comes back base64 in
``candidates[0].content.parts[].inlineData {mimeType, data}``. Sources: googleapis/python-genai
``google/genai/models.py`` (``_GenerateContentParameters_to_mldev`` puts the config under
``generationConfig``; ``_GenerateContentConfig_to_mldev`` maps ``seed``, ``candidateCount``,
``responseModalities`` and ``imageConfig``; ``_ImageConfig_to_mldev`` sends ``aspectRatio`` and
``imageSize`` and refuses ``personGeneration`` / ``outputMimeType`` on the Gemini API),
``google/genai/types.py`` (``FinishReason``, ``BlockedReason``, ``GenerateContentResponsePromptFeedback``)
and ``google/genai/tests/models/test_generate_content_image_generation.py`` (``responseModalities:
["IMAGE"]`` with ``aspectRatio`` on ``gemini-2.5-flash-image``); https://ai.google.dev/gemini-api/docs/image-generation;
the Vertex model pages https://docs.cloud.google.com/gemini-enterprise-agent-platform/models/gemini/2-5-flash-image
and .../3-1-flash-image-preview.

Mapping: size -> ``aspectRatio``, nearest in |log(w/h)| within ``aspect_tolerance`` (else refused) of
the model's ratios: ``gemini-2.5-flash-image`` and ``gemini-3-pro-image`` 1:1 2:3 3:2 3:4 4:3 4:5 5:4
9:16 16:9 21:9; ``gemini-3.1-flash-image`` adds 1:4 4:1 1:8 8:1 (the Vertex model pages; 3 Pro's
list comes from a secondary source). ``n``: both Vertex pages give ``candidateCount: 1`` as the only
value, so ``n > 1`` is refused (``max_n = 1``)
rather than sent as several paid requests that could each fail or be filtered separately; the router
then picks a backend that batches. ``seed`` -> ``generationConfig.seed``: accepted by the API, but an
image is not reproduced exactly (hadley/bananarama#1). There is no steps, guidance or negative-prompt
knob, so those are refused by name.

Errors: ``promptFeedback.blockReason`` (no candidates), a refusal ``finishReason`` (SAFETY,
PROHIBITED_CONTENT, BLOCKLIST, SPII, RECITATION, IMAGE_SAFETY, IMAGE_PROHIBITED_CONTENT,
IMAGE_RECITATION, NO_IMAGE) or a text-only answer -> ContentRejected, never retried (observed bodies:
BerriAI/litellm#20357 ``IMAGE_PROHIBITED_CONTENT`` with ``finishMessage``; minimaxir/gemimg#5
``NO_IMAGE``); any other answer without an image -> InvalidOutput. Non-2xx bodies are the Google RPC
status ``{"error": {"code", "message", "status", "details"}}``: 429 ``RESOURCE_EXHAUSTED`` ->
RateLimited, waiting ``Retry-After`` or else the ``google.rpc.RetryInfo`` ``retryDelay`` in
``details`` (letterstory/lettertrace#34: ``"38s"``); 5xx -> ServerError; other 4xx (400
``INVALID_ARGUMENT``) -> BackendError with Google's message. Unverified: the exact ``imageSize``
string for 512 px (so it is not offered), and whether ``responseModalities: ["IMAGE"]`` is accepted
by every model (``response_modalities = "TEXT_AND_IMAGE"`` sends ``["TEXT", "IMAGE"]``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from .._deadline import Deadline
from .._errors import ConfigError, ContentRejected, InvalidOutput, PixelrouteError
from .._redact import redact
from .._types import GenerateRequest
from ._google import GoogleBackend, GoogleSettings, retry_delay  # noqa: F401 - still importable from here
from ._http import Call, Protocol, RemoteSettings, Reply, nearest_aspect
from .base import Capabilities

#: gemini-2.5-flash-image (Vertex model page, "Supported aspect ratios"); gemini-3-pro-image's list is taken to be
#: the same from a secondary reference only (git.usul.su banatie-service, "Gemini 3 Pro Image ... 10 aspect ratios")
BASE_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
#: gemini-3.1-flash-image adds the extreme ratios (Vertex 3-1-flash-image-preview page)
WIDE_RATIOS = (*BASE_RATIOS, "1:4", "4:1", "1:8", "8:1")
#: imageSize per model family; gemini-2.5-flash-image has none (1K only)
IMAGE_SIZES = {"gemini-3.1-flash-image": ("1K", "2K", "4K"), "gemini-3-pro-image": ("1K", "2K", "4K")}

#: finishReasons that mean "filtered" (google/genai/types.py FinishReason); every promptFeedback.blockReason does
REFUSALS = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY",
                      "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "NO_IMAGE"})


class GeminiSettings(GoogleSettings):
    """``kind = "gemini"``. Set ``vertex_project`` (and ``vertex_location``) to use Vertex AI."""

    kind: Literal["gemini"] = "gemini"
    model: str | None = "gemini-2.5-flash-image"
    #: the 3.x image models are served from `global` only (Vertex model pages)
    vertex_location: str = "global"
    #: output resolution; gemini-3.1-flash-image and gemini-3-pro-image only (2.5 is 1K)
    image_size: Literal["1K", "2K", "4K"] | None = None
    #: IMAGE sends ["IMAGE"]; TEXT_AND_IMAGE sends ["TEXT", "IMAGE"] (the model may then talk as well)
    response_modalities: Literal["IMAGE", "TEXT_AND_IMAGE"] = "IMAGE"
    #: aspect ratios the model accepts, as "W:H"; empty = the model family's documented list
    aspect_ratios: list[str] = Field(default_factory=list)

    @field_validator("aspect_ratios")
    @classmethod
    def _ratios(cls, value: list[str]) -> list[str]:
        for text in value:
            width, sep, height = text.partition(":")
            if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
                raise ValueError(f"`aspect_ratios` entries must look like '16:9' but one is {text!r}")
        return value


class GeminiBackend(GoogleBackend):
    """Gemini image models over ``:generateContent``."""

    kind = "gemini"
    method = "generateContent"
    Settings: ClassVar[type[RemoteSettings]] = GeminiSettings
    settings: GeminiSettings

    def __init__(self, settings: RemoteSettings, **kw: Any) -> None:
        assert isinstance(settings, GeminiSettings)
        super().__init__(settings, **kw)
        self.ratios = {r: _pair(r) for r in (settings.aspect_ratios or model_ratios(settings.model))}

    @classmethod
    def capabilities_for(cls, settings: RemoteSettings) -> Capabilities:
        # candidateCount is 1 for every image model (Vertex model pages), so one image per request
        return Capabilities(max_width=16384, max_height=16384, size_multiple=1, max_n=1,
                            supports_negative_prompt=False, supports_seed=True, supports_steps=False,
                            supports_guidance=False, supports_scheduler=False)

    def validate(self, request: GenerateRequest) -> None:
        super().validate(request)
        self.request_body(request)

    def request_body(self, request: GenerateRequest) -> dict[str, Any]:
        """The exact JSON sent (after :meth:`validate`)."""
        s = self.settings
        width, height = self.effective_size(request)
        image_config: dict[str, Any] = {
            "aspectRatio": nearest_aspect(width, height, self.ratios, s.aspect_tolerance, self.name)}
        if s.image_size is not None:
            sizes = model_sizes(s.model)
            if s.image_size not in sizes:
                raise ConfigError(f"backend `{self.name}`: `image_size` {s.image_size!r} is not offered by model "
                                  f"{s.model!r}; it accepts {', '.join(sizes) or 'no image_size (1K only)'}")
            image_config["imageSize"] = s.image_size
        config: dict[str, Any] = {
            "responseModalities": ["IMAGE"] if s.response_modalities == "IMAGE" else ["TEXT", "IMAGE"],
            "imageConfig": image_config,
        }
        if request.seed is not None:
            config["seed"] = request.seed
        return {"contents": [{"role": "user", "parts": [{"text": request.prompt}]}], "generationConfig": config}

    def protocol(self, request: GenerateRequest, deadline: Deadline) -> Protocol:
        body = self.request_body(request)
        reply = yield Call("POST", self.path(), json=body)
        assert reply is not None
        try:  # a 200 is charged (tokens in and out): whatever refuses it from here on still carries the cost
            data = reply.json()
            if not isinstance(data, dict):
                raise self.error(InvalidOutput, "response JSON is not an object", reply)
            image = self.image_of(data, reply)
        except PixelrouteError as exc:
            self.billed(exc, self.estimate_cost(request))
            raise
        extra = {k: data[k] for k in ("responseId", "modelVersion") if isinstance(data.get(k), str)}
        return self.output([image], params={"aspect_ratio": body["generationConfig"]["imageConfig"]["aspectRatio"],
                                            "image_size": self.settings.image_size, "seed": request.seed},
                           extra=extra)

    def image_of(self, data: dict[str, Any], reply: Reply) -> Any:
        """The generated image, or the refusal this answer amounts to."""
        feedback = data.get("promptFeedback")
        block = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if block:
            why = feedback.get("blockReasonMessage") if isinstance(feedback, dict) else None
            raise self.error(ContentRejected, f"prompt blocked ({block})" + (f": {_short(why)}" if why else ""), reply)
        candidates = [c for c in data.get("candidates") or [] if isinstance(c, dict)]
        if not candidates:
            raise self.error(ContentRejected, "the provider returned no candidates (filtered)", reply)
        candidate = candidates[0]
        reason = str(candidate.get("finishReason") or "")
        content = candidate.get("content")
        parts = [p for p in (content.get("parts") or [] if isinstance(content, dict) else []) if isinstance(p, dict)]
        # thinking models (gemini-3-pro-image) may send interim `thought` images before the final one
        found = [p.get("inlineData") or p.get("inline_data") for p in parts if not p.get("thought")]
        blobs: list[dict[str, Any]] = [b for b in found if isinstance(b, dict)]
        if blobs:
            blob = blobs[-1]
            mime = str(blob.get("mimeType") or blob.get("mime_type") or "")
            if not mime.startswith("image/"):
                raise self.error(InvalidOutput, f"inlineData is {mime or 'untyped'!r}, not an image", reply)
            return self.decode_b64_image(blob.get("data"))
        text = " ".join(str(p["text"]) for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
        message = candidate.get("finishMessage")
        if reason in REFUSALS:
            detail = f": {_short(message)}" if message else (f": {_short(text)}" if text else "")
            raise self.error(ContentRejected, f"output blocked ({reason}){detail}", reply)
        if text.strip():
            # the model answered in words instead of drawing: in practice a refusal ("I can't create ...")
            raise self.error(ContentRejected, f"the model answered with text and no image: {_short(text)}", reply)
        raise self.error(InvalidOutput, f"no image in the response (finishReason {reason or 'missing'})", reply)


def model_ratios(model: str | None) -> tuple[str, ...]:
    """The documented aspect ratios of ``model``'s family (the Vertex model pages)."""
    return WIDE_RATIOS if (model or "").startswith("gemini-3.1-flash-image") else BASE_RATIOS


def model_sizes(model: str | None) -> tuple[str, ...]:
    """The ``imageSize`` values ``model``'s family accepts; empty for 1K-only models."""
    return next((sizes for prefix, sizes in IMAGE_SIZES.items() if (model or "").startswith(prefix)), ())


def _pair(ratio: str) -> tuple[int, int]:
    width, _, height = ratio.partition(":")
    return int(width), int(height)


def _short(text: Any) -> str:
    return redact(" ".join(str(text).split()))[:200]
