"""Cost per accepted image and SLA attainment: trained router vs cold start, baselines and an oracle,
on simulated workloads the model was not trained on (fresh seed AND fresh prompts).

Two simulated worlds: ``default`` (the 8 backends built from backend_figures.md, whose declared
profiles are close to the simulator's hidden truth) and ``wrong-priors`` (flux-dev declares itself
strong at text and counting but is weak at both). Per workload: the summary table, then for each
policy the paired comparison with the trained router on the requests BOTH delivered accepted and
on time (equal SLA by construction; cost per accepted image alone rewards timing out on hard
prompts, which then cost nothing).

    .venv/bin/python benchmarks/routing_quality.py [--n-train 14000] [--n-eval 1500]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from router import Router, simulate, train
from router.evaluation import (
    baseline_policies,
    format_table,
    oracle,
    paired_cost,
    replay_outcomes,
    router_policy,
)
from router.simulate import DEFAULT_BACKENDS, generate_prompts, load_prompts, make_workload, overclaiming

PARTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "partiprompts" / "PartiPrompts.tsv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=14_000)
    ap.add_argument("--n-eval", type=int, default=1500)
    args = ap.parse_args()
    workloads = [("templates seed 77", generate_prompts(200, seed=77), 77)]
    if PARTI.is_file():
        workloads.append(("PartiPrompts seed 78", load_prompts(PARTI), 78))
    for world, sims in (("default", list(DEFAULT_BACKENDS)), ("wrong-priors", overclaiming())):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model"
            train(simulate(args.n_train, backends=sims, seed=1), out, profiles=[b.profile() for b in sims])
            router = Router.load(out)
            for label, prompts, seed in workloads:
                work = make_workload(sims, prompts, args.n_eval, seed=seed)
                outcomes = {"lgbm (trained)": replay_outcomes(router_policy(router), work, sims),
                            "cold_start": replay_outcomes(router_policy(Router.cold_start()), work, sims)}
                for name, fn in baseline_policies().items():
                    outcomes[name] = replay_outcomes(fn, work, sims)
                outcomes["oracle"] = replay_outcomes(oracle(sims, work), work, sims)
                print(f"\n### {world}, {label}, {args.n_eval} requests (trained on {args.n_train} simulated)\n")
                print(format_table({k: v.summary() for k, v in outcomes.items()}))
                mine = outcomes["lgbm (trained)"]
                print("\n| vs | requests both delivered on time | trained mean cost | their mean cost |")
                print("|---|---|---|---|")
                for name, other in outcomes.items():
                    if name != "lgbm (trained)":
                        a, b, k = paired_cost(mine, other)
                        print(f"| {name} | {k} | {a:.4f} | {b:.4f} |")


if __name__ == "__main__":
    main()
