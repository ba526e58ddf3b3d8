"""``[router] on_infeasible`` through the HTTP integrations: the gateway (a real uvicorn server and the
official ``openai`` client) and the Flask extension. Django's views share the same code path and are
tested in tests/test_django_app.py.

One backend whose declared latency (10 s) is far above the request's 2 s deadline, although it
answers at once: best effort (the default) tries it and the trace says it was predicted to miss;
``refuse`` answers 422 with the candidate and why it failed the SLA, and a pinned backend is tried
anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from flask import Flask

from pixelroute.contrib.flask import Pixelroute, get_state
from pixelroute.gateway import create_app
from tests.test_gateway_server import KEY, ThreadedServer


def predicted_late(tmp_path: Path, on_infeasible: str | None) -> dict[str, Any]:
    router: dict[str, Any] = {"exploration": 0.0, "seed": 1}
    if on_infeasible is not None:
        router["on_infeasible"] = on_infeasible
    return {"telemetry": {"store": f"sqlite:///{tmp_path / 't.db'}"}, "router": router,
            "backends": [{"name": "slow", "kind": "mock", "typical_latency_s": 10.0}]}


@pytest.fixture(params=[None, "best_effort", "refuse"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[openai.OpenAI, str | None]]:
    server = ThreadedServer(create_app(predicted_late(tmp_path, request.param), api_key=KEY)).start()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=30)
    try:
        yield client, request.param
    finally:
        client.close()
        server.stop()


def test_gateway_honours_on_infeasible(gateway: tuple[openai.OpenAI, str | None]) -> None:
    oai, on_infeasible = gateway
    sla = {"sla": {"deadline_s": 2}}
    if on_infeasible == "refuse":
        with pytest.raises(openai.UnprocessableEntityError) as info:
            oai.images.generate(model="auto", prompt="a cat", size="64x64", extra_body=sla)
        body = info.value.body
        assert isinstance(body, dict) and body["code"] == "no_feasible_backend"
        assert [c["backend"] for c in body["candidates"]] == ["slow"]
        pinned = oai.images.with_raw_response.generate(model="slow", prompt="a cat", size="64x64", extra_body=sla)
        rid = pinned.headers["X-Pixelroute-Request-Id"]
    else:
        raw = oai.images.with_raw_response.generate(model="auto", prompt="a cat", size="64x64", extra_body=sla)
        assert raw.headers["X-Pixelroute-Backend"] == "slow"
        rid = raw.headers["X-Pixelroute-Request-Id"]
    trace = oai.get(f"/trace/{rid}", cast_to=object)
    assert isinstance(trace, dict) and trace["decision"]["predicted_to_miss"] is True
    assert trace["attempts"][0]["backend"] == "slow"


def flask_app(tmp_path: Path, on_infeasible: str | None) -> Flask:
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = predicted_late(tmp_path, on_infeasible)
    Pixelroute().init_app(app, auth=lambda request, action: True)
    return app


@pytest.mark.parametrize("on_infeasible", [None, "best_effort", "refuse"])
def test_flask_honours_on_infeasible(tmp_path: Path, on_infeasible: str | None) -> None:
    app = flask_app(tmp_path, on_infeasible)
    try:
        http = app.test_client()
        body = {"prompt": "a cat", "width": 64, "height": 64, "sla": {"deadline_s": 2}}
        r = http.post("/pixelroute/generate", json=body)
        if on_infeasible == "refuse":
            assert r.status_code == 422, r.get_json()
            err = r.get_json()["error"]
            assert err["code"] == "no_feasible_backend" and [c["backend"] for c in err["candidates"]] == ["slow"]
            r = http.post("/pixelroute/generate", json={**body, "backend": "slow"})
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["backend"] == "slow"
        trace = http.get(f"/pixelroute/trace/{r.get_json()['request_id']}").get_json()
        assert trace["decision"]["predicted_to_miss"] is True
    finally:
        get_state(app).close()
