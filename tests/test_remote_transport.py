"""How the drivers use the pooled transport: one retry schedule over every attempt, default
headers kept, and no cookie jar (a provider's or a result host's cookies are never sent back)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pixelroute._deadline import Deadline
from pixelroute._errors import ContentRejected, ServerError
from pixelroute._types import GenerateRequest
from pixelroute.backends import create_backend, settings_model
from pixelroute.backends._http import RemoteBackend
from tests.fakeservers.providers import B64_PNG

BASE_S = 0.2  # retry_base_s: backoff base * 2**(n-1) plus jitter in [0, base]


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"created": 1, "data": [{"b64_json": B64_PNG}]})


def scripted(*answers: httpx.Response) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    """A handler giving ``answers`` in turn, then 200 with an image; and the requests it saw."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return queue.pop(0) if queue else ok(request)

    return handler, seen


def openai(handler: Callable[[httpx.Request], httpx.Response], mode: str,
           sleeps: list[float], **settings: Any) -> RemoteBackend:
    model = settings_model("openai")(name="openai-t", kind="openai", api_key_env=None,
                                     retry_base_s=BASE_S, **settings)
    transport = {"transport": httpx.MockTransport(handler)} if mode == "sync" else {
        "async_transport": httpx.MockTransport(handler)}
    be = create_backend(model, sleep=sleeps.append, **transport)
    assert isinstance(be, RemoteBackend)
    return be


def generate(be: RemoteBackend, mode: str) -> Any:
    request = GenerateRequest(prompt="a lighthouse")
    if mode == "sync":
        try:
            return be.generate(request, Deadline(30))
        finally:
            be.close()

    async def go() -> Any:
        try:
            return await be.agenerate(request, Deadline(30))
        finally:
            await be.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_retries_follow_one_backoff_schedule_from_the_first_failure(mode: str) -> None:
    handler, seen = scripted(httpx.Response(503), httpx.Response(502), httpx.Response(500))
    sleeps: list[float] = []
    out = generate(openai(handler, mode, sleeps, max_retries=3), mode)
    assert len(seen) == 4 and out.extra["retries"] == 3
    # attempt n waits base * 2**(n-1) + jitter in [0, base]: the first failure counts as attempt 1
    for n, slept in enumerate(sleeps, start=1):
        assert BASE_S * 2 ** (n - 1) <= slept <= BASE_S * 2 ** (n - 1) + BASE_S, sleeps


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_retries_stop_after_max_retries_with_the_last_error(mode: str) -> None:
    handler, seen = scripted(*[httpx.Response(503, json={"error": {"message": f"down {i}"}}) for i in range(5)])
    sleeps: list[float] = []
    with pytest.raises(ServerError, match="down 2"):
        generate(openai(handler, mode, sleeps, max_retries=2), mode)
    assert len(seen) == 3 and len(sleeps) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_retry_after_on_the_first_answer_sets_the_first_sleep(mode: str) -> None:
    handler, seen = scripted(httpx.Response(429, headers={"Retry-After": "1.5"}))
    sleeps: list[float] = []
    out = generate(openai(handler, mode, sleeps), mode)
    assert sleeps == [1.5] and len(seen) == 2 and out.extra["retries"] == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_no_retry_without_retries_or_for_content_rejections(mode: str) -> None:
    handler, seen = scripted(httpx.Response(503))
    sleeps: list[float] = []
    with pytest.raises(ServerError):
        generate(openai(handler, mode, sleeps, max_retries=0), mode)
    assert len(seen) == 1 and sleeps == []

    blocked = httpx.Response(400, json={"error": {"code": "moderation_blocked", "message": "blocked"}})
    handler, seen = scripted(blocked)
    with pytest.raises(ContentRejected):
        generate(openai(handler, mode, sleeps, max_retries=3), mode)
    assert len(seen) == 1 and sleeps == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_default_headers_are_sent_and_cookies_never_come_back(mode: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(200, headers={"Set-Cookie": "session=tracking-1; Path=/"},
                              json={"created": 1, "data": [{"b64_json": B64_PNG}]})

    sleeps: list[float] = []
    be = openai(handler, mode, sleeps)
    request = GenerateRequest(prompt="a lighthouse")

    if mode == "sync":
        be.generate(request, Deadline(5))
        be.generate(request, Deadline(5))
        be.close()
    else:
        async def twice() -> None:
            await be.agenerate(request, Deadline(5))
            await be.agenerate(request, Deadline(5))
            await be.aclose()

        asyncio.run(twice())
    assert len(seen) == 2
    for request_seen in seen:
        assert "cookie" not in request_seen.headers
        assert request_seen.headers["user-agent"].startswith("python-httpx/")
        assert request_seen.headers["content-type"] == "application/json"
        assert json.loads(request_seen.content)["prompt"] == "a lighthouse"
        assert request_seen.extensions["timeout"]["read"] is not None


# -- the deadline clamp under the sync pool (sdk/backends/_http_deadline.py) ---------------------


@pytest.mark.parametrize(("deadline_s", "timeout"), [(None, None), (None, 5.0), (30.0, None), (30.0, 5.0)])
def test_the_deadline_clamp_passes_unbounded_reads_through(deadline_s: float | None, timeout: float | None) -> None:
    from pixelroute.backends import _http_deadline as io_deadline
    from tests.fakeservers import FakeServer, Response

    with FakeServer() as server:
        server.route("GET", "/ping", lambda req: Response(json={"ok": True}))
        transport = httpx.HTTPTransport()
        assert io_deadline.install(transport) and io_deadline.install(transport)  # idempotent
        with httpx.Client(transport=transport) as client:
            outer = io_deadline.bind(Deadline(deadline_s))  # no deadline and no timeout: block as asked
            try:
                assert client.get(server.url + "/ping", timeout=timeout).json() == {"ok": True}
            finally:
                io_deadline.bind(outer)


def test_the_deadline_clamp_is_only_installed_under_an_httpcore_pool() -> None:
    from pixelroute.backends import _http_deadline as io_deadline

    assert not io_deadline.install(httpx.MockTransport(ok))
