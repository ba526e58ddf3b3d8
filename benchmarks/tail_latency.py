"""Tail latency, cost and SLA attainment with and without hedging and fallbacks.

Two OpenAI-compatible servers on 127.0.0.1 answer with a heavy-tailed latency: lognormal
around ``--median`` seconds (sigma 0.25) and, with probability ``--tail-prob``, ``--tail-mult``
times slower — the shape of the slow image APIs in ../shared/data/backend_figures.md §2.
``AsyncClient.generate`` sends ``--requests`` requests at ``--concurrency`` through the router
with the same seeds in every mode (common random numbers), so modes differ only in policy:

- hedging: ``SLA(hedge=True)`` vs off: p50/p99 latency and cost per request;
- fallbacks: one server also fails ``--fail-rate`` of requests with a 500;
  ``execution.max_attempts = 3`` vs ``1``: SLA attainment (a result within the deadline).

    .venv/bin/python benchmarks/tail_latency.py [--requests 300] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixelroute import SLA, AsyncClient, PixelrouteError  # noqa: E402
from pixelroute._config import load_settings  # noqa: E402
from tests.fakeservers import FakeServer, Recorded, Response  # noqa: E402
from tests.fakeservers.providers import B64_PNG  # noqa: E402


class HeavyTail:
    """A handler whose delay and failure are a pure function of the request's seed and the server."""

    def __init__(self, name: str, median: float, tail_prob: float, tail_mult: float, fail_rate: float) -> None:
        self.name, self.median, self.tail_prob, self.tail_mult, self.fail_rate = (
            name, median, tail_prob, tail_mult, fail_rate)

    def __call__(self, req: Recorded) -> Response:
        body = req.json()
        rng = random.Random(f"{self.name}:{body.get('prompt')}")
        delay = self.median * rng.lognormvariate(0.0, 0.25)
        if rng.random() < self.tail_prob:
            delay *= self.tail_mult
        if rng.random() < self.fail_rate:
            time.sleep(delay / 4)
            return Response(500, json={"error": {"message": "overloaded", "type": "server_error"}})
        time.sleep(delay)
        return Response(json={"created": 1767225600, "data": [{"b64_json": B64_PNG}]})


def settings(urls: list[str], args: argparse.Namespace, max_attempts: int) -> Any:
    backends = [
        {"name": f"api-{i}", "kind": "openai", "base_url": url, "model": "gpt-image-1", "api_key_env": "BENCH_KEY",
         "price": {"per_image": 0.02}, "typical_latency_s": args.median, "max_retries": 1,
         "max_connections": 256, "sizes": ["1024x1024"]}
        for i, url in enumerate(urls)
    ]
    return load_settings({"router": {"exploration": 0.0, "best_effort": True}, "backends": backends,
                          "telemetry": {"enabled": False}, "execution": {"max_attempts": max_attempts,
                                                                         "breaker_failures": 10_000}})


async def run_mode(urls: list[str], args: argparse.Namespace, *, hedge: bool, max_attempts: int) -> dict[str, float]:
    async with AsyncClient(settings(urls, args, max_attempts)) as client:
        sem = asyncio.Semaphore(args.concurrency)
        latencies: list[float] = []
        costs: list[float] = []
        on_time = 0

        async def one(i: int) -> None:
            nonlocal on_time
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.generate(f"request {i}", sla=SLA(deadline_s=args.deadline, hedge=hedge))
                    costs.append(r.cost_usd)
                    on_time += 1
                except PixelrouteError:
                    costs.append(0.0)
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(one(i) for i in range(args.requests)))
    latencies.sort()
    return {
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "cost_per_request_usd": statistics.fmean(costs),
        "sla_attainment": on_time / args.requests,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--median", type=float, default=0.15)
    parser.add_argument("--tail-prob", type=float, default=0.08)
    parser.add_argument("--tail-mult", type=float, default=8.0)
    parser.add_argument("--fail-rate", type=float, default=0.15)
    parser.add_argument("--deadline", type=float, default=3.0)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_KEY", "sk-bench-0000000000")

    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PIXELROUTE_CACHE_DIR", tmp)
        for _ in range(args.runs):
            with FakeServer() as a, FakeServer() as b:
                for srv, name in ((a, "a"), (b, "b")):
                    srv.route("POST", "/v1/images/generations",
                              HeavyTail(name, args.median, args.tail_prob, args.tail_mult, 0.0))
                urls = [a.url + "/v1", b.url + "/v1"]
                for label, hedge in (("no hedge", False), ("hedge", True)):
                    results.setdefault(label, []).append(
                        asyncio.run(run_mode(urls, args, hedge=hedge, max_attempts=1)))
            with FakeServer() as a, FakeServer() as b:
                a.route("POST", "/v1/images/generations",
                        HeavyTail("a", args.median, args.tail_prob, args.tail_mult, args.fail_rate))
                b.route("POST", "/v1/images/generations", HeavyTail("b", args.median, args.tail_prob, args.tail_mult,
                                                                    args.fail_rate))
                urls = [a.url + "/v1", b.url + "/v1"]
                for label, attempts in (("failing, no fallback", 1), ("failing, fallbacks", 3)):
                    results.setdefault(label, []).append(
                        asyncio.run(run_mode(urls, args, hedge=False, max_attempts=attempts)))

    print(f"{args.requests} requests x {args.runs} runs, concurrency {args.concurrency}, deadline {args.deadline} s, "
          f"median {args.median} s, tail {args.tail_prob:.0%} x{args.tail_mult}, fail rate {args.fail_rate:.0%}")
    print("| mode | p50 s | p99 s | cost per request USD | SLA attainment |")
    print("|---|---|---|---|---|")
    for label, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {label} | {med['p50_s']:.3f} | {med['p99_s']:.3f} | {med['cost_per_request_usd']:.4f} | "
              f"{med['sla_attainment']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
