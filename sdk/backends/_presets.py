"""Prices and known limits of the seed systems, as defaults that configuration overrides.

Every figure is a provider's published list price, limit or benchmark score: BF and PA name the
section of the project's notes on backend figures and provider APIs where it was collected, or,
for the Gemini image models, Google's pricing page; the comment on each entry quotes the row. The
per-backend pages of docs/backends/ list the presets. They are dated snapshots (2024–2026): prices
change, so a config's ``price`` / ``typical_latency_s`` / ``strengths`` always win. Entries leave a
field out where no source gave a number, rather than guessing.

``strengths`` are in [0, 1] per scenario; ``counting`` and ``composition`` are GenEval
"Counting" and "Position" scores (BF §4.1) where a row exists.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from .base import BackendSettings, Price

Preset = dict[str, Any]

PRESETS: dict[tuple[str, str], Preset] = {
    # -- Stability REST v2beta ------------------------------------------------------------
    # BF §1 "SD3.5 Large (Stability API) | 6.5 credits ... | 0.065"; GenEval BF §4.1 "SD3.5 Large | 0.71 | 0.73 | 0.34"
    ("stability", "sd3.5-large"): {"price": {"per_image": 0.065}, "max_n": 1,
                                   "strengths": {"counting": 0.73, "composition": 0.34}},
    # BF §1 "SD3.5 Large Turbo (Stability API) | 4 credits | 0.04"
    ("stability", "sd3.5-large-turbo"): {"price": {"per_image": 0.04}, "max_n": 1},
    # BF §1 "SD3.5 Medium (Stability API) | 3.5 credits | 0.035"
    ("stability", "sd3.5-medium"): {"price": {"per_image": 0.035}, "max_n": 1},
    # PA §2 `model` row: "sd3.5-flash (2.5)" credits, 1 credit = $0.01 (BF §1)
    ("stability", "sd3.5-flash"): {"price": {"per_image": 0.025}, "max_n": 1},
    # BF §1 "Stable Image Core / Ultra | 3 / 8 credits | 0.03 / 0.08"
    ("stability", "core"): {"price": {"per_image": 0.03}, "max_n": 1},
    ("stability", "ultra"): {"price": {"per_image": 0.08}, "max_n": 1},
    # -- Ideogram (legacy /generate) -- BF §1 "Ideogram 2.0 (V_2) ... 0.08" and the three rows below it;
    # latency BF §2 "Ideogram (v2/v3 API) | typical | 5–15 s per image" (midpoint); max_n PA §3a num_images 1–8
    ("ideogram", "V_2"): {"price": {"per_image": 0.08}, "typical_latency_s": 10.0, "max_n": 8},
    ("ideogram", "V_2_TURBO"): {"price": {"per_image": 0.05}, "typical_latency_s": 10.0, "max_n": 8},
    ("ideogram", "V_2A"): {"price": {"per_image": 0.04}, "typical_latency_s": 10.0, "max_n": 8},
    ("ideogram", "V_2A_TURBO"): {"price": {"per_image": 0.025}, "typical_latency_s": 10.0, "max_n": 8},
    # -- Ideogram 3.0 (V_3), priced by `rendering_speed` -- BF §1 "Ideogram 3.0 Turbo / Default / Quality |
    # 0.03 / 0.06 / 0.09" (ideogram.ai/features/api-pricing); latency as above; max_n ComfyUI's num_images 1..8
    # (PA §3b). That row has no FLASH price, so V_3 itself carries none: FLASH stays unpriced until configured.
    ("ideogram", "V_3"): {"typical_latency_s": 10.0, "max_n": 8},
    ("ideogram", "V_3:TURBO"): {"price": {"per_image": 0.03}},
    ("ideogram", "V_3:DEFAULT"): {"price": {"per_image": 0.06}},
    ("ideogram", "V_3:QUALITY"): {"price": {"per_image": 0.09}},
    # -- OpenAI -- BF §1 "gpt-image-1 | low/medium/high 1024²" rows; latency BF §6 "gpt-image-1 ... 20–60 s typical"
    # GenEval BF §4.1 "GPT-4o image (gpt-image-1) | 0.84 | 0.85 | 0.75"
    ("openai", "gpt-image-1"): {"price": {"per_image": 0.042}, "typical_latency_s": 40.0, "max_n": 10,
                                "strengths": {"counting": 0.85, "composition": 0.75}},
    ("openai", "gpt-image-1:low"): {"price": {"per_image": 0.011}},
    ("openai", "gpt-image-1:medium"): {"price": {"per_image": 0.042}},
    ("openai", "gpt-image-1:high"): {"price": {"per_image": 0.167}},
    # BF §1 "gpt-image-1-mini | low / medium / high 1024² | 0.0022 / 0.0084 / 0.0333"
    ("openai", "gpt-image-1-mini"): {"price": {"per_image": 0.0084}, "max_n": 10},
    ("openai", "gpt-image-1-mini:low"): {"price": {"per_image": 0.0022}},
    ("openai", "gpt-image-1-mini:high"): {"price": {"per_image": 0.0333}},
    # BF §1 "DALL·E 3 | standard 1024² ... 0.04 / ... HD 1024² 0.08"; PA §1 `n`: dall-e-3 only 1
    # GenEval BF §4.1 "DALL·E 3 | 0.67 | 0.47 | 0.43"
    ("openai", "dall-e-3"): {"price": {"per_image": 0.04}, "max_n": 1,
                             "strengths": {"counting": 0.47, "composition": 0.43}},
    ("openai", "dall-e-3:hd"): {"price": {"per_image": 0.08}},
    # -- Imagen -- BF §1 "Imagen 4 Fast / Standard / Ultra | 0.02 / 0.04 / 0.06"; BF §2 "3–5 s / 8–15 s / 20–45 s"
    # (midpoints); BF §1 "Imagen 3 (Vertex AI) | 1024² | 0.04"; max_n PA §4 sampleCount 1–4
    ("imagen", "imagen-4.0-fast-generate-001"): {"price": {"per_image": 0.02}, "typical_latency_s": 4.0, "max_n": 4},
    ("imagen", "imagen-4.0-generate-001"): {"price": {"per_image": 0.04}, "typical_latency_s": 11.5, "max_n": 4},
    ("imagen", "imagen-4.0-ultra-generate-001"): {"price": {"per_image": 0.06}, "typical_latency_s": 32.5,
                                                  "max_n": 4},
    ("imagen", "imagen-3.0-generate-002"): {"price": {"per_image": 0.04}, "max_n": 4},
    # -- Gemini image models (generateContent) -- prices: https://ai.google.dev/gemini-api/docs/pricing, 2.5 Flash
    # Image: "Output images up to 1024x1024px consume 1290 tokens and are equivalent to $0.039 per image";
    # 3.1 Flash Image: "$0.067 per 1K image*, $0.101 per 2K image*, and $0.151 per 4K image"; 3 Pro Image:
    # "$0.134 per 1K/2K image** and $0.24 per 4K image" (quoted in a 2026-09 capture of that page). Latency BF §2
    # "Gemini image models | typical | ~30 s". max_n: "candidateCount: 1" on the Vertex model pages.
    ("gemini", "gemini-2.5-flash-image"): {"price": {"per_image": 0.039}, "typical_latency_s": 30.0, "max_n": 1},
    ("gemini", "gemini-3.1-flash-image"): {"price": {"per_image": 0.067}, "typical_latency_s": 30.0, "max_n": 1},
    ("gemini", "gemini-3.1-flash-image:2K"): {"price": {"per_image": 0.101}},
    ("gemini", "gemini-3.1-flash-image:4K"): {"price": {"per_image": 0.151}},
    ("gemini", "gemini-3-pro-image"): {"price": {"per_image": 0.134}, "typical_latency_s": 30.0, "max_n": 1},
    ("gemini", "gemini-3-pro-image:4K"): {"price": {"per_image": 0.24}},
    # -- Replicate -- BF §1 "FLUX.1 [schnell] | Replicate | 0.003", "FLUX.1 [dev] | Replicate | 0.025";
    # latency BF §2 "FLUX.1 [dev] on Replicate ... 3.76 s per prompt" (incl. download),
    # "FLUX.1 [schnell] on fal | 1 image | 1.27 s"; GenEval BF §4.1 "FLUX.1 [schnell] | 0.71"
    ("replicate", "black-forest-labs/flux-schnell"): {"price": {"per_image": 0.003}, "typical_latency_s": 1.3},
    ("replicate", "black-forest-labs/flux-dev"): {"price": {"per_image": 0.025}, "typical_latency_s": 3.76},
}

S = TypeVar("S", bound=BackendSettings)


def preset(kind: str, model: str | None, variant: str | None = None) -> Preset | None:
    """The preset for ``kind``/``model`` (``variant`` e.g. OpenAI's quality refines the price).

    ``preset("stability", "sd3.5-large") -> {"price": {"per_image": 0.065}, "max_n": 1, ...}``
    """
    if model is None:
        return None
    base = PRESETS.get((kind, model))
    refined = PRESETS.get((kind, f"{model}:{variant}")) if variant else None
    if base is None and refined is None:
        return None
    merged = copy.deepcopy(base or {})
    merged.update(copy.deepcopy(refined or {}))
    return merged


def apply_preset(kind: str, settings: S) -> S:
    """Fill ``price``, ``typical_latency_s`` and ``strengths`` from the preset where config left them unset."""
    # the variant that refines a price: OpenAI's `quality`, an output size (Gemini's `image_size`) or
    # Ideogram 3.0's `rendering_speed` (legacy Ideogram models have no `V_2:DEFAULT` entry, so keep their own)
    variant = (getattr(settings, "quality", None) or getattr(settings, "image_size", None)
               or getattr(settings, "rendering_speed", None))
    found = preset(kind, settings.model, variant)
    if not found:
        return settings
    update: dict[str, Any] = {}
    if not settings.price.as_dict() and "price" in found:
        update["price"] = Price(**found["price"])
    if settings.typical_latency_s is None and "typical_latency_s" in found:
        update["typical_latency_s"] = found["typical_latency_s"]
    if not settings.strengths and "strengths" in found:
        update["strengths"] = found["strengths"]
    return settings.model_copy(update=update) if update else settings


def preset_max_n(kind: str, model: str | None, default: int) -> int:
    found = preset(kind, model)
    return int(found["max_n"]) if found and "max_n" in found else default
