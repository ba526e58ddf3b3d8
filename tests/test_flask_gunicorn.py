"""Real servers on 127.0.0.1: the example Flask app under gunicorn and the gateway under uvicorn.

Driven by httpx and the official `openai` client; a bounded load test on each checks for zero
unexpected errors and flat server memory (RSS of the server and its workers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests._app_servers import KEY, Server, start, stop


@pytest.fixture
def gunicorn_app(tmp_path: Path) -> Iterator[Server]:
    server = start("gunicorn", tmp_path)
    yield server
    stop(server)


def test_flask_app_under_gunicorn_every_endpoint(gunicorn_app: Server) -> None:
    with httpx.Client(base_url=gunicorn_app.url, headers=gunicorn_app.headers, timeout=30) as http:
        r = http.post(
            "/pixelroute/generate",
            json={"prompt": "a red bicycle", "width": 64, "height": 64},
            headers={"Accept": "image/png", "X-Pixelroute-Deadline": "5"},
        )
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        rid = r.headers["X-Pixelroute-Request-Id"]
        # two workers: the generating one writes telemetry within its flush interval (1 s), so
        # feedback that lands on the other worker first may see 404 for up to that long
        deadline = time.monotonic() + 5
        while (
            fb := http.post(f"/pixelroute/feedback/{rid}", json={"seconds": 9, "verdict": "edited"})
        ).status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fb.status_code == 200, fb.text
        assert http.get(f"/pixelroute/trace/{rid}").json()["correction"]["verdict"] == "edited"
        assert "pixelroute_requests" in http.get("/pixelroute/metrics").text
        bad = http.post("/pixelroute/generate", json={"prompt": "x", "sla": {"deadline_s": "soon"}})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "sla.deadline_s")
        assert http.get("/pixelroute/metrics", headers={"X-Key": "wrong"}).status_code == 403


async def hammer(server: Server, total: int, concurrency: int) -> dict[str, int]:
    """``total`` generate requests with ``concurrency`` in flight; counts statuses."""
    counts: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=server.url, headers=server.headers, timeout=60, limits=limits
    ) as http:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                try:
                    r = await http.post(server.generate_path, json={"prompt": f"poster {i % 50}", "seed": i})
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                counts[key] = counts.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


def load_test(kind: str, tmp_path: Path, total: int, concurrency: int = 50) -> None:
    """Two equal rounds after a warm-up: a leak grows RSS in both, one-time costs only in the first.

    Comparing round 2 with round 1 (not with the warm-up) matters under gunicorn: a worker that the
    warm-up's keep-alive connections never reached builds its client during round 1.
    """
    server = start(kind, tmp_path)
    try:
        asyncio.run(hammer(server, 200, concurrency))  # warm-up: allocators, pools, SQLite pages
        first = asyncio.run(hammer(server, total, concurrency))
        middle = server.rss_mb()
        second = asyncio.run(hammer(server, total, concurrency))
        after = server.rss_mb()
    finally:
        stop(server)
    assert first == second == {"200": total}, (first, second)
    # flat: a leak of even 10 KB per request would show as 5-20 MB over a round
    assert after - middle < 15, f"RSS grew {middle:.1f} -> {after:.1f} MB over {total} more requests"


@pytest.mark.parametrize("kind", ["gunicorn", "gateway"])
def test_bounded_load(kind: str, tmp_path: Path) -> None:
    load_test(kind, tmp_path, total=500)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gunicorn", "gateway"])
def test_bounded_load_2000_at_50(kind: str, tmp_path: Path) -> None:
    load_test(kind, tmp_path, total=2000)


def test_gateway_with_the_openai_client_under_load_server(tmp_path: Path) -> None:
    server = start("gateway", tmp_path)
    try:
        oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        r = oai.images.generate(model="mock-b", prompt="a lighthouse", size="64x64", n=3)
        assert r.data and len(r.data) == 3
        oai.close()
    finally:
        stop(server)
