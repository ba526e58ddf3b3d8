"""``benchmarks/sdk_overhead.py --full-size``: the real SDXL / SD3.5-Medium architectures."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sdk_overhead.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sdk_overhead_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configs_at_scale_one_have_the_published_parameter_counts() -> None:
    import torch
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    bench = _script()

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):  # shapes only: nothing is allocated
        clip_l = CLIPTextConfig(**bench.clip_text_config("L", 1.0))
        clip_g = CLIPTextConfig(**bench.clip_text_config("bigG", 1.0))
        assert count(CLIPTextModel(clip_l)) == 123_060_480  # CLIP ViT-L/14 text tower
        assert count(CLIPTextModelWithProjection(clip_g)) == 694_659_840  # OpenCLIP bigG + projection
        unet = UNet2DConditionModel(**bench.sdxl_unet_config(1.0, 768, 1280))
        assert count(unet) == 2_567_463_684  # SDXL base UNet
        mmdit = SD3Transformer2DModel(**bench.sd35_medium_transformer_config(1.0, 768, 1280))
        # 2.24 B parameters + the 384x384x1536 position-embedding buffer = the published 2.47 B
        assert count(mmdit) + mmdit.pos_embed.pos_embed.numel() == 2_469_663_936


def test_full_size_without_cuda_is_refused_with_a_way_forward() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --full-size would run for real")
    done = subprocess.run([sys.executable, str(SCRIPT), "--full-size"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "--device cpu --scale 0.05" in done.stderr


def test_narrow_full_size_architectures_run_through_the_sdk_on_cpu() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--full-size", "--device", "cpu", "--scale", "0.05", "--size", "64",
         "--steps", "2", "--runs", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|") for line in done.stdout.splitlines()
            if line.startswith("| sd")}
    assert set(rows) == {"sdxl", "sd35-medium"}
    for cells in rows.values():
        raw_gpu_s, sdk_gpu_s = float(cells[5]), float(cells[6])
        assert raw_gpu_s > 0 and sdk_gpu_s > 0
    assert rows["sd35-medium"][4].strip() == "2" and rows["sdxl"][3].strip() == "float32"
