"""Client and AsyncClient end to end on MockBackends: routing, fallbacks, telemetry, traces."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from pixelroute import (
    SLA,
    AsyncClient,
    BackendOutput,
    CancelToken,
    Client,
    ContentRejected,
    DeadlineExceeded,
    MockBackend,
    NoFeasibleBackend,
    Price,
    ServerError,
    UnknownRequest,
    ValidationError,
)
from pixelroute._config import load_settings
from pixelroute.backends.base import BackendSettings, Capabilities


class FakeClock:
    """A clock the mock backends advance instead of sleeping: exact and instant."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def mock(name: str, *, clock: FakeClock | None = None, delay: float = 0.0, price: float = 0.01,
         latency_prior: float = 1.0, handler=None, local: bool = False, kind_override: str | None = None,
         **settings_kw) -> MockBackend:
    settings = BackendSettings(name=name, kind="mock", price=Price(per_image=price),
                               typical_latency_s=latency_prior, **settings_kw)
    be = MockBackend(name, handler, settings=settings, delay_s=delay, local=local,
                     sleep=clock.sleep if clock else lambda s: None)
    if kind_override:
        be.kind = kind_override  # type: ignore[misc]
    return be


def make_client(tmp_path: Path, backends, clock=None, **settings) -> Client:
    cfg = load_settings({"router": {"exploration": 0.0, "seed": 1}, **settings})
    return Client(cfg, backends=backends, store=f"sqlite:///{tmp_path / 't.db'}", clock=clock or FakeClock())


def failing(exc: Exception):
    def handler(request, deadline):
        raise exc
    return handler


def test_generate_routes_records_and_traces(tmp_path: Path) -> None:
    with make_client(tmp_path, [mock("cheap", price=0.001), mock("dear", price=0.05)]) as client:
        r = client.generate("a red bicycle", sla=SLA(deadline_s=30, max_cost_usd=0.05), seed=7, width=64, height=64)
        assert r.backend == "cheap"
        assert isinstance(r.images[0], Image.Image) and r.images[0].size == (64, 64)
        assert r.cost_usd == pytest.approx(0.001)
        assert r.trace["decision"]["candidates"]
        stored = client.trace(r.request_id)
        assert stored["request_id"] == r.request_id
        assert [a["backend"] for a in stored["attempts"]] == ["cheap"]
        client.report_correction(r.request_id, seconds=42.0, verdict="edited")
        client.report_correction(r.request_id, seconds=10.0, verdict="accepted")
        again = client.trace(r.request_id)
        assert again["correction"]["seconds"] == 10.0
        assert len(again["correction_history"]) == 2


def test_fallback_inside_one_deadline(tmp_path: Path) -> None:
    clock = FakeClock()

    def slow_then_fail(request, deadline):
        clock.sleep(2.0)
        raise ServerError("boom")

    backends = [mock("primary", clock=clock, price=0.001, handler=slow_then_fail),
                mock("second", clock=clock, price=0.01)]
    with make_client(tmp_path, backends, clock) as client:
        r = client.generate("x", sla=SLA(deadline_s=10), width=64, height=64)
        assert r.backend == "second"
        assert [a["backend"] for a in r.trace["attempts"]] == ["primary", "second"]
        assert r.trace["attempts"][0]["error"] == "server_error"
        # the re-decision saw only what was left of the deadline
        assert len(r.trace["redecisions"]) == 1


@pytest.mark.parametrize("on_infeasible", ["refuse", "best_effort"])
def test_a_fallback_that_no_longer_fits(tmp_path: Path, on_infeasible: str) -> None:
    """Refuse: the late fallback is skipped. Best effort (the default): it is tried within the deadline."""
    clock = FakeClock()

    def eat_time(request, deadline):
        clock.sleep(8.0)
        raise ServerError("boom")

    backends = [mock("primary", clock=clock, price=0.001, latency_prior=1.0, handler=eat_time),
                mock("slow", clock=clock, price=0.01, latency_prior=5.0)]
    router = {"router": {"exploration": 0.0, "seed": 1, "on_infeasible": on_infeasible}}
    with make_client(tmp_path, backends, clock, **router) as client:
        if on_infeasible == "refuse":
            with pytest.raises(ServerError) as info:
                client.generate("x", sla=SLA(deadline_s=10), width=64, height=64)
            assert any("no fallback fits" in n for n in getattr(info.value, "__notes__", []))
            return
        r = client.generate("x", sla=SLA(deadline_s=10), width=64, height=64)
    assert [a["backend"] for a in r.trace["attempts"]] == ["primary", "slow"]
    assert r.trace["redecisions"][0]["predicted_to_miss"] is True


def test_cost_already_spent_counts_against_the_cap(tmp_path: Path) -> None:
    def paid_failure(request, deadline):
        err = ServerError("failed after billing")
        err.cost_usd = 0.04  # type: ignore[attr-defined]
        raise err

    backends = [mock("a", price=0.04, handler=paid_failure), mock("b", price=0.04)]
    with make_client(tmp_path, backends) as client, pytest.raises(ServerError):
        client.generate("x", sla=SLA(max_cost_usd=0.05), width=64, height=64)


def test_content_rejection_falls_back_to_another_provider_or_stops(tmp_path: Path) -> None:
    backends = [mock("openai-a", price=0.001, handler=failing(ContentRejected("blocked")), kind_override="openai"),
                mock("openai-b", price=0.002, kind_override="openai"),
                mock("other", price=1.0)]
    with make_client(tmp_path, backends) as client:
        r = client.generate("x", width=64, height=64)
        assert r.backend == "other"  # same provider skipped after a rejection
        assert "rejected the content" in r.trace["redecisions"][0]["excluded"]["openai-b"]
    backends[0].calls = 0
    stopping = make_client(tmp_path, backends, execution={"on_content_rejected": "stop"})
    with stopping as client, pytest.raises(ContentRejected):
        client.generate("x", width=64, height=64)
    assert backends[0].calls == 1  # never retried


def test_nothing_feasible_is_refused_and_recorded(tmp_path: Path) -> None:
    with make_client(tmp_path, [mock("a", price=0.04), mock("b", price=0.08)]) as client:
        with pytest.raises(NoFeasibleBackend) as info:
            client.generate("x", sla=SLA(max_cost_usd=0.01), width=64, height=64)
        assert {c["backend"] for c in info.value.candidates} == {"a", "b"}
        assert all(c["why_not"] for c in info.value.candidates)
        client.recorder.flush()
        rows = list(client._store.iter_records())
        assert len(rows) == 1 and rows[0]["backend"] is None
        assert rows[0]["outcome"]["error"] == "no_feasible_backend"


def test_deadline_exceeded_on_pinned_backend(tmp_path: Path) -> None:
    clock = FakeClock()
    with make_client(tmp_path, [mock("slow", clock=clock, delay=5.0)], clock) as client:
        with pytest.raises(DeadlineExceeded):
            client.generate("x", sla=SLA(deadline_s=1.0), backend="slow", width=64, height=64)
        assert clock.now - 1000.0 == pytest.approx(1.0)


def test_bad_input_is_refused_before_any_backend_runs(tmp_path: Path) -> None:
    be = mock("a")
    be.capabilities = Capabilities(size_multiple=16, default_width=64, default_height=64)
    with make_client(tmp_path, [be]) as client:
        with pytest.raises(ValidationError, match="`width` must be a multiple of 16"):
            client.generate("x", width=72, height=64)
        with pytest.raises(ValidationError, match="`backend` must be one of"):
            client.generate("x", backend="nope")
        with pytest.raises(ValidationError, match="`prompt`"):
            client.generate("")
        with pytest.raises(ValidationError, match="`verdict`"):
            client.report_correction("x", 3.0, "meh")
        with pytest.raises(UnknownRequest):
            client.report_correction("0000-unknown", 3.0, "accepted")
    assert be.calls == 0


def test_every_attempt_is_recorded_once(tmp_path: Path) -> None:
    backends = [mock("a", price=0.001, handler=failing(ServerError("x"))), mock("b", price=0.002)]
    with make_client(tmp_path, backends) as client:
        r = client.generate("x", width=64, height=64)
        client.recorder.flush()
        rows = client._store.records_for(r.request_id)
    assert [(row["attempt"], row["backend"], row["outcome"]["ok"]) for row in rows] == [
        (0, "a", False), (1, "b", True)]
    assert rows[0]["decision"]["candidates"] and rows[1]["decision"]["propensity"] is not None


def test_cancel_token_stops_the_call(tmp_path: Path) -> None:
    token = CancelToken()

    def cancel_midway(request, deadline):
        token.cancel()
        raise ServerError("interrupted")

    from pixelroute import Cancelled

    backends = [mock("a", price=0.001, handler=cancel_midway), mock("b", price=0.002)]
    with make_client(tmp_path, backends) as client, pytest.raises(Cancelled):
        client.generate("x", width=64, height=64, cancel=token)
    assert backends[1].calls == 0


def test_dedupe_runs_once_for_identical_concurrent_callers(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow(request, deadline):
        gate.wait(5)
        return BackendOutput(images=[Image.new("RGB", (64, 64))])

    be = mock("a", handler=slow)
    with make_client(tmp_path, [be]) as client:
        entered = threading.Semaphore(0)
        prepare = client._prepare

        def counting_prepare(*args, **kwargs):
            call = prepare(*args, **kwargs)
            entered.release()  # this caller registers with the de-duplicator right after
            return call

        client._prepare = counting_prepare  # type: ignore[method-assign]
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(
            client.generate("same", seed=1, width=64, height=64, dedupe=True))) for _ in range(6)]
        for t in threads:
            t.start()
        for _ in threads:
            assert entered.acquire(timeout=5)
        time.sleep(0.2)  # from prepare to registration is microseconds; leave a wide margin
        gate.set()
        for t in threads:
            t.join(5)
    assert be.calls == 1
    assert len({r.request_id for r in results}) == 1 and len(results) == 6


def test_async_client_twin(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = load_settings({"router": {"exploration": 0.0}})
        backends = [mock("a", price=0.001, handler=failing(ServerError("x"))), mock("b", price=0.002)]
        async with AsyncClient(cfg, backends=backends, store=f"sqlite:///{tmp_path / 'a.db'}") as client:
            r = await client.generate("x", sla=SLA(deadline_s=5), width=64, height=64)
            assert r.backend == "b"
            results = await asyncio.gather(*[client.generate(f"p{i}", width=64, height=64) for i in range(20)])
            assert len({x.request_id for x in results}) == 20

    asyncio.run(main())


def test_async_cancellation_records_the_attempt(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = load_settings({"router": {"exploration": 0.0}})
        be = mock("slow", price=0.001, delay=30.0)
        async with AsyncClient(cfg, backends=[be], store=f"sqlite:///{tmp_path / 'c.db'}") as client:
            task = asyncio.ensure_future(client.generate("x", width=64, height=64))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            client.recorder.flush()
            rows = list(client._store.iter_records())
            assert [r["outcome"]["error"] for r in rows] == ["cancelled"]

    asyncio.run(main())


def test_all_breakers_open_gives_one_clear_error(tmp_path: Path) -> None:
    from pixelroute import BackendUnavailable

    backends = [mock("a", handler=failing(ServerError("x"))), mock("b", handler=failing(ServerError("y")))]
    with make_client(tmp_path, backends, execution={"breaker_failures": 1}) as client:
        with pytest.raises(ServerError):
            client.generate("x", width=64, height=64)
        with pytest.raises(BackendUnavailable, match="circuit breaker is open"):
            client.generate("x", width=64, height=64)


@pytest.mark.parametrize("names", [("twin-a", "twin-b"), ("twin-b", "twin-a")])
def test_identical_backends_always_serve_from_the_first_configured(tmp_path: Path, names: tuple[str, str]) -> None:
    # two backends alike in price and prior: the tie goes to config order, call after call (the
    # fake clock keeps the measured latency, which feeds the next decision, the same every run)
    twins = [mock(name) for name in names]
    with make_client(tmp_path, twins) as client:
        served = [client.generate(f"a lighthouse {i}", width=64, height=64).backend for i in range(5)]
    assert served == [names[0]] * 5
    assert [be.calls for be in twins] == [5, 0]
