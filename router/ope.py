"""Off-policy evaluation on logged §4 records, and promote-if-better.

For each record with a logged propensity ``p`` of the logged option ``a``, and the option ``a'``
a policy would choose on the same request, SLA and context:

* IPS   = mean(1[a' = a] / p * y)
* SNIPS = sum(1[a' = a] / p * y) / sum(1[a' = a] / p)
* DR    = mean(q(a') + 1[a' = a] / p * (y - q(a)))  with q the router's predicted expected cost

``y`` is the realised cost (price + correction seconds valued per hour + the failure cost on a
failed attempt) or 1[SLA met]. Unlabelled corrections use the router's predicted correction.
Every estimate comes with a 95% bootstrap interval (the same resamples for every policy, so two
policies' intervals differ only by what they choose). The training report
(:mod:`pixelroute.router.report`) shows them.

The baselines rank options by declared price and latency. A backend known only from telemetry
has neither (a bare profile), and ranked on nothing but ties every baseline picked the first
option on every record: their rows in the report were identical. Such a profile is completed,
for the baselines only, with what the logs say: the backend's median logged cost per image and
median latency of its successful attempts. The LiteLLM-style baseline is fed the logged
latencies in time order, as it is fed real ones in production (without them every backend's
mean is 0 and it, too, picks the first option).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ._router import Router
from ._types import BackendProfile, RouteContext, RouteRequest, SLASpec
from .evaluation import LiteLLMLatency, baseline_policies, router_policy
from .policy import expand_options
from .training import _parse_ts

#: bootstrap resamples behind each estimate's 95% interval
BOOTSTRAP_RESAMPLES = 400


def _logged_index(rec: dict[str, Any], options: list[tuple[BackendProfile, int | None]]) -> int | None:
    steps = (rec.get("params") or {}).get("steps")
    match = [i for i, (p, s) in enumerate(options) if p.name == rec.get("backend")]
    if len(match) > 1:
        match = [i for i in match if options[i][1] == steps] or match[:1]
    return match[0] if match else None


def logged_figures(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per backend, over its successful logged attempts: median cost per image (USD) and median latency (s)."""
    cost: dict[str, list[float]] = {}
    latency: dict[str, list[float]] = {}
    for rec in records:
        out = rec.get("outcome") or {}
        if not out.get("ok") or out.get("latency_s") is None:
            continue
        n = max(int((rec.get("params") or {}).get("n") or 1), 1)
        name = str(rec.get("backend"))
        cost.setdefault(name, []).append(float(out.get("cost_usd") or 0.0) / n)
        latency.setdefault(name, []).append(float(out["latency_s"]))
    return {b: {"cost_per_image_usd": float(np.median(cost[b])), "latency_s": float(np.median(latency[b]))}
            for b in cost}


def baseline_profiles(backends: Sequence[BackendProfile],
                      figures: dict[str, dict[str, float]]) -> tuple[list[BackendProfile], list[str]]:
    """``backends`` with an undeclared price or typical latency filled in from ``figures``
    (:func:`logged_figures`); also the names of the backends that were completed."""
    out, completed = [], []
    for p in backends:
        f = figures.get(p.name)
        if f is None or (p.price and p.typical_latency_s is not None):
            out.append(p)
            continue
        out.append(replace(p, price=p.price or {"per_image": f["cost_per_image_usd"]},
                           typical_latency_s=p.typical_latency_s if p.typical_latency_s is not None
                           else f["latency_s"]))
        completed.append(p.name)
    return out, completed


def _time_key(rec: dict[str, Any]) -> float:
    try:
        return _parse_ts(rec.get("ts"))
    except (TypeError, ValueError):
        return math.inf  # no usable time: after the rest, in the order given (the sort is stable)


def _interval(samples: np.ndarray) -> tuple[float, float]:
    ok = samples[np.isfinite(samples)]
    if len(ok) < 10:
        return math.nan, math.nan
    lo, hi = np.percentile(ok, [2.5, 97.5])
    return float(lo), float(hi)


def _snips(num: np.ndarray, w: np.ndarray) -> np.ndarray:
    den = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num.sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def _estimates(w: np.ndarray, wy: np.ndarray, ws: np.ndarray, dr: np.ndarray,
               resample: np.ndarray) -> dict[str, float]:
    n = len(w)
    sw = w.sum()
    out = {"rows": n, "matched": int((w > 0).sum()),
           # Kish's effective sample size of the matched rows: how many logged rows the estimate really rests on
           "effective_rows": float(sw * sw / (w * w).sum()) if sw else 0.0,
           "ips_cost": float(np.mean(wy)) if n else math.nan,
           "snips_cost": float(wy.sum() / sw) if sw else math.nan,
           "dr_cost": float(np.mean(dr)) if n else math.nan,
           "snips_sla_attainment": float(ws.sum() / sw) if sw else math.nan}
    if n:
        for key, draws in (("snips_cost", _snips(wy[resample], w[resample])), ("dr_cost", dr[resample].mean(axis=1)),
                           ("snips_sla_attainment", _snips(ws[resample], w[resample]))):
            out[f"{key}_lo"], out[f"{key}_hi"] = _interval(draws)
    return out


def off_policy_report(router: Router, records: Sequence[dict[str, Any]], backends: Sequence[BackendProfile],
                      correction_cost_per_hour: float = 60.0, seed: int = 0) -> dict[str, dict[str, float]]:
    """IPS / SNIPS / DR estimates of cost and SLA attainment per policy, plus the logged policy's own.

    Each estimate has a 95% bootstrap interval (``<key>_lo``, ``<key>_hi``; ``seed`` fixes the
    resamples). ``logged`` also says how many backends the baselines saw completed from the logs
    (``profiles_from_logs``, see the module docstring).
    """
    records = sorted(records, key=_time_key)  # the LiteLLM baseline learns in time order
    options = expand_options(backends)
    completed_profiles, completed = baseline_profiles(backends, logged_figures(records))
    baseline_options = expand_options(completed_profiles)  # the same options in the same order, ranked on more
    rate = correction_cost_per_hour / 3600.0
    baselines = baseline_policies()
    policies = {router.policy_name: router_policy(router), **baselines}
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
        base = preds.price_usd + preds.correction_s * rate
        # the direct model predicts what y measures: a failed attempt costs the failure cost instead of a correction
        q = preds.price_usd + (1.0 - preds.p_fail) * preds.correction_s * rate + preds.p_fail * float(np.median(base))
        out = rec.get("outcome") or {}
        corr = rec.get("correction") or {}
        seconds = corr.get("seconds")
        if seconds is None:
            seconds = float(preds.correction_s[a]) if out.get("ok") else 0.0
        failed = not out.get("ok")
        y = float(out.get("cost_usd") or 0.0) + seconds * rate + (float(np.median(base)) if failed else 0.0)
        met = float(bool(out.get("ok")) and (out.get("latency_s") or math.inf) <= sla.remaining_s)
        logged_cost.append(y)
        logged_sla.append(met)
        for name, fn in policies.items():
            choice = fn(req, sla, ctx, baseline_options if name in baselines else options)
            w = (1.0 / prop) if choice == a else 0.0
            acc[name]["w"].append(w)
            acc[name]["wy"].append(w * y)
            acc[name]["ws"].append(w * met)
            q_new = float(q[choice]) if choice is not None else float(np.median(base))
            acc[name]["dr"].append(q_new + w * (y - float(q[a])))
        if out.get("ok") and out.get("latency_s") is not None:
            for fn in baselines.values():
                if isinstance(fn, LiteLLMLatency):
                    fn.observe(str(rec["backend"]), float(out["latency_s"]))
    n = len(logged_cost)
    resample = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n)) if n else np.empty((0, 0),
                                                                                                           dtype=int)
    cost, sla_met = np.asarray(logged_cost), np.asarray(logged_sla)
    logged: dict[str, float] = {"rows": n, "cost": float(cost.mean()) if n else math.nan,
                                "sla_attainment": float(sla_met.mean()) if n else math.nan,
                                "profiles_from_logs": len(completed)}
    if n:
        logged["cost_lo"], logged["cost_hi"] = _interval(cost[resample].mean(axis=1))
        logged["sla_attainment_lo"], logged["sla_attainment_hi"] = _interval(sla_met[resample].mean(axis=1))
    out_: dict[str, dict[str, float]] = {"logged": logged}
    for name, a_ in acc.items():
        w, wy, ws, dr = (np.asarray(a_[k], dtype=float) for k in ("w", "wy", "ws", "dr"))
        out_[name] = _estimates(w, wy, ws, dr, resample)
    return out_


def is_better(new: dict[str, float], live: dict[str, float], tolerance: float = 0.0) -> bool:
    """Promote only when the estimated cost is lower at equal or better SLA attainment."""
    return (new["snips_cost"] < live["snips_cost"]
            and new["snips_sla_attainment"] >= live["snips_sla_attainment"] - tolerance)
