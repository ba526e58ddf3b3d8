"""``pixelroute init [PATH] [--force]``: write a commented starter ``pixelroute.toml`` that validates."""

from __future__ import annotations

import argparse

from .._starter import DEFAULT_NAME

HELP = "write a commented starter config (tiny local pipelines; remote APIs commented out)"
DESCRIPTION = (
    f"Write a commented starter config at PATH (default: ./{DEFAULT_NAME}; a folder gets {DEFAULT_NAME} "
    "inside it): the embedded default's two tiny local pipelines (RANDOM weights, so the images are "
    "noise), a SQLite telemetry store, the router's settings, and the remote APIs commented out, each "
    "switched on by exporting its key and uncommenting its block. An existing file is left alone "
    "unless --force is given."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help=HELP, description=DESCRIPTION)
    p.add_argument("path", nargs="?", default=DEFAULT_NAME, metavar="PATH",
                   help=f"file or folder to write (default: {DEFAULT_NAME})")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._starter import write_starter

    written = write_starter(args.path, force=args.force)  # refusing an existing file: `main` prints it, exit 1
    print(f"wrote {written}")
    print(f"next: pixelroute generate \"a red bicycle\" --config {written} --out bike.png")
    return 0
