"""Off-policy evaluation on logged §4 records, the training report, and promote-if-better.

For each record with a logged propensity ``p`` of the logged option ``a``, and the option ``a'``
a policy would choose on the same request, SLA and context:

* IPS   = mean(1[a' = a] / p * y)
* SNIPS = sum(1[a' = a] / p * y) / sum(1[a' = a] / p)
* DR    = mean(q(a') + 1[a' = a] / p * (y - q(a)))  with q the router's predicted expected cost

``y`` is the realised cost (price + correction seconds valued per hour + the failure cost on a
failed attempt) or 1[SLA met]. Unlabelled corrections use the router's predicted correction.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._router import Router
from ._types import BackendProfile, RouteContext, RouteRequest, SLASpec
from .evaluation import baseline_policies, router_policy
from .policy import expand_options


def _logged_index(rec: dict[str, Any], options: list[tuple[BackendProfile, int | None]]) -> int | None:
    steps = (rec.get("params") or {}).get("steps")
    match = [i for i, (p, s) in enumerate(options) if p.name == rec.get("backend")]
    if len(match) > 1:
        match = [i for i in match if options[i][1] == steps] or match[:1]
    return match[0] if match else None


def off_policy_report(router: Router, records: Sequence[dict[str, Any]], backends: Sequence[BackendProfile],
                      correction_cost_per_hour: float = 60.0) -> dict[str, dict[str, float]]:
    """IPS / SNIPS / DR estimates of cost and SLA attainment per policy, plus the logged policy's own."""
    options = expand_options(backends)
    rate = correction_cost_per_hour / 3600.0
    policies = {router.policy_name: router_policy(router), **baseline_policies()}
    acc: dict[str, dict[str, list[float]]] = {k: {"w": [], "wy": [], "ws": [], "dr": []} for k in policies}
    logged_cost: list[float] = []
    logged_sla: list[float] = []
    for rec in records:
        prop = (rec.get("decision") or {}).get("propensity")
        req = RouteRequest.from_dict(str(rec.get("prompt") or ""), rec.get("params"), rec.get("negative_prompt"))
        if not prop or not req.prompt:
            continue
        # the logged option's step count is what ran, so choose among the offered step options
        req = RouteRequest(**{**req.__dict__, "steps": None})
        a = _logged_index(rec, options)
        if a is None:
            continue
        sla_d = rec.get("sla") or {}
        sla = SLASpec(sla_d.get("deadline_s"), sla_d.get("max_cost_usd"))
        ctx_d = rec.get("context") or {}
        ctx = RouteContext.from_dict(ctx_d if "backends" in ctx_d else {"backends": {rec["backend"]: ctx_d}})
        opts, preds = router.predict(req, backends, ctx)
        q = preds.price_usd + preds.correction_s * rate
        out = rec.get("outcome") or {}
        corr = rec.get("correction") or {}
        seconds = corr.get("seconds")
        if seconds is None:
            seconds = float(preds.correction_s[a]) if out.get("ok") else 0.0
        failed = not out.get("ok")
        y = float(out.get("cost_usd") or 0.0) + seconds * rate + (float(np.median(q)) if failed else 0.0)
        met = float(bool(out.get("ok")) and (out.get("latency_s") or math.inf) <= sla.remaining_s)
        logged_cost.append(y)
        logged_sla.append(met)
        for name, fn in policies.items():
            choice = fn(req, sla, ctx, options)
            w = (1.0 / prop) if choice == a else 0.0
            acc[name]["w"].append(w)
            acc[name]["wy"].append(w * y)
            acc[name]["ws"].append(w * met)
            q_new = float(q[choice]) if choice is not None else float(np.median(q))
            acc[name]["dr"].append(q_new + w * (y - float(q[a])))
    n = len(logged_cost)
    out_: dict[str, dict[str, float]] = {"logged": {"rows": n, "cost": float(np.mean(logged_cost)) if n else math.nan,
                                                    "sla_attainment": float(np.mean(logged_sla)) if n else math.nan}}
    for name, a_ in acc.items():
        w = np.asarray(a_["w"])
        sw = w.sum()
        out_[name] = {"rows": n, "matched": int((w > 0).sum()),
                      "ips_cost": float(np.mean(a_["wy"])) if n else math.nan,
                      "snips_cost": float(np.sum(a_["wy"]) / sw) if sw else math.nan,
                      "dr_cost": float(np.mean(a_["dr"])) if n else math.nan,
                      "snips_sla_attainment": float(np.sum(a_["ws"]) / sw) if sw else math.nan}
    return out_


def is_better(new: dict[str, float], live: dict[str, float], tolerance: float = 0.0) -> bool:
    """Promote only when the estimated cost is lower at equal or better SLA attainment."""
    return (new["snips_cost"] < live["snips_cost"]
            and new["snips_sla_attainment"] >= live["snips_sla_attainment"] - tolerance)


def _svg_bars(title: str, labels: list[str], values: list[float], target: float | None = None,
              vmax: float | None = None) -> str:
    width, bar_h, left = 560, 22, 150
    top = 30
    height = top + bar_h * len(labels) + 20
    hi = vmax or max([*values, target or 0.0, 1e-9])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="12"><text x="4" y="16" font-weight="bold">{html.escape(title)}</text>']
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * bar_h
        w = max(0.0, (width - left - 60) * v / hi)
        parts.append(f'<text x="4" y="{y + 15}">{html.escape(lab)}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="#4878a8"/>'
                     f'<text x="{left + w + 4:.1f}" y="{y + 15}">{v:.3f}</text>')
    if target is not None:
        x = left + (width - left - 60) * target / hi
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - 15}" stroke="#c33" '
                     f'stroke-dasharray="4"/><text x="{x + 3:.1f}" y="{height - 4}" fill="#c33">target {target}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_reliability(bins: list[dict[str, float]]) -> str:
    size, pad = 300, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" height="{size + 2 * pad}" '
             f'font-family="sans-serif" font-size="12"><text x="4" y="16" font-weight="bold">failure calibration '
             f'(predicted vs observed)</text><rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" '
             f'stroke="#999"/><line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#c33" '
             f'stroke-dasharray="4"/>']
    hi = max([0.05, *(max(b["predicted"], b["observed"]) for b in bins)])
    for b in bins:
        x = pad + size * b["predicted"] / hi
        y = pad + size - size * b["observed"] / hi
        r = 3 + min(10.0, math.sqrt(b["rows"]) / 3)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="#4878a8" fill-opacity="0.7"/>')
    parts.append(f'<text x="{pad}" y="{size + 2 * pad - 8}">axes 0 to {hi:.3f}</text></svg>')
    return "".join(parts)


def write_report(out_dir: Path, manifest: dict[str, Any], ope: dict[str, dict[str, float]] | None = None) -> Path:
    """``report.md`` + ``report.html`` + SVG plots next to the artifact (plots: coverage, calibration, error)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    m = manifest["metrics"]
    q = f"p{round(manifest['latency_quantile'] * 100)}"
    cov = {b: v for b, v in m["latency_coverage"].items()}
    plots = {
        "latency_coverage.svg": _svg_bars(f"latency {q} coverage per backend (held-out slice)", list(cov),
                                          [v[q] for v in cov.values()], target=manifest["latency_quantile"],
                                          vmax=1.0),
        "failure_calibration.svg": _svg_reliability(m["failure"]["reliability"]),
        "correction_error.svg": _svg_bars("correction MAE (s): model vs constant", ["model", "constant mean"],
                                          [m["correction"]["mae_s"] or 0.0, m["correction"]["mae_constant_s"] or 0.0]),
    }
    for name, svg in plots.items():
        (out_dir / name).write_text(svg)
    lines = [f"# Router training report: {manifest['version']}", "",
             f"Window {manifest['training_window']['from']} to {manifest['training_window']['to']}; rows "
             f"{json.dumps(manifest['rows'])}; trees {json.dumps(manifest['trees'])}.", "",
             "## Latency coverage (held-out, after split-conformal calibration)", "",
             f"| backend | rows | p50 coverage | {q} coverage |", "|---|---|---|---|"]
    lines += [f"| {b} | {v['rows']} | {v['p50']:.3f} | {v[q]:.3f} |" for b, v in cov.items()]
    f = m["failure"]
    lines += ["", "![coverage](latency_coverage.svg)", "", "## Failure probability", "",
              f"Brier {f['brier']:.4f} (base rate {f['brier_base_rate']:.4f}) on {f['rows']} rows.", "",
              "| predicted bin | rows | mean predicted | observed |", "|---|---|---|---|"]
    lines += [f"| {b['from']:.2f}-{b['to']:.2f} | {b['rows']} | {b['predicted']:.4f} | {b['observed']:.4f} |"
              for b in f["reliability"]]
    c = m["correction"]
    lines += ["", "![calibration](failure_calibration.svg)", "", "## Correction seconds", "",
              f"MAE {c['mae_s']:.1f} s vs {c['mae_constant_s']:.1f} s for the training mean, {c['rows']} rows.", "",
              "![correction](correction_error.svg)"]
    if ope:
        lines += ["", "## Off-policy evaluation (held-out logged records)", "",
                  f"Logged policy: cost {ope['logged']['cost']:.4f} USD, SLA attainment "
                  f"{ope['logged']['sla_attainment']:.3f} over {ope['logged']['rows']} rows.", "",
                  "| policy | matched | IPS cost | SNIPS cost | DR cost | SNIPS SLA attainment |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['matched']} | {v['ips_cost']:.4f} | {v['snips_cost']:.4f} | {v['dr_cost']:.4f} | "
                  f"{v['snips_sla_attainment']:.3f} |" for k, v in ope.items() if k != "logged"]
    md = "\n".join(lines) + "\n"
    (out_dir / "report.md").write_text(md)
    body = html.escape(md).replace("\n", "<br>\n")
    inline = "".join(f"<figure>{svg}</figure>" for svg in plots.values())
    title = html.escape(manifest["version"])
    (out_dir / "report.html").write_text(f"<!doctype html><meta charset='utf-8'><title>{title}</title>"
                                         f"<body style='font-family:monospace'>{body}{inline}</body>")
    return out_dir / "report.md"
