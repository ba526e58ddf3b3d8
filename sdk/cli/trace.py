"""``pixelroute trace FILE.png | REQUEST_ID``: read a saved image's metadata, or a stored trace."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import format_trace
from .telemetry import add_store_arg, store_url


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("trace", help="show the metadata of a saved PNG or the stored trace of a request id")
    p.add_argument("target", help="a PNG written by pixelroute, or a request id")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_store_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.target)
    if path.suffix.lower() == ".png" or path.exists():
        from .._png import read_png_metadata

        meta = read_png_metadata(path)
        if args.json:
            print(json.dumps(meta, indent=2, default=str))
        else:
            for key, value in meta.items():
                print(f"{key:<15} {value}")
        return 0
    from ..telemetry import open_store
    from ..telemetry.trace import stored_trace

    with open_store(store_url(args), create=False) as store:  # a reader: never creates the store
        trace = stored_trace(store, args.target)
    print(json.dumps(trace, indent=2, default=str) if args.json else format_trace(trace))
    return 0
