"""``pixelroute models make-tiny --family sd15|sdxl|sd3 --out DIR``: offline random-weight pipelines."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="model utilities (tiny random-weight pipelines)")
    group = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    tiny = group.add_parser(
        "make-tiny",
        help="build a tiny pipeline of the real diffusers classes with RANDOM weights (no download)",
    )
    tiny.add_argument("--family", required=True, choices=["sd15", "sdxl", "sd3"])
    tiny.add_argument("--out", required=True, metavar="DIR",
                      help="folder to create (model_index.json + components)")
    tiny.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    tiny.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    tiny.set_defaults(func=make_tiny)
    def usage(_: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)


def make_tiny(args: argparse.Namespace) -> int:
    from .._tiny import RANDOM_WEIGHTS_NOTE, build_tiny, is_built

    existed = is_built(Path(args.out).expanduser()) and not args.overwrite
    path = build_tiny(args.family, args.out, seed=args.seed, overwrite=args.overwrite)
    verb = "already present" if existed else "built"
    print(f"{args.family}: {verb} at {path}")
    print(f"note: {RANDOM_WEIGHTS_NOTE}")
    print(f"load it with DiffusionPipeline.from_pretrained({str(path)!r}) or as a diffusers backend `model`")
    return 0
