"""``pixelroute telemetry export|import``: the JSONL interchange format in and out of a store."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta

from .._errors import ValidationError

#: ``telemetry import`` imported the good lines but skipped malformed ones (without ``--allow-skips``)
EXIT_SKIPPED = 3
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str | None, flag: str) -> datetime | None:
    """``--since``/``--until``: an ISO-8601 time (naive = UTC) or an age like ``30m``, ``24h``, ``7d``."""
    if value is None:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    from ..telemetry import parse_ts

    try:
        return parse_ts(value, field=flag)
    except ValidationError:
        raise ValidationError(
            f"`{flag}` must be an ISO-8601 time (2026-11-25T19:00:00Z) or an age like 24h but is {value!r}",
            field=flag,
            value=value,
        ) from None


def add_store_arg(parser: argparse.ArgumentParser, *, creates: bool = False) -> None:
    """``--store`` and ``--config``; a reading command (``creates=False``) refuses a store that does not exist."""
    exists = "created if missing" if creates else "must exist: reading never creates a store"
    parser.add_argument(
        "--store",
        metavar="URL",
        help=f"sqlite:///file.db or postgresql://user@host/db, {exists} "
        "(default: the --config file's, else the cache dir's)",
    )
    parser.add_argument("--config", metavar="FILE", help="pixelroute TOML config naming the store")


def store_url(args: argparse.Namespace) -> str:
    if args.store:
        return str(args.store)
    from .._config import load_settings

    return load_settings(args.config).telemetry_url()


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("telemetry", help="export or import telemetry as JSON Lines (docs/telemetry.md)")
    commands = group.add_subparsers(dest="telemetry_command", metavar="{export,import}")

    export = commands.add_parser("export", help="write the store's records as JSONL (stdout by default)")
    add_store_arg(export)
    export.add_argument("--since", metavar="T", help="only records at or after T (ISO time or age like 24h)")
    export.add_argument("--until", metavar="T", help="only records before T")
    export.add_argument("--out", metavar="FILE", help="write here (atomically) instead of stdout")
    export.set_defaults(func=run_export)

    imp = commands.add_parser("import", help="add JSONL records to a store (re-importing is harmless)")
    imp.add_argument("file", metavar="FILE", help="a JSONL file, or - for stdin")
    add_store_arg(imp, creates=True)
    imp.add_argument("--strict", action="store_true", help="refuse the whole file if any line is malformed")
    imp.add_argument(
        "--allow-skips",
        action="store_true",
        help=f"exit 0 even if malformed lines were skipped (default: exit {EXIT_SKIPPED} when any was)",
    )
    imp.set_defaults(func=run_import)
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])


def run_export(args: argparse.Namespace) -> int:
    from ..telemetry import export_jsonl, open_store

    since, until = parse_time(args.since, "--since"), parse_time(args.until, "--until")
    with open_store(store_url(args), create=False) as store:  # a reader: never creates the store
        count = export_jsonl(store, args.out, since=since, until=until)
    print(f"exported {count} records" + (f" to {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..telemetry import import_jsonl, open_store

    source = sys.stdin if args.file == "-" else args.file
    try:
        with open_store(store_url(args)) as store:
            report = import_jsonl(source, store, strict=args.strict)
    except OSError as exc:
        raise ValidationError(f"`FILE` {args.file!r} cannot be read: {exc.strerror}", field="FILE") from exc
    print(report.summary(), file=sys.stderr)
    if report.skipped and not args.allow_skips:
        print(
            f"pixelroute: error: {report.skipped} malformed lines were skipped (listed above); "
            "fix them and import the file again (re-importing is harmless), or pass --allow-skips",
            file=sys.stderr,
        )
        return EXIT_SKIPPED
    return 0
