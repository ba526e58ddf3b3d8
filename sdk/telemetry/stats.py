"""Operational statistics per backend, as a dict and a text table (Prometheus: :mod:`.metrics`).

``compute_stats`` streams: it keeps counters and one float array per backend (8 bytes a value),
never the records, so it can walk a store's :meth:`iter_records` of millions of rows.
Definitions (also in docs/telemetry.md):

* ``requests``: attempts sent to the backend (one record each); ``success_rate`` = ok / requests.
* ``latency_s``: p50/p95/p99 of *successful* attempts (failures are counted under ``failures``).
* ``gpu_s_per_request``, ``cost_usd_per_request``: sums over all attempts / requests.
* ``cost_usd_per_accepted_image``: all the backend's cost (failures included) / images of its
  successful attempts not marked ``rejected`` by a correction (unreviewed images count as kept).
* ``correction_s``: mean and p90 of the latest correction report of its successful attempts.
* ``requests_per_minute``: requests / the minutes between the first and the last record seen.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ._record import canonical_ts, format_ts, parse_ts

NO_BACKEND = "(none)"  # requests refused before any backend ran


def percentile(values: array[float] | list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class _Backend:
    __slots__ = ("requests", "ok", "failures", "latencies", "gpu_s", "cost", "images", "corrections")

    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self.latencies: array[float] = array("d")
        self.gpu_s = 0.0
        self.cost = 0.0
        self.images = 0
        self.corrections: array[float] = array("d")

    def add(self, record: dict[str, Any]) -> None:
        outcome = record.get("outcome") or {}
        self.requests += 1
        self.gpu_s += outcome.get("gpu_s") or 0.0
        self.cost += outcome.get("cost_usd") or 0.0
        if not outcome.get("ok"):
            self.failures[outcome.get("error") or "unknown"] += 1
            return
        self.ok += 1
        if outcome.get("latency_s") is not None:
            self.latencies.append(float(outcome["latency_s"]))
        correction = record.get("correction")
        if correction:
            self.corrections.append(float(correction["seconds"]))
        if not correction or correction.get("verdict") != "rejected":
            self.images += int((record.get("params") or {}).get("n") or 1)

    def result(self, minutes: float | None) -> dict[str, Any]:
        n = self.requests
        mean = sum(self.corrections) / len(self.corrections) if self.corrections else None
        return {
            "requests": n,
            "ok": self.ok,
            "success_rate": self.ok / n if n else None,
            "failures": dict(self.failures.most_common()),
            "latency_s": {f"p{q}": percentile(self.latencies, q) for q in (50, 95, 99)},
            "gpu_s_per_request": self.gpu_s / n if n else None,
            "cost_usd": self.cost,
            "cost_usd_per_request": self.cost / n if n else None,
            "accepted_images": self.images,
            "cost_usd_per_accepted_image": self.cost / self.images if self.images else None,
            "correction_s": {"n": len(self.corrections), "mean": mean, "p90": percentile(self.corrections, 90)},
            "requests_per_minute": n / minutes if minutes else None,
        }


def compute_stats(records: Iterable[dict[str, Any]], since: datetime | str | None = None) -> dict[str, Any]:
    """Per-backend statistics of ``records`` (those at or after ``since``), streaming."""
    bound = format_ts(parse_ts(since, field="since")) if since is not None else None
    backends: dict[str, _Backend] = {}
    first = last = None
    requests = 0
    for record in records:
        ts = canonical_ts(record["ts"])
        if bound is not None and ts < bound:
            continue
        first = ts if first is None or ts < first else first
        last = ts if last is None or ts > last else last
        if not record.get("attempt"):
            requests += 1
        name = record.get("backend") or NO_BACKEND
        backend = backends.get(name)
        if backend is None:
            backend = backends[name] = _Backend()
        backend.add(record)
    minutes = None
    if first is not None and last is not None and last > first:
        minutes = (parse_ts(last) - parse_ts(first)).total_seconds() / 60.0
    attempts = sum(b.requests for b in backends.values())
    ok = sum(b.ok for b in backends.values())
    return {
        "window": {"since": bound, "first_ts": first, "last_ts": last, "minutes": minutes},
        "totals": {
            "requests": requests,
            "attempts": attempts,
            "success_rate": ok / attempts if attempts else None,
            "cost_usd": sum(b.cost for b in backends.values()),
            "requests_per_minute": requests / minutes if minutes else None,
        },
        "backends": {name: backends[name].result(minutes) for name in sorted(backends)},
        "losses": {},
    }


# --------------------------------------------------------------------------- text table


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_stats(stats: dict[str, Any]) -> str:
    """A fixed-width table, one row per backend, failure classes under each."""
    window, totals = stats["window"], stats["totals"]
    lines = [
        f"window: {window['first_ts'] or '-'} .. {window['last_ts'] or '-'}"
        + (f" (since {window['since']})" if window.get("since") else ""),
        f"requests: {totals['requests']}  attempts: {totals['attempts']}  "
        f"success: {_num(totals['success_rate'] and totals['success_rate'] * 100, '.1f')}%  "
        f"cost: ${totals['cost_usd']:.4f}  req/min: {_num(totals['requests_per_minute'], '.1f')}",
    ]
    for reason, count in sorted((stats.get("losses") or {}).items()):
        lines.append(f"TELEMETRY DROPPED: {count} records ({reason}); these are not in the numbers below")
    header = (
        f"{'backend':<18}{'requests':>9}{'success':>9}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}"
        f"{'GPU-s/req':>10}{'$/req':>10}{'$/image':>10}{'corr s':>8}{'corr p90':>9}{'req/min':>10}"
    )
    lines += ["", header, "-" * len(header)]
    for name, b in stats["backends"].items():
        rate = None if b["success_rate"] is None else b["success_rate"] * 100
        lat, corr = b["latency_s"], b["correction_s"]
        lines.append(
            f"{name[:17]:<18}{b['requests']:>9}{_num(rate, '.1f') + '%':>9}"
            f"{_num(lat['p50'], '.2f'):>8}{_num(lat['p95'], '.2f'):>8}{_num(lat['p99'], '.2f'):>8}"
            f"{_num(b['gpu_s_per_request'], '.3f'):>10}{_num(b['cost_usd_per_request'], '.5f'):>10}"
            f"{_num(b['cost_usd_per_accepted_image'], '.5f'):>10}{_num(corr['mean'], '.1f'):>8}"
            f"{_num(corr['p90'], '.1f'):>9}{_num(b['requests_per_minute'], '.1f'):>10}"
        )
        if b["failures"]:
            lines.append("    failures: " + ", ".join(f"{k} {v}" for k, v in b["failures"].items()))
    return "\n".join(lines) + "\n"
