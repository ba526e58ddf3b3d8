"""Prometheus metrics: scraped from the gateway and the Flask endpoint after real generations, parsed
with prometheus_client's own parser; one registry per client; a clear error without prometheus_client."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from pixelroute import Client, ConfigError, MockBackend
from pixelroute.contrib.flask import Pixelroute, get_state
from pixelroute.gateway import create_app
from tests.test_gateway_server import ThreadedServer

KEY = "sk-metrics-test-key"


def settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "telemetry": {"store": f"sqlite:///{tmp_path / 'metrics.db'}"},
        "backends": [
            {"name": "mock-a", "kind": "mock", "price": {"per_image": 0.01}},
            {"name": "down", "kind": "mock", "failure": "server_error"},
        ],
    }


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition by (sample name, labels), read with prometheus_client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def assert_three_ok_one_failed(text: str) -> None:
    """What the store and the live histograms say after 3 generations on mock-a and 1 refused by `down`."""
    found = samples(text)
    assert value(found, "pixelroute_requests", backend="mock-a") == 3
    assert value(found, "pixelroute_requests", backend="down") == 1
    assert value(found, "pixelroute_success_ratio", backend="down") == 0
    assert value(found, "pixelroute_failures", backend="down", error="server_error") == 1
    assert value(found, "pixelroute_cost_usd_per_request", backend="mock-a") == pytest.approx(0.01)
    assert ("pixelroute_latency_seconds", frozenset({("backend", "mock-a"), ("quantile", "0.5")})) in found
    assert value(found, "pixelroute_telemetry_enqueued_total") == 4
    # live, this process: one latency observation per attempt, by backend and outcome
    assert value(found, "pixelroute_generation_latency_seconds_count", backend="mock-a", outcome="ok") == 3
    assert value(found, "pixelroute_generation_latency_seconds_count", backend="down", outcome="server_error") == 1
    assert value(found, "pixelroute_generation_latency_seconds_bucket", backend="mock-a", outcome="ok", le="+Inf") == 3
    # one decision per call, pinned ones too (the router still prices the pinned backend)
    decisions = [v for (name, _), v in found.items() if name == "pixelroute_decision_latency_seconds_count"]
    assert sum(decisions) == 4


@contextmanager
def gateway(tmp_path: Path) -> Iterator[httpx.Client]:
    """The gateway under uvicorn on 127.0.0.1, and an httpx client that sends its key."""
    server = ThreadedServer(create_app(settings(tmp_path), api_key=KEY)).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
            yield http
    finally:
        server.stop()


def test_gateway_metrics_after_real_generations(tmp_path: Path) -> None:
    with gateway(tmp_path) as http:
        for seed in range(3):
            body = {"prompt": "a red bicycle", "model": "mock-a", "size": "64x64", "seed": seed}
            assert http.post("/v1/images/generations", json=body).status_code == 200
        assert http.post("/v1/images/generations", json={"prompt": "a cat", "model": "down"}).status_code == 502
        r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert_three_ok_one_failed(r.text)


def test_flask_metrics_after_real_generations(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = settings(tmp_path)
    Pixelroute().init_app(app, auth=lambda request, action: request.headers.get("X-Key") == KEY)
    try:
        c = app.test_client()
        for seed in range(3):
            body = {"prompt": "a red bicycle", "backend": "mock-a", "seed": seed}
            assert c.post("/pixelroute/generate", json=body, headers={"X-Key": KEY}).status_code == 200
        body = {"prompt": "a cat", "backend": "down"}
        assert c.post("/pixelroute/generate", json=body, headers={"X-Key": KEY}).status_code == 502
        r = c.get("/pixelroute/metrics", headers={"X-Key": KEY})
        assert r.status_code == 200
        assert_three_ok_one_failed(r.get_data(as_text=True))
    finally:
        get_state(app).close()


def test_two_clients_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    with (
        Client(backends=[MockBackend("left")], store=f"sqlite:///{tmp_path / 'l.db'}") as left,
        Client(backends=[MockBackend("right")], store=f"sqlite:///{tmp_path / 'r.db'}") as right,
    ):
        for _ in range(2):
            left.generate("a lamp")
        right.generate("a chair")
        mine, theirs = samples(left.metrics_text()), samples(right.metrics_text())
    assert value(mine, "pixelroute_generation_latency_seconds_count", backend="left", outcome="ok") == 2
    assert value(theirs, "pixelroute_generation_latency_seconds_count", backend="right", outcome="ok") == 1
    assert not any(dict(labels).get("backend") == "right" for _, labels in mine)
    assert not any(dict(labels).get("backend") == "left" for _, labels in theirs)
    # nothing went to prometheus_client's global registry, where a second client would collide
    assert not [m.name for m in prometheus_client.REGISTRY.collect() if m.name.startswith("pixelroute")]


def test_a_client_without_telemetry_still_exposes_its_histograms() -> None:
    with Client({"telemetry": {"enabled": False}}, backends=[MockBackend("m")]) as client:
        client.generate("a vase")
        found = samples(client.metrics_text())
    assert value(found, "pixelroute_generation_latency_seconds_count", backend="m", outcome="ok") == 1
    assert not any(name == "pixelroute_requests" for name, _ in found)  # no store, no window statistics


def test_without_prometheus_client_metrics_say_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # `import prometheus_client` now fails
    with Client(backends=[MockBackend("m")], store=f"sqlite:///{tmp_path / 'n.db'}") as client:
        assert client.generate("a vase").backend == "m"  # generation does not need it
        with pytest.raises(ConfigError, match=r"pip install 'pixelroute\[metrics\]'"):
            client.metrics_text()
    with gateway(tmp_path) as http:
        r = http.get("/metrics")
    assert r.status_code == 500 and "pixelroute[metrics]" in r.json()["error"]["message"]


def test_stats_command_prints_the_store_families(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pixelroute.cli import main

    store = f"sqlite:///{tmp_path / 's.db'}"
    with Client(backends=[MockBackend("m")], store=store) as client:
        for _ in range(2):
            client.generate("a boat")
    assert main(["stats", "--store", store, "--prometheus"]) == 0
    found = samples(capsys.readouterr().out)
    assert value(found, "pixelroute_requests", backend="m") == 2
    assert value(found, "pixelroute_success_ratio", backend="m") == 1
    # a file's statistics only: the live histograms belong to a running client
    assert not any(name.startswith("pixelroute_generation_latency") for name, _ in found)
