"""Traces: one request's stored decision, attempts, timings, costs and correction, as one dict.

The engine builds ``Result.trace`` (and the PNG metadata) with the same :func:`build_trace` over
the same records it enqueues, so a trace read back later from the store is the same object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import UnknownRequest, ValidationError
from ._record import parse_ts

if TYPE_CHECKING:
    from ._store import Store

# outcome keys shown first in every attempt, in this order; other outcome keys follow
_ATTEMPT_KEYS = ("ok", "error", "latency_s", "queue_s", "gpu_s", "cost_usd")


def _attempt(record: dict[str, Any]) -> dict[str, Any]:
    outcome = record.get("outcome") or {}
    out: dict[str, Any] = {"attempt": record.get("attempt"), "backend": record.get("backend"), "ts": record.get("ts")}
    out.update({key: outcome.get(key) for key in _ATTEMPT_KEYS})
    out.update({k: v for k, v in outcome.items() if k not in out})
    return out


def request_latency(records: list[dict[str, Any]]) -> float | None:
    """Wall time of a request: first attempt start (``ts``) to the last attempt's end (``ts + latency_s``).

    Hedged attempts overlap, so summing latencies would overcount; a span does not. Falls back to
    the largest attempt latency when a ``ts`` cannot be parsed.
    """
    spans = []
    for r in records:
        latency = (r.get("outcome") or {}).get("latency_s")
        if latency is None:
            continue
        try:
            start = parse_ts(r["ts"]).timestamp()
        except (KeyError, ValidationError):
            return max((x.get("outcome") or {}).get("latency_s") or 0.0 for x in records)
        spans.append((start, start + float(latency)))
    if not spans:
        return None
    return round(max(end for _, end in spans) - min(start for start, _ in spans), 6)


def _total_cost(records: list[dict[str, Any]]) -> float:
    return round(sum((r.get("outcome") or {}).get("cost_usd") or 0.0 for r in records), 10)


def _final(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The attempt whose result was returned: the first successful one, else the last."""
    return next((r for r in records if (r.get("outcome") or {}).get("ok")), records[-1])


def build_trace(records: list[dict[str, Any]], corrections: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The trace of one request from its attempt records (any order) and its correction history.

    ``decision`` is attempt 0's decision as recorded (policy, propensity, every candidate with its
    predictions, feasibility and ``why_not``); ``attempts`` lists each attempt's outcome;
    ``cost_usd`` sums them and ``latency_s`` spans them; ``correction`` is the report in effect.
    """
    if not records:
        raise ValidationError("`records` must hold at least one attempt but is empty", field="records", value=[])
    ordered = sorted(records, key=lambda r: r.get("attempt") or 0)
    ids = {r.get("request_id") for r in ordered}
    if len(ids) != 1:
        raise ValidationError(
            f"`records` must belong to one request but hold {len(ids)} request ids", field="records", value=ids
        )
    first, final = ordered[0], _final(ordered)
    history = list(corrections or [])
    correction = (
        history[-1] if history else next((r["correction"] for r in reversed(ordered) if r.get("correction")), None)
    )
    return {
        "request_id": first.get("request_id"),
        "ts": first.get("ts"),
        "backend": final.get("backend"),
        "ok": bool((final.get("outcome") or {}).get("ok")),
        "operation": first.get("operation") or "generate",  # records from before edits are generations
        **({"input": first["input"]} if first.get("input") is not None else {}),
        "prompt": first.get("prompt"),
        "prompt_sha256": first.get("prompt_sha256"),
        "params": first.get("params"),
        "sla": first.get("sla"),
        "decision": first.get("decision") or {},
        "attempts": [_attempt(r) for r in ordered],
        "cost_usd": _total_cost(ordered),
        "latency_s": request_latency(ordered),
        "correction": correction,
        "correction_history": history,
    }


def stored_trace(store: Store, request_id: str) -> dict[str, Any]:
    """The trace of ``request_id`` as ``store`` holds it; :class:`UnknownRequest` when it holds none."""
    records = store.records_for(request_id)
    if not records:
        raise UnknownRequest(request_id)
    return build_trace(records, store.correction_history(request_id))


def summarize_request(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One line per request for admin pages: when, where, whether it worked, what it cost."""
    ordered = sorted(records, key=lambda r: r.get("attempt") or 0)
    first, final = ordered[0], _final(ordered)
    outcome = final.get("outcome") or {}
    return {
        "request_id": first.get("request_id"),
        "ts": first.get("ts"),
        "backend": final.get("backend"),
        "operation": first.get("operation") or "generate",
        "ok": bool(outcome.get("ok")),
        "error": outcome.get("error"),
        "attempts": len(ordered),
        "latency_s": request_latency(ordered),
        "cost_usd": _total_cost(ordered),
        "prompt": first.get("prompt"),
        "correction": final.get("correction"),
    }
