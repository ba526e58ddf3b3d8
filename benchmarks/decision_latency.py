"""One full decision (featurize + 4 models + policy) for 8 candidates, p50/p99 in microseconds.

A trained model (20k simulated rows) decides for the 8 default simulated backends as 8 candidates
(step options off) and as 11 (with their step options), with live context for every backend
(in-flight, queue, breaker, failure rate: what the SDK passes). Every figure is the median over
``--runs`` runs of ``--decisions`` decisions. Baselines in the same process: the models evaluated
by one batched ``Booster.predict`` per model and by naive per-row ``Booster.predict`` calls, and
the numpy fallback evaluator (no C compiler).

    .venv/bin/python benchmarks/decision_latency.py [--n-train 20000] [--decisions 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pixelroute.router import BackendState, RouteContext, Router, RouteRequest, SLASpec, simulate, train
from pixelroute.router.features import featurize, prompt_vector
from pixelroute.router.policy import expand_options
from pixelroute.router.simulate import DEFAULT_BACKENDS, generate_prompts


def timed(fn: Callable[[Any], object], items: Sequence[Any]) -> np.ndarray:
    t = np.empty(len(items))
    for k, it in enumerate(items):
        t0 = time.perf_counter_ns()
        fn(it)
        t[k] = time.perf_counter_ns() - t0
    return t / 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    profiles11 = [b.profile() for b in DEFAULT_BACKENDS]
    profiles8 = [replace(p, step_options=()) for p in profiles11]
    rng = np.random.default_rng(3)
    ctx = RouteContext({p.name: BackendState(in_flight=int(rng.integers(0, 4)), queue_depth=int(rng.integers(0, 2)),
                                             recent_failure_rate=float(rng.uniform(0, 0.05)))
                        for p in profiles11})
    sla = SLASpec(deadline_s=20.0, max_cost_usd=0.1)
    results: dict[str, list[tuple[float, float]]] = {}

    def record(name: str, t: np.ndarray) -> None:
        results.setdefault(name, []).append((float(np.median(t)), float(np.percentile(t, 99))))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        manifest = train(simulate(args.n_train, seed=1), out, profiles=profiles11)
        r = Router.load(out, exploration=0.02, seed=0)
        models = r.predictor.models  # type: ignore[attr-defined]
        evaluator = models.evaluator
        for run in range(args.runs):
            prompts = generate_prompts(args.decisions, seed=100 + run)
            reqs = [RouteRequest(f"{p} #{run}-{i}", width=1024, height=1024) for i, p in enumerate(prompts)]
            for q in reqs[:50]:
                r.decide(q, sla, profiles8, ctx)
                r.decide(q, sla, profiles11, ctx)
            half = len(reqs) // 2
            # a prompt never seen: featurizing it is part of the decision
            record("8 candidates, new prompt", timed(lambda q: r.decide(q, sla, profiles8, ctx), reqs[50:half]))
            record("11 candidates, new prompt", timed(lambda q: r.decide(q, sla, profiles11, ctx), reqs[half:]))
            # the SDK re-decides with the same prompt on a fallback: the prompt's vector is cached
            record("8 candidates, cached prompt", timed(lambda q: r.decide(q, sla, profiles8, ctx), reqs[50:half]))
            record("11 candidates, cached prompt", timed(lambda q: r.decide(q, sla, profiles11, ctx), reqs[half:]))
            record("featurize one new prompt", timed(lambda q: prompt_vector.__wrapped__(q.prompt + "!"), reqs[:500]))
        x = featurize(RouteRequest("a red fox"), expand_options(profiles8), ctx, models.backend_codes)[0]
        steps = range(args.decisions)
        for _ in range(args.runs):
            record("models, 8 rows: compiled walker", timed(lambda _: evaluator.raw(x), steps))
            record("models, 8 rows: numpy evaluator", timed(lambda _: evaluator.raw_numpy(x), steps))
            record("models, 8 rows: 4 batched Booster.predict", timed(lambda _: models.raw_booster(x), steps))
            record("models, 8 rows: naive per-row Booster.predict",
                   timed(lambda _: [b.predict(x[i:i + 1], raw_score=True, num_threads=1)
                                    for b in models.boosters for i in range(len(x))], range(100)))
    print(f"trees per model: {manifest['trees']}; compiled walker: {evaluator.compiled}; "
          f"medians over {args.runs} runs")
    print("| path | p50 us | p99 us |\n|---|---|---|")
    for name, runs in results.items():
        p50, p99 = np.median([a for a, _ in runs]), np.median([b for _, b in runs])
        print(f"| {name} | {p50:.1f} | {p99:.1f} |")
    med = {k.split(": ", 1)[-1]: np.median([a for a, _ in v]) for k, v in results.items()}
    walker = med["compiled walker"]
    print(f"\ncompiled walker vs 4 batched Booster.predict: {med['4 batched Booster.predict'] / walker:.1f}x; "
          f"vs naive per-row: {med['naive per-row Booster.predict'] / walker:.0f}x; "
          f"vs numpy evaluator: {med['numpy evaluator'] / walker:.1f}x")


if __name__ == "__main__":
    main()
