"""What progress events cost: per call on instant mock backends, and per denoising step.

    .venv/bin/python benchmarks/progress_events.py --runs 20 --calls 500 --steps 20000

Per call: ``Client.generate`` on an instant ``MockBackend`` without a listener, with a no-op
``on_progress`` callback, and via ``Client.stream`` (a thread per call), interleaved batches of
``--calls``, medians over ``--runs``; the differences to the no-listener path are what events
add. Per step: the diffusers step callback (``_StepWatch``) on one job, without a listener and
with one (no partial images), in ns per step, and the memory blocks each step leaves allocated
(``tracemalloc``), so "no allocation per step when nobody listens" is measured, not assumed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500, help="calls per timed batch")
    parser.add_argument("--steps", type=int, default=20000, help="step callbacks per timed batch")
    args = parser.parse_args()
    per_call(args.runs, args.calls)
    per_step(args.runs, args.steps)
    return 0


def per_call(runs: int, calls: int) -> None:
    from PIL import Image

    from pixelroute import SLA, BackendOutput, Client, MockBackend, load_settings

    output = BackendOutput(images=[Image.new("RGB", (8, 8))])

    def handler(request: Any, deadline: Any) -> BackendOutput:
        return output

    def ignore(event: Any) -> None:
        return None

    sla = SLA(deadline_s=30)
    with tempfile.TemporaryDirectory() as tmp:
        client = Client(load_settings({"router": {"exploration": 0.0}}),
                        backends=[MockBackend("a", handler), MockBackend("b", handler)],
                        store=f"sqlite:///{tmp}/events.db")
        paths: dict[str, Callable[[], Any]] = {
            "no listener": lambda: client.generate("a red bicycle", sla=sla),
            "on_progress no-op": lambda: client.generate("a red bicycle", sla=sla, on_progress=ignore),
            "stream()": lambda: list(client.stream("a red bicycle", sla=sla)),
        }
        timings = _interleave(paths, runs, calls)
        client.close()
    _report(f"per call, instant mock backends, {runs} interleaved batches of {calls} calls, telemetry to SQLite",
            timings, 1e6, "us")


def per_step(runs: int, steps: int) -> None:
    from pixelroute._deadline import Deadline
    from pixelroute.backends._diffusers_run import Prepared, _StepWatch
    from pixelroute.backends._pipeline_worker import Job
    from pixelroute.events import AttemptProgress

    item = Prepared(prompt="x", negative_prompt=None, width=64, height=64, n=1, steps=steps, guidance=0.0,
                    scheduler=None, seed=1, submitted_at=0.0)
    heard: list[Any] = []

    def watch(listening: bool) -> _StepWatch:
        progress = AttemptProgress(heard.append, "rid", 0, "local") if listening else None
        job = Job(payload=item, deadline=Deadline(None, progress=progress), runner=lambda jobs: None)
        return _StepWatch([job], steps, time.perf_counter, time.perf_counter())

    def run(listening: bool) -> float:
        w = watch(listening)
        kwargs: dict[str, Any] = {}
        t0 = time.perf_counter()
        for i in range(steps):
            w(None, i, None, kwargs)
        elapsed = (time.perf_counter() - t0) / steps
        heard.clear()
        return elapsed

    timings: dict[str, list[float]] = {"no listener": [], "listener": []}
    for _ in range(runs):
        timings["no listener"].append(run(False))
        timings["listener"].append(run(True))
    _report(f"per denoising step (the step callback alone, one job), {runs} interleaved batches of {steps} steps",
            timings, 1e9, "ns")
    for listening in (False, True):
        w = watch(listening)
        kwargs: dict[str, Any] = {}
        w(None, 0, None, kwargs)  # first call: lazily made state
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for i in range(1, 1001):
            w(None, i, None, kwargs)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        blocks = sum(stat.count_diff for stat in after.compare_to(before, "filename"))
        kept = len(heard)
        heard.clear()
        print(f"  {'listener' if listening else 'no listener'}: {blocks / 1000:.2f} blocks left allocated per "
              f"step ({kept} events kept by the listener)")


def _report(title: str, timings: dict[str, list[float]], scale: float, unit: str) -> None:
    """Median and min of each path, and their difference to the first (no listener)."""
    print(title)
    base_name = next(iter(timings))
    base, base_min = statistics.median(timings[base_name]), min(timings[base_name])
    for name, values in timings.items():
        median, low = statistics.median(values), min(values)
        extra = "" if name == base_name else (f"  (median {scale * (median - base):+.1f} {unit}, ratio "
                                              f"{median / base:.3f}; min {scale * (low - base_min):+.1f} {unit})")
        print(f"  {name}: median {scale * median:.1f} {unit}, min {scale * low:.1f} {unit}{extra}")


def _interleave(paths: dict[str, Callable[[], Any]], runs: int, calls: int) -> dict[str, list[float]]:
    for fn in paths.values():  # warm: router, caches, store
        for _ in range(50):
            fn()
    out: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(runs):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            out[name].append((time.perf_counter() - t0) / calls)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
