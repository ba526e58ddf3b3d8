"""Router core: feature schema, classifier, policy rules (feasibility, exploration, cold start)."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pixelroute import router
from pixelroute.router import BackendProfile, BackendState, RouteContext, Router, RouteRequest, SLASpec
from pixelroute.router.features import FEATURE_NAMES, N_FEATURES, candidate_matrix, prompt_vector, schema_hash
from pixelroute.router.policy import PolicyConfig, Predictions, decide, expand_options

ROUTER_DIR = Path(router.__file__).parent

FAST = BackendProfile(name="fast", kind="diffusers", local=True, price={"per_gpu_second": 0.0014},
                      default_steps=4, step_options=(4, 8), typical_latency_s=1.0,
                      strengths={"typography": 0.1, "counting": 0.4, "composition": 0.3})
TYPO = BackendProfile(name="typo", kind="ideogram", price={"per_image": 0.04}, typical_latency_s=9.0,
                      strengths={"typography": 0.95, "counting": 0.7, "composition": 0.7})
SLOW = BackendProfile(name="slow", kind="openai", price={"per_image": 0.04}, typical_latency_s=30.0)


def test_exports_are_sorted_and_complete() -> None:
    assert router.__all__ == sorted(router.__all__)
    assert set(router.__all__) == {"ArtifactError", "Router", "Decision", "Candidate", "RouteRequest", "SLASpec",
                                   "BackendProfile", "BackendState", "RouteContext", "train", "simulate"}


def test_feature_schema_is_stable() -> None:
    # a changed name, order or version must change the hash that artifacts are tied to
    assert len(FEATURE_NAMES) == N_FEATURES == len(set(FEATURE_NAMES))
    assert schema_hash() == schema_hash()
    assert FEATURE_NAMES[:3] == ("prompt_chars", "prompt_words", "prompt_tokens_est")
    assert schema_hash() == "4c00445725651e56", "feature schema changed: bump SCHEMA_VERSION and retrain"


def test_featurize_matches_between_serve_and_train_shapes() -> None:
    req = RouteRequest('a sign that says "OPEN" behind two cats', width=512, height=768, steps=None)
    rows = candidate_matrix(req, expand_options([FAST, TYPO]), RouteContext({"fast": BackendState(queue_depth=2)}),
                            {"fast": 0, "typo": 1})
    assert rows.shape == (3, N_FEATURES) and np.isfinite(rows).all()
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    assert rows[0, col["steps"]] == 4 and rows[1, col["steps"]] == 8
    assert rows[0, col["queue_depth"]] == 2 and rows[2, col["queue_depth"]] == 0
    assert rows[0, col["quoted_spans"]] == 1 and rows[0, col["number_words"]] == 1
    assert rows[0, col["megapixels"]] == pytest.approx(512 * 768 / 1e6)
    assert rows[0, col["p_typography"]] > 0.8


def test_vectorised_featurizer_matches_the_scalar_priors() -> None:
    """The featurizer's prior columns (the trained models' starting point) are the cold-start formulas."""
    from pixelroute.router import _priors
    from pixelroute.router.features import COL_PRIOR_CORRECTION, COL_PRIOR_LOG_P50, COL_PRIOR_LOGIT_FAIL, featurize

    options = expand_options([FAST, TYPO, SLOW])
    ctx = RouteContext({"fast": BackendState(in_flight=1, queue_depth=2), "typo": BackendState(in_flight=3),
                        "slow": BackendState(breaker="half_open", recent_failure_rate=0.2)})
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    for req in (RouteRequest("two cats behind a glass", width=512, height=768, n=2),
                RouteRequest('a sign that says "HI"', steps=12, guidance=3.0, seed=4),
                RouteRequest("a fox", width=1536, height=1024, negative_prompt="blurry")):
        rows, price = featurize(req, options, ctx)
        probs = list(prompt_vector(req.prompt)[col["p_typography"]:col["p_typography"] + 5])
        for i, (p, opt) in enumerate(options):
            steps = _priors.effective_steps(p, req.steps, opt)
            mp = _priors.megapixels(p, req.width, req.height)
            lat = _priors.prior_latency_s(p, mp, steps, req.n)
            st = ctx.get(p.name)
            load = (1 + st.queue_depth + st.in_flight) if p.local else (1 + 0.03 * st.in_flight)
            fail = _priors.preset(p).failure_rate if p.typical_failure_rate is None else p.typical_failure_rate
            fail = (0.5 * (fail + st.recent_failure_rate) if st.recent_failure_rate else fail) \
                + (0.1 if st.breaker == "half_open" else 0.0)
            assert rows[i, col["steps"]] == (steps or 0)
            assert price[i] == pytest.approx(_priors.price_usd(p, mp, req.n, lat))
            assert np.exp(rows[i, COL_PRIOR_LOG_P50]) == pytest.approx(lat * load)
            assert 1 / (1 + np.exp(-rows[i, COL_PRIOR_LOGIT_FAIL])) == pytest.approx(fail)
            assert rows[i, COL_PRIOR_CORRECTION] == pytest.approx(_priors.prior_correction_s(p, probs, steps))


def test_training_and_serving_featurize_identically() -> None:
    """Training featurizes many logged rows at once (numpy); serving one request (cached templates,
    context on Python floats). Both must give the same rows."""
    from pixelroute.router.features import OptionTable, feature_rows, featurize, operation_columns

    options = expand_options([FAST, TYPO, SLOW])
    contexts = [
        RouteContext({"fast": BackendState(in_flight=2, queue_depth=1, recent_failure_rate=0.1, loaded=False),
                      "slow": BackendState(breaker="half_open", in_flight=5, recent_latency_ratio=1.7)}),
        # flat shape: one state for every backend (a remote one ignores `loaded`)
        RouteContext.from_dict({"in_flight": 3, "loaded": False, "recent_latency_ratio": 0.6}),
        RouteContext.from_dict({"recent_latency_ratio": 50.0, "backends": {"typo": {"in_flight": 1}}}),
    ]
    codes = {"fast": 0, "typo": 1, "slow": 2}
    base = RouteRequest("three glass cats next to a mirror", width=768, n=2, guidance=4.0, negative_prompt="x")
    requests = [base, replace(base, operation="edit", strength=0.5, masked=True),
                replace(base, operation="edit"), replace(base, operation="edit", masked=True)]
    table = OptionTable(options)
    idx = np.arange(len(options))
    pv = np.tile(prompt_vector(base.prompt, True), (len(options), 1))
    for req in requests:
        edit, strength, masked = operation_columns(req)
        for ctx in contexts:
            served, served_price = featurize(req, options, ctx, codes)
            trained, trained_price = feature_rows(table, idx, pv, 768.0, np.nan, 2.0, np.nan, 4.0, 0.0,
                                                  table.context_block(ctx), table.codes(codes),
                                                  edit=edit, strength=strength, masked=masked)
            np.testing.assert_allclose(served, trained, rtol=1e-12)
            np.testing.assert_allclose(served_price, trained_price, rtol=1e-12)


TRICKY_PROMPTS = ["", "'", "isn't it 'quoted' \u201ccurly\u201d \"x\"", "o'left of the cat, in front of a dog.",
                  "\u00c4\u00d6 \u0130stanbul 3d a1b2 ,,..", "half-hidden cats and mirrors reflecting",
                  "''a'''b'", '"""', "a sign that says \"OPEN\" next to two glass bottles",
                  "pixel art of twelve children's hands on top of a piano"]


def test_one_pass_prompt_features_match_the_classifier_and_its_reference() -> None:
    """prompt_vector derives the classifier's tokens from its own word pass; they must be exactly
    classifier.tokens(prompt), and the Python-float classifier must match the float32 numpy sum."""
    from pixelroute.router.classifier import CLASSES, default_classifier, ngram_buckets, tokens

    clf = default_classifier()
    seen: list[list[str]] = []
    real = clf.predict_tokens

    def spy(toks: list[str]) -> tuple[float, ...]:
        seen.append(list(toks))
        return real(toks)

    clf.predict_tokens = spy  # type: ignore[method-assign]
    try:
        for prompt in TRICKY_PROMPTS:
            seen.clear()
            vec = prompt_vector.__wrapped__(prompt)
            assert seen == [tokens(prompt)], prompt
            reference = 1.0 / (1.0 + np.exp(-(clf.weights_[ngram_buckets(prompt)].sum(axis=0) + clf.bias_)))
            np.testing.assert_allclose(clf.predict(prompt), reference, atol=1e-6)
            p = dict(zip(CLASSES, real(tokens(prompt)), strict=True))
            assert [vec[FEATURE_NAMES.index(f"p_{c}")] for c in CLASSES] == [p[c] for c in CLASSES], prompt
    finally:
        del clf.predict_tokens


def test_one_pass_lexicon_counts() -> None:
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    vec = prompt_vector("Two glass cats, half-hidden behind a sign that says \"isn't\" in front of mirrors")
    assert vec[col["prompt_words"]] == 15  # "isn't" is one word; the quotes are not words
    assert vec[col["number_words"]] == 1 and vec[col["text_words"]] == 2  # sign, says
    assert vec[col["reflective_words"]] == 2  # glass, mirrors (prefix rule)
    # "hidden" counts as a word and "half-hidden" as a phrase; behind, "in front of"
    assert vec[col["occlusion_words"]] == 2 and vec[col["spatial_relations"]] == 2
    assert vec[col["plural_nouns"]] == 3  # cats, says, mirrors (glass is an exception)
    assert vec[col["conjunctions"]] == 1 and vec[col["quoted_spans"]] == 1


def test_options_cache_follows_the_backends_list() -> None:
    r = Router.cold_start(exploration=0.0)
    backends = [FAST, TYPO]
    sla = SLASpec(deadline_s=60)
    first = r.decide(RouteRequest("a cat"), sla, backends)
    assert {c.backend for c in first.candidates} == {"fast", "typo"}
    backends.append(SLOW)  # the same list object, grown in place
    assert {c.backend for c in r.decide(RouteRequest("a cat"), sla, backends).candidates} == {"fast", "typo", "slow"}
    cheaper = BackendProfile(name="typo", kind="ideogram", price={"per_image": 0.001}, typical_latency_s=9.0)
    d = r.decide(RouteRequest("a cat"), sla, [FAST, cheaper])  # an equal name, a new profile object
    assert [c.cost_usd for c in d.candidates if c.backend == "typo"] == [pytest.approx(0.001)]


def test_long_prompt_flags_the_clip_window() -> None:
    vec = prompt_vector(" ".join(["word"] * 80))
    assert vec[FEATURE_NAMES.index("prompt_over_clip_window")] == 1.0


def _preds(p50: list[float], price: list[float], corr: list[float], p_fail: float = 0.01) -> Predictions:
    n = len(p50)
    return Predictions(np.array(p50), np.full(n, 0.2), np.full(n, p_fail), np.array(corr), np.array(price))


def test_never_picks_infeasible_when_a_feasible_exists() -> None:
    rng = np.random.default_rng(0)
    options = expand_options([FAST, TYPO, SLOW])
    refuse, best_effort = PolicyConfig(exploration=0.0, best_effort=False), PolicyConfig(exploration=0.0)
    saw_best_effort = saw_unaffordable = 0
    for _ in range(300):
        n = len(options)
        preds = _preds(list(rng.uniform(0.5, 40, n)), list(rng.uniform(0, 0.1, n)), list(rng.uniform(0, 300, n)))
        sla = SLASpec(deadline_s=float(rng.uniform(1, 40)), max_cost_usd=float(rng.uniform(0.005, 0.1)))
        d = decide(options, preds, sla, RouteContext(), refuse, rng, policy_name="t", router_version="t")
        e = decide(options, preds, sla, RouteContext(), best_effort, rng, policy_name="t", router_version="t")
        feasible = [c for c in d.candidates if c.feasible]
        if feasible:
            for dec in (d, e):
                assert dec.chosen is not None and dec.chosen.feasible and not dec.predicted_to_miss
                assert dec.chosen.expected_total_usd == min(c.expected_total_usd for c in feasible)
                assert all(f.feasible for f in dec.fallbacks) and dec.backend not in [f.backend for f in dec.fallbacks]
            continue
        assert d.backend is None and all(c.why_not for c in d.candidates)
        affordable = [c for c in e.candidates if c.cost_usd <= sla.budget_usd]
        if not affordable:
            saw_unaffordable += 1
            assert e.backend is None, "best effort never exceeds the budget"
        else:
            saw_best_effort += 1
            assert e.predicted_to_miss and e.chosen is not None and e.chosen.cost_usd <= sla.budget_usd
            assert e.chosen.p_on_time == max(c.p_on_time for c in affordable)
    assert saw_best_effort and saw_unaffordable


def test_open_breaker_and_budget_are_reasons() -> None:
    ctx = RouteContext({"fast": BackendState(breaker="open")})
    for r in (Router.cold_start(exploration=0.0), Router.cold_start(exploration=0.0, best_effort=False)):
        # fast's breaker is open and typo is over budget: nothing to try, even best effort
        d = r.decide(RouteRequest("a cat"), SLASpec(deadline_s=5.0, max_cost_usd=0.01), [FAST, TYPO], ctx)
        assert d.backend is None and not d.predicted_to_miss
        reasons = {c.backend: c.why_not for c in d.candidates}
        assert "breaker" in reasons["fast"] and "price" in reasons["typo"] and "P(on time)" in reasons["typo"]
    # affordable but predicted late: best effort (the default) tries it, refusal does not
    best = Router.cold_start(exploration=0.0).decide(RouteRequest("a cat"), SLASpec(deadline_s=5.0), [FAST, TYPO], ctx)
    assert best.backend == "typo" and best.predicted_to_miss and "best effort" in best.reason
    refused = Router.cold_start(exploration=0.0, best_effort=False).decide(
        RouteRequest("a cat"), SLASpec(deadline_s=5.0), [FAST, TYPO], ctx)
    assert refused.backend is None and "refuse" in refused.reason


def test_exploration_only_with_slack_and_propensities_sum_to_one() -> None:
    options = expand_options([FAST, TYPO, SLOW])
    preds = _preds([1.0, 2.0, 5.0, 10.0], [0.001, 0.002, 0.04, 0.04], [20, 20, 25, 30])
    cfg = PolicyConfig(exploration=0.3)
    rng = np.random.default_rng(1)
    roomy = SLASpec(deadline_s=60.0, max_cost_usd=1.0)
    chosen: dict[tuple[str | None, int | None], list[float]] = {}
    for _ in range(2000):
        d = decide(options, preds, roomy, RouteContext(), cfg, rng, policy_name="t", router_version="t")
        chosen.setdefault((d.backend, d.steps), []).append(d.propensity)
    # every option's logged propensity is exact: distinct choices' propensities sum to 1
    assert sum(v[0] for v in chosen.values()) == pytest.approx(1.0)
    for props in chosen.values():
        assert len(set(props)) == 1
    assert len(chosen) == 4 and chosen[("fast", 4)][0] == pytest.approx(0.7)
    # tight deadline: no slack, so never explore
    tight = SLASpec(deadline_s=2.2, max_cost_usd=1.0)
    for _ in range(300):
        d = decide(options, preds, tight, RouteContext(), cfg, rng, policy_name="t", router_version="t")
        assert not d.explored and d.propensity == 1.0


def test_cold_start_hybrid_rule() -> None:
    r = Router.cold_start(exploration=0.0)
    sla = SLASpec(deadline_s=30.0, max_cost_usd=0.1)
    simple = r.decide(RouteRequest("a watercolor painting of a fox"), sla, [FAST, TYPO])
    text = r.decide(RouteRequest('a neon sign that says "OPEN 24 HOURS" in a shop window'), sla, [FAST, TYPO])
    assert simple.backend == "fast" and text.backend == "typo"
    assert r.policy_name == "cold_start" and r.version == "cold-start"


def test_classifier_beats_majority_on_held_out(shared_dir: Path) -> None:
    from pixelroute.router.classifier import CLASSES, default_classifier
    from pixelroute.router.classifier.train import auc, load_examples

    clf = default_classifier()
    held = [(t, lab) for t, lab, h in load_examples(shared_dir) if h]
    probs = np.array([clf.predict(t) for t, _ in held])
    labels = np.array([lab for _, lab in held])
    for k, name in enumerate(CLASSES):
        known = labels[:, k] >= 0
        y, p = labels[known, k], probs[known, k]
        majority = max(y.mean(), 1 - y.mean())
        acc = ((p >= 0.5) == y).mean()
        assert acc > majority + 0.05, f"{name}: accuracy {acc:.3f} vs majority {majority:.3f}"
        assert auc(y, p) > 0.9, name


def test_no_pickle_anywhere_in_the_router() -> None:
    for path in ROUTER_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "joblib", "cloudpickle", "dill") for n in names), path


def test_a_tie_between_identical_backends_goes_to_the_first_listed() -> None:
    # equal expected cost: the stable sort keeps the caller's (the config's) order, so which twin
    # serves never depends on a set, a dict's hash order or the hash seed
    twins = [replace(TYPO, name="twin-a"), replace(TYPO, name="twin-b")]
    r = Router.cold_start(exploration=0.0)
    for order in (twins, twins[::-1]):
        d = r.decide(RouteRequest("a cat"), SLASpec(deadline_s=60.0, max_cost_usd=1.0), order)
        assert d.candidates[0].expected_total_usd == d.candidates[1].expected_total_usd
        assert d.backend == order[0].name and [f.backend for f in d.fallbacks] == [order[1].name]
        late = r.decide(RouteRequest("a cat"), SLASpec(deadline_s=0.5), order)  # best effort ties too
        assert late.predicted_to_miss and late.backend == order[0].name
