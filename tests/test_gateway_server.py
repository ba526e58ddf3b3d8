"""The gateway under a real uvicorn server on 127.0.0.1, driven by the official `openai` client and httpx."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from PIL import Image

from pixelroute.gateway import create_app

KEY = "sk-test-gateway-key"
REPO = Path(__file__).resolve().parents[1]


def gateway_settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "telemetry": {"store": f"sqlite:///{tmp_path / 'gateway.db'}"},
        "backends": [
            {"name": "mock-a", "kind": "mock", "price": {"per_image": 0.01}},
            {"name": "mock-b", "kind": "mock", "price": {"per_image": 0.02}},
            {"name": "slow", "kind": "mock", "delay_s": 5.0, "price": {"per_image": 0.04}},
        ],
    }


class ThreadedServer:
    """uvicorn in a thread on a socket we bound to a free port; stopped and joined by ``stop``."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    server = ThreadedServer(create_app(gateway_settings(tmp_path), api_key=KEY)).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def oai(gateway: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0, timeout=30)
    yield client
    client.close()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_openai_client_generates_with_auto_routing(oai: openai.OpenAI) -> None:
    r = oai.images.generate(
        model="auto",
        prompt="a red bicycle",
        size="64x64",
        n=2,
        response_format="b64_json",
        extra_body={"sla": {"deadline_s": 3}, "seed": 5},
    )
    assert r.data is not None and len(r.data) == 2
    img = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json or "")))
    assert img.size == (64, 64)
    extra = r.model_extra or {}
    assert extra["backend"] in {"mock-a", "mock-b"}  # the slow one cannot meet a 3 s deadline
    assert extra["request_id"]


def test_openai_client_pins_a_backend_by_model(oai: openai.OpenAI) -> None:
    raw = oai.images.with_raw_response.generate(model="mock-b", prompt="a cat", size="64x64")
    assert raw.headers["x-pixelroute-backend"] == "mock-b"
    assert (raw.parse().model_extra or {})["backend"] == "mock-b"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"model": "dall-e-3"}, "model"),
        ({"size": "big"}, "size"),
        ({"size": "1001x64"}, "size"),
        ({"response_format": "url"}, "response_format"),
        ({"quality": "hd"}, "quality"),
        ({"extra_body": {"sla": {"deadline_s": 0}}}, "sla.deadline_s"),
        ({"extra_body": {"sla": {"max_cost_usd": -1}}}, "sla.max_cost_usd"),
    ],
)
def test_bad_requests_are_openai_style_400s(oai: openai.OpenAI, kwargs: dict[str, Any], param: str) -> None:
    args: dict[str, Any] = {"model": "auto", "prompt": "x", "size": "64x64", **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        oai.images.generate(**args)
    err = info.value.body
    assert isinstance(err, dict)
    assert err["param"] == param
    assert f"`{param.split('.')[0]}" in err["message"] or f"`{param}`" in err["message"]


def test_wrong_or_missing_key_is_401(gateway: str) -> None:
    bad = openai.OpenAI(base_url=f"{gateway}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.images.generate(model="auto", prompt="x", size="64x64")
    bad.close()
    r = httpx.get(f"{gateway}/metrics")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert "sk-wrong" not in r.text


def test_infeasible_sla_is_422_with_candidates(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        oai.images.generate(
            model="auto", prompt="x", size="64x64", extra_body={"sla": {"max_cost_usd": 0.001}}
        )
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "no_feasible_backend"
    assert {c["backend"] for c in info.value.body["candidates"]} >= {"mock-a", "mock-b"}


def test_missed_deadline_is_504(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        oai.images.generate(model="slow", prompt="x", size="64x64", extra_body={"sla": {"deadline_s": 0.3}})
    assert info.value.status_code == 504
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "timeout"


def test_feedback_trace_metrics_models_over_httpx(gateway: str) -> None:
    with httpx.Client(base_url=gateway, headers=auth(), timeout=30) as http:
        r = http.post(
            "/v1/images/generations",
            json={"prompt": "a cat", "size": "64x64"},
            headers={"X-Pixelroute-Deadline": "4", "X-Pixelroute-Max-Cost": "0.5"},
        )
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        assert r.headers["X-Pixelroute-Request-Id"] == rid
        assert (
            http.post(f"/v1/feedback/{rid}", json={"seconds": 12, "verdict": "accepted"}).status_code == 200
        )
        trace = http.get(f"/v1/trace/{rid}").json()
        assert trace["correction"]["verdict"] == "accepted"
        assert trace["sla"]["deadline_s"] == 4
        assert "pixelroute_requests" in http.get("/metrics").text
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [
            "auto",
            "mock-a",
            "mock-b",
            "slow",
        ]
        assert http.get("/v1/trace/nope").status_code == 404
        bad = http.post(f"/v1/feedback/{rid}", json={"seconds": "long", "verdict": "edited"})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "seconds")
        bad = http.post(
            "/v1/images/generations", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "body")
        bad = http.post(
            "/v1/images/generations", json={"prompt": "x"}, headers={"X-Pixelroute-Deadline": "x"}
        )
        assert bad.json()["error"]["param"] == "X-Pixelroute-Deadline"
        missing = http.get("/v1/nothing-here")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{gateway}/healthz").json()["status"] == "ok"


def test_anonymous_mode_only_when_asked(tmp_path: Path) -> None:
    server = ThreadedServer(create_app(gateway_settings(tmp_path), allow_anonymous=True)).start()
    try:
        r = httpx.post(
            f"{server.url}/v1/images/generations", json={"prompt": "x", "size": "64x64"}, timeout=30
        )
        assert r.status_code == 200
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pixelroute_serve_command(tmp_path: Path) -> None:
    config = tmp_path / "pixelroute.toml"
    config.write_text(
        f'[telemetry]\nstore = "sqlite:///{tmp_path / "serve.db"}"\n\n'
        '[[backends]]\nname = "m"\nkind = "mock"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELROUTE_GATEWAY")}
    refused = subprocess.run(
        [sys.executable, "-m", "pixelroute", "serve", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert refused.returncode == 1
    assert "PIXELROUTE_GATEWAY_KEY" in refused.stderr
    port = _free_port()
    proc = subprocess.Popen(
        [
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
        ],
        env={**env, "PIXELROUTE_GATEWAY_KEY": KEY},
        cwd=REPO,
    )
    try:
        oai = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        deadline = time.monotonic() + 60
        while True:
            try:
                r = oai.images.generate(model="m", prompt="a lighthouse", size="64x64")
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert r.data and (r.model_extra or {})["backend"] == "m"
        oai.close()
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    from pixelroute.telemetry import open_store

    with open_store(f"sqlite:///{tmp_path / 'serve.db'}") as store:
        assert store.count() == 1  # the client was closed at shutdown and its telemetry flushed
