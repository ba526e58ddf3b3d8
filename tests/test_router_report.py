"""The training report: real HTML from a template, SVG plots that load, a Markdown twin, hostile names escaped.

The HTML is rendered in headless Chromium: no Markdown syntax may show, every image must load, and a
screenshot (``training-report.png`` in the test's tmp dir) is kept for a person to look at.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pixelroute.router import Router, simulate, train
from pixelroute.router import _report_plots as plots
from pixelroute.router.ope import off_policy_report
from pixelroute.router.report import NO_PLOTS_HINT, PLOT_FILES, write_report
from pixelroute.router.simulate import DEFAULT_BACKENDS
from pixelroute.router.training import TrainParams
from tests._chromium import MARKDOWN_SYNTAX, chromium, rendered, screenshot

PROFILES = [b.profile() for b in DEFAULT_BACKENDS]
HOSTILE = '<img src=x onerror=alert(1)>|$x$'


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], dict[str, Any]]]:
    out = tmp_path_factory.mktemp("art") / "model"
    records = list(simulate(3000, seed=3))
    manifest = train(records, out, profiles=PROFILES, params=TrainParams(seed=0))
    ope = off_policy_report(Router.load(out), records[-manifest["rows"]["report"]:], PROFILES)
    yield out, manifest, ope


@pytest.fixture
def with_matplotlib() -> None:
    pytest.importorskip("matplotlib", reason="the `report` extra (matplotlib) draws the plots")


def test_report_has_every_section_table_and_plot(trained: tuple[Path, dict, dict], tmp_path: Path,
                                                 with_matplotlib: None) -> None:
    _, manifest, ope = trained
    html_path = write_report(tmp_path / "report", manifest, ope)
    page = html_path.read_text()
    for title in ("Latency coverage", "Failure probability", "Correction seconds", "Off-policy evaluation",
                  "Feature importance"):
        assert f"<h2>{title}</h2>" in page
    assert page.count("<table>") == 5
    for name in PLOT_FILES:
        svg = (tmp_path / "report" / name).read_text()
        assert svg.startswith("<?xml") and "<svg" in svg
        assert f'<img src="{name}"' in page
    # the baselines each get their own row, with intervals
    for policy in ("lgbm", "always_cheapest", "always_fastest", "litellm_latency", "routellm_threshold"):
        assert f"<td>{policy}</td>" in page
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.startswith("# Router training report: ") and "| policy | matched |" in md
    assert all(f"]({name})" in md for name in PLOT_FILES)
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["off_policy"]["lgbm"]["snips_cost_lo"] <= data["off_policy"]["lgbm"]["snips_cost"]
    assert set(data["metrics"]["feature_importance"]) == {"latency_p50", "latency_pq", "p_fail", "correction"}


def test_the_same_report_draws_the_same_plots(trained: tuple[Path, dict, dict], tmp_path: Path,
                                              with_matplotlib: None) -> None:
    _, manifest, ope = trained
    write_report(tmp_path / "a", manifest, ope)
    write_report(tmp_path / "b", manifest, ope)
    for name in PLOT_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_without_matplotlib_the_report_has_tables_and_says_how_to_get_plots(
        trained: tuple[Path, dict, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, manifest, ope = trained
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "off_policy.svg").write_text("<svg/>")  # from an earlier report: must not pass for this one's
    monkeypatch.setattr(plots, "available", lambda: False)
    page = write_report(folder, manifest, ope).read_text()
    assert "<img" not in page and page.count("<table>") == 5
    assert html.unescape(page).count(NO_PLOTS_HINT) == 1
    assert not [p for p in folder.iterdir() if p.suffix == ".svg"]
    md = (folder / "report.md").read_text()
    assert NO_PLOTS_HINT in md and "![" not in md


def test_names_from_the_logs_are_escaped(trained: tuple[Path, dict, dict], tmp_path: Path) -> None:
    _, manifest, ope = trained
    doc = json.loads(json.dumps(manifest))
    cov = doc["metrics"]["latency_coverage"]
    cov[HOSTILE] = cov.pop(next(iter(cov)))
    doc["metrics"]["feature_importance"]["latency_p50"][HOSTILE] = 0.5
    estimates = {**ope, HOSTILE: ope["always_cheapest"]}
    page = write_report(tmp_path / "r", doc, estimates).read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;|$x$" in page
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| \\<img src=x onerror=alert(1)\\>\\|$x$ |" in md  # a pipe in a name does not split the row


def test_training_report_renders_in_headless_chromium(trained: tuple[Path, dict, dict], tmp_path: Path,
                                                      with_matplotlib: None) -> None:
    exe = chromium()
    _, manifest, ope = trained
    html_path = write_report(tmp_path / "report", manifest, ope)
    seen = rendered(exe, html_path, tmp_path)
    assert not MARKDOWN_SYNTAX.search(seen["text"]), MARKDOWN_SYNTAX.search(seen["text"])
    assert "Off-policy evaluation" in seen["text"] and "always_fastest" in seen["text"]
    assert sorted(i["src"] for i in seen["images"]) == sorted(PLOT_FILES)
    assert all(i["loaded"] for i in seen["images"]), seen["images"]
    img = screenshot(exe, html_path, tmp_path, "training-report.png", (1280, 5400))
    counts = {c: n for n, c in img.getcolors(maxcolors=1 << 22) or []}
    assert counts.get((0x1D, 0x2B, 0x3A), 0) > 20_000  # the header bar was laid out and painted
    assert counts.get((0x3B, 0x6E, 0xA8), 0) > 5_000  # the plots' bars and markers drew
    assert len(counts) > 500  # text and anti-aliased lines, not a blank page


def test_cli_train_prints_where_the_report_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pixelroute.cli import main

    sim, profiles = tmp_path / "sim.jsonl", tmp_path / "profiles.json"
    assert main(["simulate", "--n", "1500", "--seed", "4", "--out", str(sim), "--write-profiles", str(profiles)]) == 0
    assert main(["train", "--jsonl", str(sim), "--profiles", str(profiles), "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"report \S+/m/report/report\.html \(open it in a browser", err), err
