"""The ``pixelroute`` command line (also ``python -m pixelroute``).

One module per command group; each exposes ``register(subparsers)`` which adds its commands
and sets ``func`` (taking the parsed ``argparse.Namespace``, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._errors import PixelrouteError

#: command-group modules under ``pixelroute.cli``; imported lazily so ``--help`` stays fast
GROUPS = (
    "init",
    "generate",
    "trace",
    "models",
    "telemetry",
    "stats",
    "train",
    "route",
    "simulate",
    "demo",
    "serve",
    "warmup",
    "scenarios",
)


def installed_version() -> str:
    """The distribution's version; the package's own when it runs uninstalled (from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pixelroute")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixelroute",
        description="Route image generation across local diffusers pipelines and remote APIs.",
    )
    parser.add_argument("--version", action="version", version=f"pixelroute {installed_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        try:
            module = importlib.import_module(f"pixelroute.cli.{group}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pixelroute.cli.{group}":
                continue  # a command group not built into this installation
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
        return code
    except PixelrouteError as exc:
        print(f"pixelroute: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
