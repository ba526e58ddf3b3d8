"""Model families: knob defaults and size rules, detected from the pipeline class and model id.

Pure Python (no torch): the backend needs the defaults at construction time, before anything
is loaded, so the router can see them. Detection reads the pipeline class name from
``model_index.json`` when the folder is local, else guesses from the hub id; the id refines the
class (``...-large-turbo`` vs ``...-large``). Every default can be overridden in the config,
and a value the caller sets is honoured (or refused by validation), never changed.

Sources (model cards, read 2026): SD3.5 Large Turbo 4 steps / guidance 0; SD3.5 Large 28 / 3.5;
SD3.5 Medium 40 / 4.5; SDXL base 30 (card examples use 40-50) / 5.0; SDXL-Turbo 1 step / 0 at
512x512; FLUX.1-schnell 4 / 0; FLUX.1-dev 28 (card: 50) / 3.5; SD1.5 50 / 7.5 at 512x512.
Latents are 8x smaller than pixels; SD3 and FLUX also pack 2x2 patches, so their sides must be
multiples of 16.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Family:
    """Defaults for one model family. ``tiny`` families are the random-weight test pipelines."""

    name: str
    steps: int
    guidance: float
    width: int
    height: int
    size_multiple: int = 8
    max_side: int = 2048
    #: whether the pipeline accepts ``negative_prompt`` (FLUX does not)
    negative_prompt: bool = True


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sd15", steps=50, guidance=7.5, width=512, height=512, max_side=1024),
        Family("sdxl", steps=30, guidance=5.0, width=1024, height=1024),
        Family("sdxl-turbo", steps=1, guidance=0.0, width=512, height=512),
        Family("sd3", steps=28, guidance=7.0, width=1024, height=1024, size_multiple=16),
        Family("sd35-large", steps=28, guidance=3.5, width=1024, height=1024, size_multiple=16),
        Family("sd35-large-turbo", steps=4, guidance=0.0, width=1024, height=1024, size_multiple=16),
        Family("sd35-medium", steps=40, guidance=4.5, width=1024, height=1024, size_multiple=16),
        Family("flux-schnell", steps=4, guidance=0.0, width=1024, height=1024, size_multiple=16,
               negative_prompt=False),
        Family("flux-dev", steps=28, guidance=3.5, width=1024, height=1024, size_multiple=16,
               negative_prompt=False),
        # Tiny random-weight pipelines (sdk._tiny): the real classes, small sizes so CPU tests are fast.
        Family("tiny-sd15", steps=2, guidance=7.5, width=64, height=64, max_side=512),
        Family("tiny-sdxl", steps=8, guidance=5.0, width=64, height=64, max_side=512),
        Family("tiny-sd3", steps=4, guidance=3.5, width=64, height=64, size_multiple=16, max_side=512),
        # Any other text-to-image pipeline: diffusers' own call defaults.
        Family("generic", steps=50, guidance=7.5, width=512, height=512),
    )
}


def detect_family(class_name: str | None, model_id: str | None, tiny: str | None = None) -> Family:
    """The family of a pipeline from its class name (``StableDiffusion3Pipeline``) and model id.

    ``tiny`` is the family recorded by :func:`sdk._tiny.build_tiny` (or the ``make_tiny`` setting).
    """
    if tiny:
        return FAMILIES[f"tiny-{tiny}"]
    cls = (class_name or "").lower()
    ident = (model_id or "").lower().replace("_", "-")
    if "flux" in cls or "flux" in ident:
        return FAMILIES["flux-schnell" if "schnell" in ident else "flux-dev"]
    if "stablediffusion3" in cls or "stable-diffusion-3" in ident or "sd3" in ident:
        if "large-turbo" in ident or ("3.5" in ident and "turbo" in ident):
            return FAMILIES["sd35-large-turbo"]
        if "3.5-large" in ident or "35-large" in ident:
            return FAMILIES["sd35-large"]
        if "3.5-medium" in ident or "35-medium" in ident:
            return FAMILIES["sd35-medium"]
        return FAMILIES["sd3"]
    if "xl" in cls or "sdxl" in ident or "-xl" in ident:
        return FAMILIES["sdxl-turbo" if "turbo" in ident else "sdxl"]
    if cls == "stablediffusionpipeline" or "stable-diffusion-v1" in ident or "sd-v1" in ident:
        return FAMILIES["sd15"]
    return FAMILIES["generic"]


def local_class_name(model: str | None) -> str | None:
    """The ``_class_name`` in a local folder's ``model_index.json``; ``None`` for hub ids."""
    if not model:
        return None
    index = Path(model).expanduser() / "model_index.json"
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError):
        return None
    return name if isinstance(name, str) else None


def null_components(model: str) -> dict[str, None]:
    """Components a local folder saved as null (e.g. SD3 without T5), to pass as ``None`` on load."""
    index = Path(model).expanduser() / "model_index.json"
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError):
        return {}
    return {
        key: None
        for key, value in data.items()
        if not key.startswith("_") and isinstance(value, list) and value and value[0] is None
    }
