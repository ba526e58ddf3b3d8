"""Hedged requests and the cascade, sync and async, on MockBackends with real (short) waits."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from sdk import SLA, AsyncClient, BackendOutput, Cancelled, Client, MockBackend, Price
from sdk._config import load_settings
from sdk.backends.base import BackendSettings
from sdk.gates import ContrastGate


def backend(name: str, handler, *, price: float, latency: float, strengths=None) -> MockBackend:
    settings = BackendSettings(name=name, kind="mock", price=Price(per_image=price), typical_latency_s=latency,
                               strengths=strengths or {})
    return MockBackend(name, handler, settings=settings)


def flat(request, deadline) -> BackendOutput:
    return BackendOutput(images=[Image.new("RGB", (64, 64), (128, 128, 128))])


def checkerboard(request, deadline) -> BackendOutput:
    img = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(img)
    for x in range(0, 64, 8):
        for y in range(0, 64, 8):
            if (x + y) // 8 % 2:
                draw.rectangle([x, y, x + 7, y + 7], fill="black")
    return BackendOutput(images=[img])


class Stalling:
    """A primary that hangs until its attempt is cancelled (as a denoising loop is interrupted)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def __call__(self, request, deadline) -> BackendOutput:
        assert deadline.cancel is not None
        deadline.cancel._event.wait(5)
        if deadline.cancelled:
            self.cancelled.set()
            raise Cancelled("interrupted")
        raise AssertionError("the primary was never cancelled")


def client_for(tmp_path: Path, backends, **execution) -> Client:
    cfg = load_settings({"router": {"exploration": 0.0}, "execution": execution})
    return Client(cfg, backends=backends, store=f"sqlite:///{tmp_path / 'e.db'}")


def test_slow_primary_triggers_a_hedge_that_wins(tmp_path: Path) -> None:
    stalling = Stalling()
    backends = [backend("primary", stalling, price=0.001, latency=0.02),
                backend("hedge", checkerboard, price=0.002, latency=0.02)]
    with client_for(tmp_path, backends) as client:
        t0 = time.monotonic()
        r = client.generate("x", sla=SLA(deadline_s=5, hedge=True), width=64, height=64)
        elapsed = time.monotonic() - t0
        assert r.backend == "hedge"
        assert stalling.cancelled.wait(2), "the losing primary must be cancelled"
        assert r.trace["hedge"]["winner"] == "hedge" and r.trace["hedge"]["primary"] == "primary"
        assert elapsed < 3
        client.recorder.flush()
        rows = client._store.records_for(r.request_id)
    outcomes = {(row["backend"], row["outcome"]["ok"], row["outcome"]["error"]) for row in rows}
    assert outcomes == {("primary", False, "cancelled"), ("hedge", True, None)}
    assert all(row["outcome"]["hedge"] == (row["backend"] == "hedge") for row in rows)


def test_no_hedge_when_it_is_not_affordable(tmp_path: Path) -> None:
    calls = []

    def slowish(request, deadline):
        time.sleep(0.3)
        calls.append("primary")
        return checkerboard(request, deadline)

    backends = [backend("primary", slowish, price=0.01, latency=0.02),
                backend("dear", checkerboard, price=0.5, latency=0.02)]
    with client_for(tmp_path, backends) as client:
        r = client.generate("x", sla=SLA(deadline_s=5, max_cost_usd=0.1, hedge=True), width=64, height=64)
    assert r.backend == "primary" and calls == ["primary"]
    assert "hedge" not in r.trace or "winner" not in r.trace.get("hedge", {})


def test_async_hedge_cancels_the_loser_task(tmp_path: Path) -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def hang(request, deadline):
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        raise AssertionError("unreachable")

    async def main() -> None:
        backends = [backend("primary", hang, price=0.001, latency=0.02),
                    backend("hedge", checkerboard, price=0.002, latency=0.02)]
        cfg = load_settings({"router": {"exploration": 0.0}})
        async with AsyncClient(cfg, backends=backends, store=f"sqlite:///{tmp_path / 'a.db'}") as client:
            r = await client.generate("x", sla=SLA(deadline_s=5, hedge=True), width=64, height=64)
            assert r.backend == "hedge"
            assert cancelled == [True]
            assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    asyncio.run(main())


def test_cascade_escalates_only_when_the_gate_fails(tmp_path: Path) -> None:
    good = [backend("cheap", checkerboard, price=0.001, latency=0.02),
            backend("hifi", checkerboard, price=0.04, latency=0.02, strengths={"typography": 1.0})]
    with client_for(tmp_path, good) as client:
        r = client.generate("a sign that says 'OPEN'", cascade=True, width=64, height=64)
        assert r.backend == "cheap"
        assert r.trace["cascade"]["escalated"] is False and r.trace["cascade"]["gate_score"] == 1.0

    bad = [backend("cheap", flat, price=0.001, latency=0.02),
           backend("hifi", checkerboard, price=0.04, latency=0.02, strengths={"typography": 1.0})]
    with client_for(tmp_path, bad) as client:
        r = client.generate("a sign that says 'OPEN'", cascade=True, width=64, height=64)
        assert r.backend == "hifi" and r.trace["cascade"]["escalated"] is True
        assert r.cost_usd == pytest.approx(0.041)  # the cheap attempt was paid for too
        client.recorder.flush()
        rows = client._store.records_for(r.request_id)
        assert rows[0]["outcome"]["gate_score"] == 0.0  # logged: the router learns from gate outcomes


def test_cascade_does_not_escalate_past_the_budget(tmp_path: Path) -> None:
    bad = [backend("cheap", flat, price=0.01, latency=0.02),
           backend("hifi", checkerboard, price=0.04, latency=0.02, strengths={"typography": 1.0})]
    with client_for(tmp_path, bad) as client:
        r = client.generate("x", sla=SLA(max_cost_usd=0.045), cascade=True, width=64, height=64)
    assert r.backend == "cheap"
    assert "escalation_skipped" in r.trace["cascade"]


def test_contrast_gate() -> None:
    from sdk import GenerateRequest

    req = GenerateRequest(prompt="x")
    assert ContrastGate()(flat(req, None).images[0], req) == 0.0
    assert ContrastGate()(checkerboard(req, None).images[0], req) == 1.0


def test_async_cascade_escalates_on_gate_failure(tmp_path: Path) -> None:
    async def main() -> None:
        backends = [backend("cheap", flat, price=0.001, latency=0.02),
                    backend("hifi", checkerboard, price=0.04, latency=0.02, strengths={"typography": 1.0})]
        cfg = load_settings({"router": {"exploration": 0.0}})
        async with AsyncClient(cfg, backends=backends, store=f"sqlite:///{tmp_path / 'c.db'}") as client:
            r = await client.generate("a sign that says 'OPEN'", cascade=True, width=64, height=64)
            assert r.backend == "hifi" and r.trace["cascade"]["escalated"] is True
            assert [a["backend"] for a in r.trace["attempts"]] == ["cheap", "hifi"]

    asyncio.run(main())
