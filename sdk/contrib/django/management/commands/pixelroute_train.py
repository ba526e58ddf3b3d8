"""``manage.py pixelroute_train [--out DIR]``: ``pixelroute train`` on PIXELROUTE's store.

The artifact goes to ``--out`` or ``PIXELROUTE["router"]["model"]``; running clients pick it up
atomically. Schedule it (cron, Celery beat) like ``examples/retrain_cron.sh``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ._forward import run_cli, store_url


class Command(BaseCommand):
    help = "Retrain the router from the telemetry store named in settings.PIXELROUTE."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--out", metavar="DIR", help="artifact directory (default: PIXELROUTE router.model)"
        )
        parser.add_argument(
            "--since", metavar="T", help="only records at or after T (ISO time or age like 7d)"
        )
        parser.add_argument(
            "--promote-if-better",
            action="store_true",
            help="replace the artifact only if the new model is estimated to cost less",
        )
        parser.add_argument("--dask-scheduler", metavar="ADDR", help="train on this Dask scheduler")

    def handle(self, *args: Any, **options: Any) -> None:
        from pixelroute.contrib.django import get_settings

        url = store_url()
        out = options["out"] or get_settings().router.model
        if not out:
            raise CommandError("no artifact directory: pass --out or set PIXELROUTE['router']['model']")
        argv = ["train", "--store", url, "--out", str(out)]
        if options["since"]:
            argv += ["--since", options["since"]]
        if options["promote_if_better"]:
            argv.append("--promote-if-better")
        if options["dask_scheduler"]:
            argv += ["--dask-scheduler", options["dask_scheduler"]]
        if options["verbosity"] < 1:
            argv.append("--quiet")
        run_cli(self, argv)
