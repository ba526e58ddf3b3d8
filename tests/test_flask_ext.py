"""The Flask extension through Flask's test client: every endpoint, auth, bad input, config errors."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _tiny_fixtures import tiny_models  # noqa: F401  (session fixture)
from flask import Flask
from PIL import Image

from pixelroute import ConfigError
from pixelroute.contrib.flask import Pixelroute, get_state

KEY = "let-me-in"


def key_auth(request: Any, action: str) -> bool:
    return bool(request.headers.get("X-Key") == KEY)


def settings(tmp_path: Path, **backend: Any) -> dict[str, Any]:
    return {
        "telemetry": {"store": f"sqlite:///{tmp_path / 'flask.db'}"},
        "backends": [{"name": "mock-a", "kind": "mock", **backend}, {"name": "mock-b", "kind": "mock"}],
    }


def make_app(tmp_path: Path, ext: Pixelroute | None = None, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = settings(tmp_path)
    app.config.update(config)
    (ext or Pixelroute()).init_app(app, auth=key_auth)
    return app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    get_state(app).close()


def post(client: Any, path: str, json: Any = None, **kw: Any) -> Any:
    headers = {"X-Key": KEY, **kw.pop("headers", {})}
    return client.post(path, json=json, headers=headers, **kw)


def test_generate_returns_base64_png_and_request_id(app: Flask) -> None:
    r = post(
        app.test_client(),
        "/pixelroute/generate",
        {"prompt": "a red bicycle", "width": 64, "height": 64, "seed": 3, "sla": {"deadline_s": 5}},
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    img = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert img.size == (64, 64)
    assert body["backend"] in {"mock-a", "mock-b"}
    assert r.headers["X-Pixelroute-Request-Id"] == body["request_id"]


def test_generate_png_by_accept_header_and_pinned_backend(app: Flask) -> None:
    r = post(
        app.test_client(),
        "/pixelroute/generate",
        {"prompt": "a cat", "backend": "mock-b"},
        headers={"Accept": "image/png"},
    )
    assert r.status_code == 200
    assert r.mimetype == "image/png"
    assert r.headers["X-Pixelroute-Backend"] == "mock-b"
    assert Image.open(io.BytesIO(r.data)).format == "PNG"


def test_feedback_then_trace_then_metrics(app: Flask) -> None:
    c = app.test_client()
    rid = post(c, "/pixelroute/generate", {"prompt": "a cat"}).get_json()["request_id"]
    r = post(c, f"/pixelroute/feedback/{rid}", {"seconds": 42.5, "verdict": "edited"})
    assert r.status_code == 200, r.get_json()
    trace = c.get(f"/pixelroute/trace/{rid}", headers={"X-Key": KEY}).get_json()
    assert trace["request_id"] == rid
    assert trace["correction"]["seconds"] == 42.5
    metrics = c.get("/pixelroute/metrics", headers={"X-Key": KEY})
    assert metrics.status_code == 200
    assert "pixelroute_requests" in metrics.get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/pixelroute/generate"),
        ("post", "/pixelroute/feedback/x"),
        ("get", "/pixelroute/trace/x"),
        ("get", "/pixelroute/metrics"),
    ],
)
def test_default_hook_refuses_every_endpoint(tmp_path: Path, method: str, path: str) -> None:
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = settings(tmp_path)
    Pixelroute(app)
    r = getattr(app.test_client(), method)(path, json={"prompt": "x"})
    assert r.status_code == 401
    assert r.get_json()["error"]["code"] == "unauthorized"
    assert get_state(app).client is None  # refused before any client was built


def test_hook_saying_no_gives_403(app: Flask) -> None:
    r = app.test_client().post("/pixelroute/generate", json={"prompt": "x"}, headers={"X-Key": "wrong"})
    assert r.status_code == 403
    assert r.get_json()["error"]["type"] == "permission_error"


@pytest.mark.parametrize(
    ("body", "headers", "param", "fragment"),
    [
        (
            {"prompt": "x", "sla": {"deadline_s": -1}},
            {},
            "sla.deadline_s",
            "`sla.deadline_s` must be positive",
        ),
        ({"prompt": "x", "sla": {"max_cost_usd": "lots"}}, {}, "sla.max_cost_usd", "sla.max_cost_usd"),
        ({"prompt": "x"}, {"X-Pixelroute-Deadline": "soon"}, "X-Pixelroute-Deadline", "soon"),
        ({"prompt": "x"}, {"X-Pixelroute-Max-Cost": "-2"}, "sla.max_cost_usd", "-2"),
        ({"prompt": "x", "width": 1001, "height": 64}, {}, "width", "multiple of"),
        ({"prompt": ""}, {}, "prompt", "must not be empty"),
        ({"prompt": "x", "colour": "red"}, {}, "colour", "not a known field"),
        ({"prompt": "x", "n": 2, "response_format": "png"}, {}, "response_format", "b64_json"),
        (["prompt"], {}, "body", "JSON object"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    app: Flask, body: Any, headers: dict[str, str], param: str, fragment: str
) -> None:
    r = post(app.test_client(), "/pixelroute/generate", body, headers=headers)
    assert r.status_code == 400, r.get_json()
    err = r.get_json()["error"]
    assert err["param"] == param
    assert fragment.replace(" be positive", "") in err["message"]


def test_malformed_json_and_wrong_content_type(app: Flask) -> None:
    c = app.test_client()
    r = c.post(
        "/pixelroute/generate", data="{not json", headers={"X-Key": KEY, "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.get_json()["error"]["param"] == "body"
    r = c.post("/pixelroute/generate", data="prompt=x", headers={"X-Key": KEY})
    assert r.status_code == 400
    assert r.get_json()["error"]["param"] == "Content-Type"


def test_feedback_errors(app: Flask) -> None:
    c = app.test_client()
    assert post(c, "/pixelroute/feedback/nope", {"seconds": 1, "verdict": "accepted"}).status_code == 404
    rid = post(c, "/pixelroute/generate", {"prompt": "a cat"}).get_json()["request_id"]
    r = post(c, f"/pixelroute/feedback/{rid}", {"seconds": -3, "verdict": "edited"})
    assert r.status_code == 400
    assert r.get_json()["error"]["param"] == "seconds"
    r = post(c, f"/pixelroute/feedback/{rid}", {"seconds": 3, "verdict": "meh"})
    assert r.get_json()["error"]["param"] == "verdict"
    r = post(c, f"/pixelroute/feedback/{rid}", {"verdict": "edited"})
    assert (r.status_code, r.get_json()["error"]["param"]) == (400, "seconds")


def test_trace_of_unknown_request_is_404(app: Flask) -> None:
    r = app.test_client().get("/pixelroute/trace/does-not-exist", headers={"X-Key": KEY})
    assert r.status_code == 404
    assert r.get_json()["error"]["code"] == "unknown_request"


def test_backend_failures_map_to_status_codes(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = {
        "telemetry": {"store": f"sqlite:///{tmp_path / 'f.db'}"},
        "execution": {"max_attempts": 1},
        "backends": [
            {"name": "broken", "kind": "mock", "failure": "content_rejected"},
            {"name": "slow", "kind": "mock", "delay_s": 2.0},
        ],
    }
    Pixelroute(app, auth=key_auth)
    c = app.test_client()
    try:
        r = post(c, "/pixelroute/generate", {"prompt": "x", "backend": "broken"})
        assert (r.status_code, r.get_json()["error"]["code"]) == (400, "content_rejected")
        r = post(c, "/pixelroute/generate", {"prompt": "x", "backend": "slow", "sla": {"deadline_s": 0.05}})
        assert r.status_code in (422, 504), r.get_json()
    finally:
        get_state(app).close()


def test_one_client_per_app_and_app_factory(tmp_path: Path) -> None:
    ext = Pixelroute()
    a = make_app(tmp_path / "a", ext)
    b = make_app(tmp_path / "b", ext)
    try:
        with a.app_context():
            first = ext.client
            assert ext.client is first  # built once, reused across requests
        with b.app_context():
            assert ext.client is not first
        post(a.test_client(), "/pixelroute/generate", {"prompt": "x"})
        assert get_state(a).client is first
    finally:
        ext.close(a)
        ext.close(b)
    assert first._closed


def test_config_file_and_section_keys(tmp_path: Path) -> None:
    toml = tmp_path / "pixelroute.toml"
    toml.write_text('[router]\nexploration = 0.0\n\n[[backends]]\nname = "m"\nkind = "mock"\n')
    app = Flask(__name__)
    app.config.update(
        PIXELROUTE_CONFIG=str(toml),
        PIXELROUTE_ROUTER={"exploration": 0.1},
        PIXELROUTE_TELEMETRY={"store": f"sqlite:///{tmp_path / 'x.db'}"},
        PIXELROUTE_BLUEPRINT=False,
    )
    Pixelroute(app)
    s = get_state(app).settings
    assert s.router.exploration == 0.1  # a section key overrides the file
    assert [b.name for b in s.backends] == ["m"]
    assert "pixelroute.generate" not in app.view_functions


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"PIXELROUTE_ROUTERR": {}}, "`PIXELROUTE_ROUTERR` is not a known setting"),
        ({"PIXELROUTE_ROUTER": {"exploration": 3}}, "router.exploration"),
        ({"PIXELROUTE_CONFIG": "/nonexistent/p.toml"}, "`PIXELROUTE_CONFIG`"),
        ({"PIXELROUTE_SETTINGS": [1]}, "`PIXELROUTE_SETTINGS` must be a mapping"),
        ({"PIXELROUTE_AUTH": "no.such.module:hook"}, "`PIXELROUTE_AUTH`"),
    ],
)
def test_bad_config_raises_config_error_naming_the_key(config: dict[str, Any], fragment: str) -> None:
    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        Pixelroute(app)


def test_auth_hook_from_config_string(tmp_path: Path) -> None:
    app = make_app(tmp_path, PIXELROUTE_AUTH=f"{__name__}:key_auth")
    try:
        assert get_state(app).auth is key_auth
    finally:
        get_state(app).close()


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``event:``/``data:`` frames of a server-sent event stream."""
    import json

    frames = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        frames.append((lines["event"], json.loads(lines["data"])))
    return frames


def test_generate_streams_progress_events(app: Flask) -> None:
    r = post(app.test_client(), "/pixelroute/generate",
             {"prompt": "a red bicycle", "width": 64, "height": 64, "backend": "mock-b", "stream": True})
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    frames = sse(r.get_data(as_text=True))
    assert [name for name, _ in frames] == ["decided", "attempt_started", "done"]
    done = frames[-1][1]
    assert done["backend"] == "mock-b" and r.headers["X-Pixelroute-Request-Id"] == done["request_id"]
    img = Image.open(io.BytesIO(base64.b64decode(done["data"][0]["b64_json"])))
    assert img.size == (64, 64)


@pytest.mark.parametrize(
    ("body", "param"),
    [({"stream": True, "response_format": "png"}, "response_format"), ({"previews": 2}, "previews"),
     ({"stream": 1}, "stream"), ({"stream": True, "previews": 99}, "previews")],
)
def test_stream_options_are_refused_by_name(app: Flask, body: dict[str, Any], param: str) -> None:
    r = post(app.test_client(), "/pixelroute/generate", {"prompt": "x", **body})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == param


def test_a_stream_refused_by_routing_keeps_its_status(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = settings(tmp_path, price={"per_image": 0.05})
    Pixelroute().init_app(app, auth=key_auth)
    try:
        r = post(app.test_client(), "/pixelroute/generate",
                 {"prompt": "x", "stream": True, "sla": {"max_cost_usd": 0.01}, "backend": "mock-a"})
        assert r.status_code == 422 and r.mimetype == "application/json"
        assert r.get_json()["error"]["code"] == "no_feasible_backend"
    finally:
        get_state(app).close()


def test_a_failure_after_the_stream_started_is_an_error_event(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = settings(tmp_path, delay_s=5.0)
    Pixelroute().init_app(app, auth=key_auth)
    try:
        r = post(app.test_client(), "/pixelroute/generate",
                 {"prompt": "x", "stream": True, "backend": "mock-a", "sla": {"deadline_s": 0.3}})
        frames = sse(r.get_data(as_text=True))
        assert [name for name, _ in frames] == ["decided", "attempt_started", "error"]
        assert frames[-1][1]["error"]["code"] == "timeout"
    finally:
        get_state(app).close()


def test_a_local_pipeline_streams_steps_with_partial_images(tmp_path: Path, tiny_models: dict[str, Path]) -> None:  # noqa: F811
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = {
        "telemetry": {"store": f"sqlite:///{tmp_path / 'flask.db'}"},
        "backends": [{"name": "tiny", "kind": "diffusers", "model": str(tiny_models["sd15"]), "device": "cpu"}],
    }
    Pixelroute().init_app(app, auth=key_auth)
    try:
        r = post(app.test_client(), "/pixelroute/generate",
                 {"prompt": "x", "stream": True, "previews": 1, "steps": 3, "seed": 4})
        frames = sse(r.get_data(as_text=True))
        steps = [data for name, data in frames if name == "step"]
        assert [(s["step"], s["previews"]) for s in steps] == [(1, 0), (2, 1), (3, 0)]
        preview = Image.open(io.BytesIO(base64.b64decode(steps[1]["preview_b64"][0])))
        assert preview.size == (64, 64) and steps[1]["preview_index"] == 0
        assert frames[-1][0] == "done"
    finally:
        get_state(app).close()


def png_file(size: tuple[int, int] = (64, 64), mode: str = "RGB", color: Any = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def left_half_mask() -> bytes:
    """pixelroute's convention: white = repaint (the left half), black = keep."""
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def test_edit_takes_multipart_or_base64_json_and_repaints_inside_the_mask(app: Flask) -> None:
    client = app.test_client()
    r = client.post("/pixelroute/edit", headers={"X-Key": KEY}, content_type="multipart/form-data", data={
        "image": (io.BytesIO(png_file()), "in.png"), "mask": (io.BytesIO(left_half_mask()), "mask.png"),
        "prompt": "a blue door", "strength": "0.9", "seed": "3", "backend": "mock-b"})
    assert r.status_code == 200, r.get_json()
    out = Image.open(io.BytesIO(base64.b64decode(r.get_json()["data"][0]["b64_json"]))).convert("RGB")
    assert r.headers["X-Pixelroute-Backend"] == "mock-b"
    assert out.getpixel((48, 32)) == (200, 30, 30) and out.getpixel((8, 32)) != (200, 30, 30)
    as_json = {"image": base64.b64encode(png_file()).decode(), "prompt": "x", "sla": {"deadline_s": 5}}
    r = post(client, "/pixelroute/edit", as_json, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert Image.open(io.BytesIO(r.get_data())).size == (64, 64)


@pytest.mark.parametrize(
    ("body", "param"),
    [({"prompt": "x"}, "image"), ({"image": "not base64!", "prompt": "x"}, "image"),
     ({"image": base64.b64encode(b"not a png").decode(), "prompt": "x"}, "image"),
     ({"image": base64.b64encode(png_file()).decode(), "mask": base64.b64encode(png_file((32, 32))).decode(),
       "prompt": "x"}, "mask"),
     ({"image": base64.b64encode(png_file()).decode(), "prompt": "x", "strength": "high"}, "strength")],
)
def test_bad_edits_are_400_naming_the_field(app: Flask, body: dict[str, Any], param: str) -> None:
    r = post(app.test_client(), "/pixelroute/edit", body)
    assert r.status_code == 400 and r.get_json()["error"]["param"] == param, r.get_json()


def test_edit_streams_and_asks_the_hook_about_edit(tmp_path: Path) -> None:
    asked: list[str] = []

    def hook(request: Any, action: str) -> bool:
        asked.append(action)
        return action != "edit" or request.headers.get("X-Key") == KEY

    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = settings(tmp_path)
    Pixelroute().init_app(app, auth=hook)
    try:
        body = {"image": base64.b64encode(png_file()).decode(), "prompt": "x", "stream": True, "backend": "mock-a"}
        assert app.test_client().post("/pixelroute/edit", json=body).status_code == 403
        r = post(app.test_client(), "/pixelroute/edit", body)
        assert r.mimetype == "text/event-stream"
        frames = sse(r.get_data(as_text=True))
        assert [name for name, _ in frames] == ["decided", "attempt_started", "done"]
        assert frames[-1][1]["backend"] == "mock-a" and asked == ["edit", "edit"]
    finally:
        get_state(app).close()
