"""Cost per accepted image and SLA attainment: trained router vs cold start, baselines and an oracle,
on a simulated workload (fresh seed and prompts) the model was not trained on.

    .venv/bin/python benchmarks/routing_quality.py [--n-train 20000] [--n-eval 3000] [--seeds 99 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from router import Router, simulate, train
from router.evaluation import compare_policies, format_table
from router.simulate import DEFAULT_BACKENDS, generate_prompts, make_workload


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--n-eval", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[99, 5])
    args = ap.parse_args()
    profiles = [b.profile() for b in DEFAULT_BACKENDS]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        train(simulate(args.n_train, seed=1), out, profiles=profiles)
        router = Router.load(out)
        for seed in args.seeds:
            work = make_workload(DEFAULT_BACKENDS, generate_prompts(300, seed=seed), args.n_eval, seed=seed)
            print(f"\nworkload seed {seed}, {args.n_eval} requests:\n")
            print(format_table(compare_policies(router, work, include_oracle=True)))


if __name__ == "__main__":
    main()
