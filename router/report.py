"""The training report: ``report.html`` for people, ``report.md`` for terminals and pull requests.

Both are rendered from one list of sections (headings, paragraphs, tables, a plot each), so
they say the same thing. The HTML comes from a Jinja2 template with autoescaping on (backend
and policy names come from logs, and logs are hostile input); the plots are SVG files beside
it, drawn by matplotlib when the ``report`` extra is installed
(``pip install 'pixelroute[report]'``). Without matplotlib the report still has every table
and says how to get the plots.

Open ``report.html`` in any browser straight from disk: it needs no server and loads nothing
from the network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _report_plots
from .training import _write_atomic

#: the plot files a report may hold; older ones are removed before a report is rewritten
PLOT_FILES: tuple[str, ...] = ("latency_coverage.svg", "failure_calibration.svg", "correction_error.svg",
                               "off_policy.svg", "feature_importance.svg")
NO_PLOTS_HINT = "Plots need matplotlib: pip install 'pixelroute[report]'."


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """One heading of the report, with its text, its table and its plot (a file name beside the report)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: Table | None = None
    plot: str | None = None
    plot_alt: str = ""
    anchor: str = ""


def _f(value: Any, spec: str) -> str:
    return "–" if value is None or value != value else format(value, spec)  # None and NaN alike


def _interval(d: dict[str, float], key: str, spec: str) -> str:
    lo, hi = d.get(f"{key}_lo"), d.get(f"{key}_hi")
    if lo is None or hi is None or lo != lo or hi != hi:
        return "–"
    return f"{format(lo, spec)} to {format(hi, spec)}"


def _with_interval(d: dict[str, float], key: str, spec: str) -> str:
    interval = _interval(d, key, spec)
    return _f(d.get(key), spec) + ("" if interval == "–" else f" ({interval})")


def sections(manifest: dict[str, Any], ope: dict[str, dict[str, float]] | None) -> list[Section]:
    """The report's content, independent of its format."""
    m = manifest["metrics"]
    q = f"p{round(manifest['latency_quantile'] * 100)}"
    cov = m["latency_coverage"]
    out = [Section(
        "Latency coverage", anchor="latency",
        paragraphs=[f"Share of held-out attempts whose latency came in at or under the predicted median (target "
                    f"0.50) and {q} (target {manifest['latency_quantile']:.2f}), after split-conformal calibration."],
        table=Table(["backend", "rows", "p50 coverage", f"{q} coverage"],
                    [["all backends" if b == "*" else b, str(v["rows"]), _f(v["p50"], ".3f"), _f(v[q], ".3f")]
                     for b, v in cov.items()]),
        plot="latency_coverage.svg", plot_alt=f"p50 and {q} latency coverage per backend against their targets")]
    f = m["failure"]
    out.append(Section(
        "Failure probability", anchor="failure",
        paragraphs=[f"Brier score {_f(f['brier'], '.4f')} (a constant at the base rate scores "
                    f"{_f(f['brier_base_rate'], '.4f')}) on {f['rows']} held-out attempts. A well calibrated "
                    "model's bins lie on the diagonal: observed failure rate = mean predicted P(fail)."],
        table=Table(["predicted P(fail)", "rows", "mean predicted", "observed"],
                    [[f"{b['from']:.2f} to {b['to']:.2f}", str(b["rows"]), f"{b['predicted']:.4f}",
                      f"{b['observed']:.4f}"] for b in f["reliability"]]),
        plot="failure_calibration.svg", plot_alt="reliability diagram of P(fail) with rows per bin"))
    c = m["correction"]
    bins = c.get("by_predicted") or []
    out.append(Section(
        "Correction seconds", anchor="correction",
        paragraphs=[f"Mean absolute error {_f(c['mae_s'], '.1f')} s against {_f(c['mae_constant_s'], '.1f')} s for "
                    f"always predicting the training mean, on {c['rows']} held-out attempts with a reported "
                    "correction. The table splits them into bins of equal size by predicted seconds."],
        table=Table(["bin", "rows", "mean predicted (s)", "mean observed (s)", "MAE (s)"],
                    [[str(i + 1), str(b["rows"]), f"{b['predicted_s']:.1f}", f"{b['observed_s']:.1f}",
                      f"{b['mae_s']:.1f}"] for i, b in enumerate(bins)]) if bins else None,
        plot="correction_error.svg", plot_alt="correction seconds: error of the model and of a constant"))
    if ope:
        out.append(_ope_section(ope))
    imp = m.get("feature_importance") or {}
    if imp:
        feats = [k for k in dict.fromkeys(k for v in imp.values() for k in v) if k != "(other)"]
        feats += ["(other)"] if any("(other)" in v for v in imp.values()) else []
        out.append(Section(
            "Feature importance", anchor="importance",
            paragraphs=["Each feature's share of a model's total split gain (the largest ones; the rest summed "
                        "as (other)). The trees start from the cold-start prior, so a prior feature with a large share "
                        "means the trees mostly corrected the prior along it."],
            table=Table(["feature", *imp], [[ft, *(_f(imp[mod].get(ft), ".3f") for mod in imp)] for ft in feats]),
            plot="feature_importance.svg", plot_alt="feature importance (share of split gain) per model"))
    return out


def _ope_section(ope: dict[str, dict[str, float]]) -> Section:
    lg = ope["logged"]
    text = [f"Estimates on the {lg['rows']} newest logged attempts of what each policy would have cost, from the "
            "logged propensities: inverse propensity scoring (IPS), self-normalised IPS (SNIPS) and doubly robust "
            "(DR, with the router's predicted cost as the direct model), each with a 95% bootstrap interval. "
            f"The logged policy itself: cost {_f(lg['cost'], '.4f')} USD per attempt "
            f"({_interval(lg, 'cost', '.4f')}), SLA attainment {_f(lg['sla_attainment'], '.3f')}.",
            "Matched: attempts where the policy would have chosen what was logged; effective rows: how many equally "
            "weighted attempts those are worth. Few effective rows mean a wide interval."]
    if any(v.get("dr_cost", 0.0) < 0 for k, v in ope.items() if k != "logged"):
        text.append("A DR estimate below zero is no bug: DR corrects the direct model by the weighted error on the "
                    "matched attempts, and an attempt logged with a tiny propensity weighs so much that one "
                    "overestimate there pulls the mean below zero. Read it with its effective rows and interval.")
    if lg.get("profiles_from_logs"):
        text.append(f"{int(lg['profiles_from_logs'])} backends declared no price or typical latency; the baselines "
                    "ranked them by their median logged cost per image and latency.")
    rows = [[k, str(v["matched"]), _f(v.get("effective_rows"), ".1f"), _f(v["ips_cost"], ".4f"),
             _with_interval(v, "snips_cost", ".4f"), _with_interval(v, "dr_cost", ".4f"),
             _with_interval(v, "snips_sla_attainment", ".3f")] for k, v in ope.items() if k != "logged"]
    return Section("Off-policy evaluation", anchor="ope", paragraphs=text,
                   table=Table(["policy", "matched", "effective rows", "IPS cost (USD)", "SNIPS cost (USD, 95%)",
                                "DR cost (USD, 95%)", "SNIPS SLA attainment (95%)"], rows),
                   plot="off_policy.svg",
                   plot_alt="estimated cost and SLA attainment per policy with 95% intervals")


def _md_cell(text: str) -> str:
    # names come from logs: a pipe would split the row, a tag would be HTML to a Markdown viewer
    for ch in "\\|<>":
        text = text.replace(ch, "\\" + ch)
    return text.replace("\n", " ")


def render_markdown(manifest: dict[str, Any], parts: list[Section], plots: set[str]) -> str:
    """The Markdown twin: the same sections, plots as relative image links."""
    lines = [f"# Router training report: {manifest['version']}", "", *_summary(manifest), ""]
    if not plots:
        lines += [NO_PLOTS_HINT, ""]
    for s in parts:
        lines += [f"## {s.title}", ""]
        for para in s.paragraphs:
            lines += [para, ""]
        if s.table is not None:
            lines.append("| " + " | ".join(_md_cell(h) for h in s.table.headers) + " |")
            lines.append("|" + "---|" * len(s.table.headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in s.table.rows]
            lines.append("")
        if s.plot in plots:
            lines += [f"![{s.plot_alt}]({s.plot})", ""]
    return "\n".join(lines)


def _summary(manifest: dict[str, Any]) -> list[str]:
    w, rows = manifest["training_window"], manifest["rows"]
    trees = ", ".join(f"{k} {v}" for k, v in manifest["trees"].items())
    return [f"Trained {manifest.get('created', '')} on {rows['total']:,} attempts logged from {w['from']} to "
            f"{w['to']}: {rows['train']:,} to train, {rows['valid']:,} to stop early, {rows['calibration']:,} to "
            f"calibrate and {rows['report']:,} held out for this report ({rows['correction_labelled']:,} with a "
            f"reported correction, {rows['skipped']:,} skipped). Trees: {trees}."]


def render_html(manifest: dict[str, Any], parts: list[Section], plots: set[str]) -> str:
    """The HTML report from ``templates/training_report.html`` (Jinja2, autoescaped)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.get_template("training_report.html").render(
        version=manifest["version"], summary=_summary(manifest), sections=parts, plots=plots,
        no_plots_hint=None if plots else NO_PLOTS_HINT)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _write(path: Path, text: str) -> None:
    _write_atomic(path, text.encode("utf-8"))  # a reader never sees half a file


def write_report(out_dir: Path, manifest: dict[str, Any], ope: dict[str, dict[str, float]] | None = None) -> Path:
    """Write ``report.html``, ``report.md``, ``report.json`` and the SVG plots into ``out_dir``; returns the HTML.

    ``report.json`` holds the manifest's metrics and the off-policy estimates, for machines.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PLOT_FILES:  # a plot from an earlier report must not pass for this one's
        (out_dir / name).unlink(missing_ok=True)
    parts = sections(manifest, ope)
    drawn = _report_plots.draw_all(manifest, ope)
    for name, svg in drawn.items():
        _write(out_dir / name, svg)
    plots = set(drawn)
    doc = {"version": manifest["version"], "metrics": manifest["metrics"], "off_policy": ope}
    _write(out_dir / "report.json", json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n")
    _write(out_dir / "report.md", render_markdown(manifest, parts, plots))
    html_path = out_dir / "report.html"
    _write(html_path, render_html(manifest, parts, plots))
    return html_path


__all__ = ["NO_PLOTS_HINT", "PLOT_FILES", "Section", "Table", "render_html", "render_markdown", "sections",
           "write_report"]
