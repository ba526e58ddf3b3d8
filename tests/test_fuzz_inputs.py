"""Hostile input is normal input: never a 500 or a traceback, always a 4xx / exit 2 naming the field.

The reproduced defects first (each failed on the old code), then hypothesis properties over the
request model, the gateway's JSON (the real Starlette app in-process, real mock backends, real
SQLite telemetry) and the CLI's argument parser. Examples are few and small so the suite stays
fast on two cores; ``derandomize`` keeps every run the same.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from pixelroute import ValidationError
from pixelroute._types import MAX_SEED, build_request, build_sla
from pixelroute.cli import build_parser, main
from pixelroute.contrib.flask import Pixelroute, get_state
from pixelroute.gateway import create_app
from tests._import_root import SUBPROCESS_PYTHONPATH

KEY = "gateway-test-key"
REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
#: the gateway's TestClient lives for the module; hypothesis need not reset it between examples
FUZZ_APP = settings(FUZZ, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HUGE = "9" * 5000  # past int()'s 4,300-digit limit for strings
DEEP = "[" * 100_000 + "]" * 100_000


def backends_settings(db: Path) -> dict[str, Any]:
    return {
        "telemetry": {"store": f"sqlite:///{db}"},
        "backends": [{"name": "mock-a", "kind": "mock"}, {"name": "mock-b", "kind": "mock"}],
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("gateway") / "g.db"
    app = create_app(backends_settings(db), api_key=KEY)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client


def post_raw(client: TestClient, body: str | bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/v1/images/generations",
        content=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})},
    )


def assert_names_field(response: Any, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    err: dict[str, Any] = response.json()["error"]
    assert err["param"], err
    assert f"`{err['param']}" in err["message"], err
    if param is not None:
        assert err["param"] == param, err
    return err


# -- the reproduced defects -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "shows"),
    [
        ('{"prompt": "x", "seed": ' + HUGE + "}", "seed", "5000 digits"),
        ('{"prompt": "x", "n": ' + HUGE + "}", "n", "5000 digits"),
        ('{"prompt": "x", "sla": ' + DEEP + "}", "body", "nest"),
        ('{"prompt": "x", "model": ["mock-a"]}', "model", "['mock-a']"),
        ('{"prompt": "x", "size": "' + HUGE + 'x64"}', "size", "5003 characters"),
        ('{"prompt": "x", "size": "\u00b2x64"}', "size", "x64"),  # str.isdigit() said yes, int() no
        ('{"prompt": "x", "n": "x"}', "n", "'x'"),
        ('{"prompt": "x", "n": [1]}', "n", "[1]"),
        ('{"prompt": "x", "n": 1e400}', "n", "inf"),
        ('{"prompt": "x", "sla": {"deadline_s": 1e300}}', "sla.deadline_s", "1e+300"),
    ],
)
def test_gateway_reproduced_500s_are_400s(gateway: TestClient, body: str, param: str, shows: str) -> None:
    err = assert_names_field(post_raw(gateway, body), param)
    assert shows in err["message"]


def flask_app(tmp_path: Path) -> Flask:
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = backends_settings(tmp_path / "f.db")
    Pixelroute().init_app(app, auth=lambda request, action: True)
    return app


@pytest.mark.parametrize("accept", ["application/json", "image/png"])
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"prompt": "x", "n": "x"}', "n"),
        ('{"prompt": "x", "n": [1]}', "n"),
        ('{"prompt": "x", "n": 1e400}', "n"),
        ('{"prompt": "x", "n": "3"}', "n"),  # lax "3" with png would pay for 3 images and return 1
        ('{"prompt": "x", "seed": ' + HUGE + "}", "seed"),
        ('{"prompt": "x", "sla": ' + DEEP + "}", "body"),
        ('{"prompt": "x", "width": 64}', "height"),  # a model-level check: the field is still named
    ],
)
def test_flask_reproduced_500s_are_400s(tmp_path: Path, body: str, param: str, accept: str) -> None:
    app = flask_app(tmp_path)
    try:
        r = app.test_client().post(
            "/pixelroute/generate", data=body, headers={"Content-Type": "application/json", "Accept": accept}
        )
        assert r.status_code == 400, r.get_data(as_text=True)
        err = r.get_json()["error"]
        assert err["param"] == param and f"`{param}`" in err["message"], err
        assert get_state(app).client is None  # refused before a client (or a paid call) existed
    finally:
        get_state(app).close()


@pytest.mark.parametrize(
    ("option", "value", "shows"),
    [
        ("--deadline", "0", "`0`"),
        ("--deadline", "-1", "`-1`"),
        ("--deadline", "nan", "`nan`"),
        ("--deadline", "inf", "`inf`"),
        ("--max-cost", "-1", "`-1`"),
        ("--max-cost", "nan", "`nan`"),
        ("--seed", HUGE, "5000 characters"),
        ("--seed", "-1", "`-1`"),
        ("--steps", "0", "`0`"),
        ("--guidance", "inf", "`inf`"),
        ("--width", "\u0663", "`\u0663`"),  # int() accepts Arabic-Indic digits; we do not
    ],
)
def test_cli_bad_numbers_exit_2_naming_option_and_value(option: str, value: str, shows: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(["generate", "a cat", f"{option}={value}"])
    assert info.value.code == 2
    text = err.getvalue()
    assert f"`{option}`" in text and shows in text, text
    assert "Traceback" not in text


def test_cli_non_utf8_prompt_exits_2_before_anything_runs(tmp_path: Path) -> None:
    # argv bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)
    out = tmp_path / "never.png"
    done = subprocess.run(
        [sys.executable, "-m", "pixelroute", "generate", b"caf\xe9 sign", "--out", str(out)],
        capture_output=True,
        timeout=120,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONPATH": SUBPROCESS_PYTHONPATH,
             "PIXELROUTE_CACHE_DIR": str(tmp_path / "cache")},
    )
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, stderr
    assert "`prompt` must be UTF-8 text" in stderr and "e9" in stderr and "caf\\xe9 sign" in stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not (tmp_path / "cache").exists()  # no client, no store, no file


# -- properties -----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**150, max_value=10**4250)  # past any field, still json.dumps-able
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=4), inner, max_size=3), max_leaves=6)
REQUEST_FIELDS = ["prompt", "negative_prompt", "width", "height", "n", "steps", "guidance", "scheduler", "seed"]


def _bounded_message(exc: ValidationError) -> str:
    text = str(exc)
    assert exc.field, text
    assert f"`{exc.field.split('.')[0]}" in text, text
    assert len(text) < 600, text  # a 5,000-digit value is described, not printed
    return text


@FUZZ
@given(fields=st.dictionaries(st.sampled_from([*REQUEST_FIELDS, "colour"]), json_values, max_size=5))
@example(fields={"seed": 10**5000})
@example(fields={"width": 10**5000, "height": 64})
@example(fields={"guidance": 10**400})
@example(fields={"steps": float("nan")})
def test_request_model_refuses_with_a_named_field(fields: dict[str, Any]) -> None:
    fields = {"prompt": "a cat", **fields}
    try:
        req = build_request(**fields)
    except ValidationError as exc:
        _bounded_message(exc)
        return
    assert 1 <= req.n <= 16
    assert req.seed is None or 0 <= req.seed <= MAX_SEED
    assert req.guidance is None or math.isfinite(req.guidance)
    assert (req.width is None) == (req.height is None)


@FUZZ
@given(sla=st.dictionaries(st.sampled_from(["deadline_s", "max_cost_usd", "hedge", "deadlin_s"]), json_values))
@example(sla={"deadline_s": 1e308})
@example(sla={"max_cost_usd": 10**5000})
def test_sla_model_refuses_with_a_named_field(sla: dict[str, Any]) -> None:
    try:
        value = build_sla(sla)
    except ValidationError as exc:
        _bounded_message(exc)
        return
    for number in (value.deadline_s, value.max_cost_usd):
        assert number is None or (math.isfinite(number) and number >= 0)


GATEWAY_KEYS = ["prompt", "model", "n", "size", "response_format", "user", "output_format", "sla", "seed",
                "steps", "guidance", "negative_prompt", "scheduler", "quality"]
sla_objects = st.dictionaries(st.sampled_from(["deadline_s", "max_cost_usd", "hedge"]), json_values, max_size=3)
gateway_bodies = st.tuples(
    st.booleans(),
    st.dictionaries(st.sampled_from(GATEWAY_KEYS), json_values, max_size=4),
    st.none() | sla_objects,
).map(lambda t: {**({"prompt": "a cat", "size": "64x64"} if t[0] else {}), **t[1],
                 **({"sla": t[2]} if t[2] is not None else {})})


def _allowed_answer(response: Any) -> None:
    # 504: a fuzzed deadline of a microsecond is a missed deadline, not a crash
    assert response.status_code in (200, 400, 422, 504), response.text
    if response.status_code == 400:
        assert_names_field(response)
    elif response.status_code != 200:
        assert response.json()["error"]["message"]


@FUZZ_APP
@given(body=gateway_bodies)
@example(body={"prompt": "a cat", "model": {"a": 1}})
@example(body={"prompt": "a cat", "size": "64x64", "sla": {"deadline_s": 1e308}})
@example(body={"prompt": ["a cat"], "n": True})
def test_gateway_json_never_500(gateway: TestClient, body: dict[str, Any]) -> None:
    _allowed_answer(post_raw(gateway, json.dumps(body, allow_nan=True)))


@FUZZ_APP
@given(raw=st.binary(max_size=64) | st.integers(1, 50_000).map(lambda d: '{"sla": ' + "[" * d + "]" * d + "}"))
@example(raw=b'{"prompt": "x", "steps": ' + HUGE.encode() + b"}")
@example(raw=b"\xff\xfe{}")
def test_gateway_raw_bytes_never_500(gateway: TestClient, raw: bytes | str) -> None:
    r = post_raw(gateway, raw)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"]


CLI_OPTIONS = ["--deadline", "--max-cost", "--seed", "--steps", "--guidance", "--width", "--height"]
cli_values = (
    st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e400", HUGE, "1e-300", "3", "0.5", "64", "", "1_0"])
    | st.integers(-(10**25), 10**25).map(str)
    | st.floats().map(repr)
    | st.text(max_size=8)
)


@FUZZ
@given(options=st.dictionaries(st.sampled_from(CLI_OPTIONS), cli_values, max_size=4))
def test_cli_parser_accepts_only_what_the_model_accepts(options: dict[str, str]) -> None:
    argv = ["generate", "a cat", *(f"{k}={v}" for k, v in options.items())]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 2
        assert any(f"argument {k}" in err.getvalue() for k in options), err.getvalue()
        assert "Traceback" not in err.getvalue()
        return
    build_sla({"deadline_s": args.deadline, "max_cost_usd": args.max_cost})
    for side in (args.width, args.height):
        build_request(prompt="a cat", seed=args.seed, steps=args.steps, guidance=args.guidance, width=side,
                      height=side)


@FUZZ
@given(prompt=st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xDCFF, exclude_categories=()),
                      min_size=1, max_size=12).filter(lambda s: not s.startswith("-")))
def test_cli_prompt_is_utf8_without_nul_or_exit_2(prompt: str) -> None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(["generate", prompt])
    except SystemExit as exit_:
        assert exit_.code == 2 and "`prompt`" in err.getvalue()
        assert "\x00" in prompt or any(0xD800 <= ord(c) <= 0xDFFF for c in prompt)
        return
    args.prompt.encode("utf-8")
    assert "\x00" not in args.prompt
