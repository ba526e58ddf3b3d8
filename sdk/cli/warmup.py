"""``pixelroute warmup``: load every (or the named) backend's pipeline and print the seconds each took.

The load lives in this process and ends with it, so the command is for what outlives it: it
builds the tiny models (``make_tiny``), fills the Hugging Face cache with a hub model's files,
and checks that a config's pipelines load on this machine (model, device, dtype, memory)
before a server depends on it. To have a server start warm, set ``[execution] preload = true``.
"""

from __future__ import annotations

import argparse
import sys

from ._common import add_config_arg

HELP = "load the backends' pipelines once and print the seconds each took (build tiny models, fill caches)"
DESCRIPTION = (
    "Load every configured backend's pipeline (or those named with --backend) as the first request "
    "would, and print the seconds each took. The load ends with this process: use it to build the tiny "
    "models, fill the Hugging Face cache and check that a config loads on this machine. For a server "
    "that starts warm, set `[execution] preload = true`."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("warmup", help=HELP, description=DESCRIPTION)
    add_config_arg(p)
    p.add_argument(
        "--backend", action="append", metavar="NAME", dest="backends",
        help="warm only this backend (repeatable; default: all)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._client import Client

    if args.config:
        client = Client.from_config(args.config)
    else:
        print("pixelroute: no --config given: warming the embedded default (tiny pipelines, RANDOM weights)",
              file=sys.stderr)
        client = Client()
    with client:
        took = client.warmup(args.backends)  # a failure names the backend; `main` prints it, exit 1
        width = max(len(name) for name in took)
        for name, seconds in took.items():
            backend = client.backends[name]
            if not backend.local:
                state = "remote: nothing to load"
            else:
                state = "loaded" if backend.loaded else "not loaded: evicted to stay within `memory_budget_gb`"
            print(f"{name:<{width}}  {seconds:7.2f} s  {state}")
    return 0
