"""The gateway's OpenAI parity under a real uvicorn server, driven by the official `openai` client (sync and
async): streaming with partial images, retry headers, `GET /v1/models/{id}`, variations, the size rule."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _tiny_fixtures import tiny_models  # noqa: F401  (session fixture)
from PIL import Image

from pixelroute import AsyncClient, Capabilities, MockBackend
from pixelroute._config import load_settings
from pixelroute.gateway import create_app
from tests.test_gateway_server import KEY, ThreadedServer, gateway_settings


def png_size(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


class CountingApp:
    """The gateway app, counting the POSTs it is sent (what a retrying client costs)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.posts: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.posts.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
def local_gateway(tmp_path: Path, tiny_models: dict[str, Path]) -> Iterator[str]:  # noqa: F811
    settings = gateway_settings(tmp_path)
    settings["backends"] = [{"name": "tiny", "kind": "diffusers", "model": str(tiny_models["sd15"]),
                             "device": "cpu"}, *settings["backends"]]
    server = ThreadedServer(create_app(settings, api_key=KEY)).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[str, CountingApp]]:
    app = CountingApp(create_app(gateway_settings(tmp_path), api_key=KEY))
    server = ThreadedServer(app).start()
    try:
        yield server.url, app
    finally:
        server.stop()


def test_sync_client_streams_partial_images_from_a_local_pipeline(local_gateway: str) -> None:
    with openai.OpenAI(base_url=f"{local_gateway}/v1", api_key=KEY, max_retries=0, timeout=60) as oai:
        stream = oai.images.generate(model="tiny", prompt="a red bicycle", size="64x64", stream=True,
                                     partial_images=2, extra_body={"steps": 4, "seed": 7})
        events = list(stream)
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.partial_image",
                                        "image_generation.completed"]
    assert [getattr(e, "partial_image_index", None) for e in events] == [0, 1, None]
    assert all(png_size(e.b64_json) == (64, 64) and e.size == "64x64" and e.output_format == "png" for e in events)
    completed = events[-1]
    assert (completed.model_extra or {})["backend"] == "tiny" and completed.usage.total_tokens == 0


def test_async_client_streams_and_generates(local_gateway: str) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=f"{local_gateway}/v1", api_key=KEY, max_retries=0,
                                      timeout=60) as oai:
            stream = await oai.images.generate(model="tiny", prompt="a cat", size="64x64", stream=True,
                                               partial_images=1, extra_body={"steps": 3})
            types = [e.type async for e in stream]
            assert types == ["image_generation.partial_image", "image_generation.completed"]
            plain = await oai.images.generate(model="auto", prompt="a cat", size="64x64",
                                              extra_body={"sla": {"deadline_s": 10}})
            assert plain.data and png_size(plain.data[0].b64_json or "") == (64, 64)

    asyncio.run(main())


def test_remote_like_backends_stream_one_completed_event_per_image(tmp_path: Path) -> None:
    server = ThreadedServer(create_app(gateway_settings(tmp_path), api_key=KEY)).start()
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as oai:
            events = list(oai.images.generate(model="mock-a", prompt="x", size="64x64", n=2, stream=True,
                                              partial_images=3))
        # a backend that makes no partial images sends none, as OpenAI's semantics allow
        assert [(e.type, (e.model_extra or {})["image_index"]) for e in events] == [
            ("image_generation.completed", 0), ("image_generation.completed", 1)]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
            r = http.post("/v1/images/generations", json={"prompt": "x", "size": "64x64", "model": "mock-b",
                                                          "stream": True, "progress_events": True})
        assert r.headers["content-type"].startswith("text/event-stream")
        names = [line.removeprefix("event: ") for line in r.text.splitlines() if line.startswith("event: ")]
        assert names == ["pixelroute.decided", "pixelroute.attempt_started", "pixelroute.done",
                         "image_generation.completed"]
        assert r.headers["x-pixelroute-request-id"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"stream": True, "partial_images": 4}, "partial_images"),
        ({"stream": True, "partial_images": "2"}, "partial_images"),
        ({"partial_images": 2}, "partial_images"),
        ({"stream": "yes"}, "stream"),
        ({"progress_events": True}, "progress_events"),
        ({"stream": True, "progress_events": 1}, "progress_events"),
    ],
)
def test_stream_options_are_refused_by_name(counted: tuple[str, CountingApp], body: dict[str, Any],
                                            param: str) -> None:
    url, _ = counted
    r = httpx.post(f"{url}/v1/images/generations", json={"prompt": "x", "size": "64x64", **body},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert r.headers["x-should-retry"] == "false"


def test_routing_errors_keep_their_status_and_late_errors_arrive_as_events(counted: tuple[str, CountingApp]) -> None:
    url, _ = counted
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30) as oai:
        with pytest.raises(openai.UnprocessableEntityError):  # refused before the stream starts
            oai.images.generate(model="auto", prompt="x", size="64x64", stream=True,
                                extra_body={"sla": {"max_cost_usd": 0.001}})
        stream = oai.images.generate(model="slow", prompt="x", size="64x64", stream=True,
                                     extra_body={"sla": {"deadline_s": 0.3}})
        with pytest.raises(openai.APIError) as info:  # decided, then the deadline passed mid-stream
            list(stream)
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "timeout"


def test_a_missed_deadline_is_not_retried_by_the_official_client(counted: tuple[str, CountingApp]) -> None:
    url, app = counted
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=2, timeout=30) as oai, \
            pytest.raises(openai.InternalServerError) as info:
        oai.images.generate(model="slow", prompt="x", size="64x64", extra_body={"sla": {"deadline_s": 0.3}})
    assert info.value.status_code == 504 and info.value.response.headers["x-should-retry"] == "false"
    assert app.posts == ["/v1/images/generations"]  # one POST, one charge: not three


def test_a_rate_limit_says_retry(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)
    settings["backends"].append({"name": "limited", "kind": "mock", "failure": "rate_limited"})
    server = ThreadedServer(create_app(settings, api_key=KEY)).start()
    try:
        r = httpx.post(f"{server.url}/v1/images/generations", json={"prompt": "x", "model": "limited"},
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert (r.status_code, r.headers["x-should-retry"]) == (429, "true")
    finally:
        server.stop()


def test_models_by_id_and_variations(counted: tuple[str, CountingApp]) -> None:
    url, _ = counted
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30) as oai:
        assert oai.models.retrieve("mock-a").id == "mock-a"
        assert oai.models.retrieve("auto").owned_by == "pixelroute"
        with pytest.raises(openai.NotFoundError) as missing:
            oai.models.retrieve("dall-e-2")
        assert isinstance(missing.value.body, dict) and missing.value.body["code"] == "model_not_found"
        assert missing.value.body["param"] == "model" and "mock-a" in missing.value.body["message"]
        buf = io.BytesIO()
        Image.new("RGB", (64, 64)).save(buf, format="PNG")
        # this client version marks variations deprecated; the gateway must still answer it clearly
        with pytest.warns(DeprecationWarning), pytest.raises(openai.BadRequestError) as refused:
            oai.images.create_variation(image=("in.png", buf.getvalue(), "image/png"), model="auto")
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "unsupported" and "variations" in body["message"]
    assert "mock-a" in body["message"]


def limited(name: str, side: int) -> MockBackend:
    return MockBackend(name, capabilities=Capabilities(max_width=side, max_height=side, default_width=64,
                                                       default_height=64))


def test_auto_routes_a_size_to_the_backend_that_takes_it_or_names_every_limit(tmp_path: Path) -> None:
    settings = load_settings({"telemetry": {"store": f"sqlite:///{tmp_path / 'size.db'}"},
                              "router": {"exploration": 0.0}})
    aclient = AsyncClient(settings, backends=[limited("small-a", 512), limited("small-b", 768),
                                              limited("large", 2048)])
    server = ThreadedServer(create_app(client=aclient, api_key=KEY)).start()
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=30) as oai:
            raw = oai.images.with_raw_response.generate(model="auto", prompt="x", size="1024x1024")
            assert raw.headers["x-pixelroute-backend"] == "large"
            with pytest.raises(openai.BadRequestError) as info:
                oai.images.generate(model="auto", prompt="x", size="4096x4096")
        body = info.value.body
        assert isinstance(body, dict) and body["param"] == "size"
        for name, side in (("small-a", 512), ("small-b", 768), ("large", 2048)):
            assert f"at most {side} for backend `{name}`" in body["message"]
    finally:
        server.stop()
        asyncio.run(aclient.aclose())


def test_a_client_that_leaves_a_stream_cancels_the_generation(tmp_path: Path) -> None:
    import threading

    from pixelroute import BackendOutput

    started, cancelled = threading.Event(), threading.Event()

    async def stall(request: Any, deadline: Any) -> BackendOutput:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("never cancelled")

    settings = load_settings({"telemetry": {"store": f"sqlite:///{tmp_path / 'leave.db'}"}})
    aclient = AsyncClient(settings, backends=[MockBackend("stall", stall)])
    server = ThreadedServer(create_app(client=aclient, api_key=KEY)).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http, \
                http.stream("POST", "/v1/images/generations",
                            json={"prompt": "x", "stream": True, "progress_events": True}) as r:
            first = next(r.iter_lines())
            assert first == "event: pixelroute.decided" and started.wait(10)
        # the connection is closed here, mid-generation
        assert cancelled.wait(10), "the generation must stop when its client goes away"
    finally:
        server.stop()
        asyncio.run(aclient.aclose())
