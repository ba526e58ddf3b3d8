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

Sizes (whole pipeline: denoiser + text encoders + VAE, billions of parameters), from the model
cards and papers: CLIP ViT-L/14 text encoder 0.123, OpenCLIP ViT-bigG/14 text encoder 0.695,
T5 v1.1 XXL encoder 4.76, VAE 0.084; SD1.5 UNet 0.86 (1.07 in all); SDXL UNet 2.57 (3.5 in all,
as the SDXL paper counts the base model); SD3 Medium MMDiT 2.03 (7.7 with T5); SD3.5 Large
MMDiT 8.1 (13.8); SD3.5 Medium MMDiT 2.5 (8.2); FLUX.1 transformer 12 with CLIP-L and T5
(16.97). They feed the load-time estimate in :func:`estimate_load_s`.
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
    #: parameters of the whole pipeline in billions (see the module docstring)
    params_b: float = 1.07
    #: of which the T5 encoder, which SD3-style pipelines may be loaded without
    t5_params_b: float = 0.0
    #: measured load seconds, for the tiny pipelines whose size says nothing useful
    load_s: float | None = None
    #: whether diffusers has image-to-image and inpainting pipelines of the family (AutoPipelineFor*)
    edits: bool = True


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sd15", steps=50, guidance=7.5, width=512, height=512, max_side=1024, params_b=1.07),
        Family("sdxl", steps=30, guidance=5.0, width=1024, height=1024, params_b=3.5),
        Family("sdxl-turbo", steps=1, guidance=0.0, width=512, height=512, params_b=3.5),
        Family("sd3", steps=28, guidance=7.0, width=1024, height=1024, size_multiple=16, params_b=7.7,
               t5_params_b=4.76),
        Family("sd35-large", steps=28, guidance=3.5, width=1024, height=1024, size_multiple=16, params_b=13.8,
               t5_params_b=4.76),
        Family("sd35-large-turbo", steps=4, guidance=0.0, width=1024, height=1024, size_multiple=16,
               params_b=13.8, t5_params_b=4.76),
        Family("sd35-medium", steps=40, guidance=4.5, width=1024, height=1024, size_multiple=16, params_b=8.2,
               t5_params_b=4.76),
        Family("flux-schnell", steps=4, guidance=0.0, width=1024, height=1024, size_multiple=16,
               negative_prompt=False, params_b=16.97),
        Family("flux-dev", steps=28, guidance=3.5, width=1024, height=1024, size_multiple=16,
               negative_prompt=False, params_b=16.97),
        # Tiny random-weight pipelines (pixelroute._tiny): the real classes, small sizes so CPU tests are fast.
        # Their load (from_pretrained of 4-11 MB, after the imports) measured 0.11-0.15 s (median
        # of 5) on a 2-core CPU; 0.2 s leaves room for the build on first use and a busy machine.
        Family("tiny-sd15", steps=2, guidance=7.5, width=64, height=64, max_side=512, load_s=0.2),
        Family("tiny-sdxl", steps=8, guidance=5.0, width=64, height=64, max_side=512, load_s=0.2),
        Family("tiny-sd3", steps=4, guidance=3.5, width=64, height=64, size_multiple=16, max_side=512,
               load_s=0.2),
        # Any other text-to-image pipeline: diffusers' own call defaults; sized like SD1.5, the
        # smallest common pipeline (set `typical_load_s` for anything bigger). Whether diffusers
        # can edit with it is unknown until it is loaded, so it only generates.
        Family("generic", steps=50, guidance=7.5, width=512, height=512, edits=False),
    )
}

#: sequential read of safetensors files: local NVMe manages 2-7 GB/s, network volumes
#: (cloud block storage, NFS) 0.1-1 GB/s; 1.5 GB/s is the middle of what GPU hosts get cold
DISK_BYTES_PER_S = 1.5e9
#: host-to-GPU copy of pageable memory (what ``pipe.to("cuda")`` does): ~10 GB/s on PCIe 4 x16,
#: where pinned buffers would reach ~25 GB/s
DEVICE_BYTES_PER_S = 10e9
#: module construction, configs, tokenizers and scheduler set-up, whatever the size
LOAD_OVERHEAD_S = 1.0


def estimate_load_s(family: Family, *, device: str, dtype: str, without_t5: bool = False) -> float:
    """Seconds to load ``family``'s pipeline: read it from disk, then copy it to the device.

    ``load ≈ 1 s + bytes / 1.5 GB/s + (bytes / 10 GB/s on a GPU)`` with ``bytes = parameters x
    bytes per parameter`` of the dtype it is loaded in (``auto`` means half precision on a GPU,
    float32 on the CPU). That gives SD1.5 ~2.6 s, SDXL ~6.4 s, SD3.5 Large ~22 s and FLUX.1
    ~27 s on a GPU, in line with the 8-29 s first requests seen in the field (those also pay the
    one-time ~4-6 s import of torch and diffusers, which this leaves out). Repositories stored in
    float32 read twice the bytes unless loaded with ``variant = "fp16"``; set ``typical_load_s``
    where the disk or the model differs. Tiny pipelines use their measured ``load_s``.
    """
    if family.load_s is not None:
        return family.load_s
    on_gpu = device != "cpu"
    half = dtype in ("float16", "bfloat16") or (dtype == "auto" and on_gpu)
    params = family.params_b - (family.t5_params_b if without_t5 else 0.0)
    nbytes = params * 1e9 * (2 if half else 4)
    seconds = LOAD_OVERHEAD_S + nbytes / DISK_BYTES_PER_S + (nbytes / DEVICE_BYTES_PER_S if on_gpu else 0.0)
    return round(seconds, 1)


def detect_family(class_name: str | None, model_id: str | None, tiny: str | None = None) -> Family:
    """The family of a pipeline from its class name (``StableDiffusion3Pipeline``) and model id.

    ``tiny`` is the family recorded by :func:`pixelroute._tiny.build_tiny` (or the ``make_tiny`` setting).
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
