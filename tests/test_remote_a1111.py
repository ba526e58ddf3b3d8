"""AUTOMATIC1111: an abandoned attempt POSTs /sdapi/v1/interrupt so the server stops computing.

Against a real local server whose txt2img blocks until interrupted (as the webui's does), sync and
async: the deadline passing, the attempt's cancel token firing, an asyncio task cancelled, and a
hedge race lost inside ``Client.generate``. The attempt still ends by ``deadline + 100 ms``: the
interrupt runs in the background and ``close()`` / ``aclose()`` wait for it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pixelroute import SLA, AsyncClient, Client, MockBackend, Price
from pixelroute._config import load_settings
from pixelroute._deadline import CancelToken, Deadline
from pixelroute._errors import Cancelled, DeadlineExceeded, PixelrouteError
from pixelroute._types import GenerateRequest
from pixelroute.backends import create_backend, settings_model
from pixelroute.backends.a1111 import INTERRUPT_PATH, A1111Backend
from pixelroute.backends.base import BackendSettings
from tests.fakeservers import FakeServer, delay
from tests.fakeservers import providers as fake

SLACK_S = 0.1  # the remote contract: a call ends by deadline + 100 ms
REQUEST = GenerateRequest(prompt="a lighthouse", width=64, height=64, n=2)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def webui(server: FakeServer) -> fake.A1111Interruptible:
    return fake.A1111Interruptible(server, run_s=3.0)


def make(server: FakeServer, **settings: Any) -> A1111Backend:
    options: dict[str, Any] = {"base_url": server.url, "retry_base_s": 0.01, **settings}
    be = create_backend(settings_model("a1111")(name="webui", kind="a1111", **options))
    assert isinstance(be, A1111Backend)
    return be


def run(be: A1111Backend, mode: str, deadline: Deadline) -> tuple[Any, float]:
    """One generate in ``mode``, then close the backend; the output or the error, and the seconds to it."""

    async def run_async() -> tuple[Any, float]:
        start = time.monotonic()
        try:
            return await be.agenerate(REQUEST, deadline), time.monotonic() - start
        except PixelrouteError as exc:
            return exc, time.monotonic() - start
        finally:
            await be.aclose()

    if mode == "async":
        return asyncio.run(run_async())
    start = time.monotonic()
    try:
        return be.generate(REQUEST, deadline), time.monotonic() - start
    except PixelrouteError as exc:
        return exc, time.monotonic() - start
    finally:
        be.close()


def cancel_when_started(webui: fake.A1111Interruptible, token: CancelToken) -> threading.Thread:
    def cancel() -> None:
        assert webui.started.wait(5), "txt2img never reached the server"
        token.cancel()

    thread = threading.Thread(target=cancel)
    thread.start()
    return thread


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_deadline_passing_interrupts_the_server(
    server: FakeServer, webui: fake.A1111Interruptible, mode: str
) -> None:
    webui.interrupt_answer_s = 1.5  # a busy webui: the caller must not wait for this answer ...
    started = time.monotonic()
    out, elapsed = run(make(server, interrupt_grace_s=3.0), mode, Deadline(1.0))  # ... but close() does
    assert isinstance(out, DeadlineExceeded)
    # orderings, not a wall-clock bound (the box may be loaded): the call ended before the server
    # answered the interrupt, and long before the run it stopped would have finished
    assert started + elapsed < webui.interrupts_answered[0] and elapsed < webui.run_s
    assert webui.interrupt.is_set()  # close() waited for the background POST
    assert [r.path for r in server.requests] == ["/sdapi/v1/txt2img", INTERRUPT_PATH]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cancel_token_interrupts_and_the_partial_images_are_refused(
    server: FakeServer, webui: fake.A1111Interruptible, mode: str
) -> None:
    token = CancelToken()
    canceller = cancel_when_started(webui, token)
    out, elapsed = run(make(server), mode, Deadline(10, cancel=token))
    canceller.join()
    # the webui answered 200 with one image made so far; that is not a result
    assert isinstance(out, Cancelled), out
    assert elapsed < webui.run_s  # the server stopped computing when told to
    assert server.count("POST", INTERRUPT_PATH) == 1


def test_an_async_attempt_cancelled_as_a_task_interrupts(
    server: FakeServer, webui: fake.A1111Interruptible
) -> None:
    be = make(server)

    async def main() -> None:
        task = asyncio.ensure_future(be.agenerate(REQUEST, Deadline(10)))
        while not webui.started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()  # what the async engine does to a hedge race's loser
        with pytest.raises(asyncio.CancelledError):
            await task
        await be.aclose()

    asyncio.run(main())
    assert webui.interrupts and server.count("POST", INTERRUPT_PATH) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_finished_attempt_never_interrupts(server: FakeServer, mode: str) -> None:
    webui = fake.A1111Interruptible(server, run_s=0.0)
    token = CancelToken()
    out, _ = run(make(server), mode, Deadline(5, cancel=token))
    assert len(out.images) == 2
    token.cancel()  # too late to matter: the job is done, and another client's may be running
    assert server.count("POST", INTERRUPT_PATH) == 0
    assert not webui.interrupts


def test_a_request_that_never_left_does_not_interrupt(server: FakeServer, webui: fake.A1111Interruptible) -> None:
    token = CancelToken()
    token.cancel()
    out, _ = run(make(server), "sync", Deadline(5, cancel=token))
    assert isinstance(out, Cancelled)
    assert server.requests == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_interrupt_can_be_turned_off_for_a_shared_server(
    server: FakeServer, webui: fake.A1111Interruptible, mode: str
) -> None:
    webui.run_s = 0.6
    out, _ = run(make(server, interrupt_on_abandon=False), mode, Deadline(0.3))
    assert isinstance(out, DeadlineExceeded)
    assert server.count("POST", INTERRUPT_PATH) == 0


def test_the_interrupt_carries_the_basic_auth(
    server: FakeServer, webui: fake.A1111Interruptible, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("A1111_AUTH", "user:pass")
    out, _ = run(make(server, api_key_env="A1111_AUTH"), "sync", Deadline(0.3))
    assert isinstance(out, DeadlineExceeded)
    interrupt = [r for r in server.requests if r.path == INTERRUPT_PATH]
    assert interrupt[0].headers["authorization"] == "Basic " + base64.b64encode(b"user:pass").decode()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failed_interrupt_is_logged_and_the_deadline_error_stands(
    server: FakeServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    route = fake.install_a1111(server)  # an older build without the interrupt route: 404
    server.always(*route, delay(0.6))
    with caplog.at_level(logging.INFO, logger="pixelroute.backends"):
        out, elapsed = run(make(server), mode, Deadline(0.3))
    assert isinstance(out, DeadlineExceeded)
    assert elapsed <= 0.3 + SLACK_S
    assert server.count("POST", INTERRUPT_PATH) == 1
    assert any(f"best-effort POST {INTERRUPT_PATH} failed" in r.getMessage() for r in caplog.records)


# -- inside Client.generate: the A1111 primary loses a hedge race ------------------------------


def hedge_backends(server: FakeServer) -> list[Any]:
    primary = make(server, price={"per_image": 0.001}, typical_latency_s=0.05)
    hedge_settings = BackendSettings(
        name="hedge", kind="mock", price=Price(per_image=0.05), typical_latency_s=0.05
    )
    return [primary, MockBackend("hedge", settings=hedge_settings)]


def hedge_settings() -> Any:
    return load_settings({"router": {"exploration": 0.0}, "execution": {"cascade": False}})


def test_a_lost_hedge_race_interrupts_the_webui(
    server: FakeServer, webui: fake.A1111Interruptible, tmp_path: Path
) -> None:
    backends = hedge_backends(server)
    with Client(hedge_settings(), backends=backends, store=f"sqlite:///{tmp_path / 'h.db'}") as client:
        r = client.generate("x", sla=SLA(deadline_s=5, hedge=True), width=64, height=64)
        assert r.backend == "hedge"
        assert r.trace["hedge"]["primary"] == "webui"
        assert webui.interrupt.wait(2), "the losing A1111 attempt must interrupt the server"
    assert server.count("POST", INTERRUPT_PATH) == 1


def test_a_lost_async_hedge_race_interrupts_the_webui(
    server: FakeServer, webui: fake.A1111Interruptible, tmp_path: Path
) -> None:
    backends = hedge_backends(server)

    async def main() -> str:
        async with AsyncClient(hedge_settings(), backends=backends, store=f"sqlite:///{tmp_path / 'h.db'}") as c:
            r = await c.generate("x", sla=SLA(deadline_s=5, hedge=True), width=64, height=64)
            return r.backend

    assert asyncio.run(main()) == "hedge"
    assert webui.interrupt.is_set()  # aclose() waited for it
    assert server.count("POST", INTERRUPT_PATH) == 1
