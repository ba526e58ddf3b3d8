"""Edits on the remote providers, checked on the exact wire bytes (multipart fields and file parts)."""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

import httpx
import pytest
from PIL import Image

from pixelroute._deadline import Deadline
from pixelroute._edit import EditRequest, build_edit_request
from pixelroute._errors import ConfigError, ContentRejected, ValidationError
from pixelroute.backends import _http, create_backend, settings_model
from pixelroute.backends._http import RemoteBackend
from pixelroute.backends._ideogram_v3 import image_weight
from tests._mock_transport import Recorder
from tests.fakeservers.providers import B64_PNG, PNG, png_bytes
from tests.test_remote_mapping import backend

KEYS = {"OPENAI_API_KEY": "sk-edit-0001", "STABILITY_API_KEY": "sk-edit-0002", "IDEOGRAM_API_KEY": "ideo-edit-3"}
INPUT = png_bytes(96, 64, (10, 120, 200))


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(_http, "_resolve_sync", lambda host, port: ["93.184.216.34"])  # no DNS here


def mask_png(size: tuple[int, int] = (96, 64), box: tuple[int, int, int, int] = (16, 16, 48, 48)) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def edit(image: bytes = INPUT, mask: bytes | None = None, **knobs: Any) -> EditRequest:
    return build_edit_request(image, mask, prompt="make the sky stormy", **knobs)


def parts(request: httpx.Request) -> dict[str, tuple[str | None, str | None, bytes]]:
    """Every multipart part: name -> (file name or None, content type or None, body)."""
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data"), ctype
    boundary = ctype.split("boundary=")[1].encode()
    out = {}
    for part in request.content.split(b"--" + boundary)[1:-1]:
        head, _, body = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        filename = re.search(rb'filename="([^"]*)"', head)
        ctype_part = re.search(rb"Content-Type: ([^\r\n]+)", head)
        assert name is not None
        out[name.group(1).decode()] = (filename.group(1).decode() if filename else None,
                                       ctype_part.group(1).decode() if ctype_part else None,
                                       body[:-2] if body.endswith(b"\r\n") else body)
    return out


def texts(request: httpx.Request) -> dict[str, str]:
    return {k: v.decode() for k, (filename, _, v) in parts(request).items() if filename is None}


def run(be: RemoteBackend, request: EditRequest) -> Any:
    try:
        return be.edit(request, Deadline(5))
    finally:
        be.close()


# -- OpenAI --------------------------------------------------------------------------------------


def openai_ok(request: httpx.Request) -> httpx.Response:
    n = int(texts(request)["n"])
    return httpx.Response(200, json={"created": 1, "data": [{"b64_json": B64_PNG}] * n})


def test_openai_edit_sends_multipart_image_and_transparent_mask() -> None:
    be, rec = backend("openai", openai_ok, quality="high", input_fidelity="high")
    out = run(be, edit(mask=mask_png(), n=2, width=1536, height=1024))
    sent = rec.last
    assert sent.url == "https://api.openai.com/v1/images/edits" and sent.method == "POST"
    assert sent.headers["authorization"] == "Bearer sk-edit-0001"
    assert texts(sent) == {"model": "gpt-image-1", "prompt": "make the sky stormy", "n": "2", "size": "1536x1024",
                           "quality": "high", "input_fidelity": "high"}
    got = parts(sent)
    assert got["image"] == ("image.png", "image/png", INPUT)  # the caller's own bytes, not re-encoded
    name, ctype, body = got["mask"]
    assert (name, ctype) == ("mask.png", "image/png")
    with Image.open(io.BytesIO(body)) as m:
        assert m.mode == "RGBA" and m.size == (96, 64)
        assert m.getpixel((20, 20))[3] == 0, "the area to repaint is fully transparent for OpenAI"
        assert m.getpixel((2, 2))[3] == 255, "the area to keep is opaque"
    assert len(out.images) == 2 and out.params["size"] == "1536x1024"


def test_openai_edit_without_size_asks_for_auto_and_sends_no_mask() -> None:
    be, rec = backend("openai", openai_ok)
    run(be, edit())  # 96x64 is no OpenAI size: the provider picks one
    assert texts(rec.last)["size"] == "auto" and "mask" not in parts(rec.last)


@pytest.mark.parametrize(("knobs", "field"), [({"strength": 0.5}, "strength"), ({"seed": 3}, "seed"),
                                               ({"steps": 10}, "steps"), ({"width": 1000, "height": 1000}, "width")])
def test_openai_edit_refuses_what_it_cannot_honour_before_sending(knobs: dict[str, Any], field: str) -> None:
    be, rec = backend("openai", openai_ok)
    with pytest.raises(ValidationError) as err:
        run(be, edit(**knobs))
    assert err.value.field == field and rec.requests == []


def test_openai_models_that_cannot_edit_say_so() -> None:
    be, rec = backend("openai", openai_ok, model="dall-e-3")
    assert be.operations == ("generate",)
    with pytest.raises(ValidationError, match="cannot edit images"):
        run(be, edit())
    assert rec.requests == []
    with pytest.raises(ValueError, match="input_fidelity"):
        settings_model("openai")(name="m", kind="openai", model="gpt-image-1-mini", input_fidelity="high")
    with pytest.raises(ConfigError, match="`operations` includes 'edit'"):
        backend("openai", openai_ok, model="dall-e-3", operations=["generate", "edit"])


def test_openai_edit_moderation_is_content_rejected() -> None:
    body = {"error": {"code": "moderation_blocked", "message": "Your request was rejected by the safety system."}}
    be, rec = backend("openai", httpx.Response(400, json=body))
    with pytest.raises(ContentRejected, match="safety system"):
        run(be, edit())
    assert len(rec.requests) == 1


def test_openai_async_edit_sends_the_same_request() -> None:
    sync_be, sync_rec = backend("openai", openai_ok)
    run(sync_be, edit(mask=mask_png()))
    rec = Recorder(openai_ok)
    be = create_backend(settings_model("openai")(name="a", kind="openai"), async_transport=httpx.MockTransport(rec))

    async def go() -> None:
        await be.aedit(edit(mask=mask_png()), Deadline(5))
        await be.aclose()

    asyncio.run(go())
    assert rec.last.url == sync_rec.last.url
    assert parts(rec.last) == parts(sync_rec.last)  # the same fields and the same file bytes


# -- Stability -----------------------------------------------------------------------------------


def stability_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=PNG, headers={"content-type": "image/png", "finish-reason": "SUCCESS",
                                                     "seed": "77"})


def test_stability_masked_edit_goes_to_inpaint_with_the_white_mask() -> None:
    be, rec = backend("stability", stability_ok, model="sd3.5-large", style_preset="photographic")
    out = run(be, edit(mask=mask_png(), seed=77, negative_prompt="blur"))
    sent = rec.last
    assert sent.url == "https://api.stability.ai/v2beta/stable-image/edit/inpaint"
    assert sent.headers["authorization"] == "Bearer sk-edit-0002" and sent.headers["accept"] == "image/*"
    assert texts(sent) == {"prompt": "make the sky stormy", "output_format": "png", "negative_prompt": "blur",
                           "seed": "77", "style_preset": "photographic"}
    got = parts(sent)
    assert got["image"] == ("image.png", "image/png", INPUT)
    with Image.open(io.BytesIO(got["mask"][2])) as m:
        assert m.mode == "L" and m.getpixel((20, 20)) == 255 and m.getpixel((2, 2)) == 0  # white = inpaint
    assert out.params["seed"] == 77


def test_stability_unmasked_edit_is_sd3_image_to_image_with_strength() -> None:
    be, rec = backend("stability", stability_ok, model="sd3.5-large-turbo")
    run(be, edit(strength=0.35, guidance=1.5))
    sent = rec.last
    assert sent.url.path == "/v2beta/stable-image/generate/sd3"
    assert texts(sent) == {"prompt": "make the sky stormy", "output_format": "png", "strength": "0.35",
                           "mode": "image-to-image", "model": "sd3.5-large-turbo", "cfg_scale": "1.5"}
    assert "aspect_ratio" not in texts(sent) and set(parts(sent)) == {"image", *texts(sent)}


def test_stability_ultra_edit_has_no_mode_and_default_strength() -> None:
    be, rec = backend("stability", stability_ok, model="ultra")
    run(be, edit())
    assert rec.last.url.path == "/v2beta/stable-image/generate/ultra"
    assert texts(rec.last) == {"prompt": "make the sky stormy", "output_format": "png", "strength": "0.8"}


@pytest.mark.parametrize(("model", "knobs", "field"), [
    ("core", {}, "mask"),                                   # core takes no image without a mask
    ("sd3.5-large", {"width": 128, "height": 64}, "width"),  # Stability picks the size
    ("sd3.5-large", {"mask": "m", "strength": 0.5}, "strength"),  # inpainting has no strength
    ("sd3.5-large", {"mask": "m", "guidance": 4.0}, "guidance"),
])
def test_stability_edit_refusals(model: str, knobs: dict[str, Any], field: str) -> None:
    if knobs.get("mask") == "m":
        knobs = {**knobs, "mask": mask_png()}
    be, rec = backend("stability", stability_ok, model=model)
    with pytest.raises(ValidationError) as err:
        run(be, edit(**knobs))
    assert err.value.field == field and rec.requests == []


def test_stability_refuses_inputs_below_its_pixel_minimum() -> None:
    be, rec = backend("stability", stability_ok)
    with pytest.raises(ValidationError, match="at least 64 px") as err:
        run(be, edit(image=png_bytes(48, 48)))
    assert err.value.field == "image" and rec.requests == []


def test_stability_filtered_edit_is_content_rejected_and_billed() -> None:
    filtered = {"content-type": "image/png", "finish-reason": "CONTENT_FILTERED"}
    answer = httpx.Response(200, content=PNG, headers=filtered)
    be, _ = backend("stability", answer)
    with pytest.raises(ContentRejected) as err:
        run(be, edit(mask=mask_png()))
    assert err.value.cost_usd == pytest.approx(be.price.per_image)  # type: ignore[attr-defined]


# -- Ideogram ------------------------------------------------------------------------------------


def ideogram_ok(request: httpx.Request) -> httpx.Response:
    if request.method == "GET":
        return httpx.Response(200, content=PNG)
    n = int(texts(request).get("num_images", "1"))
    item = {"url": "https://ideogram.ai/api/images/ephemeral/e.png", "is_image_safe": True, "seed": 4,
            "resolution": "96x64", "prompt": "p"}
    return httpx.Response(200, json={"created": "t", "data": [item] * n})


def test_ideogram_masked_edit_is_v3_inpaint_with_an_inverted_mask() -> None:
    be, rec = backend("ideogram", ideogram_ok, model="V_3", rendering_speed="TURBO")
    out = run(be, edit(mask=mask_png(), n=2, seed=4))
    post = rec.requests[0]
    assert post.url == "https://api.ideogram.ai/v1/ideogram-v3/inpaint" and post.headers["api-key"] == "ideo-edit-3"
    assert texts(post) == {"prompt": "make the sky stormy", "rendering_speed": "TURBO", "num_images": "2",
                           "seed": "4", "magic_prompt": "OFF"}
    with Image.open(io.BytesIO(parts(post)["mask"][2])) as m:
        assert m.getpixel((20, 20)) == 0 and m.getpixel((2, 2)) == 255  # Ideogram edits the black area
    assert parts(post)["image"][2] == INPUT
    assert len(out.images) == 2 and all("api-key" not in r.headers for r in rec.requests[1:])


def test_ideogram_unmasked_edit_is_remix_with_image_weight() -> None:
    be, rec = backend("ideogram", ideogram_ok, model="V_3")
    run(be, edit(strength=0.3, negative_prompt="rain"))
    post = rec.requests[0]
    assert post.url.path == "/v1/ideogram-v3/remix"
    assert texts(post) == {"prompt": "make the sky stormy", "aspect_ratio": "3x2", "rendering_speed": "DEFAULT",
                           "num_images": "1", "negative_prompt": "rain", "magic_prompt": "OFF", "image_weight": "70"}
    assert image_weight(1.0) == 1 and image_weight(0.5) == 50


def test_ideogram_legacy_models_cannot_edit_and_inpainting_refuses_what_it_lacks() -> None:
    legacy, _ = backend("ideogram", ideogram_ok, model="V_2")
    assert legacy.operations == ("generate",)
    be, rec = backend("ideogram", ideogram_ok, model="V_3")
    with pytest.raises(ValidationError) as err:
        run(be, edit(mask=mask_png(), negative_prompt="x"))
    assert err.value.field == "negative_prompt"
    with pytest.raises(ValidationError) as err:
        run(be, edit(mask=mask_png(), strength=0.5))
    assert err.value.field == "strength" and rec.requests == []


def test_ideogram_unsafe_edit_is_content_rejected() -> None:
    body = {"created": "t", "data": [{"url": None, "is_image_safe": False, "seed": 1}]}
    be, _ = backend("ideogram", httpx.Response(200, json=body), model="V_3")
    with pytest.raises(ContentRejected):
        run(be, edit(mask=mask_png()))


def test_describe_lists_operations_for_the_router() -> None:
    be, _ = backend("stability", stability_ok)
    assert be.describe()["operations"] == ["generate", "edit"]
    assert json.loads(json.dumps(be.describe()))["operations"] == ["generate", "edit"]
