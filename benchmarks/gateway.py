"""Added latency and throughput of the HTTP integrations over a direct ``Client.generate``.

    .venv/bin/python benchmarks/gateway.py [--requests 2000] [--concurrency 50] [--runs 3]

Same mock backends (64x64 solid image, no delay) and SQLite telemetry behind all three paths:

* direct  - ``Client.generate`` in this process, one call at a time
* gateway - ``pixelroute serve`` (uvicorn, one process, AsyncClient), ``POST /v1/images/generations``
* flask   - the example Flask app under gunicorn (2 workers x 8 threads), ``POST /pixelroute/generate``

Sequential latency (one request in flight) gives the added p50/p99; ``--concurrency`` requests in
flight give req/s. The HTTP paths also PNG-encode and base64 the image and write JSON: that is
part of what they add. The load generator is aiohttp (httpx's async client tops out near
300 req/s here, STYLE.md). Medians over ``--runs``; the box is shared, expect +-30% noise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests._app_servers import start, stop, write_config  # noqa: E402 - the launcher the load tests use


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def direct(config: Path, n: int) -> tuple[list[float], float]:
    from pixelroute import Client

    with Client.from_config(config) as client:
        for i in range(200):
            client.generate(f"warm {i}", seed=i)
        lat = []
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            client.generate(f"poster {i % 50}", seed=i)
            lat.append(time.perf_counter() - t)
        return lat, n / (time.perf_counter() - start)


async def load(
    url: str, path: str, headers: dict[str, str], n: int, concurrency: int
) -> tuple[list[float], float]:
    lat: list[float] = []
    counter = iter(range(n))
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, headers=headers, connector=conn) as session:

        async def worker() -> None:
            for i in counter:
                t = time.perf_counter()
                async with session.post(path, json={"prompt": f"poster {i % 50}", "seed": i}) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"status {r.status}")
                lat.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return lat, n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp))
        for _ in range(args.runs):
            lat, rps = direct(config, args.sequential)
            r = rows.setdefault("direct", {"p50": [], "p99": [], "rps_seq": [], "rps_conc": []})
            r["p50"].append(pct(lat, 0.5))
            r["p99"].append(pct(lat, 0.99))
            r["rps_seq"].append(rps)
        for kind in ("gateway", "flask"):
            server = start("gunicorn" if kind == "flask" else kind, Path(tmp))
            url, path, headers = server.url, server.generate_path, server.headers
            try:
                asyncio.run(load(url, path, headers, 300, args.concurrency))  # warm-up
                for _ in range(args.runs):
                    r = rows.setdefault(kind, {"p50": [], "p99": [], "rps_seq": [], "rps_conc": []})
                    lat, rps = asyncio.run(load(url, path, headers, args.sequential, 1))
                    r["p50"].append(pct(lat, 0.5))
                    r["p99"].append(pct(lat, 0.99))
                    r["rps_seq"].append(rps)
                    r["rps_conc"].append(
                        asyncio.run(load(url, path, headers, args.requests, args.concurrency))[1]
                    )
            finally:
                stop(server)
    med = {k: {m: statistics.median(v) if v else float("nan") for m, v in r.items()} for k, r in rows.items()}
    base = med["direct"]
    print(
        f"{args.runs} runs, medians; sequential n={args.sequential}, concurrent n={args.requests} "
        f"at {args.concurrency} in flight"
    )
    print(
        f"{'path':<8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'seq req/s':>10} "
        f"{'conc req/s':>11} {'p50 x direct':>12}"
    )
    for kind, m in med.items():
        print(
            f"{kind:<8} {m['p50'] * 1e3:8.2f} {m['p99'] * 1e3:8.2f} {(m['p50'] - base['p50']) * 1e3:8.2f} "
            f"{(m['p99'] - base['p99']) * 1e3:8.2f} {m['rps_seq']:10.0f} {m['rps_conc']:11.0f} "
            f"{m['p50'] / base['p50']:12.1f}"
        )


if __name__ == "__main__":
    main()
