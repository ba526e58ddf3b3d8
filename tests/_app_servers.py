"""Start the example Flask app under gunicorn, or the gateway under uvicorn, as a real server on
127.0.0.1 for tests and benchmarks/gateway.py (one launcher, so both measure the same setup)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from tests._import_root import SUBPROCESS_PYTHONPATH

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-load-test"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    headers: dict[str, str]
    generate_path: str

    def rss_mb(self) -> float:
        root = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "pixelroute.toml"
    config.write_text(
        f'[telemetry]\nstore = "sqlite:///{tmp_path / "load.db"}"\n\n'
        '[[backends]]\nname = "mock-a"\nkind = "mock"\nprice = { per_image = 0.01 }\n\n'
        '[[backends]]\nname = "mock-b"\nkind = "mock"\nprice = { per_image = 0.02 }\n'
    )
    return config


def start(kind: str, tmp_path: Path) -> Server:
    port = _free_port()
    config = write_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELROUTE_GATEWAY")}
    env.update(PYTHONPATH=SUBPROCESS_PYTHONPATH, OMP_NUM_THREADS="1")
    if kind == "gunicorn":
        env.update(PIXELROUTE_CONFIG=str(config), EXAMPLE_API_KEY=KEY)
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "2",
            "--threads",
            "8",
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(REPO / "examples" / "flask_app"),
            "--log-level",
            "warning",
            "app:create_app()",
        ]
        headers, path = {"X-Key": KEY}, "/pixelroute/generate"
    else:
        env.update(PIXELROUTE_GATEWAY_KEY=KEY)
        args = [
            sys.executable,
            "-m",
            "pixelroute",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        headers, path = {"Authorization": f"Bearer {KEY}"}, "/v1/images/generations"
    proc = subprocess.Popen(args, env=env, cwd=REPO)
    server = Server(f"http://127.0.0.1:{port}", proc, headers, path)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(server.url + "/", timeout=1)
            return server
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(server)
                raise RuntimeError(f"{kind} did not start") from None
            time.sleep(0.1)


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=30)
    assert code in (0, -signal.SIGTERM), f"server exited with {code}"
