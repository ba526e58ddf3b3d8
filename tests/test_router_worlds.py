"""The simulator's worlds: what drifts, when, what a client sees of it, and what it does to static policies."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pixelroute.router import Router
from pixelroute.router.evaluation import always_cheapest, oracle, replay_outcomes, router_policy
from pixelroute.router.simulate import (
    DEFAULT_BACKENDS,
    DRIFT_LATENCY_MULT,
    Drift,
    generate_prompts,
    make_workload,
    world,
)
from tests._import_root import SUBPROCESS_PYTHONPATH

WORKHORSE = DEFAULT_BACKENDS[0].name  # the first local backend: the cheapest and the fastest declared


def test_drifting_world_slows_the_local_workhorse_for_two_peaks() -> None:
    drifts = world("drifting")
    assert [(d.backend, d.start, d.end, d.latency_mult) for d in drifts] == [
        (WORKHORSE, 0.20, 0.45, DRIFT_LATENCY_MULT), (WORKHORSE, 0.65, 0.85, DRIFT_LATENCY_MULT)]
    assert all(not d.down for d in drifts)
    assert {d.latency_mult for d in world("drifting", "flux-schnell", latency_mult=2.0)} == {2.0}
    assert {d.backend for d in world("drifting", "flux-schnell")} == {"flux-schnell"}


def test_outage_world_takes_the_first_remote_backend_down() -> None:
    (drift,) = world("outage")
    first_remote = next(b.name for b in DEFAULT_BACKENDS if not b.local)
    assert (drift.backend, drift.start, drift.end, drift.down) == (first_remote, 0.35, 0.65, True)
    assert world("stationary") == []


@pytest.mark.parametrize(("kwargs", "field", "value"), [
    ({"name": "windy"}, "`world`", "'windy'"),
    ({"name": "drifting", "backend": "nope"}, "`drift backend`", "'nope'"),
    ({"name": "drifting", "latency_mult": 0.0}, "`latency_mult`", "0.0"),
    ({"name": "drifting", "latency_mult": float("nan")}, "`latency_mult`", "nan"),
    ({"name": "drifting", "latency_mult": 1e308}, "`latency_mult`", "1e+308"),
])
def test_world_rejects_bad_input_naming_field_and_value(kwargs: dict, field: str, value: str) -> None:
    with pytest.raises(ValueError) as err:
        world(**kwargs)
    assert field in str(err.value) and value in str(err.value)


def test_a_drift_shows_in_the_truth_at_once_and_in_the_clients_ratio_with_a_lag() -> None:
    n = 1000
    work = make_workload(list(DEFAULT_BACKENDS), generate_prompts(50, seed=3), n, seed=5,
                         drifts=[Drift(WORKHORSE, 0.4, 0.7, latency_mult=4.0)])

    def ratio(i: int) -> float:
        return work[i].context.get(WORKHORSE).recent_latency_ratio

    truth = [w.extra.get("latency_mult", {}).get(WORKHORSE, 1.0) for w in work]
    assert set(truth[:400]) == {1.0} and set(truth[400:700]) == {4.0} and set(truth[700:]) == {1.0}
    # the client's window has not seen the slowdown yet at its first request, has fully by the end
    # of the peak, and still remembers it just after
    assert ratio(400) < 1.5 and ratio(690) > 3.0 and ratio(710) > 2.0
    assert ratio(399) < 1.5 and ratio(990) < 1.5
    # the other backends are untouched
    other = DEFAULT_BACKENDS[1].name
    assert max(w.context.get(other).recent_latency_ratio for w in work) < 1.6


def test_static_policy_loses_attainment_in_the_drifting_world_while_cold_start_follows_it() -> None:
    """The point of the drifting world: a policy that ignores live state keeps sending work to the
    slowed backend; one that reads the recent-latency ratio moves it (same requests, same luck)."""
    sims = list(DEFAULT_BACKENDS)
    prompts = generate_prompts(200, seed=11)

    def gaps(drifts: list[Drift]) -> tuple[float, float]:
        work = make_workload(sims, prompts, 800, seed=12, drifts=drifts)
        best = replay_outcomes(oracle(sims, work), work, sims).summary()["sla_attainment"]
        static = replay_outcomes(always_cheapest, work, sims).summary()["sla_attainment"]
        cold = replay_outcomes(router_policy(Router.cold_start()), work, sims).summary()["sla_attainment"]
        return best - static, best - cold

    calm_static, calm_cold = gaps([])
    drift_static, drift_cold = gaps(world("drifting"))
    assert drift_static - calm_static > 0.04  # the static policy pays for the drift ...
    assert drift_cold - calm_cold < 0.02      # ... the live-state router barely does
    assert drift_cold < drift_static


def test_cli_simulate_drifting_world_with_a_chosen_multiplier(tmp_path) -> None:
    out = tmp_path / "sim.jsonl"
    env = {"PYTHONPATH": SUBPROCESS_PYTHONPATH, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "pixelroute", "simulate", "--n", "200", "--world", "drifting",
                           "--drift-mult", "3", "--out", str(out)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 200
    ratios = [r["context"]["backends"][WORKHORSE]["recent_latency_ratio"] for r in records]
    assert max(ratios[:40]) < 1.5 < max(ratios[40:90])  # the first peak starts at 20% (record 40)

    bad = subprocess.run([sys.executable, "-m", "pixelroute", "simulate", "--n", "10", "--world", "drifting",
                          "--drift-mult", "-1", "--out", str(tmp_path / "bad.jsonl")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "--drift-mult" in bad.stderr and "-1" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad.jsonl").exists()
