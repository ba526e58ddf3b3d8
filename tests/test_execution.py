"""Execution (plain, fallback, hedged race, cascade, cancellation, dedupe) on both clients.

Every test runs through the ``runner`` fixture, once on ``Client`` and once on ``AsyncClient``,
and asserts the same cost, attempts and trace for both: the two drivers execute one state
machine and must not drift. Mock backends advance a fake clock instead of sleeping, except
where a racer has to stay in flight until it is cancelled.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from test_client_mock import FakeClock

from pixelroute import (
    SLA,
    AsyncClient,
    BackendOutput,
    Cancelled,
    CancelToken,
    Client,
    ContentRejected,
    DeadlineExceeded,
    MockBackend,
    Price,
    Result,
    ServerError,
)
from pixelroute._config import load_settings
from pixelroute._execution import GRACE_S, Execution
from pixelroute.backends.base import BackendSettings
from pixelroute.gates import ContrastGate

MODES = ["sync", "async"]


class Runner:
    """One interface over ``Client`` and ``AsyncClient`` (the latter on one event loop per test)."""

    def __init__(self, mode: str, tmp_path: Path) -> None:
        self.mode = mode
        self.tmp_path = tmp_path
        self.clock = FakeClock()
        self.client: Any = None
        self._loop = asyncio.Runner() if mode == "async" else None
        self._opened = 0

    def open(self, backends: list[MockBackend], **settings: Any) -> Runner:
        self.close_client()
        self._opened += 1
        cfg = load_settings({"router": {"exploration": 0.0, "seed": 1}, **settings})
        store = f"sqlite:///{self.tmp_path / f'{self.mode}-{self._opened}.db'}"
        if self._loop is None:
            self.client = Client(cfg, backends=backends, store=store, clock=self.clock)
        else:
            async def build() -> AsyncClient:
                return AsyncClient(cfg, backends=backends, store=store, clock=self.clock)

            self.client = self._loop.run(build())
        return self

    def generate(self, prompt: str = "x", **kwargs: Any) -> Result:
        kwargs.setdefault("width", 64)
        kwargs.setdefault("height", 64)
        if self._loop is None:
            result: Result = self.client.generate(prompt, **kwargs)
            return result
        return self._loop.run(self.client.generate(prompt, **kwargs))

    def concurrently(self, n: int, hold: Hold, prompt: str = "same", **kwargs: Any) -> list[Result]:
        """``n`` identical calls at once, all registered before ``hold`` lets the backend answer."""
        kwargs.update(width=64, height=64)
        if self._loop is None:
            return self._threads(n, hold, prompt, kwargs)

        async def main() -> list[Result]:
            tasks = [asyncio.ensure_future(self.client.generate(prompt, **kwargs)) for _ in range(n)]
            await asyncio.sleep(0)  # each task runs until it awaits: the owner's backend, or the shared task
            hold.release()
            return list(await asyncio.gather(*tasks))

        return self._loop.run(main())

    def _threads(self, n: int, hold: Hold, prompt: str, kwargs: dict[str, Any]) -> list[Result]:
        entered = threading.Semaphore(0)
        prepare = self.client._prepare

        def counting_prepare(*args: Any, **kw: Any) -> Any:
            call = prepare(*args, **kw)
            entered.release()  # this caller registers with the de-duplicator right after
            return call

        self.client._prepare = counting_prepare
        results: list[Result] = []
        threads = [threading.Thread(target=lambda: results.append(self.client.generate(prompt, **kwargs)))
                   for _ in range(n)]
        for t in threads:
            t.start()
        for _ in threads:
            assert entered.acquire(timeout=5)
        threading.Event().wait(0.2)  # from prepare to registration is microseconds; leave a wide margin
        hold.release()
        for t in threads:
            t.join(5)
        return results

    def rows(self, request_id: str) -> list[dict[str, Any]]:
        self.client.recorder.flush()
        rows: list[dict[str, Any]] = self.client._store.records_for(request_id)
        return rows

    def in_flight(self) -> dict[str, object]:
        return {name: h["in_flight"] for name, h in self.client.health().items()}

    def close_client(self) -> None:
        if self.client is None:
            return
        if self._loop is None:
            self.client.close()
        else:
            self._loop.run(self.client.aclose())
        self.client = None

    def close(self) -> None:
        self.close_client()
        if self._loop is not None:
            self._loop.close()


@pytest.fixture(params=MODES)
def runner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runner]:
    r = Runner(request.param, tmp_path)
    yield r
    r.close()


# -- handlers ------------------------------------------------------------------------------


def backend(name: str, handler: Any = None, *, price: float, latency: float = 0.02, kind: str | None = None,
            strengths: dict[str, float] | None = None) -> MockBackend:
    settings = BackendSettings(name=name, kind="mock", price=Price(per_image=price), typical_latency_s=latency,
                               strengths=strengths or {})
    be = MockBackend(name, handler, settings=settings)
    if kind:
        be.kind = kind  # type: ignore[misc]  # a provider family, for the content-rejection rule
    return be


def flat(request: Any, deadline: Any) -> BackendOutput:
    return BackendOutput(images=[Image.new("RGB", (64, 64), (128, 128, 128))])


def checkerboard(request: Any, deadline: Any) -> BackendOutput:
    img = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(img)
    for x in range(0, 64, 8):
        for y in range(0, 64, 8):
            if (x + y) // 8 % 2:
                draw.rectangle([x, y, x + 7, y + 7], fill="black")
    return BackendOutput(images=[img])


def failing(exc: Exception) -> Callable[[Any, Any], BackendOutput]:
    def handler(request: Any, deadline: Any) -> BackendOutput:
        raise exc
    return handler


class Stall:
    """A racer that never finishes by itself: it stops only when its attempt is cancelled.

    Sync: it blocks on the attempt's cancel token (as a denoising loop checks it). Async: it
    awaits, and stops on the token or on task cancellation, whichever comes first.
    """

    def __init__(self, mode: str, on_entry: Callable[[], None] | None = None) -> None:
        self.mode = mode
        self.on_entry = on_entry
        self.cancelled = threading.Event()

    def __call__(self, request: Any, deadline: Any) -> Any:
        if self.on_entry is not None:
            self.on_entry()
        if self.mode == "async":
            return self._stall_async(deadline)
        deadline.cancel._event.wait(10)
        return self._stopped(deadline)

    async def _stall_async(self, deadline: Any) -> BackendOutput:
        try:
            for _ in range(1000):
                if deadline.cancelled:
                    break
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return self._stopped(deadline)

    def _stopped(self, deadline: Any) -> BackendOutput:
        if deadline.cancelled:
            self.cancelled.set()
            raise Cancelled("interrupted")
        raise AssertionError("the racer was never cancelled")


class Hold:
    """A backend that answers only once released (a thread event, or an asyncio one in async mode)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._event = threading.Event()
        self._aevent: asyncio.Event | None = None

    def release(self) -> None:
        self._event.set()
        if self._aevent is not None:
            self._aevent.set()

    def __call__(self, request: Any, deadline: Any) -> Any:
        if self.mode == "async":
            return self._wait_async()
        assert self._event.wait(5)
        return checkerboard(request, deadline)

    async def _wait_async(self) -> BackendOutput:
        self._aevent = asyncio.Event()
        if self._event.is_set():
            self._aevent.set()
        await asyncio.wait_for(self._aevent.wait(), 5)
        return checkerboard(None, None)


class Late:
    """A primary that answers well after its hedge timer (half a second, on its thread or task)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, request: Any, deadline: Any) -> Any:
        if self.mode == "async":
            return self._late_async()
        threading.Event().wait(0.5)
        return checkerboard(request, deadline)

    async def _late_async(self) -> BackendOutput:
        await asyncio.sleep(0.5)
        return checkerboard(None, None)


def attempts(r: Result) -> list[tuple[str, str | None, float, bool]]:
    """(backend, error, cost, hedge) per attempt, in the order recorded."""
    return [(a["backend"], a["error"], a["cost_usd"], a["hedge"]) for a in r.trace["attempts"]]


def stored(runner: Runner, request_id: str) -> list[tuple[int, str, str | None, float]]:
    return sorted((row["attempt"], row["backend"], row["outcome"]["error"], row["outcome"]["cost_usd"])
                  for row in runner.rows(request_id))


# -- plain path and fallbacks ----------------------------------------------------------------


def test_plain_attempt(runner: Runner) -> None:
    runner.open([backend("cheap", price=0.001), backend("dear", price=0.05)])
    r = runner.generate(sla=SLA(deadline_s=30, max_cost_usd=0.05), seed=7)
    assert r.backend == "cheap" and r.cost_usd == pytest.approx(0.001) == r.trace["cost_usd"]
    assert attempts(r) == [("cheap", None, 0.001, False)]
    assert stored(runner, r.request_id) == [(0, "cheap", None, 0.001)]
    assert runner.in_flight() == {"cheap": 0, "dear": 0}



def test_a_finished_call_leaves_no_reference_cycle(runner: Runner) -> None:
    """The plain path frees its state by reference counting: a cycle per call would keep the
    call (request, attempts, trace) alive until the cyclic GC runs, on every request. (A failed
    attempt makes one anyway: the call keeps the error, whose traceback holds the frames.)"""
    runner.open([backend("a", price=0.001), backend("b", price=0.002)])
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            runner.generate(sla=SLA(deadline_s=30))
        left = [o for o in gc.get_objects() if type(o) is Execution]
    finally:
        gc.enable()
    assert left == []

def test_fallback_after_a_paid_failure_counts_both(runner: Runner) -> None:
    def paid_failure(request: Any, deadline: Any) -> BackendOutput:
        err = ServerError("failed after billing")
        err.cost_usd = 0.004  # type: ignore[attr-defined]
        raise err

    runner.open([backend("first", paid_failure, price=0.001), backend("second", price=0.01)])
    r = runner.generate(sla=SLA(deadline_s=10))
    assert r.backend == "second"
    assert r.cost_usd == pytest.approx(0.014) == r.trace["cost_usd"]
    assert attempts(r) == [("first", "server_error", 0.004, False), ("second", None, 0.01, False)]
    assert len(r.trace["redecisions"]) == 1 and r.trace["excluded"]["first"] == "already tried in this call"
    assert stored(runner, r.request_id) == [(0, "first", "server_error", 0.004), (1, "second", None, 0.01)]


def test_one_deadline_across_attempts(runner: Runner) -> None:
    seen: list[float] = []

    def eat_two_seconds(request: Any, deadline: Any) -> BackendOutput:
        seen.append(deadline.remaining())
        runner.clock.sleep(2.0)
        raise ServerError("boom")

    runner.open([backend("a", eat_two_seconds, price=0.001, latency=1.0),
                 backend("b", eat_two_seconds, price=0.002, latency=1.0),
                 backend("c", eat_two_seconds, price=0.003, latency=1.0)], execution={"max_attempts": 5},
                router={"exploration": 0.0, "seed": 1, "on_infeasible": "refuse"})
    with pytest.raises(ServerError) as info:
        runner.generate(sla=SLA(deadline_s=5.0))
    # each attempt got what was left; the third no longer fitted and was not started (under best
    # effort it would be tried with the second left: tests/test_client_mock.py)
    assert seen == [5.0, 3.0]
    assert any("no fallback fits" in note for note in getattr(info.value, "__notes__", []))
    assert runner.clock.now - 1000.0 == pytest.approx(4.0)


def test_a_deadline_that_passes_during_an_attempt_ends_the_call(runner: Runner) -> None:
    def eat_the_deadline(request: Any, deadline: Any) -> BackendOutput:
        runner.clock.sleep(deadline.remaining())
        raise ServerError("too slow")

    second = backend("b", price=0.002)
    runner.open([backend("a", eat_the_deadline, price=0.001), second])
    with pytest.raises(DeadlineExceeded, match="last attempt on `a` failed with server_error"):
        runner.generate(sla=SLA(deadline_s=1.0))
    assert second.calls == 0  # no fallback once the deadline has passed
    assert runner.clock.now - 1000.0 == pytest.approx(1.0)


@pytest.mark.parametrize("policy", ["fallback", "stop"])
def test_content_rejection_falls_back_to_another_provider_or_stops(runner: Runner, policy: str) -> None:
    backends = [backend("openai-a", failing(ContentRejected("blocked")), price=0.001, kind="openai"),
                backend("openai-b", price=0.002, kind="openai"),
                backend("other", price=0.5)]
    runner.open(backends, execution={"on_content_rejected": policy})
    if policy == "stop":
        with pytest.raises(ContentRejected):
            runner.generate()
        assert [be.calls for be in backends] == [1, 0, 0]  # never retried, nothing else tried
        return
    r = runner.generate()
    assert r.backend == "other" and r.cost_usd == pytest.approx(0.5)
    assert attempts(r) == [("openai-a", "content_rejected", 0.0, False), ("other", None, 0.5, False)]
    assert "rejected the content" in r.trace["excluded"]["openai-b"]


# -- hedged races ------------------------------------------------------------------------------


def test_hedged_race_result_counts_the_abandoned_loser(runner: Runner) -> None:
    """Regression: the sync client returned the cost before the loser was counted (0.002 vs 0.003)."""
    stall = Stall(runner.mode)
    runner.open([backend("primary", stall, price=0.001), backend("hedge", checkerboard, price=0.002)])
    r = runner.generate(sla=SLA(deadline_s=5, hedge=True))
    assert r.backend == "hedge"
    assert stall.cancelled.wait(GRACE_S), "the losing primary must be cancelled"
    # a remote loser may still be billed: its estimate is counted, in the result as in the trace
    assert r.cost_usd == pytest.approx(0.003)
    assert r.trace["cost_usd"] == pytest.approx(0.003)
    assert attempts(r) == [("hedge", None, 0.002, True), ("primary", "cancelled", 0.001, False)]
    assert r.trace["hedge"]["winner"] == "hedge" and r.trace["hedge"]["primary"] == "primary"
    assert stored(runner, r.request_id) == [(0, "primary", "cancelled", 0.001), (1, "hedge", None, 0.002)]
    assert runner.in_flight() == {"primary": 0, "hedge": 0}


def test_no_hedge_when_it_is_not_affordable(runner: Runner) -> None:
    dear = backend("dear", checkerboard, price=0.5)
    runner.open([backend("primary", Late(runner.mode), price=0.01), dear])
    r = runner.generate(sla=SLA(deadline_s=5, max_cost_usd=0.1, hedge=True))
    assert r.backend == "primary" and dear.calls == 0
    assert r.cost_usd == pytest.approx(0.01) and attempts(r) == [("primary", None, 0.01, False)]
    assert "no affordable hedge" in r.trace["hedge"]["skipped"] and "winner" not in r.trace["hedge"]


def test_racers_past_the_deadline_are_abandoned(runner: Runner) -> None:
    primary, hedge = Stall(runner.mode), Stall(runner.mode)
    runner.open([backend("primary", primary, price=0.001), backend("hedge", hedge, price=0.002)])
    with pytest.raises(DeadlineExceeded, match="during a hedged race"):
        # the fake clock never moves: the wait for the racers runs out at the deadline plus GRACE_S
        runner.generate(sla=SLA(deadline_s=0.2, hedge=True))
    assert primary.cancelled.wait(GRACE_S) and hedge.cancelled.wait(GRACE_S)
    runner.client.recorder.flush()
    rows = sorted((row["backend"], row["outcome"]["error"], row["outcome"]["cost_usd"])
                  for row in runner.client._store.iter_records())
    assert rows == [("hedge", "timeout", 0.002), ("primary", "timeout", 0.001)]
    assert runner.in_flight() == {"primary": 0, "hedge": 0}


def test_a_cancel_token_stops_both_racers(runner: Runner) -> None:
    token = CancelToken()
    primary, hedge = Stall(runner.mode), Stall(runner.mode, on_entry=token.cancel)
    runner.open([backend("primary", primary, price=0.001), backend("hedge", hedge, price=0.002),
                 backend("third", price=0.003)])
    with pytest.raises(Cancelled):
        runner.generate(sla=SLA(deadline_s=5, hedge=True), cancel=token)
    assert primary.cancelled.is_set() and hedge.cancelled.is_set()
    assert runner.client.backends["third"].calls == 0  # a cancelled call does not fall back
    runner.client.recorder.flush()
    rows = sorted((row["backend"], row["outcome"]["error"]) for row in runner.client._store.iter_records())
    assert rows == [("hedge", "cancelled"), ("primary", "cancelled")]
    assert runner.in_flight() == {"primary": 0, "hedge": 0, "third": 0}


def test_cancel_token_during_a_plain_attempt(runner: Runner) -> None:
    token = CancelToken()

    def cancel_midway(request: Any, deadline: Any) -> BackendOutput:
        token.cancel()
        raise ServerError("interrupted")

    second = backend("b", price=0.002)
    runner.open([backend("a", cancel_midway, price=0.001), second])
    with pytest.raises(Cancelled):
        runner.generate(cancel=token)
    assert second.calls == 0


def test_async_task_cancellation_during_a_race_records_and_stops_both(tmp_path: Path) -> None:
    primary, hedge = Stall("async"), Stall("async")

    async def main() -> None:
        cfg = load_settings({"router": {"exploration": 0.0}})
        backends = [backend("primary", primary, price=0.001), backend("hedge", hedge, price=0.002)]
        async with AsyncClient(cfg, backends=backends, store=f"sqlite:///{tmp_path / 'c.db'}") as client:
            task = asyncio.ensure_future(client.generate("x", sla=SLA(deadline_s=5, hedge=True), width=64, height=64))
            while backends[1].calls == 0:  # the hedge has started: both racers are in flight
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert {name: h["in_flight"] for name, h in client.health().items()} == {"primary": 0, "hedge": 0}
            client.recorder.flush()
            rows = sorted((r["backend"], r["outcome"]["error"]) for r in client._store.iter_records())
            assert rows == [("hedge", "cancelled"), ("primary", "cancelled")]

    asyncio.run(main())
    assert primary.cancelled.is_set() and hedge.cancelled.is_set()


def test_sync_interrupt_records_the_attempt_in_flight(tmp_path: Path) -> None:
    def interrupted(request: Any, deadline: Any) -> BackendOutput:
        raise KeyboardInterrupt

    runner = Runner("sync", tmp_path)
    runner.open([backend("a", interrupted, price=0.001), backend("b", price=0.002)])
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.generate()
        assert runner.client.backends["b"].calls == 0
        assert runner.in_flight() == {"a": 0, "b": 0}
        runner.client.recorder.flush()
        assert [r["outcome"]["error"] for r in runner.client._store.iter_records()] == ["cancelled"]
    finally:
        runner.close()


# -- the cascade -------------------------------------------------------------------------------


@pytest.mark.parametrize("escalates", [False, True])
def test_cascade_escalates_only_when_the_gate_fails(runner: Runner, escalates: bool) -> None:
    runner.open([backend("cheap", flat if escalates else checkerboard, price=0.001),
                 backend("hifi", checkerboard, price=0.04, strengths={"typography": 1.0})])
    r = runner.generate("a sign that says 'OPEN'", cascade=True)
    cascade = r.trace["cascade"]
    assert cascade["escalated"] is escalates and cascade["gate_score"] == (0.0 if escalates else 1.0)
    if not escalates:
        assert r.backend == "cheap" and r.cost_usd == pytest.approx(0.001)
        assert attempts(r) == [("cheap", None, 0.001, False)]
        return
    assert r.backend == "hifi"
    assert r.cost_usd == pytest.approx(0.041) == r.trace["cost_usd"]  # the cheap attempt was paid for too
    assert attempts(r) == [("cheap", None, 0.001, False), ("hifi", None, 0.04, False)]
    rows = runner.rows(r.request_id)
    assert rows[0]["outcome"]["gate_score"] == 0.0  # logged: the router learns from gate outcomes
    # the router picked hifi first; the cascade re-planned onto cheap, and attempts still count from 0
    assert [a["attempt"] for a in r.trace["attempts"]] == [0, 1] == [row["attempt"] for row in rows]
    assert r.trace["decision"]["backend"] == "cheap" == rows[0]["backend"]


def test_cascade_does_not_escalate_past_the_budget(runner: Runner) -> None:
    runner.open([backend("cheap", flat, price=0.01),
                 backend("hifi", checkerboard, price=0.04, strengths={"typography": 1.0})])
    r = runner.generate(sla=SLA(max_cost_usd=0.045), cascade=True)
    assert r.backend == "cheap" and r.cost_usd == pytest.approx(0.01)
    assert "escalation_skipped" in r.trace["cascade"] and attempts(r) == [("cheap", None, 0.01, False)]


def test_cascade_falls_back_when_the_cheap_attempt_fails(runner: Runner) -> None:
    runner.open([backend("cheap", failing(ServerError("x")), price=0.001),
                 backend("hifi", checkerboard, price=0.04, strengths={"typography": 1.0})])
    r = runner.generate(cascade=True)
    assert r.backend == "hifi" and r.cost_usd == pytest.approx(0.04)
    assert attempts(r) == [("cheap", "server_error", 0.0, False), ("hifi", None, 0.04, False)]


# -- de-duplication ----------------------------------------------------------------------------


def test_dedupe_runs_once_for_identical_concurrent_callers(runner: Runner) -> None:
    hold = Hold(runner.mode)
    be = backend("a", hold, price=0.01)
    runner.open([be])
    results = runner.concurrently(6, hold, seed=1, dedupe=True)
    assert be.calls == 1 and len(results) == 6
    assert len({r.request_id for r in results}) == 1
    assert all(r.cost_usd == pytest.approx(0.01) for r in results)
    assert stored(runner, results[0].request_id) == [(0, "a", None, 0.01)]


def test_contrast_gate() -> None:
    from pixelroute import GenerateRequest

    req = GenerateRequest(prompt="x")
    assert ContrastGate()(flat(req, None).images[0], req) == 0.0
    assert ContrastGate()(checkerboard(req, None).images[0], req) == 1.0



# -- progress events of races and cascades (the state machine sends them, on both drivers) ----------


def test_a_hedge_and_a_cascade_escalation_are_announced_as_their_own_attempts(runner: Runner) -> None:
    from pixelroute.events import Decided

    events: list[Any] = []
    stall = Stall(runner.mode)
    runner.open([backend("primary", stall, price=0.001), backend("hedge", checkerboard, price=0.002)])
    r = runner.generate(sla=SLA(deadline_s=5, hedge=True), on_progress=events.append)
    assert [(e.type, e.backend, getattr(e, "hedge", None)) for e in events] == [
        ("decided", "primary", False), ("attempt_started", "primary", False),
        ("decided", "hedge", True), ("attempt_started", "hedge", True), ("done", "hedge", None)]
    assert events[-1].result is r and stall.cancelled.wait(GRACE_S)

    events.clear()
    runner.open([backend("cheap", flat, price=0.001),
                 backend("hifi", checkerboard, price=0.04, strengths={"typography": 1.0})])
    r = runner.generate("a sign that says 'OPEN'", cascade=True, on_progress=events.append)
    decided = [e for e in events if isinstance(e, Decided)]
    # the same attempt numbers as the trace's
    assert [(e.backend, e.attempt) for e in decided] == [(a["backend"], a["attempt"]) for a in r.trace["attempts"]]
    assert [e.backend for e in decided] == ["cheap", "hifi"]
    assert [e.type for e in events][-1] == "done" and events[-1].backend == "hifi"
