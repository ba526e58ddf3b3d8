"""``manage.py pixelroute_stats [--since 24h] [--json | --prometheus]``: ``pixelroute stats``, same store."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ._forward import run_cli, store_url


class Command(BaseCommand):
    help = "Per-backend GPU-s, failures, latency, correction time, cost and req/min from the telemetry store."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", metavar="T", help="only records at or after T (ISO time or age like 24h)"
        )
        fmt = parser.add_mutually_exclusive_group()
        fmt.add_argument("--json", action="store_true", help="print JSON")
        fmt.add_argument("--prometheus", action="store_true", help="print Prometheus text")

    def handle(self, *args: Any, **options: Any) -> None:
        argv = ["stats", "--store", store_url()]
        if options["since"]:
            argv += ["--since", options["since"]]
        if options["json"]:
            argv.append("--json")
        if options["prometheus"]:
            argv.append("--prometheus")
        run_cli(self, argv)
