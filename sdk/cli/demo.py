"""``pixelroute demo``: the closed loop on the embedded default, in about a minute.

In two simulated worlds — A, where every backend behaves as its profile declares, and B,
where one vendor over-claims its text and counting skills:

1. simulate a workload against backend profiles built from published figures, logged with
   propensities into a real SQLite telemetry store (records marked ``simulated``);
2. retrain the router from that store (LightGBM on top of the cold-start prior, conformal
   latency, calibrated P(fail));
3. replay a fresh workload the model never saw and compare the trained router with the
   cold-start policy, the baselines (always cheapest, always fastest, LiteLLM-style
   mean-of-last-10 latency, RouteLLM-style threshold) and an oracle.

Then run a few real routed generations on the embedded tiny local pipelines and show traces.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ._common import format_trace


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="simulate, log, retrain and compare the router; then route real generations")
    p.add_argument("--records", type=int, default=5000, help="simulated requests to train on per world")
    p.add_argument("--eval-requests", type=int, default=2000, help="fresh simulated requests to compare on")
    p.add_argument("--dir", type=Path, help="working folder (default: <cache dir>/demo)")
    p.add_argument("--skip-generate", action="store_true", help="skip the real generations on tiny pipelines")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    from pixelroute.router.simulate import DEFAULT_BACKENDS, overclaiming

    from .._config import default_cache_dir

    workdir: Path = args.dir or default_cache_dir() / "demo"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.perf_counter()
    worlds = [
        ("A", "every backend's declared profile is close to its real behaviour", list(DEFAULT_BACKENDS)),
        ("B", "flux-dev's vendor claims strong text and counting; it is really weak at both",
         overclaiming(DEFAULT_BACKENDS, "flux-dev")),
    ]
    summary = []
    for key, story, sims in worlds:
        print(f"\n=== world {key}: {story}")
        summary.append((key, story, _closed_loop(workdir / f"world-{key}", sims, args)))
    print("\n=== the point of retraining")
    for key, _story, (trained, cold) in summary:
        print(f"world {key}: cost per accepted image, trained {trained['cost_per_accepted_usd']:.4f} vs cold start "
              f"{cold['cost_per_accepted_usd']:.4f} USD; SLA attainment {trained['sla_attainment']:.3f} vs "
              f"{cold['sla_attainment']:.3f}; mean correction {trained['mean_correction_s']:.0f} s vs "
              f"{cold['mean_correction_s']:.0f} s")
    print("(when the declared priors are right the trained router matches cold start; when they are wrong,"
          " the logs correct them)")

    if not args.skip_generate:
        _say("real routed generations on the embedded default (tiny pipelines, RANDOM weights: noise images)")
        _generate_examples(workdir)
    _say(f"done in {time.perf_counter() - started:.0f} s; everything is in {workdir}")
    return 0


def _closed_loop(folder: Path, sims: list[Any], args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float]]:
    """Simulate -> log -> retrain -> replay a fresh workload; returns (trained, cold start) results."""
    from pixelroute.router import Router, simulate, train
    from pixelroute.router.evaluation import compare_policies, format_table
    from pixelroute.router.simulate import generate_prompts, make_workload

    from ..telemetry import Recorder, open_store

    folder.mkdir(parents=True)
    store_url = f"sqlite:///{folder / 'telemetry.db'}"
    _say(f"simulating {args.records:,} requests over {len(sims)} backend profiles "
         f"(SIMULATED telemetry, correction time included) -> {store_url}")
    store = open_store(store_url)
    recorder = Recorder(store, queue_size=args.records + 1, on_full="block")
    for rec in simulate(args.records, backends=sims, seed=args.seed):
        recorder.record(rec)
    recorder.close()

    model_dir = folder / "router-model"
    _say(f"retraining the router from the store -> {model_dir}")
    # the declared profiles give the model its prior: it learns corrections on top of it
    profiles = [b.profile() for b in sims]
    manifest = train(store.iter_records(), model_dir, profiles=profiles, progress=lambda m: _say(f"    {m}"))
    store.close()
    _print_metrics(manifest)

    _say(f"replaying {args.eval_requests:,} fresh requests the model never saw (new prompts, new seed)")
    router = Router.load(model_dir)
    fresh = make_workload(sims, generate_prompts(400, seed=args.seed + 1000), args.eval_requests,
                          seed=args.seed + 1000)
    results = compare_policies(router, fresh, sims, include_oracle=True)
    print(format_table(results))
    return results[router.policy_name], results["cold_start"]


def _print_metrics(manifest: dict[str, Any]) -> None:
    m = manifest.get("metrics", {})
    rows = manifest.get("rows", {})
    print(f"    rows: {rows.get('total')} (train {rows.get('train')}, labelled corrections "
          f"{rows.get('correction_labelled')}); version {manifest.get('version')}")
    q = f"p{round(100 * manifest.get('latency_quantile', 0.95))}"
    overall = (m.get("latency_coverage") or {}).get("*")
    if overall:
        print(f"    held-out latency coverage: p50 {overall['p50']:.3f}, {q} {overall[q]:.3f} "
              f"(target 0.50 / {manifest.get('latency_quantile', 0.95):.2f})")
    failure = m.get("failure") or {}
    if failure.get("brier") is not None:
        print(f"    P(fail) Brier {failure['brier']:.4f} (base rate {failure['brier_base_rate']:.4f})")
    corr = m.get("correction") or {}
    if corr.get("mae_s") is not None:
        print(f"    correction-time MAE {corr['mae_s']:.1f} s (a constant guess: {corr['mae_constant_s']:.1f} s)")


def _generate_examples(workdir: Path) -> None:
    from .._client import Client
    from .._config import embedded_default
    from .._png import save_png
    from .._types import SLA
    from .generate import png_metadata

    prompts = [
        ("a watercolor painting of a lighthouse at dusk", SLA(deadline_s=60)),
        ("a shop sign that says 'OPEN 24 HOURS' above a glass door", SLA(deadline_s=60)),
        ("three red apples behind a glass vase on a mirror", SLA(deadline_s=60, max_cost_usd=0.01)),
    ]
    with Client(embedded_default()) as client:
        for i, (prompt, sla) in enumerate(prompts):
            result = client.generate(prompt, sla=sla, seed=i, width=64, height=64)
            path = save_png(result.images[0], workdir / f"example-{i}.png", png_metadata(result, prompt, 0))
            print(f"\n--- {prompt!r}")
            print(format_trace(result.trace))
            print(f"saved     {path}")
        sys.stdout.flush()
