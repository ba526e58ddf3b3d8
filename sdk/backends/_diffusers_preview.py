"""Partial images: a pipeline's intermediate latents decoded with its own VAE, mid-denoising.

This is what the pipelines do with their final latents, applied early: undo the VAE's latent
scaling (``scaling_factor``, plus ``shift_factor`` for SD3 and FLUX, ``latents_mean``/``std``
where the VAE declares them), unpack FLUX's 2x2 patch tokens, decode, and post-process to PIL.
A float16 VAE that asks to be upcast (``force_upcast``, SDXL's) is decoded in float32 and cast
back, as SDXL's pipeline does, so previews are not NaN-black. The latents are the noisy
intermediate ones (``callback_on_step_end`` sees no predicted clean sample), so early previews
are noisy and sharpen toward the result. Runs on the pipeline's worker thread, inside its call.
"""

from __future__ import annotations

from typing import Any

from .._hf_quiet import quiet_hf


def decode_latents(pipe: Any, latents: Any, width: int, height: int) -> list[Any]:
    """PIL images for ``latents`` (one per batch row) from ``pipe``'s VAE."""
    import torch

    vae = pipe.vae
    config = vae.config
    if latents.ndim == 3 and hasattr(pipe, "_unpack_latents"):  # FLUX: (batch, tokens, channels)
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        mean_t = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
        latents = latents * std_t / config.scaling_factor + mean_t
    else:
        latents = latents / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
    upcast = vae.dtype == torch.float16 and bool(getattr(config, "force_upcast", False))
    if upcast:
        with quiet_hf():  # diffusers logs a notice on every cast; the pipeline's own upcast does the same
            vae.to(dtype=torch.float32)
    try:
        image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    finally:
        if upcast:
            with quiet_hf():
                vae.to(dtype=torch.float16)
    images: list[Any] = pipe.image_processor.postprocess(image, output_type="pil")
    return images
