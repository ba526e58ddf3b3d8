"""Which trained model earns (or costs) what: the trained router with one model's predictions at a time
replaced by the cold-start prior's, on a simulated workload it never saw.

Rows: cold start; the trained router keeping only its latency models, only P(fail), only correction; the
full trained router. Run with and without learned strengths (``TrainParams.learn_strengths``).

    .venv/bin/python benchmarks/routing_ablation.py [--n-train 5000] [--n-eval 2000] [--world stationary]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pixelroute.router import BackendProfile, RouteContext, Router, RouteRequest, simulate, train
from pixelroute.router.coldstart import ColdStartPredictor
from pixelroute.router.evaluation import replay_outcomes, router_policy
from pixelroute.router.policy import Predictions
from pixelroute.router.simulate import DEFAULT_BACKENDS, generate_prompts, make_workload, overclaiming, world
from pixelroute.router.training import TrainParams

FIELDS = ("latency_p50_s", "latency_sigma", "p_fail", "correction_s")
KEEP = {"latency only": ("latency_p50_s", "latency_sigma"), "P(fail) only": ("p_fail",),
        "correction only": ("correction_s",), "all four (trained)": FIELDS}


class Mixed:
    """The trained predictor with the fields not in ``keep`` taken from the cold-start prior."""

    name = "lgbm"

    def __init__(self, trained: Router, keep: Sequence[str]) -> None:
        self.trained, self.keep, self.cold = trained, set(keep), ColdStartPredictor()
        self.version = trained.version

    def predict(self, request: RouteRequest, options: Sequence[tuple[BackendProfile, int | None]],
                context: RouteContext) -> Predictions:
        preds = self.trained.predictor.predict(request, options, context)
        prior = self.cold.predict(request, options, context)
        for name in FIELDS:
            if name not in self.keep:
                setattr(preds, name, getattr(prior, name))
        return preds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--world", default="stationary", help="stationary, drifting, outage or wrong-priors")
    args = ap.parse_args()
    sims = overclaiming() if args.world == "wrong-priors" else list(DEFAULT_BACKENDS)
    drifts = [] if args.world == "wrong-priors" else world(args.world, None, sims)
    work = make_workload(sims, generate_prompts(300, seed=77), args.n_eval, seed=77, drifts=drifts)
    cold = replay_outcomes(router_policy(Router.cold_start()), work, sims).summary()
    print(f"\n### {args.world}: trained on {args.n_train}, evaluated on {args.n_eval} fresh requests "
          "(templates seed 77)\n")
    print("| learned strengths | predictions from the trained models | cost/accepted | SLA attainment |")
    print("|---|---|---|---|")
    print(f"| | none (cold start) | {cold['cost_per_accepted_usd']:.3f} | {cold['sla_attainment']:.3f} |")
    for learn in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model"
            train(simulate(args.n_train, backends=sims, seed=1, drifts=drifts), out,
                  profiles=[b.profile() for b in sims], params=TrainParams(seed=0, learn_strengths=learn))
            trained = Router.load(out)
            for label, keep in KEEP.items():
                r = Router(Mixed(trained, keep), trained.config, seed=0)
                s = replay_outcomes(router_policy(r), work, sims).summary()
                print(f"| {'on' if learn else 'off'} | {label} | {s['cost_per_accepted_usd']:.3f} | "
                      f"{s['sla_attainment']:.3f} |")


if __name__ == "__main__":
    main()
