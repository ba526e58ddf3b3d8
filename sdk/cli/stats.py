"""``pixelroute stats``: per-backend GPU-s per request, failures, latency, correction time, cost, req/min."""

from __future__ import annotations

import argparse
import json

from .telemetry import add_store_arg, parse_time, store_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="operational statistics per backend from a telemetry store")
    add_store_arg(p)
    p.add_argument("--since", metavar="T", help="only records at or after T (ISO time or age like 24h)")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument("--prometheus", action="store_true", help="print Prometheus text exposition")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..telemetry import compute_stats, format_stats, open_store, prometheus_text

    since = parse_time(args.since, "--since")
    with open_store(store_url(args), create=False) as store:  # a reader: never creates the store
        stats = compute_stats(store.iter_records(since=since), since=since)
        stats["losses"] = store.losses(since=since)
    if args.json:
        print(json.dumps(stats, indent=2))
    elif args.prometheus:
        print(prometheus_text(stats), end="")
    else:
        print(format_stats(stats), end="")
    return 0
