"""OpenTelemetry spans: one per ``generate()`` call and a child per attempt, when ``opentelemetry-api`` is installed.

The spans go to whatever tracer provider the application set up (``trace.set_tracer_provider``,
or ``OTEL_PYTHON_TRACER_PROVIDER``). Until one is set the API would hand out no-op spans, so none is
made (each would still cost microseconds); a provider set later is used from the next call on.
Without the package the client builds no :class:`Tracing` at all and the hooks are skipped.

Attributes (all under ``pixelroute.``): the request id, the operation, the SLA (deadline and cost
cap), and at the end the backend, the outcome (``ok`` or the error class), the cost and the number
of attempts; an attempt adds its number, backend kind, whether it is a hedge, the deadline left when
it started, and its latency. Never the prompt, the negative prompt or an error's text (they may
carry what a user typed or what a provider echoed), and never a credential.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._errors import error_code

if TYPE_CHECKING:
    from ._engine import Call, Plan


class Tracing:
    """The client's tracer; ``generate`` wraps a call, ``attempt_started``/``attempt_ended`` an attempt."""

    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import trace

        from . import __version__

        self._trace = trace
        self._given = tracer_provider is not None
        self._tracer = trace.get_tracer("pixelroute", __version__, tracer_provider=tracer_provider)

    def recording(self) -> bool:
        """Whether spans go anywhere: a provider was given or set, not only the API's placeholder."""
        return self._given or not isinstance(
            self._trace.get_tracer_provider(), self._trace.ProxyTracerProvider | self._trace.NoOpTracerProvider
        )

    @contextmanager
    def generate(self, call: Call) -> Iterator[None]:
        """The call's span, current while the call runs so that each attempt's span is its child."""
        attributes: dict[str, Any] = {"pixelroute.request_id": call.request_id, "pixelroute.operation": "generate",
                                      "pixelroute.n": call.request.n}
        if call.sla.deadline_s is not None:
            attributes["pixelroute.deadline_s"] = call.sla.deadline_s
        if call.sla.max_cost_usd is not None:
            attributes["pixelroute.max_cost_usd"] = call.sla.max_cost_usd
        if call.pinned is not None:
            attributes["pixelroute.pinned_backend"] = call.pinned
        with self._tracer.start_as_current_span(
            "pixelroute.generate", attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            # the ending attributes are set at once: each call to the SDK's span takes its lock
            ending: dict[str, Any] = {}
            try:
                yield
            except BaseException as exc:
                ending["pixelroute.outcome"] = code = error_code(exc)
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, code))
                raise
            else:
                ending["pixelroute.outcome"] = "ok"
                ok = [a for a in call.attempts if a.get("ok")]
                if ok:
                    ending["pixelroute.backend"] = ok[-1]["backend"]
            finally:
                ending["pixelroute.cost_usd"] = call.spent_usd
                ending["pixelroute.attempts"] = len(call.attempts)
                span.set_attributes(ending)

    def attempt_started(self, plan: Plan) -> None:
        left = plan.deadline.remaining()
        attributes: dict[str, Any] = {
            "pixelroute.operation": "attempt",
            "pixelroute.backend": plan.backend.name,
            "pixelroute.backend_kind": plan.backend.kind,
            "pixelroute.attempt": plan.attempt,
            "pixelroute.hedge": plan.hedge,
        }
        if math.isfinite(left):
            attributes["pixelroute.deadline_left_s"] = round(left, 6)
        plan.span = self._tracer.start_span("pixelroute.attempt", attributes=attributes)

    def attempt_ended(self, plan: Plan, outcome: dict[str, Any]) -> None:
        """End the attempt's span with its telemetry ``outcome``."""
        span, plan.span = plan.span, None
        if span is None:
            return
        result = "ok" if outcome.get("ok") else str(outcome.get("error") or "error")
        span.set_attributes({"pixelroute.outcome": result, "pixelroute.latency_s": outcome["latency_s"],
                             "pixelroute.cost_usd": outcome["cost_usd"]})
        if result != "ok":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, result))
        span.end()


__all__ = ["Tracing"]
