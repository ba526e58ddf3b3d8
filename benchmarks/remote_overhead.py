"""SDK overhead on the remote path: ``AsyncClient.generate`` and the bare backend vs raw HTTP clients.

A local server (a separate process, asyncio, HTTP/1.1 keep-alive) answers the OpenAI images
route instantly with a small PNG. Each mode sends the same request at concurrency 1, 16 and
256; we report requests/s and per-request latency p50/p99. Per transport (httpx's own, and
aiohttp with the ``aiohttp`` extra) there are three modes: ``raw[...]`` (a bare client: POST and
parse the JSON), ``backend[...]`` (``OpenAIBackend.agenerate``: deadline, retries, size-capped
read, base64 + Pillow verify and decode) and ``AsyncClient[...]`` (the whole SDK: routing,
telemetry to SQLite, trace). The SDK overhead is a mode's latency minus that of the raw client of
the same transport, in the same run. Medians over ``--runs`` runs.

    .venv/bin/python benchmarks/remote_overhead.py [--requests 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATH = "/v1/images/generations"


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


async def _serve() -> None:
    payload = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(_png()).decode()}]}).encode()
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode() + b"\r\n\r\n")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                headers = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in headers.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                writer.write(head + payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def _measure(send: Callable[[], Awaitable[Any]], total: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            start = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - start)

    for _ in range(min(concurrency, 20)):  # warm the pool and the code paths
        await send()
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": total / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


async def _run_once(url: str, total: int, concurrency: int, db: str) -> dict[str, dict[str, float]]:
    import httpx

    from pixelroute import SLA, AsyncClient
    from pixelroute._config import load_settings
    from pixelroute._deadline import Deadline
    from pixelroute._types import GenerateRequest
    from pixelroute.backends import create_backend
    from pixelroute.backends.openai import OpenAISettings

    body = {"model": "gpt-image-1", "prompt": "a lighthouse", "n": 1, "size": "1024x1024"}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    out: dict[str, dict[str, float]] = {}

    async with httpx.AsyncClient(limits=limits) as raw:
        async def raw_send() -> Any:
            response = await raw.post(url + PATH, json=body)
            return response.json()

        out["raw[httpx]"] = await _measure(raw_send, total, concurrency)

    transports = ["httpx"]
    try:
        import aiohttp
        import httpx_aiohttp  # noqa: F401  (what async_transport = "aiohttp" runs on)
    except ImportError:
        print("aiohttp extra not installed: the aiohttp rows are skipped", file=sys.stderr)
    else:
        transports.append("aiohttp")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
            async def aiohttp_send() -> Any:
                async with session.post(url + PATH, json=body) as response:
                    return json.loads(await response.read())

            out["raw[aiohttp]"] = await _measure(aiohttp_send, total, concurrency)

    request = GenerateRequest(prompt="a lighthouse")
    for transport in transports:
        settings = OpenAISettings(name="local", base_url=url + "/v1", api_key_env=None, max_connections=256,
                                  max_keepalive_connections=256, price={"per_image": 0.01}, typical_latency_s=0.01,
                                  async_transport=transport)
        backend = create_backend(settings)
        out[f"backend[{transport}]"] = await _measure(lambda b=backend: b.agenerate(request, Deadline(30)),
                                                      total, concurrency)
        await backend.aclose()
        cfg = load_settings({"router": {"exploration": 0.0}, "telemetry": {"store": f"sqlite:///{db}.{transport}"}})
        async with AsyncClient(cfg, backends=[create_backend(settings)]) as client:
            out[f"AsyncClient[{transport}]"] = await _measure(
                lambda: client.generate("a lighthouse", sla=SLA(deadline_s=30), backend="local"),
                total, concurrency)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        print(f"server {url}; {args.requests} requests per point, median of {args.runs} runs; cpus={os.cpu_count()}")
        print(f"{'concurrency':>11} {'mode':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'overhead p50':>13} {'overhead p99':>13}")
        for concurrency in (1, 16, 256):
            runs = []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as tmp:
                    total = args.requests if concurrency > 1 else max(200, args.requests // 4)
                    runs.append(asyncio.run(_run_once(url, total, concurrency, str(Path(tmp) / "t.db"))))
            med = {mode: {k: statistics.median(r[mode][k] for r in runs) for k in runs[0][mode]} for mode in runs[0]}
            for mode, m in med.items():
                # overhead against the raw client of the same transport: what the SDK adds to it
                raw = med["raw[" + mode.partition("[")[2]]
                o50 = m["p50_ms"] - raw["p50_ms"]
                o99 = m["p99_ms"] - raw["p99_ms"]
                print(f"{concurrency:>11} {mode:<22} {m['rps']:>8.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} "
                      f"{o50:>13.2f} {o99:>13.2f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
