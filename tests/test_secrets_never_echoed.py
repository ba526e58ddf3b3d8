"""A key written into the config never comes back out: not in ConfigError, bodies, logs or telemetry.

Two real mistakes: the key pasted where the variable's *name* goes (``api_key_env = "sk-…"``),
and the key written inline (``api_key = "sk-…"``). Both must be refused with a message that says
what to do instead, and the key must appear nowhere. Also: /healthz tells strangers only "ok",
and the docs and examples compare keys in constant time.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from pixelroute import Client, ConfigError, load_settings
from pixelroute._config import Settings
from pixelroute._shown import looks_like_secret, shown
from pixelroute.contrib import _http
from pixelroute.gateway import create_app
from pixelroute.telemetry import open_store

CANARY = "sk-proj-Zx81QwErTy7788UiOpAs"
REPO = Path(__file__).resolve().parents[1]
GATEWAY_KEY = "gateway-key-for-tests"


def remote(**fields: Any) -> dict[str, Any]:
    return {"backends": [{"name": "o", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", **fields}]}


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (remote(api_key_env=CANARY), ['`backends[0].api_key_env` must name an environment variable, not hold the key',
                                      'write api_key_env = "OPENAI_API_KEY"']),
        (remote(api_key_env=[CANARY]), ["`backends[0].api_key_env`"]),
        (remote(api_key=CANARY), ["`backends[0].api_key` is not a known setting",
                                  "secrets come only from the environment", "api_key_env"]),
        (remote(client_secret="hunter2hunter2"), ["`backends[0].client_secret` is not a known setting"]),
        ({"backends": [{"kind_": "openai", "api_key": CANARY}]}, ["`backends[0]` needs a `kind`"]),
        ({"backends": [{"name": "a", "kind": "a1111", "api_key_env": "user:" + CANARY}]},
         ['write api_key_env = "A1111_API_KEY"']),
    ],
    ids=["key-as-env-name", "key-in-a-list", "inline-api_key", "inline-secret", "no-kind", "a1111-user-pass"],
)
def test_config_error_names_the_setting_but_never_the_key(config: dict[str, Any], says: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    assert CANARY not in message and "hunter2" not in message
    for fragment in says:
        assert fragment in message, message


def test_a_toml_file_with_the_key_inline_is_refused_without_echo(tmp_path: Path) -> None:
    path = tmp_path / "pixelroute.toml"
    path.write_text(f'[[backends]]\nname = "o"\nkind = "openai"\napi_key_env = "{CANARY}"\n')
    with pytest.raises(ConfigError) as info:
        Client.from_config(path)
    assert CANARY not in str(info.value) and "api_key_env" in str(info.value)
    # pydantic's own error prints input_value=...; `from None` keeps it out of any traceback
    assert info.value.__suppress_context__


def test_valid_variable_names_are_accepted() -> None:
    for name in ("OPENAI_API_KEY", "PIXELROUTE_OPENAI_KEY_PROD_2", "my_key", ""):
        assert load_settings(remote(api_key_env=name)).backends[0].api_key_env == name  # type: ignore[attr-defined]


def unvalidated(tmp_path: Path) -> Settings:
    """Settings with the key where the name goes, built the way model_copy does: no validation."""
    base = load_settings({"telemetry": {"store": f"sqlite:///{tmp_path / 't.db'}"}, **remote()})
    backend = base.backends[0].model_copy(update={"api_key_env": CANARY})
    return base.model_copy(update={"backends": [backend]})


def test_the_gateway_refuses_to_start_without_logging_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(remote(api_key_env=CANARY), api_key=GATEWAY_KEY)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as info, TestClient(app):
        pass
    assert CANARY not in str(info.value) and "must name an environment variable" in str(info.value)
    assert all(CANARY not in r.getMessage() for r in caplog.records)


def test_gateway_body_logs_and_telemetry_never_carry_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(unvalidated(tmp_path), api_key=GATEWAY_KEY)
    with caplog.at_level(logging.DEBUG), TestClient(app) as http:
        r = http.post(
            "/v1/images/generations",
            json={"prompt": "a cat", "model": "o", "size": "1024x1024"},
            headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        )
    assert r.status_code == 500, r.text
    assert CANARY not in r.text
    assert "must name an environment variable, not hold the key" in r.json()["error"]["message"]
    logged = [rec.getMessage() for rec in caplog.records]
    assert any("gateway request failed" in m for m in logged)
    assert all(CANARY not in m for m in logged)
    with open_store(f"sqlite:///{tmp_path / 't.db'}") as store:
        records = list(store.iter_records())
    assert records, "the failed attempt is still recorded"
    message = records[-1]["outcome"]["error_message"]
    assert CANARY not in message and "api_key_env" in message
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())  # the db, WAL, markers
    assert CANARY.encode() not in raw


@pytest.mark.parametrize(
    "leak",
    [CANARY, "r8_AbCdEfGh1234567890xy", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStU", "hf_AbCdEfGhIjKlMnOpQrSt12"],
)
def test_error_bodies_mask_key_shaped_text_nobody_registered(leak: str) -> None:
    status, body, _ = _http.error_response(ConfigError(f"environment variable `{leak}` is not set"))
    assert status == 500
    assert leak not in body["error"]["message"] and "[REDACTED]" in body["error"]["message"]


def test_shown_hides_secrets_and_survives_hostile_values() -> None:
    assert CANARY not in shown(CANARY)
    assert shown("x", name="backends.0.client_secret") == "<hidden: may be a secret>"
    assert "hidden" in shown({"api_key": "plain words"})
    assert "digits" in shown(10**5000)  # str() would raise ValueError past 4,300 digits
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    assert shown(nested) == "`[[[...]]]`"  # repr() would raise RecursionError
    assert not looks_like_secret("OPENAI_API_KEY") and not looks_like_secret("stabilityai/sd3.5-large")


# -- /healthz ---------------------------------------------------------------------------------------


def health_app(tmp_path: Path, **kwargs: Any) -> Any:
    config = {"telemetry": {"store": f"sqlite:///{tmp_path / 'h.db'}"},
              "backends": [{"name": "secret-internal-sdxl", "kind": "mock"}]}
    return create_app(config, **kwargs)


def test_healthz_tells_strangers_only_ok(tmp_path: Path) -> None:
    with TestClient(health_app(tmp_path, api_key=GATEWAY_KEY)) as http:
        anonymous = http.get("/healthz")
        wrong = http.get("/healthz", headers={"Authorization": "Bearer nope"})
        insider = http.get("/healthz", headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
    assert anonymous.status_code == wrong.status_code == 200  # probes never fail on auth
    assert anonymous.json() == wrong.json() == {"status": "ok"}
    assert "secret-internal-sdxl" not in anonymous.text + wrong.text
    assert insider.json()["backends"]["secret-internal-sdxl"]["breaker"] == "closed"


def test_healthz_details_for_everyone_only_when_asked(tmp_path: Path) -> None:
    with TestClient(health_app(tmp_path, api_key=GATEWAY_KEY, public_health_details=True)) as http:
        assert "secret-internal-sdxl" in http.get("/healthz").json()["backends"]


# -- constant-time key comparison in what users copy ---------------------------------------------

_EQ_ON_A_KEY = re.compile(r"""headers\.get\([^)]*\)\s*==|==\s*\w*(?:KEY|key|expected)\b""")


def test_docs_and_examples_compare_keys_in_constant_time() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "examples").rglob("*.py")),
             REPO / "sdk" / "contrib" / "flask.py"]
    offenders = [
        f"{page.relative_to(REPO)}:{n}"
        for page in pages
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if _EQ_ON_A_KEY.search(line)
    ]
    assert not offenders, f"compare keys with hmac.compare_digest, not ==: {offenders}"
