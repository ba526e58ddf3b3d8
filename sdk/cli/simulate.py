"""``pixelroute simulate``: synthetic telemetry (marked ``"simulated": true``) from backend profiles."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .._errors import ValidationError
from ._progress import add_quiet_arg, bar, say


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write a simulated workload's telemetry as JSONL (docs/router.md)")
    p.add_argument("--profiles", metavar="FILE", help="simulated backends, TOML/JSON (default: the built-in 8)")
    p.add_argument("--prompts", metavar="FILE", help="prompts: .txt lines, .tsv Prompt column or .jsonl")
    p.add_argument("--n", type=int, default=10_000, help="records to write (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epsilon", type=float, default=0.15, help="logging policy's exploration share")
    p.add_argument("--out", metavar="FILE.jsonl", required=True)
    p.add_argument("--write-profiles", metavar="FILE", help="also write the simulated profiles as JSON")
    p.add_argument("--world", choices=("stationary", "drifting", "outage"), default="stationary",
                   help="stationary (default); drifting: one backend runs --drift-mult times slower for two peaks; "
                        "outage: one backend is down for 35-65%% of the timeline (docs/router.md)")
    p.add_argument("--drift-backend", metavar="NAME",
                   help="the backend that drifts or goes down (default: the first local one for drifting, "
                        "the first remote one for an outage)")
    p.add_argument("--drift-mult", type=float, metavar="X",
                   help="how many times slower the drifting backend runs at its peaks (default 4)")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelroute.router.simulate import (
        MAX_DRIFT_MULT,
        drift_mult_ok,
        dump_backends,
        load_backends,
        load_prompts,
        simulate,
        world,
    )

    if args.n < 1:
        raise ValidationError(f"`--n` must be at least 1 but is {args.n}", field="n", value=args.n)
    if not 0 <= args.epsilon <= 1:
        raise ValidationError(f"`--epsilon` must be between 0 and 1 but is {args.epsilon}", field="epsilon",
                              value=args.epsilon)
    if args.drift_mult is not None and not drift_mult_ok(args.drift_mult):
        raise ValidationError(f"`--drift-mult` must be above 0 and at most {MAX_DRIFT_MULT:g} but is {args.drift_mult}",
                              field="drift_mult", value=args.drift_mult)
    try:
        backends = load_backends(args.profiles)
        prompts = load_prompts(args.prompts) if args.prompts else None
        mult = {} if args.drift_mult is None else {"latency_mult": args.drift_mult}
        drifts = world(args.world, args.drift_backend, backends, **mult)
    except (OSError, ValueError, KeyError) as exc:
        raise ValidationError(f"cannot read simulator input: {exc}") from exc
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    count = 0
    progress = bar("simulating", args.n, unit="record", quiet=args.quiet)
    try:
        with tmp.open("w") as fh:  # temp + rename: never a half-written telemetry file
            for rec in simulate(args.n, backends=backends, prompts=prompts, seed=args.seed, epsilon=args.epsilon,
                                drifts=drifts):
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
                count += 1
                progress.update(1)
        tmp.replace(out)
    finally:
        progress.close()
        tmp.unlink(missing_ok=True)
    if args.write_profiles:
        Path(args.write_profiles).write_text(dump_backends(backends))
    say(f"wrote {count} simulated records to {out}", args.quiet)
    return 0
