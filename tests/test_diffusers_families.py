"""The family table: knob defaults detected from pipeline class names and model ids (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelroute.backends._families import FAMILIES, detect_family, local_class_name, null_components


@pytest.mark.parametrize(
    ("class_name", "model_id", "family", "steps", "guidance", "multiple"),
    [
        ("StableDiffusion3Pipeline", "stabilityai/stable-diffusion-3.5-large-turbo", "sd35-large-turbo",
         4, 0.0, 16),
        ("StableDiffusion3Pipeline", "stabilityai/stable-diffusion-3.5-large", "sd35-large", 28, 3.5, 16),
        ("StableDiffusion3Pipeline", "stabilityai/stable-diffusion-3.5-medium", "sd35-medium", 40, 4.5, 16),
        ("StableDiffusionXLPipeline", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", 30, 5.0, 8),
        ("StableDiffusionXLPipeline", "stabilityai/sdxl-turbo", "sdxl-turbo", 1, 0.0, 8),
        ("FluxPipeline", "black-forest-labs/FLUX.1-schnell", "flux-schnell", 4, 0.0, 16),
        ("FluxPipeline", "black-forest-labs/FLUX.1-dev", "flux-dev", 28, 3.5, 16),
        ("StableDiffusionPipeline", "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd15", 50, 7.5, 8),
        (None, "stabilityai/stable-diffusion-3.5-large-turbo", "sd35-large-turbo", 4, 0.0, 16),
        ("KandinskyV22Pipeline", "some/other-model", "generic", 50, 7.5, 8),
    ],
)
def test_family_detection_table(
    class_name: str | None, model_id: str, family: str, steps: int, guidance: float, multiple: int
) -> None:
    f = detect_family(class_name, model_id)
    assert (f.name, f.steps, f.guidance, f.size_multiple) == (family, steps, guidance, multiple)


def test_flux_refuses_negative_prompts_and_tiny_families_win() -> None:
    assert FAMILIES["flux-dev"].negative_prompt is False
    detected = detect_family("StableDiffusionXLPipeline", "/cache/tiny/sdxl-quality", tiny="sdxl")
    assert detected.name == "tiny-sdxl"


def test_local_folder_class_name_and_null_components(tmp_path: Path) -> None:
    index = {"_class_name": "StableDiffusion3Pipeline", "text_encoder_3": [None, None],
             "vae": ["diffusers", "AutoencoderKL"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert local_class_name(str(tmp_path)) == "StableDiffusion3Pipeline"
    assert null_components(str(tmp_path)) == {"text_encoder_3": None}
    assert local_class_name("stabilityai/not-a-local-folder") is None
