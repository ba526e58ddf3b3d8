"""Batch invariance: a batched pipeline call gives bit-identical floats to one call per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _tiny_fixtures import tiny_models  # noqa: F401  (session fixture)


def _load(path: Path) -> Any:
    from diffusers import DiffusionPipeline

    from pixelroute.backends._families import null_components

    pipe = DiffusionPipeline.from_pretrained(str(path), **null_components(str(path)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call(pipe: Any, seeds: list[int], guidance: float, size: int = 32) -> np.ndarray:
    import torch

    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    with torch.inference_mode():
        out = pipe([f"prompt {s}" for s in seeds], num_inference_steps=2, guidance_scale=guidance,
                   width=size, height=size, generator=generators, output_type="np")
    images: np.ndarray = out.images
    return images


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3"])
@pytest.mark.parametrize("guidance", [0.0, 5.0])  # 0: the denoiser sees a batch of one per image
def test_batched_floats_equal_one_call_per_image(tiny_models, family: str, guidance: float) -> None:  # noqa: F811
    from pixelroute.backends._pipeline_invariance import make_batch_invariant

    pipe = _load(tiny_models[family])
    assert make_batch_invariant(pipe) > 0
    assert make_batch_invariant(pipe) == 0  # idempotent
    seeds = [3, 4, 5, 6, 7]
    batched = _call(pipe, seeds, guidance)
    for i, seed in enumerate(seeds):
        alone = _call(pipe, [seed], guidance)[0]
        assert np.array_equal(alone, batched[i]), f"image {i} differs by {np.abs(alone - batched[i]).max()}"


def test_wrapped_layers_compute_what_the_originals_compute(tiny_models) -> None:  # noqa: F811
    import torch

    from pixelroute.backends._pipeline_invariance import make_batch_invariant

    plain, wrapped = _load(tiny_models["sd15"]), _load(tiny_models["sd15"])
    make_batch_invariant(wrapped)
    # same maths, other kernels: equal to float32 rounding, and a different batch gives the same rows
    expected = _call(plain, [1, 2], 5.0)
    got = _call(wrapped, [1, 2], 5.0)
    assert np.allclose(expected, got, atol=1e-4)
    conv = wrapped.vae.decoder.conv_in
    x = torch.randn(6, conv.in_channels, 8, 8)
    with torch.inference_mode():
        assert torch.equal(conv(x[:1]), conv(x)[:1])
        assert torch.equal(conv(x[:1]), conv(x[:1]))  # the second call takes the cached decision


def test_group_norm_gives_the_same_rows_for_a_channels_last_view(tiny_models) -> None:  # noqa: F811
    import torch

    from pixelroute.backends._pipeline_invariance import make_batch_invariant

    pipe = _load(tiny_models["sd15"])
    make_batch_invariant(pipe)
    norm = pipe.vae.decoder.mid_block.resnets[0].norm1
    # what an attention block hands back: (b, h*w, c) tokens transposed and reshaped to NCHW
    tokens = torch.randn(4, 16 * 16, norm.num_channels)
    view = tokens.transpose(1, 2).reshape(4, norm.num_channels, 16, 16)
    lone = tokens[:1].transpose(1, 2).reshape(1, norm.num_channels, 16, 16)
    with torch.inference_mode():
        assert torch.equal(norm(lone), norm(view)[:1])
