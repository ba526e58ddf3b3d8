"""Edit inputs are untrusted: each bad image, mask or knob is refused with the field and the value, before
anything is decided, sent or recorded."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pixelroute import Client, MockBackend, ValidationError
from pixelroute._edit import MAX_INPUT_BYTES, MAX_INPUT_PIXELS, build_edit_request, load_input_image
from tests.fakeservers.providers import bomb_png


def encoded(image: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


RED = Image.new("RGB", (64, 48), (200, 30, 30))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_bytes_and_files_are_accepted(fmt: str, tmp_path: Path) -> None:
    data = encoded(RED, fmt)
    loaded = load_input_image(data, "image")
    assert loaded.size == (64, 48) and loaded.format == fmt.lower() and loaded.data == data
    path = tmp_path / f"in.{fmt.lower()}"
    path.write_bytes(data)
    assert load_input_image(path, "image").sha256 == loaded.sha256
    assert load_input_image(str(path), "image").mime == f"image/{fmt.lower()}"


def test_the_digest_is_of_the_pixels_whatever_form_they_came_in() -> None:
    assert load_input_image(RED, "image").sha256 == load_input_image(encoded(RED, "PNG"), "image").sha256
    assert load_input_image(RED, "image").sha256 != load_input_image(RED.rotate(90, expand=True), "image").sha256


@pytest.mark.parametrize(("value", "message"), [
    (b"<html>not an image</html>", "is not an acceptable PNG, JPEG or WebP image: it is not an image"),
    (encoded(RED, "GIF"), "must be a PNG, JPEG or WebP image but is GIF"),
    (encoded(RED, "BMP"), "but is BMP"),
    (encoded(RED, "PNG")[:60], "truncated or corrupt"),
    (bomb_png(7000, 7000), "image of 7000x7000 exceeds max_image_pixels=40000000"),
    (bomb_png(), "decompression bomb"),
    (42, "must be a PIL image, the bytes of a PNG, JPEG or WebP file, or a path to one, but is int"),
    (Image.new("RGB", (4, 64)), "`image` width must be between 8 and 16384 pixels but is 4"),
])
def test_bad_images_are_refused_naming_the_field(value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match="`image`") as err:
        load_input_image(value, "image")
    assert message in str(err.value) and err.value.field == "image"


def test_size_and_pixel_limits(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=f"at most {MAX_INPUT_BYTES:,} bytes"):
        load_input_image(b"\0" * (MAX_INPUT_BYTES + 1), "image")
    big = tmp_path / "big.png"
    with big.open("wb") as fh:
        fh.truncate(MAX_INPUT_BYTES + 1)
    with pytest.raises(ValidationError, match="at most"):
        load_input_image(big, "image")
    with pytest.raises(ValidationError, match=f"at most {MAX_INPUT_PIXELS:,} pixels"):
        load_input_image(Image.new("L", (8000, 6000)), "image")
    with pytest.raises(ValidationError, match="cannot be read") as err:
        load_input_image(tmp_path / "missing.png", "image")
    assert err.value.field == "image"


def test_the_mask_must_match_the_image_be_opaque_and_mark_something() -> None:
    with pytest.raises(ValidationError, match=r"`mask` must be the size of `image` \(64x48\) but is 32x32") as err:
        build_edit_request(RED, Image.new("L", (32, 32), 255), prompt="p")
    assert err.value.field == "mask"
    transparent = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
    transparent.putpixel((3, 3), (0, 0, 0, 0))
    with pytest.raises(ValidationError, match="transparent pixels"):
        build_edit_request(RED, transparent, prompt="p")
    with pytest.raises(ValidationError, match="entirely black"):
        build_edit_request(RED, Image.new("L", (64, 48), 0), prompt="p")
    ok = build_edit_request(RED, Image.new("RGBA", (64, 48), (255, 255, 255, 255)), prompt="p")
    assert ok.mask is not None and ok.mask.image.mode == "L" and ok.params()["masked"] is True


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_strength_outside_zero_to_one_is_refused(strength: float) -> None:
    with pytest.raises(ValidationError, match="`strength` must be greater than 0 and at most 1") as err:
        build_edit_request(RED, None, prompt="p", strength=strength)
    assert err.value.field == "strength"


def test_an_edit_keeps_the_input_size_unless_asked_and_knobs_are_checked_as_for_generations() -> None:
    req = build_edit_request(RED, None, prompt="p")
    assert req.size_or(1024, 1024) == (64, 48) and req.size_from_image and req.effective_strength == 0.8
    assert build_edit_request(RED, None, prompt="p", width=128, height=96).size_or(1, 1) == (128, 96)
    with pytest.raises(ValidationError, match="`prompt` must not be empty"):
        build_edit_request(RED, None, prompt=" ")
    with pytest.raises(ValidationError, match="`height` must be given together"):
        build_edit_request(RED, None, prompt="p", width=64)


def test_the_client_refuses_bad_inputs_before_deciding_or_recording(tmp_path: Path) -> None:
    store = tmp_path / "t.db"
    backend = MockBackend("m")
    with Client({"telemetry": {"store": f"sqlite:///{store}"}}, backends=[backend]) as client:
        with pytest.raises(ValidationError) as err:
            client.edit(b"junk", "p")
        assert err.value.field == "image"
        with pytest.raises(ValidationError) as err:
            client.edit(RED, "p", mask=Image.new("L", (10, 10), 255))
        assert err.value.field == "mask"
        assert backend.calls == 0
        assert client.recent_requests() == []


def test_a_local_backend_refuses_an_input_it_cannot_take_naming_the_image() -> None:
    odd = Image.new("RGB", (66, 48))  # not a multiple of the local pipeline's 8
    from pixelroute.backends.base import Capabilities

    backend = MockBackend("m", capabilities=Capabilities(size_multiple=8, operations=("generate", "edit")))
    with Client({"telemetry": {"enabled": False}}, backends=[backend]) as client:
        with pytest.raises(ValidationError, match="the input image's `width` must be a multiple of 8") as err:
            client.edit(odd, "p")
        assert err.value.field == "image" and "pass `width` and `height` to resize it" in str(err.value)
        assert client.edit(odd, "p", width=64, height=48).image.size == (64, 48)
