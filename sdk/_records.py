"""Pure helpers behind the engine: telemetry timestamps, the decision part of a record, and the
sentences that explain a refusal. No state, no I/O; split out of ``_engine.py`` to keep it small.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._errors import BackendError, DeadlineExceeded, PixelrouteError
from ._redact import redact

if TYPE_CHECKING:
    from pixelroute.router import Candidate

    from ._types import SLA


#: (whole second, its "YYYY-MM-DDTHH:MM:SS." text); replaced as one tuple, so threads read it safely
_second_text: tuple[int, str] = (-1, "")


def utc_ms(ts: float) -> str:
    """``ts`` (epoch seconds) as ISO-8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.123Z``.

    Every attempt record needs one; strftime is ~2 us, so the second's text is made once per second.
    """
    global _second_text
    second = int(ts)
    cached_second, text = _second_text
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _second_text = (second, text)
    # min(): a float a hair under the next second must not print as ".1000"
    return f"{text}{min(999, int((ts - second) * 1000)):03d}Z"


def decision_record(d: dict[str, Any] | None, cand: Candidate | None) -> dict[str, Any]:
    if not d:
        return {"policy": None, "router_version": None, "propensity": None, "explored": False,
                "predicted": None}
    return {
        "policy": d["policy"],
        "router_version": d["router_version"],
        "propensity": d["propensity"],
        "explored": d["explored"],
        "predicted": None
        if cand is None
        else {
            "latency_p50_s": cand.latency_p50_s,
            "latency_p95_s": cand.latency_p95_s,
            "p_fail": cand.p_fail,
            "correction_s": cand.correction_s,
            "cost_usd": cand.cost_usd,
        },
        "reason": d["reason"],
        # kept in the stored trace: a best-effort or pinned choice is told apart from a feasible one
        "predicted_to_miss": bool(d.get("predicted_to_miss", False)),
        "fallbacks": d["fallbacks"],
        "candidates": d["candidates"],
    }


def as_pixelroute_error(exc: BaseException | None, backend: str) -> PixelrouteError:
    if isinstance(exc, PixelrouteError):
        return exc
    if isinstance(exc, TimeoutError):
        err: PixelrouteError = DeadlineExceeded(f"backend `{backend}` timed out")
    else:
        name = type(exc).__name__ if exc else "unknown"
        err = BackendError(f"backend `{backend}` raised {name}: {redact(str(exc))}", backend=backend)
    err.__cause__ = exc
    return err


def sla_text(sla: SLA) -> str:
    parts = []
    if sla.deadline_s is not None:
        parts.append(f"deadline {sla.deadline_s} s")
    if sla.max_cost_usd is not None:
        parts.append(f"max cost ${sla.max_cost_usd}")
    return "(" + (", ".join(parts) or "no constraints") + ")"


def candidates_note(cands: list[dict[str, Any]]) -> str:
    return "; ".join(f"{c['backend']}: {c.get('why_not') or 'feasible'}" for c in cands)


def why_not_note(why_not: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in why_not.items())
