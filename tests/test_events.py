"""Progress events from the Python API: order, fallbacks, a raising callback, streams, steps, job status."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _tiny_fixtures import tiny_models  # noqa: F401  (session fixture)
from PIL import Image

from pixelroute import SLA, AsyncClient, BackendOutput, Client, MockBackend, Price, ServerError, ValidationError
from pixelroute._config import load_settings
from pixelroute._errors import Cancelled, NoFeasibleBackend
from pixelroute.backends.base import BackendSettings
from pixelroute.backends.diffusers import DiffusersBackend, DiffusersSettings
from pixelroute.backends.replicate import ReplicateBackend, ReplicateSettings
from pixelroute.events import AttemptStarted, Decided, Done, Event, Fallback, JobStatus, Step, preview_steps, to_dict
from tests.fakeservers import FakeServer
from tests.fakeservers.providers import ReplicateJobs


def mock(name: str, price: float = 0.01, handler: Any = None) -> MockBackend:
    settings = BackendSettings(name=name, kind="mock", price=Price(per_image=price), typical_latency_s=0.5)
    return MockBackend(name, handler, settings=settings)


def settings() -> Any:
    return load_settings({"router": {"exploration": 0.0, "seed": 1}})


def client(tmp_path: Path, backends: list[Any]) -> Client:
    return Client(settings(), backends=backends, store=f"sqlite:///{tmp_path / 't.db'}")


def aclient(tmp_path: Path, backends: list[Any]) -> AsyncClient:
    return AsyncClient(settings(), backends=backends, store=f"sqlite:///{tmp_path / 'a.db'}")


def fail(request: Any, deadline: Any) -> BackendOutput:
    raise ServerError("upstream 500")


def kinds(events: list[Event]) -> list[tuple[str, ...]]:
    return [(e.type, getattr(e, "backend", "")) for e in events]


def test_events_in_order_with_a_fallback(tmp_path: Path) -> None:
    events: list[Event] = []
    with client(tmp_path, [mock("cheap", 0.001, fail), mock("dear", 0.05)]) as c:
        r = c.generate("a red bicycle", sla=SLA(deadline_s=30), on_progress=events.append)
    assert kinds(events) == [("decided", "cheap"), ("attempt_started", "cheap"), ("fallback", "cheap"),
                             ("decided", "dear"), ("attempt_started", "dear"), ("done", "dear")]
    decided, started, fallback = events[0], events[1], events[2]
    assert isinstance(decided, Decided) and decided.why and decided.cost_usd == pytest.approx(0.001)
    assert isinstance(started, AttemptStarted) and 0 < (started.deadline_s or 0) <= 30
    assert isinstance(fallback, Fallback) and fallback.error == "server_error" and "upstream 500" in fallback.message
    assert [e.attempt for e in events[:-1]] == [0, 0, 0, 1, 1]  # type: ignore[union-attr]
    done = events[-1]
    assert isinstance(done, Done) and done.result is r and done.request_id == r.request_id
    assert to_dict(done) == {"type": "done", "request_id": r.request_id, "backend": "dear",
                             "cost_usd": r.cost_usd, "latency_s": r.latency_s, "images": 1}


def test_no_listener_means_no_progress_sink(tmp_path: Path) -> None:
    seen: list[object] = []

    def handler(request: Any, deadline: Any) -> BackendOutput:
        seen.append(deadline.progress)
        return BackendOutput(images=[Image.new("RGB", (8, 8))])

    with client(tmp_path, [mock("m", handler=handler)]) as c:
        c.generate("x")
        c.generate("x", on_progress=lambda e: None)
    assert seen[0] is None and seen[1] is not None


def test_a_raising_callback_is_logged_once_and_the_call_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken(event: Event) -> None:
        calls.append(event.type)
        raise RuntimeError("listener bug")

    with caplog.at_level(logging.WARNING, logger="pixelroute"), client(tmp_path, [mock("m")]) as c:
        r = c.generate("x", on_progress=broken)
    assert r.backend == "m"
    assert calls == ["decided", "attempt_started", "done"]  # it kept being called
    logged = [rec for rec in caplog.records if "on_progress callback raised" in rec.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


@pytest.mark.parametrize("previews", [-1, 51, True, 1.5])
def test_previews_are_validated(tmp_path: Path, previews: Any) -> None:
    with client(tmp_path, [mock("m")]) as c, pytest.raises(ValidationError) as info:
        c.generate("x", previews=previews, on_progress=print)
    assert info.value.field == "previews"


def test_previews_need_a_listener(tmp_path: Path) -> None:
    with client(tmp_path, [mock("m")]) as c, pytest.raises(ValidationError, match="`previews` needs `on_progress`"):
        c.generate("x", previews=2)


def test_preview_steps_spread_and_never_the_last() -> None:
    assert preview_steps(2, 4) == {2, 3}
    assert preview_steps(3, 30) == {8, 15, 23}
    assert preview_steps(3, 2) == {1}  # fewer steps than previews: fewer partial images
    assert preview_steps(1, 1) == frozenset() and preview_steps(0, 10) == frozenset()


def test_sync_stream_ends_with_done_and_raises_the_calls_error(tmp_path: Path) -> None:
    with client(tmp_path, [mock("m", 0.02)]) as c:
        events = list(c.stream("x", sla={"deadline_s": 5}, seed=3))
        assert [e.type for e in events] == ["decided", "attempt_started", "done"]
        done = events[-1]
        assert isinstance(done, Done) and done.result.backend == "m"
        with pytest.raises(NoFeasibleBackend):
            list(c.stream("x", sla={"max_cost_usd": 0.001}))


def test_leaving_a_sync_stream_early_cancels_the_call(tmp_path: Path) -> None:
    stopped = threading.Event()

    def waits(request: Any, deadline: Any) -> BackendOutput:
        deadline.cancel._event.wait(10)  # a backend that stops when its attempt is cancelled
        stopped.set()
        raise Cancelled("stopped")

    with client(tmp_path, [mock("slow", handler=waits)]) as c:
        stream = c.stream("x")
        for event in stream:
            if isinstance(event, AttemptStarted):
                break
        stream.close()
        assert stopped.wait(5)


def test_async_events_arrive_on_the_loop_and_stream(tmp_path: Path) -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        threads: set[int] = set()
        events: list[Event] = []

        def listen(event: Event) -> None:
            threads.add(threading.get_ident())
            events.append(event)

        async with aclient(tmp_path, [mock("cheap", 0.001, fail), mock("dear", 0.05)]) as c:
            r = await c.generate("x", on_progress=listen)  # the mocks run on worker threads
            assert [e.type for e in events] == ["decided", "attempt_started", "fallback", "decided",
                                                "attempt_started", "done"]
            assert threads == {loop_thread}
            streamed = [e async for e in c.stream("x", seed=1)]
            assert [(e.type, e.backend) for e in streamed][-1] == ("done", "dear")
            assert r.backend == "dear"
            with pytest.raises(NoFeasibleBackend):
                async for _ in c.stream("x", sla={"max_cost_usd": 0.0001}):
                    pass

    asyncio.run(main())


def test_leaving_an_async_stream_early_cancels_the_call(tmp_path: Path) -> None:
    async def main() -> None:
        cancelled = asyncio.Event()

        async def waits(request: Any, deadline: Any) -> BackendOutput:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError("not cancelled")

        async with aclient(tmp_path, [mock("slow", handler=waits)]) as c:
            stream = c.stream("x")
            async for event in stream:
                if isinstance(event, AttemptStarted):
                    break
            await stream.aclose()
            await asyncio.wait_for(cancelled.wait(), 5)

    asyncio.run(main())


def test_a_deduplicated_caller_hears_done(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow(request: Any, deadline: Any) -> BackendOutput:
        gate.wait(5)
        return BackendOutput(images=[Image.new("RGB", (8, 8))])

    with client(tmp_path, [mock("m", handler=slow)]) as c:
        owner: list[Event] = []
        joiner: list[Event] = []
        first = threading.Thread(target=lambda: c.generate("same", dedupe=True, on_progress=owner.append))
        first.start()
        while not owner:
            threading.Event().wait(0.01)
        second = threading.Thread(target=lambda: c.generate("same", dedupe=True, on_progress=joiner.append))
        second.start()
        threading.Event().wait(0.1)
        gate.set()
        first.join(5)
        second.join(5)
    assert [e.type for e in owner] == ["decided", "attempt_started", "done"]
    assert [e.type for e in joiner] == ["done"]


# -- a local pipeline: denoising steps and partial images ------------------------------------------


@pytest.fixture
def tiny_client(tmp_path: Path, tiny_models: dict[str, Path]) -> Iterator[Any]:  # noqa: F811
    from pixelroute.backends._pipeline_cache import PipelineCache

    cache = PipelineCache()
    made: list[Client] = []

    def make(family: str) -> Client:
        backend = DiffusersBackend(DiffusersSettings(name=f"tiny-{family}", model=str(tiny_models[family]),
                                                     device="cpu"), pipeline_cache=cache)
        made.append(client(tmp_path / family, [backend]))
        return made[-1]

    yield make
    for c in made:
        c.close()
    cache.close()


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3"])
def test_steps_and_partial_images_leave_the_result_unchanged(tiny_client: Any, family: str) -> None:
    c = tiny_client(family)
    events: list[Event] = []
    r = c.generate("a red bicycle", steps=4, seed=7, n=2, on_progress=events.append, previews=2)
    plain = c.generate("a red bicycle", steps=4, seed=7, n=2)
    steps = [e for e in events if isinstance(e, Step)]
    assert [(s.step, s.steps) for s in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with_images = [s for s in steps if s.previews]
    assert [(s.step, s.preview_index) for s in with_images] == [(2, 0), (3, 1)]
    for s in with_images:
        assert len(s.previews) == 2 and all(isinstance(p, Image.Image) and p.size == (64, 64) for p in s.previews)
        assert np.asarray(s.previews[0]).std() > 0  # decoded, not a blank placeholder
    for got, want in zip(r.images, plain.images, strict=True):  # decoding previews touched nothing
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert events[-1].type == "done"


def test_async_stream_carries_steps_from_the_pipeline_thread(tiny_client: Any) -> None:
    c = tiny_client("sd15")

    async def main() -> list[Event]:
        async with AsyncClient(c.settings, backends=list(c.backends.values()),
                               store=f"sqlite:///{c._store_url.removeprefix('sqlite:///')}") as ac:
            return [e async for e in ac.stream("x", steps=3, seed=1, previews=1)]

    events = asyncio.run(main())
    assert [e.type for e in events] == ["decided", "attempt_started", "step", "step", "step", "done"]
    assert [len(e.previews) for e in events if isinstance(e, Step)] == [0, 1, 0]


# -- a job API: queued and processing --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_replicate_job_statuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_token_0000")
    with FakeServer() as server:
        ReplicateJobs(server, polls_until_done=3)
        backend = ReplicateBackend(ReplicateSettings(
            name="flux", base_url=server.url, allowed_download_hosts=["127.0.0.1"],
            allow_private_download_hosts=True, poll_interval_s=0.02))
        events: list[Event] = []
        if mode == "sync":
            with client(tmp_path, [backend]) as c:
                c.generate("a fox", on_progress=events.append)
        else:
            async def main() -> None:
                async with aclient(tmp_path, [backend]) as c:
                    await c.generate("a fox", on_progress=events.append)

            asyncio.run(main())
    statuses = [e for e in events if isinstance(e, JobStatus)]
    assert [(s.status, s.provider_status, s.job_id) for s in statuses] == [
        ("queued", "starting", "job0001"), ("processing", "processing", "job0001")]
    assert events[-1].type == "done"


# SDXL's own pipeline upcasts its float16 VAE at the end through a deprecated helper
@pytest.mark.filterwarnings("ignore:`upcast_vae` is deprecated:FutureWarning")
def test_a_float16_vae_that_asks_for_upcasting_decodes_previews_and_is_cast_back(
    tmp_path: Path, tiny_models: dict[str, Path]  # noqa: F811
) -> None:
    import torch

    from pixelroute.backends._pipeline_cache import PipelineCache

    cache = PipelineCache()
    backend = DiffusersBackend(DiffusersSettings(name="half", model=str(tiny_models["sdxl"]), device="cpu",
                                                 dtype="float16"), pipeline_cache=cache)
    events: list[Event] = []
    with client(tmp_path, [backend]) as c:
        r = c.generate("x", steps=3, seed=1, on_progress=events.append, previews=1)
    slot = cache.acquire(backend._load_spec(), id(backend))
    try:
        assert slot.pipe.vae.dtype == torch.float16 and slot.pipe.vae.config.force_upcast  # cast back
    finally:
        cache.release(slot)
        cache.close()
    preview = next(e for e in events if isinstance(e, Step) and e.previews).previews[0]
    assert np.asarray(preview).std() > 0 and np.asarray(r.images[0]).std() > 0  # not NaN-black
