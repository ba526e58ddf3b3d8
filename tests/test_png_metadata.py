"""PNG text-chunk metadata: atomic write, round trip, A1111-style parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pixelroute._errors import ValidationError
from pixelroute._png import read_png_metadata, save_png

META = {
    "request_id": "0190-abc",
    "prompt": "a red bicycle, against a glass wall",
    "negative_prompt": "blurry",
    "backend": "local-fast",
    "model": "/cache/tiny/sd15-fast",
    "router_version": "cold-start",
    "params": {"width": 64, "height": 64, "steps": 2, "guidance": 7.5, "seed": 7,
               "scheduler": "DDIMScheduler"},
    "seed": 7,
}


def test_round_trip_keeps_every_field_and_pixels(tmp_path: Path) -> None:
    image = Image.new("RGB", (64, 64), (10, 200, 30))
    path = save_png(image, tmp_path / "out" / "bike.png", META)
    assert read_png_metadata(path) == META
    with Image.open(path) as back:
        assert back.getpixel((5, 5)) == (10, 200, 30)
        params = back.text["parameters"]
    assert params.splitlines()[0] == META["prompt"]
    assert "Negative prompt: blurry" in params
    assert "Steps: 2" in params and "Seed: 7" in params and "Size: 64x64" in params
    assert [p.name for p in path.parent.iterdir()] == ["bike.png"]  # no temp file left behind


def test_foreign_png_gives_parameters_only_and_bad_input_is_named(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert read_png_metadata(plain) == {}
    with pytest.raises(ValidationError, match="`path`"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "x.jpg", META)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValidationError, match="not a readable PNG"):
        read_png_metadata(tmp_path / "junk.png")
