"""One full decision (featurize + 4 models + policy) for 8 backends, p50/p99 in microseconds.

Compares the vectorised numpy forest evaluator with one batched ``Booster.predict`` per model
(``num_threads=1``) and with naive per-row ``Booster.predict`` calls. Medians over runs; ratios are
against the batched Booster path measured in the same process.

    .venv/bin/python benchmarks/decision_latency.py [--n-train 20000] [--decisions 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from router import RouteContext, Router, RouteRequest, SLASpec, simulate, train
from router.features import candidate_matrix, prompt_vector
from router.policy import expand_options
from router.simulate import DEFAULT_BACKENDS, generate_prompts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--decisions", type=int, default=2000)
    args = ap.parse_args()
    profiles = [b.profile() for b in DEFAULT_BACKENDS]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        manifest = train(simulate(args.n_train, seed=1), out, profiles=profiles)
        r = Router.load(out, exploration=0.02, seed=0)
        models = r.predictor.models  # type: ignore[attr-defined]
        prompts = generate_prompts(args.decisions, seed=5)
        sla = SLASpec(deadline_s=20.0, max_cost_usd=0.1)
        ctx = RouteContext()
        reqs = [RouteRequest(p + f" #{i}", width=1024, height=1024) for i, p in enumerate(prompts)]

        def timed(fn, items) -> np.ndarray:  # type: ignore[no-untyped-def]
            t = []
            for it in items:
                t0 = time.perf_counter_ns()
                fn(it)
                t.append(time.perf_counter_ns() - t0)
            return np.asarray(t) / 1000.0

        for req in reqs[:50]:
            r.decide(req, sla, profiles, ctx)
        cold = timed(lambda q: r.decide(q, sla, profiles, ctx), reqs)  # prompt never seen: featurize included
        warm = timed(lambda q: r.decide(q, sla, profiles, ctx), reqs)  # fallback re-decide: prompt cached
        prompt_only = timed(lambda q: prompt_vector.__wrapped__(q.prompt + "!"), reqs)
        options = expand_options(profiles)
        x = candidate_matrix(reqs[0], options, ctx, models.backend_codes)
        evaluator = timed(lambda _: models.evaluator.raw(x), range(args.decisions))
        batched = timed(lambda _: models.raw_booster(x), range(args.decisions))
        naive = timed(lambda _: [b.predict(x[i:i + 1], raw_score=True, num_threads=1)
                                 for b in models.boosters for i in range(len(x))], range(200))
    print(f"trees per model: {manifest['trees']}; candidates per decision: {len(options)}")
    for name, t in (("full decision, new prompt", cold), ("full decision, cached prompt", warm),
                    ("featurize one prompt", prompt_only), ("models: numpy forest evaluator", evaluator),
                    ("models: 4 batched Booster.predict", batched), ("models: naive per-row Booster.predict", naive)):
        print(f"{name:40s} p50 {np.median(t):8.1f} us   p99 {np.percentile(t, 99):8.1f} us")
    print(f"evaluator speed-up vs batched Booster.predict: {np.median(batched) / np.median(evaluator):.1f}x; "
          f"vs naive per-row: {np.median(naive) / np.median(evaluator):.1f}x")


if __name__ == "__main__":
    main()
