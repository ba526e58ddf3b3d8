"""Cost per accepted image and SLA attainment: trained router vs cold start, baselines and an oracle,
on simulated workloads the model was not trained on (fresh seeds AND fresh prompts), in four worlds.

* ``stationary``: the 8 backends built from backend_figures.md, as they are;
* ``drifting``: the cheap local workhorse runs ``--drift-mult`` (default 4) times slower for two peaks
  (a GPU shared with a batch job; the same shape as a provider at peak hours), 20-45% and 65-85% of
  the timeline;
* ``outage``: the first remote backend is down for 35-65% of the timeline;
* ``wrong-priors``: flux-dev declares itself strong at text and counting but is weak at both.

The router is trained on a log of the same world (seed 1, template prompts: the drift or outage
happens inside the training log too, at other requests) and evaluated on fresh workloads (seeds
``--seeds``, PartiPrompts when ../shared is beside the repository, else templates of another seed).
Per world: medians over the evaluation seeds of cost per accepted image and SLA attainment, each
policy's attainment gap to the oracle, and the paired comparison with the trained router on the
requests BOTH delivered accepted and on time.

    .venv/bin/python benchmarks/routing_quality.py [--n-train 14000] [--n-eval 1500] [--seeds 78,79,80] [--drift-mult 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from pixelroute.router import Router, simulate, train
from pixelroute.router.evaluation import baseline_policies, oracle, paired_cost, replay_outcomes, router_policy
from pixelroute.router.simulate import (
    DEFAULT_BACKENDS,
    DRIFT_LATENCY_MULT,
    generate_prompts,
    load_prompts,
    make_workload,
    overclaiming,
    world,
)

PARTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "partiprompts" / "PartiPrompts.tsv"
#: policies that never look at live state (the ones a drifting world should hurt)
STATIC = ("always_cheapest", "always_fastest", "routellm_threshold")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=14_000)
    ap.add_argument("--n-eval", type=int, default=1500)
    ap.add_argument("--seeds", default="78,79,80", help="evaluation workload seeds (medians over them)")
    ap.add_argument("--worlds", default="stationary,drifting,outage,wrong-priors")
    ap.add_argument("--drift-mult", type=float, default=DRIFT_LATENCY_MULT,
                    help="how many times slower the drifting backend runs at its peaks")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    prompts, label = (load_prompts(PARTI), "PartiPrompts") if PARTI.is_file() else \
        (generate_prompts(300, seed=77), "templates seed 77")
    for name in args.worlds.split(","):
        sims = overclaiming() if name == "wrong-priors" else list(DEFAULT_BACKENDS)
        drifts = [] if name == "wrong-priors" else world(name, None, sims, latency_mult=args.drift_mult)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model"
            train(simulate(args.n_train, backends=sims, seed=1, drifts=drifts), out,
                  profiles=[b.profile() for b in sims])
            trained = Router.load(out)
            per_seed: dict[str, list[dict[str, float]]] = {}
            paired: dict[str, list[tuple[float, float, int]]] = {}
            for seed in seeds:
                work = make_workload(sims, prompts, args.n_eval, seed=seed, drifts=drifts)
                outcomes = {"lgbm (trained)": replay_outcomes(router_policy(trained), work, sims),
                            "cold_start": replay_outcomes(router_policy(Router.cold_start()), work, sims)}
                for pname, fn in baseline_policies().items():
                    outcomes[pname] = replay_outcomes(fn, work, sims)
                outcomes["oracle"] = replay_outcomes(oracle(sims, work), work, sims)
                for pname, o in outcomes.items():
                    per_seed.setdefault(pname, []).append(o.summary())
                    if pname != "lgbm (trained)":
                        paired.setdefault(pname, []).append(paired_cost(outcomes["lgbm (trained)"], o))
        oracle_sla = statistics.median(s["sla_attainment"] for s in per_seed["oracle"])
        peaks = f", {args.drift_mult:g}x slower at its peaks" if name == "drifting" else ""
        print(f"\n### {name}{peaks}: {label}, {args.n_eval} requests x seeds {args.seeds} "
              f"(trained on {args.n_train} simulated, seed 1)\n")
        print("| policy | cost/accepted | SLA attainment | vs oracle (points) | paired trained / them |")
        print("|---|---|---|---|---|")
        for pname, runs in per_seed.items():
            cost = statistics.median(r["cost_per_accepted_usd"] for r in runs)
            sla = statistics.median(r["sla_attainment"] for r in runs)
            pair = paired.get(pname)
            pair_text = "" if not pair else (f"{statistics.median(a for a, _, _ in pair):.3f} / "
                                             f"{statistics.median(b for _, b, _ in pair):.3f}")
            tag = " (static)" if pname in STATIC else ""
            print(f"| {pname}{tag} | {cost:.3f} | {sla:.3f} | {100 * (sla - oracle_sla):+.1f} | {pair_text} |")


if __name__ == "__main__":
    main()
