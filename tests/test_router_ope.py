"""Off-policy estimates on logged records: distinct policies get distinct, correct estimates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from pixelroute.router import BackendProfile, Router, simulate
from pixelroute.router.ope import baseline_profiles, logged_figures, off_policy_report
from pixelroute.router.simulate import DEFAULT_BACKENDS

#: (name, cost per image, latency): the cheap one is slow, the fast one dear; the first listed is neither
BACKENDS = [("middle", 0.02, 5.0), ("cheap-slow", 0.001, 20.0), ("fast-dear", 0.08, 1.0)]
CORRECTION_S = 36.0  # valued at 60 USD/hour: 0.01 USD on every attempt


def logged_uniformly(n: int = 240) -> list[dict[str, Any]]:
    """Records of a logging policy that chose each backend with probability 1/3, round-robin."""
    records = []
    for i in range(n):
        name, cost, latency = BACKENDS[i % 3]
        records.append({
            "ts": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z", "backend": name,
            "prompt": "a cat on a sofa" if i % 2 else 'a shop sign that says "OPEN 24 HOURS"',
            "params": {"n": 1}, "sla": {"deadline_s": 60.0, "max_cost_usd": 1.0}, "context": {},
            "decision": {"propensity": 1 / 3},
            "outcome": {"ok": True, "latency_s": latency * (1 + 0.01 * (i % 5)), "cost_usd": cost},
            "correction": {"seconds": CORRECTION_S},
        })
    return records


def bare_profiles() -> list[BackendProfile]:
    """What a model trained without --config or --profiles knows of its backends: their names."""
    return [BackendProfile(name=name) for name, _, _ in BACKENDS]


def test_each_baseline_is_estimated_on_the_backend_it_would_choose() -> None:
    records = logged_uniformly()
    res = off_policy_report(Router.cold_start(), records, bare_profiles())
    cost = {name: c + CORRECTION_S / 60.0 for name, c, _ in BACKENDS}  # y = price + correction at 60 USD/h
    # with equal propensities SNIPS is the mean outcome of the attempts logged on the chosen backend
    assert res["always_cheapest"]["matched"] == 80
    assert res["always_cheapest"]["snips_cost"] == pytest.approx(cost["cheap-slow"])
    assert res["always_fastest"]["matched"] == 80
    assert res["always_fastest"]["snips_cost"] == pytest.approx(cost["fast-dear"])
    # LiteLLM-style: untried backends first (mean 0), then the lowest mean of the logged latencies
    assert res["litellm_latency"]["snips_cost"] == pytest.approx(cost["fast-dear"], rel=0.05)
    assert res["logged"]["profiles_from_logs"] == 3


def test_distinct_policies_get_distinct_estimates() -> None:
    """The report's four baseline rows were identical: ranked on bare profiles (no price, no latency)
    every baseline tied everywhere and chose the first option, and the LiteLLM-style one never saw a
    latency. Policies that choose differently must get different estimates."""
    res = off_policy_report(Router.cold_start(), logged_uniformly(), bare_profiles())
    names = ["always_cheapest", "always_fastest", "litellm_latency", "routellm_threshold"]
    rows = {n: (res[n]["matched"], round(res[n]["snips_cost"], 6), round(res[n]["dr_cost"], 6)) for n in names}
    assert len(set(rows.values())) == len(names), rows


def test_simulated_logs_with_bare_profiles_give_the_baselines_their_own_rows() -> None:
    records = list(simulate(1200, seed=5))
    bare = [BackendProfile(name=b.name) for b in DEFAULT_BACKENDS]
    res = off_policy_report(Router.cold_start(), records, bare)
    assert res["logged"]["profiles_from_logs"] == len(DEFAULT_BACKENDS)
    estimates = {n: res[n]["snips_cost"] for n in ("always_cheapest", "litellm_latency", "routellm_threshold")}
    assert len(set(estimates.values())) == 3, estimates
    # declared profiles are used as declared: nothing is completed from the logs
    declared = off_policy_report(Router.cold_start(), records, [b.profile() for b in DEFAULT_BACKENDS])
    assert declared["logged"]["profiles_from_logs"] == 0
    assert declared["always_cheapest"]["snips_cost"] != declared["always_fastest"]["snips_cost"]


def test_estimates_carry_bootstrap_intervals_that_hold_them() -> None:
    res = off_policy_report(Router.cold_start(), list(simulate(800, seed=2)), [b.profile() for b in DEFAULT_BACKENDS])
    for name, r in res.items():
        keys = ["cost", "sla_attainment"] if name == "logged" else ["snips_cost", "dr_cost", "snips_sla_attainment"]
        for k in keys:
            lo, hi = r[f"{k}_lo"], r[f"{k}_hi"]
            assert lo <= r[k] <= hi and math.isfinite(lo) and lo < hi, (name, k, lo, r[k], hi)
        if name != "logged":
            assert 0 < r["effective_rows"] <= r["matched"]
    again = off_policy_report(Router.cold_start(), list(simulate(800, seed=2)), [b.profile() for b in DEFAULT_BACKENDS])
    assert again == res  # the resamples are seeded


def test_completed_profiles_keep_what_was_declared() -> None:
    figures = logged_figures(logged_uniformly(30))
    assert figures["cheap-slow"]["cost_per_image_usd"] == pytest.approx(0.001)
    assert figures["fast-dear"]["latency_s"] == pytest.approx(1.02)
    declared = BackendProfile(name="middle", price={"per_megapixel": 0.5}, typical_latency_s=9.0)
    out, completed = baseline_profiles([declared, BackendProfile(name="fast-dear"), BackendProfile(name="x")], figures)
    assert out[0] == declared and completed == ["fast-dear"]
    assert out[1].price == {"per_image": 0.08} and out[1].typical_latency_s == pytest.approx(1.02)
    assert out[2] == BackendProfile(name="x")  # nothing logged: nothing to complete it with
    assert np.isfinite(figures["middle"]["latency_s"])
