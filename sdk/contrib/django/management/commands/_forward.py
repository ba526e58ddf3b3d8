"""Run a ``pixelroute`` CLI command from a management command, with the project's settings."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from django.core.management.base import CommandError


def run_cli(command: Any, argv: Sequence[str]) -> None:
    """``pixelroute.cli.main(argv)`` with output to the command's streams; failure -> ``CommandError``."""
    from pixelroute.cli import main

    try:
        with contextlib.redirect_stdout(command.stdout), contextlib.redirect_stderr(command.stderr):
            code = main(list(argv))
    except SystemExit as exc:  # argparse refuses bad arguments by exiting
        raise CommandError(f"pixelroute {argv[0]}: invalid arguments (exit status {exc.code})") from None
    if code != 0:
        raise CommandError(f"pixelroute {argv[0]} failed with exit status {code}; see the message above")


def store_url() -> str:
    from pixelroute._errors import ConfigError
    from pixelroute.contrib.django import get_settings

    try:
        return get_settings().telemetry_url()
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
