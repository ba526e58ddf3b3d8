"""Prometheus metrics through ``prometheus_client``: the store's statistics and this process's histograms.

One exposition (``client.metrics_text()``, served at ``/metrics``) holds two kinds of numbers:

* **From the store**, computed at scrape time over every process that writes to it: the gauges and
  the latency summary of :func:`~pixelroute.telemetry.compute_stats` and this process's recorder
  counters (:func:`stats_families`; the names are listed in docs/operations.md).
* **Live**, this process since it started (:class:`LiveMetrics`): a histogram of each attempt's
  latency per backend and outcome, and one of the router's decision latency. Prometheus'
  ``histogram_quantile`` aggregates them across processes, which a stored percentile cannot.

Every client owns a :class:`~prometheus_client.CollectorRegistry` (never the library's global one),
so two clients or two apps in one process never collide on a name. ``prometheus_client`` is an
optional dependency (``pip install 'pixelroute[metrics]'``, also in the serve, flask and django
extras), imported only when a client is built with it installed or a scrape asks for it; without it
a scrape raises :class:`~pixelroute.MissingExtra` naming the extra.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

#: seconds; from a mock's milliseconds to a remote job's minutes
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
#: seconds; a decision takes tens of microseconds (cold start) to a millisecond or two (trained models)
DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
#: what ``/metrics`` answers with: the text format the exposition is written in
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def prometheus_client_module() -> Any:
    """``prometheus_client``, or a :class:`~pixelroute.MissingExtra` (a ``ConfigError``) naming the extra."""
    from .._extras import require

    require("metrics", "the Prometheus exposition (`/metrics`, `metrics_text()`, `stats --prometheus`)")
    import prometheus_client
    import prometheus_client.core  # the metric families of custom collectors

    return prometheus_client


def stats_families(stats: dict[str, Any], recorder_stats: dict[str, int] | None = None) -> Iterator[Metric]:
    """The metric families of ``stats`` (:func:`compute_stats`) and, if given, the recorder's counters.

    Window statistics are gauges (they describe the window, they do not only grow); latency is a
    summary with quantile labels; the recorder's counters are counters. A family with no value is
    left out.
    """
    core = prometheus_client_module().core
    backends = stats["backends"]

    def family(kind: type, name: str, help_text: str, labels: list[str],
               samples: Iterator[tuple[list[str], float | None]]) -> Iterator[Metric]:
        metric = kind(name, help_text, labels=labels)
        for values, value in samples:
            if value is not None:
                metric.add_metric(values, float(value))
        if metric.samples:
            yield metric

    def gauge(name: str, help_text: str, key: str) -> Iterator[Metric]:
        yield from family(core.GaugeMetricFamily, name, help_text, ["backend"],
                          (([n], b[key]) for n, b in backends.items()))

    yield from gauge("pixelroute_requests", "Attempts sent to each backend in the window.", "requests")
    yield from gauge("pixelroute_success_ratio", "Share of attempts that succeeded.", "success_rate")
    yield from family(core.GaugeMetricFamily, "pixelroute_failures", "Failed attempts by error class.",
                      ["backend", "error"],
                      (([n, e], c) for n, b in backends.items() for e, c in b["failures"].items()))
    latency = core.Metric("pixelroute_latency_seconds", "Latency of successful attempts.", "summary")
    for n, b in backends.items():
        for q in (50, 95, 99):
            value = b["latency_s"][f"p{q}"]
            if value is not None:
                latency.add_sample("pixelroute_latency_seconds", {"backend": n, "quantile": str(q / 100)}, value)
    if latency.samples:
        yield latency
    yield from gauge("pixelroute_gpu_seconds_per_request", "GPU-seconds per attempt.", "gpu_s_per_request")
    yield from gauge("pixelroute_cost_usd_per_request", "USD per attempt.", "cost_usd_per_request")
    yield from gauge("pixelroute_cost_usd_per_accepted_image",
                     "USD per image not rejected by a reviewer, failures included.", "cost_usd_per_accepted_image")
    yield from family(core.GaugeMetricFamily, "pixelroute_correction_seconds",
                      "Human correction time of successful attempts (mean and p90).", ["backend", "stat"],
                      (([n, stat], b["correction_s"][stat]) for n, b in backends.items() for stat in ("mean", "p90")))
    yield from gauge("pixelroute_requests_per_minute", "Attempts per minute.", "requests_per_minute")
    yield from family(core.GaugeMetricFamily, "pixelroute_telemetry_lost_records",
                      "Records the telemetry recorders dropped (all processes, from the store).", ["reason"],
                      (([r], c) for r, c in sorted((stats.get("losses") or {}).items())))
    if recorder_stats:
        for key in ("enqueued", "written", "dropped", "write_errors"):
            # the family is named without `_total`: prometheus_client adds it to a counter's sample
            yield from family(core.CounterMetricFamily, f"pixelroute_telemetry_{key}",
                              f"Telemetry records {key.replace('_', ' ')} by this process's recorder.", [],
                              iter([([], recorder_stats.get(key))]))
        yield from family(core.GaugeMetricFamily, "pixelroute_telemetry_queue_depth", "Records waiting to be written.",
                          [], iter([([], recorder_stats.get("queue_depth"))]))


class _StoreCollector:
    """Collects :func:`stats_families` at each scrape (it reads the store then, not before)."""

    def __init__(self, stats: Callable[[], dict[str, Any]], recorder_stats: Callable[[], dict[str, int]] | None):
        self._stats = stats
        self._recorder_stats = recorder_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats() or {"backends": {}}  # a client without telemetry: only its recorder's zeros
        yield from stats_families(stats, self._recorder_stats() if self._recorder_stats else None)


def prometheus_text(stats: dict[str, Any], recorder_stats: dict[str, int] | None = None) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``stats`` and, if given, the recorder's counters."""
    prometheus_client = prometheus_client_module()
    registry = prometheus_client.CollectorRegistry()
    registry.register(_StoreCollector(lambda: stats, (lambda: recorder_stats) if recorder_stats else None))
    text: str = prometheus_client.generate_latest(registry).decode("utf-8")
    return text


class LiveMetrics:
    """One client's registry: the store's statistics at scrape time plus live latency histograms.

    ``observe_attempt`` and ``observe_decision`` run on the request path: a dictionary lookup and
    one ``observe`` (a lock and a bucket search, about a microsecond).
    """

    def __init__(self, stats: Callable[[], dict[str, Any]], recorder_stats: Callable[[], dict[str, int]]) -> None:
        prometheus_client = prometheus_client_module()
        self._generate_latest = prometheus_client.generate_latest
        self.registry: CollectorRegistry = prometheus_client.CollectorRegistry()
        self.registry.register(_StoreCollector(stats, recorder_stats))
        self._generation = prometheus_client.Histogram(
            "pixelroute_generation_latency_seconds",
            "Latency of each attempt in this process, by backend and outcome (ok or the error class).",
            ["backend", "outcome"],
            buckets=GENERATION_BUCKETS,
            registry=self.registry,
        )
        self._decision = prometheus_client.Histogram(
            "pixelroute_decision_latency_seconds",
            "Time the router took to choose a backend in this process, by policy.",
            ["policy"],
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        #: label children by their values: ``labels()`` itself takes a lock on every call
        self._children: dict[tuple[str, ...], Any] = {}

    def observe_attempt(self, backend: str, outcome: dict[str, Any]) -> None:
        """An attempt ended with this telemetry ``outcome`` (its ``latency_s``, ``ok`` and ``error``)."""
        key = (backend, "ok" if outcome.get("ok") else str(outcome.get("error") or "error"))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._generation.labels(*key)
        child.observe(outcome["latency_s"])

    def observe_decision(self, seconds: float, policy: str) -> None:
        key = ("decision", policy)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._decision.labels(policy)
        child.observe(seconds)

    def text(self) -> str:
        """The exposition of this registry (reads the store for the window statistics)."""
        text: str = self._generate_latest(self.registry).decode("utf-8")
        return text


__all__ = ["CONTENT_TYPE", "LiveMetrics", "prometheus_client_module", "prometheus_text", "stats_families"]
