"""OpenTelemetry spans, recorded by the real SDK (``InMemorySpanExporter``) set as the global provider.

A call that falls back gives one ``pixelroute.generate`` span with two ``pixelroute.attempt``
children; attributes carry backend, operation, outcome, cost and deadline, never the prompt.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pixelroute import SLA, AsyncClient, Client, MockBackend, PixelrouteError
from tests.test_execution import Stall, backend, checkerboard

PROMPT = "a red bicycle leaning on the wall of Ada's house"
CONFIG: dict[str, Any] = {
    "router": {"exploration": 0.0},
    "telemetry": {"enabled": False},
    "backends": [
        # the cheaper one is chosen first and fails: the call falls back to `up`
        {"name": "down", "kind": "mock", "failure": "server_error", "price": {"per_image": 0.001}},
        {"name": "up", "kind": "mock", "price": {"per_image": 0.02}},
    ],
}
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _provider() -> Iterator[None]:
    # the API takes one global provider per process; tests in other modules then record into a stopped
    # exporter (it keeps nothing after shutdown)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    yield
    provider.shutdown()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def by_name(exported: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return sorted((s for s in exported if s.name == name), key=lambda s: s.start_time or 0)


def assert_fallback_tree(exported: tuple[ReadableSpan, ...]) -> None:
    (call,) = by_name(exported, "pixelroute.generate")
    first, second = by_name(exported, "pixelroute.attempt")
    assert call.attributes is not None and first.attributes is not None and second.attributes is not None
    assert dict(call.attributes) | {"pixelroute.request_id": "-"} == {
        "pixelroute.request_id": "-",
        "pixelroute.operation": "generate",
        "pixelroute.n": 1,
        "pixelroute.deadline_s": 5.0,
        "pixelroute.max_cost_usd": 0.5,
        "pixelroute.outcome": "ok",
        "pixelroute.backend": "up",
        "pixelroute.cost_usd": pytest.approx(0.02),
        "pixelroute.attempts": 2,
    }
    for attempt in (first, second):
        assert attempt.parent is not None and call.context is not None
        assert attempt.parent.span_id == call.context.span_id  # children of the call, whatever thread ran them
        assert attempt.attributes is not None and 0 < attempt.attributes["pixelroute.deadline_left_s"] <= 5
    assert first.attributes["pixelroute.backend"] == "down" and first.attributes["pixelroute.attempt"] == 0
    assert first.attributes["pixelroute.outcome"] == "server_error"
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes["pixelroute.backend"] == "up" and second.attributes["pixelroute.outcome"] == "ok"
    assert second.attributes["pixelroute.cost_usd"] == pytest.approx(0.02)
    assert second.attributes["pixelroute.operation"] == "attempt"
    assert second.attributes["pixelroute.backend_kind"] == "mock"
    assert second.status.status_code is StatusCode.UNSET
    for span in exported:
        assert span.attributes is not None
        assert all(key.startswith("pixelroute.") for key in span.attributes)
        assert not [v for v in span.attributes.values() if isinstance(v, str) and "bicycle" in v]  # no prompt


def test_a_fallback_is_one_call_span_with_an_attempt_span_each(spans: InMemorySpanExporter) -> None:
    with Client(CONFIG) as client:
        result = client.generate(PROMPT, sla={"deadline_s": 5, "max_cost_usd": 0.5})
    assert [a["backend"] for a in result.trace["attempts"]] == ["down", "up"]
    exported = spans.get_finished_spans()
    assert_fallback_tree(exported)
    (call,) = by_name(exported, "pixelroute.generate")
    assert call.attributes is not None and call.attributes["pixelroute.request_id"] == result.request_id


def test_the_async_client_traces_the_same_tree(spans: InMemorySpanExporter) -> None:
    async def run() -> None:
        async with AsyncClient(CONFIG) as client:
            await client.generate(PROMPT, sla={"deadline_s": 5, "max_cost_usd": 0.5})

    asyncio.run(run())
    assert_fallback_tree(spans.get_finished_spans())


def test_the_callers_span_is_the_parent_and_a_failed_call_is_an_error(spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("the-application")
    with (
        Client(CONFIG) as client,
        tracer.start_as_current_span("handle-request") as outer,
        pytest.raises(PixelrouteError),
    ):
        client.generate(PROMPT, backend="down")
    (call,) = by_name(spans.get_finished_spans(), "pixelroute.generate")
    assert call.parent is not None and call.parent.span_id == outer.get_span_context().span_id
    assert call.attributes is not None and call.attributes["pixelroute.outcome"] == "server_error"
    assert call.attributes["pixelroute.pinned_backend"] == "down" and call.attributes["pixelroute.attempts"] == 1
    assert call.status.status_code is StatusCode.ERROR and call.status.description == "server_error"
    assert not call.events  # no recorded exception: its message is not ours to export


def test_a_hedged_race_gives_both_racers_spans_under_the_call(spans: InMemorySpanExporter) -> None:
    primary = Stall("sync")
    racers = [backend("primary", primary, price=0.001), backend("hedge", checkerboard, price=0.002)]
    with Client({"router": {"exploration": 0.0, "seed": 1}, "telemetry": {"enabled": False}}, backends=racers) as c:
        assert c.generate(PROMPT, sla=SLA(deadline_s=5, hedge=True)).backend == "hedge"
    assert primary.cancelled.wait(5)
    exported = spans.get_finished_spans()
    (call,) = by_name(exported, "pixelroute.generate")
    attempts = {s.attributes["pixelroute.backend"]: s for s in by_name(exported, "pixelroute.attempt") if s.attributes}
    assert set(attempts) == {"primary", "hedge"}
    for span in attempts.values():  # the hedge ran on the client's thread pool, its span was started here
        assert span.parent is not None and call.context is not None and span.parent.span_id == call.context.span_id
    hedge, loser = attempts["hedge"].attributes, attempts["primary"].attributes
    assert hedge is not None and hedge["pixelroute.hedge"] is True and hedge["pixelroute.outcome"] == "ok"
    assert loser is not None and loser["pixelroute.hedge"] is False and loser["pixelroute.outcome"] == "cancelled"
    assert call.attributes is not None and call.attributes["pixelroute.cost_usd"] == pytest.approx(0.003)


def test_without_opentelemetry_nothing_is_traced(spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # as if opentelemetry-api were not installed
    with Client({"telemetry": {"enabled": False}}, backends=[MockBackend("m")]) as client:
        assert client.generate(PROMPT).backend == "m"
    assert spans.get_finished_spans() == ()


def test_no_span_is_made_before_a_provider_is_set_and_one_set_later_is_used() -> None:
    # a fresh interpreter: this module has set the global provider here, and the API sets it once
    code = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pixelroute import Client, MockBackend
from pixelroute._tracing import Tracing

with Client({"telemetry": {"enabled": False}}, backends=[MockBackend("m")]) as client:
    client.generate("a kite")
    assert not Tracing().recording()  # only the API's placeholder: no-op spans are not even made
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    client.generate("a kite")
print(sorted(s.name for s in exporter.get_finished_spans()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "['pixelroute.attempt', 'pixelroute.generate']"
