"""The scenario report: one self-contained HTML file and a JSON file beside it.

The HTML inlines every thumbnail as a base64 PNG and its own CSS, so it opens from disk in
any browser, can be attached to a ticket, and needs no server. It opens with who wins each
scenario at which price (:mod:`pixelroute.scenarios.summary`), then per-backend operational
metrics, then per scenario a table of scores, latency, price and failures and the contact
sheet. ``report.json`` holds the same numbers for machines (``by_scenario``, ``winners``),
including the ``scores`` list keyed by request id.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from .runner import RunResult, Sample
from .summary import scenario_metrics, winners

SCHEMA = "pixelroute.scenarios/1"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;
 background:#f4f5f7}
header{background:#1d2b3a;color:#fff;padding:20px 32px}
header h1{margin:0 0 6px;font-size:24px}
header p{margin:0;color:#c9d4e0;font-size:14px}
main{padding:8px 32px 40px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:18px 0;
 box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{margin:0 0 4px;font-size:20px}
h3{margin:18px 0 8px;font-size:15px;color:#34495e}
.desc{color:#5b6672;margin:0 0 10px;font-size:14px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:5px 10px;border-bottom:1px solid #e3e6ea;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#eef1f4;font-weight:600;white-space:normal;vertical-align:bottom}
.scroll{overflow-x:auto}
.bad{color:#b3261e;font-weight:600}
.good{color:#1e7b34}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none;font-size:14px}
table.sheet{margin-top:14px}
table.sheet th{text-align:center}
table.sheet th.rowhead{text-align:left;white-space:normal;width:220px;vertical-align:top;background:#fafbfc;
 font-weight:500;font-size:13px;line-height:1.35}
td.card{width:168px;vertical-align:top;text-align:left;white-space:normal;font-size:12px;padding:8px}
.card img{width:160px;height:160px;object-fit:contain;image-rendering:pixelated;background:#dde1e6;
 display:block}
.card .failed{width:160px;height:160px;background:#fbe9e7;color:#b3261e;display:flex;align-items:center;
 justify-content:center;text-align:center;padding:6px;box-sizing:border-box}
.meta{color:#5b6672;font-size:12px;margin-top:4px}
.score{display:inline-block;background:#e8f0fb;border-radius:3px;padding:0 4px;margin:2px 2px 0 0}
.note{font-size:13px;color:#5b6672}
.winner{font-weight:600;color:#1e7b34}
table.winners :is(td,th):is(:nth-child(2),:nth-child(3),:nth-child(8)){text-align:left}
"""


def _fmt(value: Any, spec: str, prefix: str = "", none: str = "–", suffix: str = "") -> str:
    return none if value is None else f"{prefix}{format(value, spec)}{suffix}"


def _metrics_table(result: RunResult, metrics: dict[str, dict[str, Any]]) -> str:
    scorer_names = sorted({k for m in metrics.values() for k in m["scores"]})
    head = [
        "backend",
        "requests",
        "failure rate",
        "GPU-s / request",
        "cost",
        "$ / request",
        "requests / min",
        "p50 latency",
        "p95 latency",
        "correction s (n)",
    ] + [f"{n} score" for n in scorer_names]
    rows = []
    for backend in result.backends:
        m = metrics[backend]
        rate = m["failure_rate"]
        rate_cls = "bad" if rate else "good"
        errors = ", ".join(f"{k} x{v}" for k, v in m["errors"].items())
        cells = [
            f"<td>{escape(backend)}</td>",
            f"<td>{m['requests']}</td>",
            f'<td class="{rate_cls}" title="{escape(errors)}">{_fmt(rate and rate * 100, ".1f")}%</td>',
            f"<td>{_fmt(m['gpu_s_per_request'], '.3f')}</td>",
            f"<td>{_fmt(m['cost_usd'], '.4f', '$')}</td>",
            f"<td>{_fmt(m['cost_usd_per_request'], '.5f', '$')}</td>",
            f"<td>{_fmt(m['requests_per_minute'], '.1f')}</td>",
            f"<td>{_fmt(m['latency_p50_s'], '.3f', suffix=' s')}</td>",
            f"<td>{_fmt(m['latency_p95_s'], '.3f', suffix=' s')}</td>",
            f"<td>{_fmt(m['correction_s_mean'], '.1f')} ({m['corrections']})</td>",
        ] + [f"<td>{_fmt(m['scores'].get(n), '.2f')}</td>" for n in scorer_names]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _cell(sample: Sample | None) -> str:
    if sample is None:
        return "<td></td>"
    if sample.ok and sample.thumbnail_png:
        data = base64.b64encode(sample.thumbnail_png).decode("ascii")
        size = f"{sample.size[0]}x{sample.size[1]}" if sample.size else ""
        picture = f'<img alt="{escape(sample.prompt)}" title="{size}" src="data:image/png;base64,{data}">'
    else:
        picture = (
            f'<div class="failed" title="{escape(sample.error_message or "")}">failed:<br>'
            f"{escape(sample.error or 'unknown')}</div>"
        )
    scores = "".join(
        f'<span class="score" title="{escape(s.detail)}">{escape(s.scorer)} {s.value:.2f}</span>'
        for s in sample.scores
    )
    rid = f' data-request-id="{escape(sample.request_id)}"' if sample.request_id else ""
    return (
        f'<td class="card" data-backend="{escape(sample.backend)}"{rid}>{picture}'
        f'<div class="meta">seed {sample.seed} · {sample.latency_s:.2f} s · ${sample.cost_usd:.4f}</div>'
        f"{scores}</td>"
    )


def _seconds(value: float | None) -> str:
    return _fmt(value, ".3f" if value is not None and value < 1 else ".2f", suffix=" s")


def _pct(value: float | None) -> str:
    return _fmt(None if value is None else value * 100, ".0f", suffix="%")


def _scenario_table(result: RunResult, per_backend: dict[str, dict[str, Any]]) -> str:
    """Per backend on one scenario: images, failures, latency, price, scores and (typography) text metrics."""
    scorer_names = sorted({k for m in per_backend.values() for k in m["score_per_request"]})
    with_text = any(m["text"] for m in per_backend.values())
    head = ["backend", "images / requests", "failure rate", "p50 latency", "p95 latency", "$ / image", "cost"]
    head += [f"{n} score / request" for n in scorer_names]
    if with_text:
        head += ["edit distance (mean)", "completion rate", "word accuracy"]
    rows = []
    for backend in result.backends:
        m = per_backend[backend]
        rate = m["failure_rate"]
        cells = [
            escape(backend),
            f"{m['images']} / {m['requests']}",
            f'<span class="{"bad" if rate else "good"}">{_pct(rate)}</span>',
            _seconds(m["latency_p50_s"]),
            _seconds(m["latency_p95_s"]),
            _fmt(m["cost_usd_per_image"], ".4f", "$"),
            _fmt(m["cost_usd"], ".4f", "$"),
        ] + [_fmt(m["score_per_request"].get(n), ".2f") for n in scorer_names]
        if with_text:
            t = m["text"] or {}
            cells += [_fmt(t.get("edit_distance"), ".1f"), _pct(t.get("completion_rate")),
                      _pct(t.get("word_accuracy"))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _winners_section(rows: list[dict[str, Any]]) -> str:
    """The summary: which backend wins each scenario, on what, at which price, and who comes second."""

    def who(entry: dict[str, Any] | None, full: bool) -> list[str]:
        if entry is None:
            return ["–"] + [""] * (4 if full else 2)
        cells = [f'<span class="winner">{escape(entry["backend"])}</span>' if full else escape(entry["backend"]),
                 _fmt(entry["score"], ".2f"), _fmt(entry["cost_usd_per_image"], ".4f", "$")]
        return cells + ([_seconds(entry["latency_p50_s"]), _pct(entry["success_rate"])] if full else [])

    body = []
    for row in rows:
        cells = [f'<a href="#scenario-{escape(row["scenario"])}">{escape(row["title"])}</a>',
                 escape(row["decided_by"]), *who(row["winner"], True), *who(row["runner_up"], False)]
        body.append(f'<tr data-scenario="{escape(row["scenario"])}">' + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ["scenario", "decided by", "winner", "score / request", "$ / image",
                                              "p50 latency", "success", "runner-up", "score / request",
                                              "$ / image"])
    return (
        '<section id="winners"><h2>Who wins each scenario</h2><p class="desc">The backend with the highest score '
        "per request (a failed request scores 0) on the scenario's deciding scorer: a reviewer's verdicts when "
        "there were any, else the scenario's first scorer that ran. A tie goes to the lower price per image "
        "(everything the backend charged on the scenario / the images it returned), then the lower median "
        "latency. With no scorer, the highest success rate at the lowest price wins.</p>"
        f'<div class="scroll"><table class="winners"><thead><tr>{head}</tr></thead><tbody>'
        + "".join(body) + "</tbody></table></div></section>")


def _scenario_section(result: RunResult, name: str, per_backend: dict[str, dict[str, Any]]) -> str:
    """Summary rows per backend, then the contact sheet: a column per backend, a row per prompt x seed."""
    scenario = result.scenario(name)
    samples = [s for s in result.samples if s.scenario == name]
    parts = [
        f'<section id="scenario-{escape(name)}" data-scenario="{escape(name)}">',
        f"<h2>{escape(scenario.title)}</h2>",
        f'<p class="desc">{escape(scenario.description)}</p>',
        _scenario_table(result, per_backend),
    ]
    by_key = {(s.prompt, s.seed, s.backend): s for s in samples}
    rows = list(dict.fromkeys((s.prompt, s.seed) for s in samples))
    parts.append(
        '<table class="sheet"><thead><tr><th>prompt</th>'
        + "".join(f'<th data-backend="{escape(b)}">{escape(b)}</th>' for b in result.backends)
        + "</tr></thead><tbody>"
    )
    for prompt, seed in rows:
        parts.append(
            f'<tr><th class="rowhead">{escape(prompt)}<div class="meta">seed {seed}</div></th>'
            + "".join(_cell(by_key.get((prompt, seed, b))) for b in result.backends)
            + "</tr>"
        )
    parts.append("</tbody></table></section>")
    return "".join(parts)


def render_html(result: RunResult) -> str:
    """The report as one HTML document with inline CSS and images."""
    metrics = result.metrics()
    n_ok = sum(s.ok for s in result.samples)
    seeds = ", ".join(str(s) for s in result.seeds)
    skipped = "".join(
        f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in sorted(result.scorers_skipped.items())
    )
    scorer_note = f'<p class="note">Scorers used: {escape(", ".join(result.scorers_used) or "none")}.</p>' + (
        f'<p class="note">Skipped:</p><ul class="note">{skipped}</ul>' if skipped else ""
    )
    nav = "".join(
        f'<a href="#scenario-{escape(s.name)}">{escape(s.title)}</a>' for s in result.suite.scenarios
    )
    by_scenario = scenario_metrics(result)
    sections = "".join(_scenario_section(result, s.name, by_scenario[s.name]) for s in result.suite.scenarios)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>pixelroute scenarios: {escape(result.suite.name)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Scenario report: {escape(result.suite.name)}</h1>"
        f"<p>{escape(result.started_at)} · backends {escape(', '.join(result.backends))} · "
        f"seeds {escape(seeds)} · "
        f"{len(result.samples)} requests, {n_ok} images · {result.wall_s:.1f} s</p></header><main>"
        f"{_winners_section(winners(result, by_scenario))}"
        '<section><h2>Operational metrics</h2><p class="desc">Per backend over this run. Requests/min is '
        "throughput while the backend was busy (one request at a time); the first request to a local backend "
        "includes loading its pipeline. Correction time is what reviewers reported through the feedback "
        "API.</p>"
        f'<div class="scroll">{_metrics_table(result, metrics)}</div>{scorer_note}<nav>{nav}</nav></section>'
        f"{sections}</main></body></html>"
    )


def report_data(result: RunResult) -> dict[str, Any]:
    """The JSON written beside the HTML: run metadata, metrics (per backend, and per scenario and backend),
    the winner of each scenario, samples (without pixels) and scores."""
    by_scenario = scenario_metrics(result)
    samples = []
    for s in result.samples:
        samples.append(
            {
                "scenario": s.scenario,
                "backend": s.backend,
                "prompt": s.prompt,
                "seed": s.seed,
                "ok": s.ok,
                "request_id": s.request_id,
                "latency_s": s.latency_s,
                "cost_usd": s.cost_usd,
                "gpu_s": s.gpu_s,
                "error": s.error,
                "error_message": s.error_message,
                "review": {"verdict": s.review.verdict, "seconds": s.review.seconds} if s.review else None,
            }
        )
    return {
        "schema": SCHEMA,
        "suite": result.suite.name,
        "scenarios": [s.name for s in result.suite.scenarios],
        "backends": result.backends,
        "seeds": result.seeds,
        "started_at": result.started_at,
        "wall_s": result.wall_s,
        "scorers_used": result.scorers_used,
        "scorers_skipped": result.scorers_skipped,
        "metrics": result.metrics(),
        "by_scenario": by_scenario,
        "winners": winners(result, by_scenario),
        "samples": samples,
        "scores": result.score_log(),
    }


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # a report is for sharing; mkstemp's private 0600 would surprise people
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(result: RunResult, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.json`` into ``out_dir`` (created), each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out / "report.html", out / "report.json"
    _write_atomic(json_path, json.dumps(report_data(result), indent=2, allow_nan=False) + "\n")
    _write_atomic(html_path, render_html(result))
    return html_path, json_path


__all__ = ["SCHEMA", "render_html", "report_data", "write_report"]
