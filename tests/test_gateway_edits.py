"""`POST /v1/images/edits` under a real uvicorn server, driven by the official `openai` client (sync and async):
routing among backends that edit, OpenAI's mask convention, streaming partial images, errors naming the field."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from _tiny_fixtures import tiny_models  # noqa: F401  (session fixture, for local_gateway)
from PIL import Image

from pixelroute.gateway import create_app
from tests.test_gateway_server import KEY, ThreadedServer, gateway_settings
from tests.test_gateway_stream import local_gateway  # noqa: F401  (a tiny pipeline beside the mocks)


def png(size: tuple[int, int] = (64, 64), mode: str = "RGB", color: object = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")  # type: ignore[arg-type]
    return buf.getvalue()


def openai_mask(size: tuple[int, int] = (64, 64)) -> bytes:
    """OpenAI's convention: opaque everywhere but the left half, transparent = the area to edit."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def decoded(b64: str | None) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64 or ""))).convert("RGB")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    settings = gateway_settings(tmp_path)
    settings["backends"].append({"name": "text-only", "kind": "mock", "operations": ["generate"],
                                 "price": {"per_image": 0.001}})
    server = ThreadedServer(create_app(settings, api_key=KEY)).start()
    try:
        yield server.url
    finally:
        server.stop()


def test_sync_client_edits_inside_an_openai_mask_and_routes_among_editors(gateway: str) -> None:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0, timeout=30) as oai:
        raw = oai.images.with_raw_response.edit(
            image=("in.png", png(), "image/png"), mask=("mask.png", openai_mask(), "image/png"),
            prompt="a blue door", model="auto", extra_body={"seed": 3, "strength": 0.9})
        result = raw.parse()
        # the cheapest backend cannot edit: an edit never reaches it
        assert raw.headers["x-pixelroute-backend"] != "text-only"
        out = decoded(result.data[0].b64_json if result.data else None)
        assert out.size == (64, 64)
        # the mock repaints the masked (transparent) left half and keeps the right half
        assert out.getpixel((48, 32)) == (200, 30, 30) and out.getpixel((8, 32)) != (200, 30, 30)
        pinned = oai.images.with_raw_response.edit(image=("in.png", png(), "image/png"), prompt="x",
                                                   model="mock-b")
        assert pinned.headers["x-pixelroute-backend"] == "mock-b"
        with pytest.raises(openai.BadRequestError) as refused:
            oai.images.edit(image=("in.png", png(), "image/png"), prompt="x", model="text-only")
    assert isinstance(refused.value.body, dict) and "edit" in refused.value.body["message"]


def test_async_client_edits_with_the_sla_from_headers(gateway: str) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0, timeout=30) as oai:
            result = await oai.images.edit(image=("in.png", png(), "image/png"), prompt="x", model="auto",
                                           size="64x64", extra_headers={"X-Pixelroute-Max-Cost": "0.05"})
            assert result.data and decoded(result.data[0].b64_json).size == (64, 64)
            with pytest.raises(openai.UnprocessableEntityError):  # no editor fits the cost cap
                await oai.images.edit(image=("in.png", png(), "image/png"), prompt="x",
                                      extra_headers={"X-Pixelroute-Max-Cost": "0.005"})

    asyncio.run(main())


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ({"image": ("in.png", b"not an image", "image/png")}, {"prompt": "x"}, "image"),
        ({"image": ("in.png", png(), "image/png"), "mask": ("m.png", openai_mask((32, 32)), "image/png")},
         {"prompt": "x"}, "mask"),
        ({"image": ("in.png", png(), "image/png"), "mask": ("m.png", png(mode="L", color=255), "image/png")},
         {"prompt": "x"}, "mask"),
        ({"mask": ("m.png", openai_mask(), "image/png")}, {"prompt": "x"}, "image"),
        ({"image": ("in.png", png(), "image/png")}, {"prompt": "x", "strength": "lots"}, "strength"),
        ({"image": ("in.png", png(), "image/png")}, {"prompt": "x", "strength": "1.5"}, "strength"),
        ({"image": ("in.png", png(), "image/png")}, {"prompt": "x", "response_format": "url"}, "response_format"),
        ({"image": ("in.png", png(), "image/png")}, {"prompt": "x", "model": "dall-e-2"}, "model"),
        ({"image": ("in.png", png(), "image/png")}, {"prompt": "x", "partial_images": "2"}, "partial_images"),
    ],
)
def test_bad_edits_are_400s_naming_the_field(gateway: str, files: dict[str, object], data: dict[str, str],
                                             param: str) -> None:
    r = httpx.post(f"{gateway}/v1/images/edits", files=files, data=data,
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.headers["x-should-retry"] == "false"


def test_several_images_and_oversized_bodies_are_refused(gateway: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0, timeout=30) as oai, \
            pytest.raises(openai.BadRequestError) as several:
        oai.images.edit(image=[("a.png", png(), "image/png"), ("b.png", png(), "image/png")], prompt="x")
    assert isinstance(several.value.body, dict) and several.value.body["param"] == "image"
    # a declared 1 GB body is refused before any of it is sent (so a raw socket, not httpx, which sends it)
    host, port = gateway.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /v1/images/edits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n".encode())
        answer = ""
        while "}}" not in answer and (chunk := sock.recv(65536)):  # the headers, then the JSON body
            answer += chunk.decode()
    assert answer.startswith("HTTP/1.1 413") and "payload_too_large" in answer
    r = httpx.post(f"{gateway}/v1/images/edits", json={"prompt": "x"}, headers=auth, timeout=30)
    assert (r.status_code, r.json()["error"]["param"]) == (400, "Content-Type")


def test_sync_and_async_clients_stream_partial_edits_from_a_local_pipeline(local_gateway: str) -> None:  # noqa: F811
    with openai.OpenAI(base_url=f"{local_gateway}/v1", api_key=KEY, max_retries=0, timeout=60) as oai:
        events = list(oai.images.edit(image=("in.png", png(), "image/png"), prompt="a blue door", model="tiny",
                                      stream=True, partial_images=2, extra_body={"steps": 4, "seed": 7}))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.partial_image",
                                        "image_edit.completed"]
    assert all(decoded(e.b64_json).size == (64, 64) for e in events)
    assert (events[-1].model_extra or {})["backend"] == "tiny"

    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{local_gateway}/v1", api_key=KEY, max_retries=0,
                                      timeout=60) as aoai:
            stream = await aoai.images.edit(image=("in.png", png(), "image/png"), prompt="x", model="tiny", stream=True,
                                            mask=("m.png", openai_mask(), "image/png"), partial_images=1,
                                            extra_body={"steps": 3})
            return [e.type async for e in stream]

    assert asyncio.run(main()) == ["image_edit.partial_image", "image_edit.completed"]
