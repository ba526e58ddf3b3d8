"""The Ideogram 3.0 request: ``POST {base_url}/v1/ideogram-v3/generate``, multipart/form-data.

Sources: Ideogram's OpenAPI document for "Generate with Ideogram 3.0"
(https://developer.ideogram.ai/api-reference/api-reference/generate-v3), in two copies that agree
on every field used here: Doomaloom/ArchiTech@fd91cf3 ``generate.md`` (``provider_apis.md`` §3b
[I2]) and api-evangelist/ideogram@3cf32b0 ``openapi/_original/ideogram-openapi.yml``. The second
also gives the 422 body (``GenerateImageSafetyError`` ``{"error": "<text>"}``) and names 3.0
``V_3`` (``DescribeModelVersion``: ``V_2 | V_3``). The v3 endpoint itself takes no model field (the
path is the model), so ``model = "V_3"`` is our selector for this path and is never sent.

Fields sent: ``prompt``; ``resolution`` when width x height is one of the 69 listed resolutions,
else ``aspect_ratio`` ("16x9": nearest of the 15 listed ratios in |log(w/h)| within
``aspect_tolerance``, else refused; the spec forbids sending both); ``rendering_speed`` (FLASH,
TURBO, DEFAULT, QUALITY); ``num_images``; ``seed``; ``negative_prompt``; ``magic_prompt`` (the
legacy ``magic_prompt_option`` setting under its v3 name); ``style_type`` (AUTO, GENERAL,
REALISTIC, DESIGN, FICTION). Bounds the spec leaves open come from ComfyUI
``comfy_api_nodes/apis/ideogram.py`` and ``nodes_ideogram.py`` (``seed`` 0..2147483647,
``num_images`` 1..8): unverified against Ideogram. No steps, guidance or scheduler.

Edits, from the same OpenAPI copy (api-evangelist/ideogram@3cf32b0): with a mask,
``POST /v1/ideogram-v3/inpaint`` (the older ``/v1/ideogram-v3/edit`` is marked legacy there)
with file parts ``image`` and ``mask`` ("a black and white image of the same size ... Black
regions ... match up with the regions of the image that you would like to edit": our
white-means-repaint mask is inverted) and fields ``prompt``, ``magic_prompt``, ``num_images``,
``seed``, ``rendering_speed``, ``style_type`` (no negative prompt, no size: the input's);
without one, ``POST /v1/ideogram-v3/remix`` with ``image``, ``prompt``, ``image_weight``,
``resolution``/``aspect_ratio`` (as for generation, from the output size), ``rendering_speed``,
``num_images`` and the optional knobs, negative prompt included. Both answer like generate. Files
up to 10 MB each. ``image_weight`` (an integer, default 50) is how much of the input is kept; we
send ``round(100 x (1 - strength))``, at least 1: the spec gives no range (ComfyUI's node uses
1..100), so the mapping and the range are unverified, and so is whether edits cost what
generations do (the backend's ``price`` is used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._types import GenerateRequest
from ._http import nearest_aspect

if TYPE_CHECKING:
    from .._edit import EditRequest
    from .ideogram import IdeogramSettings

MODEL = "V_3"
PATH = "/v1/ideogram-v3/generate"
INPAINT_PATH = "/v1/ideogram-v3/inpaint"
REMIX_PATH = "/v1/ideogram-v3/remix"
#: "max size 10MB" for the image and for the mask
MAX_FILE_BYTES = 10_000_000
RENDERING_SPEEDS = ("FLASH", "TURBO", "DEFAULT", "QUALITY")
STYLE_TYPES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION")
#: AspectRatioV3, in the spec's order
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    f"{w}x{h}": (w, h)
    for w, h in ((1, 3), (3, 1), (1, 2), (2, 1), (9, 16), (16, 9), (10, 16), (16, 10), (2, 3), (3, 2), (3, 4),
                 (4, 3), (4, 5), (5, 4), (1, 1))
}
#: ResolutionV3 (width: heights): an exact request for one of these is sent as is, not as its nearest ratio
_RESOLUTIONS_BY_WIDTH: dict[int, tuple[int, ...]] = {
    512: (1536,), 576: (1408, 1472, 1536), 640: (1344, 1408, 1472, 1536), 704: (1152, 1216, 1280, 1344, 1408, 1472),
    736: (1312,), 768: (1088, 1216, 1280, 1344), 800: (1280,), 832: (960, 1024, 1088, 1152, 1216, 1248), 864: (1152,),
    896: (960, 1024, 1088, 1120, 1152), 960: (832, 896, 1024, 1088), 1024: (832, 896, 960, 1024),
    1088: (768, 832, 896, 960), 1120: (896,), 1152: (704, 832, 864, 896), 1216: (704, 768, 832), 1248: (832,),
    1280: (704, 768, 800), 1312: (736,), 1344: (640, 704, 768), 1408: (576, 640, 704), 1472: (576, 640, 704),
    1536: (512, 576, 640),
}
RESOLUTIONS = frozenset((w, h) for w, heights in _RESOLUTIONS_BY_WIDTH.items() for h in heights)


def form_fields(settings: IdeogramSettings, request: GenerateRequest, size: tuple[int, int],
                backend: str) -> dict[str, str]:
    """The exact multipart text fields for ``request``."""
    width, height = size
    fields = {"prompt": request.prompt}
    if (width, height) in RESOLUTIONS:
        fields["resolution"] = f"{width}x{height}"
    else:
        fields["aspect_ratio"] = nearest_aspect(width, height, ASPECT_RATIOS, settings.aspect_tolerance, backend)
    fields["rendering_speed"] = settings.rendering_speed
    fields["num_images"] = str(request.n)
    fields.update((k, str(v)) for k, v in optional_knobs(settings, request, "magic_prompt").items())
    return fields


def edit_parts(settings: IdeogramSettings, request: EditRequest, size: tuple[int, int], backend: str,
               ) -> tuple[str, dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """The path, exact multipart text fields and file parts of an edit."""
    files = {"image": (f"image.{request.image.format}", request.image.data, request.image.mime)}
    if request.mask is not None:
        files["mask"] = ("mask.png", request.mask.mask_png("black"), "image/png")
        fields = {"prompt": request.prompt, "rendering_speed": settings.rendering_speed,
                  "num_images": str(request.n)}
        knobs = optional_knobs(settings, request, "magic_prompt")
        knobs.pop("negative_prompt", None)  # validation refuses one: inpainting has no such field
        fields.update((k, str(v)) for k, v in knobs.items())
        return INPAINT_PATH, fields, files
    fields = form_fields(settings, request, size, backend)
    if request.strength is not None:
        fields["image_weight"] = str(image_weight(request.strength))
    return REMIX_PATH, fields, files


def image_weight(strength: float) -> int:
    """Remix's ``image_weight`` for an edit ``strength``: how much of the input stays (unverified mapping)."""
    return max(1, round(100 * (1.0 - strength)))


def optional_knobs(settings: IdeogramSettings, request: GenerateRequest, magic_prompt_key: str) -> dict[str, Any]:
    """What both paths send only when set (MagicPrompt: ``magic_prompt_option`` legacy, ``magic_prompt`` 3.0)."""
    values = {"seed": request.seed, "negative_prompt": request.negative_prompt,
              magic_prompt_key: settings.magic_prompt_option, "style_type": settings.style_type}
    return {k: v for k, v in values.items() if v is not None}
