"""Public value types and configuration: every bad input names the field and the value."""

from __future__ import annotations

import pytest

from pixelroute import SLA, ConfigError, GenerateRequest, ValidationError, load_settings
from pixelroute._types import build_request, build_sla
from pixelroute.backends.base import Capabilities, Price


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"prompt": "   "}, "prompt", "must not be empty"),
        ({"prompt": "x", "width": 4, "height": 64}, "width", "at least 8"),
        ({"prompt": "x", "n": 0}, "n", "between 1 and 16"),
        ({"prompt": "x", "steps": 0}, "steps", "between 1 and 1000"),
        ({"prompt": "x", "guidance": -1.0}, "guidance", "between 0 and 100"),
        ({"prompt": "x", "seed": -3}, "seed", "between 0"),
        ({"prompt": "x", "width": 64}, None, "`height` must be given"),
        ({"prompt": "x", "colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_bad_request_names_field_and_value(fields: dict, field: str | None, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        build_request(**fields)
    assert fragment in str(info.value)
    if field:
        assert f"`{field}`" in str(info.value)
        assert info.value.field == field


def test_request_params_match_telemetry_shape() -> None:
    req = GenerateRequest(prompt="a cat", width=64, height=64, seed=7)
    assert req.params() == {
        "width": 64, "height": 64, "steps": None, "guidance": None, "n": 1, "seed": 7, "scheduler": None,
    }


@pytest.mark.parametrize(
    ("sla", "fragment"),
    [({"deadline_s": 0}, "`deadline_s`"), ({"deadline_s": float("nan")}, "`deadline_s`"),
     ({"max_cost_usd": -0.01}, "`max_cost_usd`"), ({"deadlin_s": 3}, "deadlin_s")],
)
def test_bad_sla(sla: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        build_sla(sla)


def test_sla_is_a_frozen_value() -> None:
    s = SLA(deadline_s=8, max_cost_usd=0.05)
    assert build_sla(s) is s
    assert build_sla(None) == SLA()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        s.deadline_s = 3  # type: ignore[misc]


def test_capabilities_refuse_before_compute() -> None:
    caps = Capabilities(size_multiple=16, max_width=512, max_height=512, supports_negative_prompt=False)
    with pytest.raises(ValidationError, match="`width` must be a multiple of 16 .* but is 72"):
        caps.validate(GenerateRequest(prompt="x", width=72, height=64), "b")
    with pytest.raises(ValidationError, match="`height` must be at most 512"):
        caps.validate(GenerateRequest(prompt="x", width=64, height=1024), "b")
    with pytest.raises(ValidationError, match="`negative_prompt` cannot be honoured"):
        caps.validate(GenerateRequest(prompt="x", negative_prompt="blur", width=64, height=64), "b")
    sized = Capabilities(allowed_sizes=((1024, 1024),))
    with pytest.raises(ValidationError, match="1024x1024"):
        sized.validate(GenerateRequest(prompt="x", width=512, height=512), "b")


def test_price_models() -> None:
    assert Price(per_image=0.04).estimate(1024, 1024, 2) == pytest.approx(0.08)
    assert Price(per_megapixel=0.025).estimate(1000, 1000, 1) == pytest.approx(0.025)
    assert Price(per_gpu_second=0.0015).estimate(64, 64, 1, gpu_s=2.0) == pytest.approx(0.003)
    with pytest.raises(Exception, match="exactly one"):
        Price(per_image=0.04, per_megapixel=0.01)


def test_config_misspelt_key_is_named() -> None:
    with pytest.raises(ConfigError, match="`router.explore` is not a known setting"):
        load_settings({"router": {"explore": 0.1}})
    with pytest.raises(ConfigError, match="`kind` must be one of"):
        load_settings({"backends": [{"name": "x", "kind": "dalle"}]})
    with pytest.raises(ConfigError, match="must be unique"):
        load_settings({"backends": [{"name": "x", "kind": "mock"}, {"name": "x", "kind": "mock"}]})


def test_config_env_overrides_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[router]\nexploration = 0.5\nsla_confidence = 0.9\n[[backends]]\nname = "m"\nkind = "mock"\n')
    monkeypatch.setenv("PIXELROUTE_ROUTER__EXPLORATION", "0.1")
    s = load_settings(cfg)
    assert s.router.exploration == 0.1
    assert s.router.sla_confidence == 0.9
    assert s.backends[0].name == "m"


def test_config_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[router\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_config_round_trips() -> None:
    s = load_settings({"backends": [
        {"name": "m", "kind": "mock", "price": {"per_image": 0.01}, "delay_s": 0.5},
        {"name": "o", "kind": "openai", "api_key_env": "MY_KEY", "quality": "low"},
    ]})
    again = load_settings(s.model_dump(mode="json"))
    assert again == s
    assert again.backends[1].api_key_env == "MY_KEY"  # type: ignore[attr-defined]
