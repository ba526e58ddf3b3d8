"""``pixelroute serve``: the OpenAI-compatible gateway (:mod:`pixelroute.gateway`) under uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

from .._errors import ConfigError, MissingExtra
from ._args import integer_in

DEFAULT_KEY_ENV = "PIXELROUTE_GATEWAY_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP gateway (POST /v1/images/generations; the serve extra)",
        description="Serve the OpenAI-compatible gateway under uvicorn, in one process. Needs the serve extra "
        "(pip install 'pixelroute[serve]'). The config is read and the client built before the server starts, "
        "so a bad config is one error line naming it (docs/guides/gateway.md).",
    )
    p.add_argument(
        "--config", metavar="FILE", help="pixelroute TOML config (default: the embedded tiny backends)"
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=integer_in("--port", 0, 65535), default=8000, help="port (default: 8000)")
    p.add_argument(
        "--api-key-env",
        default=DEFAULT_KEY_ENV,
        metavar="VAR",
        help=f"environment variable holding the bearer key clients must send (default: {DEFAULT_KEY_ENV})",
    )
    p.add_argument(
        "--no-auth", action="store_true", help="accept requests without a key (only on a loopback --host)"
    )
    p.add_argument(
        "--public-health-details",
        action="store_true",
        help="show backend names and breaker states on /healthz to callers without the key "
        "(default: only to callers with it)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from .._extras import require

    require("serve", "`pixelroute serve`")  # before any work: the error names the extra to install
    import uvicorn

    from .._client import AsyncClient
    from .._config import load_settings
    from ..gateway import create_app

    api_key = os.environ.get(args.api_key_env) or None
    if api_key is None and not args.no_auth:
        raise ConfigError(
            f"`{args.api_key_env}` is not set: export a key for clients to send, or pass --no-auth "
            "to serve without one on a loopback --host"
        )
    if args.no_auth and args.host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"`--no-auth` is only allowed on a loopback `--host` but it is {args.host!r}")
    if args.config is None:
        print(
            "pixelroute: no --config given: serving the embedded default (tiny pipelines, RANDOM weights)",
            file=sys.stderr,
        )
    # Built before uvicorn starts: a missing or invalid config file, a bad store URL or an unusable
    # router artifact is a one-line error naming it, not a traceback from a failed ASGI startup.
    settings = load_settings(args.config) if args.config else None  # its errors name the file
    try:
        client = AsyncClient(settings)
    except ConfigError as exc:
        if args.config is None or isinstance(exc, MissingExtra):
            raise
        raise ConfigError(f"config file `{args.config}`: {exc}") from exc
    app = create_app(
        client=client,
        close_client=True,
        api_key=api_key,
        allow_anonymous=args.no_auth,
        public_health_details=args.public_health_details,
    )
    try:
        # one worker process: the client, its telemetry writer and breakers live in this process
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, ws="none")
    finally:
        asyncio.run(client.aclose())  # a no-op when the app's shutdown closed it; not when startup never ran
    return 0
