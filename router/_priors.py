"""Cold-start priors: latency, failure rate and price of a backend before any telemetry exists.

Every number is a published figure, cited by its section of the project's notes on backend figures
(BF §n). They are starting points the trained model replaces, not measurements of your deployment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._types import BackendProfile


@dataclass(frozen=True)
class KindPreset:
    """What we assume about a backend kind at 1 megapixel and its default steps."""

    latency_s: float
    #: lognormal shape of the latency (log-space standard deviation)
    sigma: float
    failure_rate: float
    default_steps: int | None = None
    #: seconds to load the pipeline into memory before the first request (local kinds only)
    load_s: float = 0.0


KIND_PRESETS: dict[str, KindPreset] = {
    # BF §5: SDXL 1024², 30 steps, A100 bf16 + SDPA 3.31 s; diffusers-torchao FLUX-dev H100 eager 6.57 s.
    # Local jitter is small (one GPU, no network): sigma 0.15.
    # Load time: BF §1 says only "model load is typically 10-60 s" (unsourced); first generations
    # measured through this SDK took 8-29 s while the pipeline loaded -> 20 s until a profile
    # declares its own (the SDK estimates one from the model's size).
    "diffusers": KindPreset(3.3, 0.15, 0.005, 30, load_s=20.0),
    # an A1111 server keeps its checkpoint loaded: nothing for the client to wait for
    "a1111": KindPreset(3.3, 0.15, 0.01, 30),
    # BF §2: no first-party SD3.5 API latency (a gap, §7); FLUX-dev hosted medians 1.7-6.7 s -> 6 s.
    "stability": KindPreset(6.0, 0.25, 0.02),
    # BF §2: "Ideogram (v2/v3 API) typical 5-15 s per image".
    "ideogram": KindPreset(9.0, 0.3, 0.03),
    # BF §2 / §6: gpt-image-1 "can take 60+ seconds"; "20-60 s typical" -> median 30 s, heavy tail.
    "openai": KindPreset(30.0, 0.5, 0.03),
    # BF §2: Imagen 4 Fast / Standard "3-5 s / 8-15 s" -> 8 s for the standard tier.
    "imagen": KindPreset(8.0, 0.3, 0.03),
    # BF §2 "Gemini image models: typical ~30 s; allow 30-60 s before retrying"; BF §6: IMAGE_SAFETY refusals
    # "even on benign images", so a higher failure prior than the other APIs.
    "gemini": KindPreset(30.0, 0.4, 0.05),
    # BF §2: FLUX.1-dev on Replicate 1.69 s call, 3.76 s per prompt including the download.
    "replicate": KindPreset(3.8, 0.25, 0.02),
    "mock": KindPreset(0.05, 0.1, 0.0),
    "custom": KindPreset(5.0, 0.35, 0.02),
}
#: strength assumed for a scenario a profile does not declare
DEFAULT_STRENGTH = 0.5
#: cold-start latency growth per queued request ahead (local: one GPU runs them first) and per
#: request in flight (remote: a provider slows down a little under our own load)
QUEUE_FACTOR_LOCAL = 1.0
INFLIGHT_FACTOR_REMOTE = 0.03
#: log-space spread of a cold candidate's latency: load times vary far more than denoising does
COLD_SIGMA = 0.4


def preset(profile: BackendProfile) -> KindPreset:
    return KIND_PRESETS.get(profile.kind, KIND_PRESETS["custom"])


def default_steps(profile: BackendProfile) -> int | None:
    return profile.default_steps or preset(profile).default_steps


def effective_steps(profile: BackendProfile, requested: int | None, option: int | None) -> int | None:
    """Steps a candidate runs with: a step option, else the caller's value, else the backend default."""
    if option is not None:
        return option
    if requested is not None and profile.supports_steps:
        return requested
    return default_steps(profile)


def megapixels(profile: BackendProfile, width: int | None, height: int | None) -> float:
    w = width or profile.default_width
    h = height or profile.default_height
    return w * h / 1e6


def prior_latency_s(profile: BackendProfile, mp: float, steps: int | None, n: int, denoised: float = 1.0) -> float:
    """Median latency before telemetry: typical latency scaled by megapixels, steps and images.

    Local pipelines scale linearly in pixels x steps x images (one GPU does the work), and an edit
    denoises only ``denoised`` (its strength) of the steps; remote APIs mostly hide the scaling
    behind their fleet, so only a mild size term is kept.
    """
    base = profile.typical_latency_s or preset(profile).latency_s
    ref_mp = profile.default_width * profile.default_height / 1e6
    d_steps = default_steps(profile)
    if profile.local:
        step_ratio = (steps / d_steps) if (steps and d_steps) else 1.0
        return base * (mp / ref_mp) * step_ratio * denoised * n
    return base * math.sqrt(mp / ref_mp) * (1.0 + 0.25 * (n - 1))


def price_usd(profile: BackendProfile, mp: float, n: int, gpu_s: float) -> float:
    """Price of one request from the profile's price model (per image, per megapixel or per GPU-second)."""
    p = profile.price
    if "per_image" in p:
        return float(p["per_image"]) * n
    if "per_megapixel" in p:
        return float(p["per_megapixel"]) * mp * n
    if "per_gpu_second" in p:
        return float(p["per_gpu_second"]) * gpu_s
    return 0.0


#: scenarios in the order the featurizer and the strengths use
SCENARIOS: tuple[str, ...] = ("typography", "counting", "composition", "reflection", "anatomy")
BASE_CORRECTION_S = 15.0
#: assumed seconds a person spends repairing each kind of defect (redoing text is the slowest)
SCENARIO_FIX_S: dict[str, float] = {
    "typography": 240.0,   # retype and composite text in an editor
    "counting": 90.0,      # inpaint or remove objects
    "composition": 120.0,  # regenerate or rearrange several objects
    "reflection": 60.0,    # paint over a wrong reflection
    "anatomy": 90.0,       # fix hands and faces by inpainting
}


def prior_correction_s(profile: BackendProfile, scenario_probs: Sequence[float], steps: int | None) -> float:
    """Correction seconds before telemetry: P(scenario) x (1 - declared strength) x fix time, summed.

    Fewer denoising steps than the model's default leave more defects to fix (square-root penalty).
    """
    d_steps = default_steps(profile)
    penalty = math.sqrt(d_steps / steps) if (steps and d_steps and steps < d_steps) else 1.0
    strengths = profile.strengths
    risk = 0.0
    for s, p in zip(SCENARIOS, scenario_probs, strict=True):
        risk += p * (1.0 - strengths.get(s, DEFAULT_STRENGTH)) * SCENARIO_FIX_S[s]
    return BASE_CORRECTION_S + penalty * risk
