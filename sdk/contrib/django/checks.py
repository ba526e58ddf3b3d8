"""System checks run by ``manage.py check`` (and before ``runserver``/``migrate``).

=====================  ===============================================================
``pixelroute.E001``    ``PIXELROUTE`` is not valid pixelroute settings
``pixelroute.E002``    the telemetry store cannot be reached or written
``pixelroute.E003``    ``PIXELROUTE_PERMISSION_CHECK`` does not name a callable
``pixelroute.W001``    ``router.model`` names an artifact that is not there (cold start)
=====================  ===============================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.checks import CheckMessage, Error, Warning

DOCS = "see docs/guides/django.md"


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from ..._errors import ConfigError
    from . import get_settings

    try:
        settings = get_settings()
    except ConfigError as exc:
        return [
            Error(
                str(exc),
                hint=f"Fix the key named above in settings.PIXELROUTE; {DOCS}.",
                id="pixelroute.E001",
            )
        ]
    messages: list[CheckMessage] = []
    problem = store_problem(settings.telemetry_url()) if settings.telemetry.enabled else None
    if problem:
        messages.append(
            Error(
                f"pixelroute telemetry store is unreachable: {problem}",
                hint="Set PIXELROUTE['telemetry']['store'] to a writable sqlite:///path or a reachable "
                "postgresql:// URL, or start the database.",
                id="pixelroute.E002",
            )
        )
    messages.extend(_permission_check_problems())
    model = settings.router.model
    if model and not (Path(model) / "manifest.json").is_file():
        messages.append(
            Warning(
                f"router artifact {model!r} has no manifest.json: requests use the cold-start policy",
                hint="Run `manage.py pixelroute_train` (or `pixelroute train --out ...`) to write it.",
                id="pixelroute.W001",
            )
        )
    return messages


def store_problem(url: str) -> str | None:
    """Why the store at ``url`` cannot be used, or ``None``. Creates nothing."""
    from ..._redact import redact

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.is_dir():
            return f"{str(path)!r} is a directory"
        parent = path.parent
        while not parent.exists() and parent != parent.parent:  # the client creates missing folders
            parent = parent.parent
        if not parent.is_dir():
            return f"{str(parent)!r} is not a directory"
        if not os.access(parent, os.W_OK):
            return f"{str(parent)!r} is not writable"
        if path.exists() and not os.access(path, os.W_OK):
            return f"{str(path)!r} is not writable"
        return None
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg
        except ImportError:
            return "psycopg is not installed (pip install 'pixelroute[postgres]')"
        try:
            psycopg.connect(url, connect_timeout=3).close()
        except Exception as exc:  # any connection failure is the finding
            return redact(f"{type(exc).__name__}: {exc}".strip())
        return None
    return f"unsupported store URL scheme in {redact(url)!r}"


def _permission_check_problems() -> list[CheckMessage]:
    from django.conf import settings

    from ..._errors import ConfigError
    from .._http import load_callable

    target = getattr(settings, "PIXELROUTE_PERMISSION_CHECK", None)
    if target is None or callable(target):
        return []
    try:
        load_callable(str(target), "PIXELROUTE_PERMISSION_CHECK")
    except ConfigError as exc:
        return [
            Error(
                str(exc),
                hint="Use 'package.module:function', called as function(request, action).",
                id="pixelroute.E003",
            )
        ]
    return []
