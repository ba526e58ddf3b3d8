"""Training throughput on N simulated records: featurize + fit 4 models + calibrate + write.

The records are simulated ONCE into a JSONL file (1M rows take ~5 minutes to simulate and ~1.7 GB
on disk) and reused by every later run; parsing them is timed separately and is not training.
Every variant trains on the same in-memory records, interleaved, ``--runs`` times (medians), in
one process:

* ``current``: this checkout's ``pixelroute.router.train`` with default parameters;
* ``max_bin=63``: the same with 63 histogram bins (``--max-bin``; quality printed alongside);
* ``baseline``: another checkout's router/ folder (``pixelroute.router``) (``--baseline-src DIR``, e.g. a
  ``git worktree`` of an older commit), imported under another name: the before/after ratio is
  measured on the same records in the same process, minutes apart, under the same load.

    .venv/bin/python benchmarks/train_time.py --jsonl /tmp/sim1m.jsonl [--n 1000000] [--runs 2]
        [--max-bin 63] [--baseline-src /tmp/router-base]

Holding 1M parsed records takes ~8 GB of memory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixelroute.router import simulate, train
from pixelroute.router.simulate import DEFAULT_BACKENDS
from pixelroute.router.training import TrainParams


def ensure_jsonl(path: Path, n: int, seed: int) -> None:
    """Simulate ``n`` records into ``path`` unless it already holds at least ``n`` (temp + rename)."""
    if path.is_file():
        with path.open() as fh:
            if sum(1 for _ in zip(range(n), fh, strict=False)) >= n:
                return
    t0 = time.perf_counter()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as fh:
            for rec in simulate(n, seed=seed):
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"simulated {n:,} records into {path} in {time.perf_counter() - t0:.1f} s (done once)")


def load_baseline(src: Path, workdir: Path) -> Callable[..., dict[str, Any]]:
    """``train`` of the router/ folder in checkout ``src``, copied and imported as ``router_baseline``
    (the router package uses relative imports only)."""
    shutil.copytree(src / "router", workdir / "router_baseline")
    sys.path.insert(0, str(workdir))
    module = importlib.import_module("router_baseline")
    fn: Callable[..., dict[str, Any]] = module.train
    return fn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jsonl", type=Path, required=True, help="simulated records (written once if missing)")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--max-bin", type=int, default=None, help="also time this max_bin")
    ap.add_argument("--baseline-src", type=Path, default=None, help="repository root of an older checkout")
    args = ap.parse_args()
    ensure_jsonl(args.jsonl, args.n, args.seed)
    t0 = time.perf_counter()
    with args.jsonl.open() as fh:
        records = [json.loads(line) for _, line in zip(range(args.n), fh, strict=False)]
    print(f"parsed {len(records):,} records in {time.perf_counter() - t0:.1f} s (not training)")
    profiles = [b.profile() for b in DEFAULT_BACKENDS]
    with tempfile.TemporaryDirectory() as tmp:
        variants: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
            ("current", lambda out: train(records, out, profiles=profiles))]
        if args.max_bin:
            variants.append((f"max_bin={args.max_bin}",
                             lambda out: train(records, out, profiles=profiles,
                                               params=TrainParams(max_bin=args.max_bin))))
        if args.baseline_src:
            base_train = load_baseline(args.baseline_src, Path(tmp))
            variants.append(("baseline", lambda out: base_train(records, out, profiles=profiles)))
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        for run in range(args.runs):
            for name, fit in variants:
                t0 = time.perf_counter()
                manifest = fit(Path(tmp) / f"{name}-{run}")
                times[name].append(time.perf_counter() - t0)
                m = manifest["metrics"]
                print(f"run {run} {name}: {times[name][-1]:.1f} s; trees {manifest['trees']}; "
                      f"p_fail Brier {m['failure']['brier']:.5f}; correction MAE {m['correction']['mae_s']:.2f} s; "
                      f"p95 coverage {m['latency_coverage']['*']['p95']:.3f}; load {os.getloadavg()[0]:.2f}",
                      flush=True)
    print("| variant | median train s | rows/s | runs |\n|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.1f} | {len(records) / med:,.0f} | {', '.join(f'{t:.1f}' for t in ts)} |")
    if "baseline" in times:
        ratio = statistics.median(times["baseline"]) / statistics.median(times["current"])
        print(f"\ncurrent vs baseline: {ratio:.2f}x")


if __name__ == "__main__":
    main()
