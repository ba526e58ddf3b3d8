"""``pixelroute trace FILE.png | REQUEST_ID``: read a saved image's metadata, or a stored trace."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_config_arg, format_trace


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("trace", help="show the metadata of a saved PNG or the stored trace of a request id")
    p.add_argument("target", help="a PNG written by pixelroute, or a request id")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_arg(p)
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
    from .._client import Client

    client = Client.from_config(args.config) if args.config else Client()
    with client:
        trace = client.trace(args.target)
    print(json.dumps(trace, indent=2, default=str) if args.json else format_trace(trace))
    return 0
