"""The ``pixelroute`` command line (also ``python -m pixelroute``).

One module per command group; each exposes ``register(subparsers)`` which adds its commands
and sets ``func`` (taking the parsed ``argparse.Namespace``, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
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
        epilog="Exit status: 0 done, 1 error (one line on stderr), 2 usage, 141 stdout's reader went away. "
        "Optional extras per command, and which commands only read a store: docs/cli.md.",
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


#: the exit status when stdout's reader went away (``pixelroute telemetry export | head``): 128 + SIGPIPE,
#: what the shell reports for a program the signal ended
EXIT_PIPE_CLOSED = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _dispatch(argv)
        finally:
            # a reader that left shows here, as BrokenPipeError, not as a traceback from the
            # interpreter's own flush at exit
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_PIPE_CLOSED


def _dispatch(argv: Sequence[str] | None) -> int:
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
    except ModuleNotFoundError as exc:
        from .._extras import missing_extra

        missing = missing_extra(exc, f"`pixelroute {args.command}`")
        if missing is None:
            raise
        print(f"pixelroute: error: {missing}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _discard_stdout() -> None:
    """Point stdout's descriptor at the null device: what is still buffered is dropped at exit
    instead of failing again (the approach of Python's own docs on SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # not a real file (a test's capture): nothing to point
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
