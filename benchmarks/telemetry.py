"""Telemetry benchmark: request-path enqueue cost, sustained rows/s into SQLite and PostgreSQL, loss at shutdown.

    .venv/bin/python benchmarks/telemetry.py [--rows 100000] [--runs 5] [--postgres URL | --no-postgres]

Every figure is a median over ``--runs`` runs, with its baseline measured in the same run:
* enqueue: ``Recorder.record`` per call (perf_counter_ns around each call) while the writer
  thread is busy writing; baseline: ``queue.Queue.put`` (the obvious alternative) on the same records.
* rows/s: records handed to a Recorder as fast as the producer can, until ``flush()`` returns;
  baseline: the same records written one transaction per record (no batching).
* paced: the producer holds a 50,000 records/s rate for 3 s; reports drops (target 0).
* lost at clean shutdown: records enqueued, then ``close()`` at once; rows missing afterwards.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixelroute.telemetry import Recorder, Store, example_record, open_store  # noqa: E402

TEMPLATE = example_record()


def records(n: int, tag: str) -> Iterator[dict[str, Any]]:
    """Distinct, realistic records; nested objects are shared (the writer only reads them)."""
    prefix = f"{tag}-{uuid.uuid4().hex[:8]}"
    for i in range(n):
        yield {**TEMPLATE, "request_id": f"{prefix}-{i:09d}"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def bench_enqueue(open_fresh: Callable[[], Store], n: int) -> tuple[float, float, float, float]:
    batch = list(records(n, "enq"))
    store = open_fresh()
    rec = Recorder(store, queue_size=n + 1, batch_size=2000)
    clock = time.perf_counter_ns
    samples = []
    for record in batch:
        t0 = clock()
        rec.record(record)
        samples.append(clock() - t0)
    rec.close()
    store.close()
    q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=n + 1)
    base = []
    for record in batch:
        t0 = clock()
        q.put(record)
        base.append(clock() - t0)
    us = [s / 1000 for s in samples]
    base_us = [s / 1000 for s in base]
    return percentile(us, 50), percentile(us, 99), percentile(base_us, 50), percentile(base_us, 99)


def bench_throughput(open_fresh: Callable[[], Store], n: int, baseline_n: int) -> tuple[float, float]:
    batch = list(records(n, "tput"))
    store = open_fresh()
    rec = Recorder(store, queue_size=n + 1, batch_size=2000)
    t0 = time.perf_counter()
    for record in batch:
        rec.record(record)
    rec.flush()
    elapsed = time.perf_counter() - t0
    assert rec.stats()["dropped"] == 0 and store.count() == n, rec.stats()
    rec.close()
    t0 = time.perf_counter()
    for record in records(baseline_n, "one"):
        store.write_batch([record])
    base = baseline_n / (time.perf_counter() - t0)
    store.close()
    return n / elapsed, base


def bench_paced(open_fresh: Callable[[], Store], rate: int, seconds: float) -> tuple[int, int, int]:
    store = open_fresh()
    rec = Recorder(store)  # the defaults a user gets: queue 100,000, batches of 2,000, drop when full
    total = int(rate * seconds)
    source = records(total, "paced")
    start = time.perf_counter()
    sent = 0
    while sent < total:  # requests arrive over time: the producer sleeps between millisecond ticks
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            rec.record(next(source))
            sent += 1
        time.sleep(0.001)
    rec.close()
    stats, count = rec.stats(), store.count()
    store.close()
    return stats["dropped"], total - count, stats["written"]


def bench_shutdown_loss(open_fresh: Callable[[], Store], n: int) -> int:
    store = open_fresh()
    rec = Recorder(store, queue_size=n + 1)
    for record in records(n, "close"):
        rec.record(record)
    rec.close()
    lost = n - store.count()
    store.close()
    return lost


def run_backend(name: str, open_fresh: Callable[[], Store], args: argparse.Namespace) -> None:
    print(f"\n## {name}")
    enq = [bench_enqueue(open_fresh, args.rows) for _ in range(args.runs)]
    p50, p99 = statistics.median(e[0] for e in enq), statistics.median(e[1] for e in enq)
    b50, b99 = statistics.median(e[2] for e in enq), statistics.median(e[3] for e in enq)
    print(f"enqueue Recorder.record   p50 {p50:.2f} us  p99 {p99:.2f} us  (target p99 <= 20 us)")
    print(f"baseline queue.Queue.put  p50 {b50:.2f} us  p99 {b99:.2f} us  -> p99 ratio {b99 / p99:.1f}x")
    tput = [bench_throughput(open_fresh, args.rows, args.baseline_rows) for _ in range(args.runs)]
    rows_s, base_s = statistics.median(t[0] for t in tput), statistics.median(t[1] for t in tput)
    print(
        f"sustained via Recorder    {rows_s:,.0f} rows/s (median of {args.runs}; runs: "
        + ", ".join(f"{t[0]:,.0f}" for t in tput)
        + ")"
    )
    print(f"baseline 1 row per commit {base_s:,.0f} rows/s -> batching {rows_s / base_s:.1f}x")
    dropped, missing, written = bench_paced(open_fresh, args.rate, 3.0)
    print(f"paced {args.rate:,}/s for 3 s   written {written:,}  dropped {dropped}  missing {missing}")
    lost = [bench_shutdown_loss(open_fresh, args.rows) for _ in range(args.runs)]
    print(f"lost at clean shutdown    {max(lost)} of {args.rows:,} (worst of {args.runs} runs; must be 0)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=3_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("PIXELROUTE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, rows per run {args.rows:,}")

    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))
        run_backend("SQLite (WAL)", lambda: open_store(f"sqlite:///{tmp}/bench-{next(counter)}.db"), args)

    if args.no_postgres:
        return 0
    try:
        import psycopg

        psycopg.connect(args.postgres, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        print(f"\nPostgreSQL skipped: {exc}")
        return 0
    schemas: list[str] = []

    def fresh_pg() -> Store:
        schemas.append(f"pixelroute_bench_{uuid.uuid4().hex[:10]}")
        sep = "&" if "?" in args.postgres else "?"
        return open_store(f"{args.postgres}{sep}schema={schemas[-1]}")

    try:
        run_backend("PostgreSQL (COPY + INSERT ... ON CONFLICT)", fresh_pg, args)
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return 0


if __name__ == "__main__":
    sys.exit(main())
