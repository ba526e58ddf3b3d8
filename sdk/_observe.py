"""What the engine tells about its own work as it runs: live Prometheus histograms and OpenTelemetry spans.

The engine calls an :class:`Observer` at three points (an attempt starts, an attempt ends with its
telemetry outcome, the router has decided) and the client wraps each call in
:meth:`Observer.generate`. :func:`build_observer` returns ``None`` when neither
``prometheus_client`` nor ``opentelemetry-api`` is installed; each hook is then one ``is None`` test.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from . import _tracing

if TYPE_CHECKING:
    from pixelroute.router import Decision

    from ._engine import Call, Plan
    from .telemetry.metrics import LiveMetrics

#: what :meth:`Observer.generate` returns without tracing (reusable: it holds no state)
_NO_SPAN: AbstractContextManager[None] = nullcontext()


class Observer:
    """Live metrics and tracing of one client; either part may be absent."""

    def __init__(self, metrics: LiveMetrics | None, tracing: _tracing.Tracing | None) -> None:
        self.metrics = metrics
        self.tracing = tracing

    def generate(self, call: Call) -> AbstractContextManager[None]:
        if self.tracing is None or not self.tracing.recording():
            return _NO_SPAN
        return self.tracing.generate(call)

    def attempt_started(self, plan: Plan) -> None:
        if self.tracing is not None and self.tracing.recording():
            self.tracing.attempt_started(plan)

    def attempt_ended(self, plan: Plan, outcome: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.observe_attempt(plan.backend.name, outcome)
        if self.tracing is not None:
            self.tracing.attempt_ended(plan, outcome)

    def decided(self, seconds: float, decision: Decision) -> None:
        if self.metrics is not None:
            self.metrics.observe_decision(seconds, decision.policy)


def build_observer(
    stats: Callable[[], dict[str, Any]], recorder_stats: Callable[[], dict[str, int]]
) -> Observer | None:
    """The observer of a client whose window statistics and recorder counters these return, if any part is installed."""
    metrics = None
    if _installed("prometheus_client"):
        from .telemetry.metrics import LiveMetrics

        metrics = LiveMetrics(stats, recorder_stats)
    tracing = _tracing.Tracing() if _installed("opentelemetry.trace") else None
    if metrics is None and tracing is None:
        return None
    return Observer(metrics, tracing)


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


__all__ = ["Observer", "build_observer"]
