"""The command line: generate saves a traceable PNG, trace reads it back, demo closes the loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelroute.cli import main

CONFIG = """
[telemetry]
store = "sqlite:///{db}"

[router]
exploration = 0.0

[[backends]]
name = "fast"
kind = "mock"
price = {{ per_image = 0.002 }}
typical_latency_s = 0.5

[[backends]]
name = "careful"
kind = "mock"
price = {{ per_image = 0.04 }}
typical_latency_s = 2.0
strengths = {{ typography = 0.9 }}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "pixelroute.toml"
    path.write_text(CONFIG.format(db=tmp_path / "t.db"))
    return path


def test_generate_saves_png_whose_metadata_agrees_with_the_stored_trace(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "img.png"
    code = main(["generate", "a red bicycle", "--config", str(config), "--seed", "7", "--deadline", "10",
                 "--width", "64", "--height", "64", "--out", str(out)])
    assert code == 0 and out.exists()
    printed = capsys.readouterr().out
    assert "candidates:" in printed and "attempt 0" in printed

    assert main(["trace", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["prompt"] == "a red bicycle" and meta["seed"] == 7

    assert main(["trace", meta["request_id"], "--config", str(config), "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["request_id"] == meta["request_id"]
    assert stored["attempts"][-1]["backend"] == meta["backend"]


def test_cli_errors_are_one_clear_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "x", "--config", str(config), "--width", "64"]) == 1
    err = capsys.readouterr().err
    assert "`height` must be given" in err and "Traceback" not in err
    assert main(["generate", "x", "--config", str(config), "--max-cost", "0.0001"]) == 1
    assert "no backend can meet the SLA" in capsys.readouterr().err


def test_demo_closes_the_loop_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--records", "1500", "--eval-requests", "300", "--dir", str(tmp_path / "demo")])
    assert code == 0
    out = capsys.readouterr().out
    for policy in ("cold_start", "always_cheapest", "always_fastest", "litellm_latency", "routellm_threshold",
                   "oracle"):
        assert f"| {policy} |" in out
    for world in ("A", "B"):
        assert (tmp_path / "demo" / f"world-{world}" / "router-model" / "manifest.json").exists()
    assert "world B: cost per accepted image, trained" in out
    assert sum(line.startswith('--- ') for line in out.splitlines()) == 3  # three real routed generations
    assert (tmp_path / "demo" / "example-0.png").exists()


def test_makefile_demo_runs_the_demo_command() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "\n\t$(PY) -m pixelroute demo" in makefile
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    head = readme.split("##")[0]
    assert "make demo" in head and "make test" in head


def test_version_is_the_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib
    from importlib.metadata import version

    import pixelroute

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"pixelroute {version('pixelroute')}\n"
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert pixelroute.__version__ == project["version"]  # the fallback when run from a source tree
