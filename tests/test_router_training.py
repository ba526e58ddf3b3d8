"""Training, artifact, evaluator, evaluation and the train/route/simulate commands, on simulated logs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pixelroute.router import RouteContext, Router, RouteRequest, SLASpec, simulate, train
from pixelroute.router.evaluation import (
    baseline_policies,
    compare_policies,
    delivery_cost,
    luck_draws,
    paired_cost,
    replay_outcomes,
    router_policy,
)
from pixelroute.router.features import candidate_matrix
from pixelroute.router.models import MANIFEST, TrainedModels
from pixelroute.router.policy import expand_options
from pixelroute.router.simulate import DEFAULT_BACKENDS, generate_prompts, load_prompts, make_workload, overclaiming
from pixelroute.router.training import TrainParams

PROFILES = [b.profile() for b in DEFAULT_BACKENDS]
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    out = tmp_path_factory.mktemp("art") / "model"
    manifest = train(simulate(14_000, seed=1), out, profiles=PROFILES, params=TrainParams(seed=0))
    yield out, manifest


def test_artifact_round_trip_text_only(trained: tuple[Path, dict]) -> None:
    out, manifest = trained
    files = sorted(p.name for p in out.iterdir())
    assert MANIFEST in files and all(f.endswith((".txt", ".json")) for f in files)
    on_disk = json.loads((out / MANIFEST).read_text())
    assert on_disk["version"] == manifest["version"] and on_disk["feature_schema_hash"]
    r = Router.load(out, exploration=0.0)
    assert r.policy_name == "lgbm" and r.version == manifest["version"]
    d = r.decide(RouteRequest("a cat"), SLASpec(deadline_s=30), PROFILES)
    assert d.backend is not None and d.router_version == manifest["version"]


def test_schema_mismatch_and_missing_files_are_refused(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in out.iterdir():
        (bad / p.name).write_text(p.read_text())
    doc = json.loads((bad / MANIFEST).read_text())
    doc["feature_schema_hash"] = "0000"
    (bad / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="feature schema"):
        Router.load(bad)
    doc["feature_schema_hash"] = json.loads((out / MANIFEST).read_text())["feature_schema_hash"]
    (bad / MANIFEST).write_text(json.dumps(doc))
    (bad / doc["model_files"]["p_fail"]).unlink()
    with pytest.raises(ValueError, match="p_fail"):
        Router.load(bad)
    with pytest.raises(ValueError, match="no manifest.json"):
        Router.load(tmp_path / "nowhere")


def test_vectorised_evaluator_matches_booster_predict(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    models = TrainedModels.load(out)
    rows = []
    for prompt in generate_prompts(20, seed=3):
        rows.append(candidate_matrix(RouteRequest(prompt, width=768, height=768), expand_options(PROFILES),
                                     RouteContext(), models.backend_codes))
    x = np.vstack(rows)
    expected = models.raw_booster(x)
    np.testing.assert_allclose(models.evaluator.raw_numpy(x), expected, rtol=1e-9, atol=1e-9)
    if shutil.which("cc") or shutil.which("gcc"):
        assert models.evaluator.compiled, "a C compiler is here, so the compiled walker must be in use"
    np.testing.assert_allclose(models.evaluator.raw(x), expected, rtol=1e-9, atol=1e-9)
    init = np.ascontiguousarray(np.arange(x.size // x.shape[1] * 4, dtype=np.float64).reshape(-1, 4))
    np.testing.assert_allclose(models.evaluator.raw(x, init=init.copy()), expected + init, rtol=1e-9, atol=1e-9)


def test_latency_quantile_coverage_within_tolerance(trained: tuple[Path, dict]) -> None:
    _, manifest = trained
    cov = manifest["metrics"]["latency_coverage"]
    assert abs(cov["*"]["p95"] - 0.95) < 0.03 and abs(cov["*"]["p50"] - 0.5) < 0.08
    for backend, c in cov.items():
        if c["rows"] >= 200:
            assert c["p95"] > 0.9, backend
    # failure probability: calibrated in the large (mean predicted vs observed on the held-out slice)
    bins = manifest["metrics"]["failure"]["reliability"]
    rows = sum(b["rows"] for b in bins)
    predicted = sum(b["predicted"] * b["rows"] for b in bins) / rows
    observed = sum(b["observed"] * b["rows"] for b in bins) / rows
    assert abs(predicted - observed) < 0.02


def _fresh_prompts() -> list[str]:
    """A prompt set the router was not trained on: PartiPrompts when ../shared is here, else new templates."""
    parti = SHARED / "data" / "prompts" / "partiprompts" / "PartiPrompts.tsv"
    return load_prompts(parti) if parti.is_file() else generate_prompts(300, seed=78)


def test_trained_policy_beats_baselines_on_a_fresh_workload(trained: tuple[Path, dict]) -> None:
    """Trained on simulated logs (seed 1, template prompts); evaluated on a fresh workload (seed 78,
    PartiPrompts) with the simulator's hidden truth.

    Rule, per baseline: the trained router's cost per accepted image is lower AND its SLA attainment
    is at least the baseline's minus 0.005. A baseline whose attainment is more than 0.05 lower
    (RouteLLM-style sends hard prompts to the slowest backend, where they time out) is not comparable
    on cost per accepted image: a timed-out request costs nothing and leaves the average, so missing
    the SLA on hard prompts looks cheap. Against such a baseline the rule is: higher attainment, and
    a lower cost per delivered image on the requests BOTH deliver in most of 4 luck draws
    (:func:`pixelroute.router.evaluation.delivery_cost`). The single-draw paired cost used before conditioned on
    the baseline's luck: requests where its risky choice failed left the set, and a fresh clone
    without ../shared (template prompts) failed on that bias (docs/router.md).
    Against cold start, whose priors are close to this simulator's truth, the trained router may not
    be worse by more than 3% on cost (per accepted image and paired) or 0.005 on attainment.
    """
    out, _ = trained
    fresh = make_workload(DEFAULT_BACKENDS, _fresh_prompts(), 1500, seed=78)
    mine = replay_outcomes(router_policy(Router.load(out)), fresh, DEFAULT_BACKENDS)
    m = mine.summary()
    for name, fn in {**baseline_policies(), "cold_start": router_policy(Router.cold_start())}.items():
        other = replay_outcomes(fn, fresh, DEFAULT_BACKENDS)
        o = other.summary()
        paired_mine, paired_other, both = paired_cost(mine, other)
        assert both > 700, (name, both)
        if name == "cold_start":
            assert m["cost_per_accepted_usd"] <= 1.03 * o["cost_per_accepted_usd"], (name, m, o)
            assert paired_mine <= 1.03 * paired_other, (name, paired_mine, paired_other)
            assert m["sla_attainment"] >= o["sla_attainment"] - 0.005, (name, m, o)
        elif o["sla_attainment"] < m["sla_attainment"] - 0.05:
            draws = luck_draws(fresh, 4)
            mine_runs = [mine] + [replay_outcomes(router_policy(Router.load(out)), w, DEFAULT_BACKENDS)
                                  for w in draws[1:]]
            other_runs = [other] + [replay_outcomes(fn, w, DEFAULT_BACKENDS) for w in draws[1:]]
            cost_mine, cost_other, k = delivery_cost(mine_runs, other_runs)
            assert k > 500 and cost_mine < cost_other, (name, cost_mine, cost_other, k, m, o)
        else:
            assert m["cost_per_accepted_usd"] < o["cost_per_accepted_usd"], (name, m, o)
            assert m["sla_attainment"] >= o["sla_attainment"] - 0.005, (name, m, o)


def test_trained_router_beats_cold_start_where_the_priors_are_wrong(tmp_path: Path) -> None:
    """The case that justifies learning: flux-dev DECLARES itself strong at text and counting (so
    cold start sends it typography prompts) but is really weak at both. Logged corrections show it;
    the trained router must be clearly cheaper per accepted image at equal-or-better attainment."""
    sims = overclaiming(DEFAULT_BACKENDS, "flux-dev")
    train(simulate(8000, backends=sims, seed=1), tmp_path / "m", profiles=[b.profile() for b in sims])
    fresh = make_workload(sims, _fresh_prompts(), 1500, seed=78)
    mine = replay_outcomes(router_policy(Router.load(tmp_path / "m")), fresh, sims)
    cold = replay_outcomes(router_policy(Router.cold_start()), fresh, sims)
    m, c = mine.summary(), cold.summary()
    assert m["cost_per_accepted_usd"] < 0.95 * c["cost_per_accepted_usd"], (m, c)
    assert m["sla_attainment"] >= c["sla_attainment"] - 0.005, (m, c)
    # paired on the requests both delivered: strictly cheaper. The margin is smaller than per accepted
    # image since the recent-latency ratio lets cold start learn latency online too (docs/router.md)
    paired_mine, paired_cold, _ = paired_cost(mine, cold)
    assert paired_mine < paired_cold, (paired_mine, paired_cold)


def test_off_policy_estimates_from_logged_records(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    logged = list(simulate(1500, seed=9))
    res = compare_policies(Router.load(out), logged)
    assert res["logged"]["rows"] == 1500
    for name in ("lgbm", "always_cheapest"):
        r = res[name]
        assert r["matched"] > 30 and np.isfinite(r["snips_cost"]) and np.isfinite(r["dr_cost"])
        assert 0.0 <= r["snips_sla_attainment"] <= 1.0


def test_hot_reload_picks_up_a_new_manifest(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, manifest = trained
    live = tmp_path / "live"
    now = [0.0]
    train(simulate(1500, seed=2), live, profiles=PROFILES)
    r = Router.load(live, clock=lambda: now[0])
    first = r.version
    assert not r.maybe_reload()
    train(simulate(1500, seed=4), live, profiles=PROFILES)  # existing dir: files added, manifest swapped
    assert not r.maybe_reload(), "checks at most once a second"
    now[0] = 2.0
    assert r.maybe_reload() and r.version != first
    assert r.decide(RouteRequest("a dog"), SLASpec(), PROFILES).backend is not None


def test_cli_simulate_train_route(tmp_path: Path) -> None:
    from pixelroute.cli import main

    sim = tmp_path / "sim.jsonl"
    profiles = tmp_path / "profiles.json"
    assert main(["simulate", "--n", "2500", "--seed", "3", "--out", str(sim), "--write-profiles", str(profiles)]) == 0
    lines = sim.read_text().splitlines()
    assert len(lines) == 2500 and all(json.loads(ln)["simulated"] is True for ln in lines[:50])
    model = tmp_path / "model"
    assert main(["train", "--quiet", "--jsonl", str(sim), "--profiles", str(profiles), "--out", str(model)]) == 0
    assert (model / MANIFEST).is_file() and (model / "report" / "report.html").is_file()
    assert "Off-policy evaluation" in (model / "report" / "report.md").read_text()
    config = tmp_path / "pixelroute.toml"
    config.write_text('[[backends]]\nname = "local-a"\nkind = "mock"\nlocal = true\n\n'
                      '[[backends]]\nname = "remote-b"\nkind = "mock"\nprice = { per_image = 0.02 }\n')
    requests = tmp_path / "req.jsonl"
    requests.write_text("\n".join(json.dumps({"request_id": f"r{i}", "prompt": p, "params": {"width": 512,
                                                                                             "height": 512},
                                              "sla": {"deadline_s": 10.0, "max_cost_usd": 0.05}, "context": {}})
                                  for i, p in enumerate(["a cat", 'a sign that says "HI"'])) + "\n")
    routed = tmp_path / "routed.jsonl"
    assert main(["route", "--config", str(config), "--requests", str(requests), "--out", str(routed)]) == 0
    out = [json.loads(ln) for ln in routed.read_text().splitlines()]
    assert [o["request_id"] for o in out] == ["r0", "r1"]
    keys = {"request_id", "backend", "fallbacks", "propensity", "explored", "candidates", "reason"}
    cand_keys = {"backend", "feasible", "latency_p50_s", "latency_p95_s", "p_fail", "correction_s", "cost_usd",
                 "expected_total_usd", "why_not"}
    for o in out:
        assert keys <= set(o) and o["backend"] in ("local-a", "remote-b")
        assert all(cand_keys <= set(c) for c in o["candidates"]) and len(o["candidates"]) == 2
