"""The Django app: add ``"pixelroute.contrib.django"`` to ``INSTALLED_APPS`` and set ``PIXELROUTE``.

::

    # settings.py
    INSTALLED_APPS = [..., "django.contrib.auth", "django.contrib.contenttypes", "pixelroute.contrib.django"]
    PIXELROUTE = {"telemetry": {"store": "postgresql://app@db/pixelroute"}, "backends": [...]}
    # or PIXELROUTE = "/etc/pixelroute.toml"; unset = the embedded default

    # urls.py
    urlpatterns = [path("pixelroute/", include("pixelroute.contrib.django.urls"))]

    # anywhere
    from pixelroute.contrib.django import get_client
    result = get_client().generate("a red bicycle", sla={"deadline_s": 8})

``PIXELROUTE`` is validated by the same settings model as the TOML file; ``manage.py check``
reports problems as ``pixelroute.E001``… (see :mod:`pixelroute.contrib.django.checks`). The endpoints
ask ``PIXELROUTE_PERMISSION_CHECK`` (``"module:function"``, called as ``check(request, action)``)
or, by default, Django's auth: ``request.user.has_perm("pixelroute.<action>")`` with ``action``
one of ``generate``, ``edit``, ``feedback``, ``trace``, ``metrics``.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..._client import Client
    from ..._config import Settings

_lock = threading.Lock()
_client: Client | None = None


def get_settings() -> Settings:
    """``settings.PIXELROUTE`` validated; ``ConfigError`` naming the key when it is wrong."""
    from ..._config import embedded_default, load_settings
    from ..._errors import ConfigError
    from ..._extras import optional_imports

    with optional_imports("pixelroute.contrib.django"):
        from django.conf import settings

    value: Any = getattr(settings, "PIXELROUTE", None)
    if value is None:
        return embedded_default()
    if not isinstance(value, dict | str):
        from ..._shown import shown

        raise ConfigError(f"`PIXELROUTE` must be a dict of settings or a TOML path but is {shown(value)}")
    try:
        return load_settings(value)
    except ConfigError as exc:
        raise ConfigError(f"`PIXELROUTE`: {exc}") from None


def get_client() -> Client:
    """The process's :class:`~pixelroute.Client`, built on first use and closed at interpreter exit."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                import atexit

                from ..._client import Client

                _client = Client(get_settings())
                atexit.register(_close_if_ours, _client, os.getpid())
    return _client


def reset_client() -> None:
    """Close the client; the next :func:`get_client` builds one from the current settings."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def _close_if_ours(client: Client, pid: int) -> None:
    # a forked child exits with its parent's client in memory: closing it there would close the
    # parent's store connections too (SQLite must not close a connection inherited over fork)
    if os.getpid() == pid:
        client.close()


def _after_fork_in_child() -> None:
    # A forked child (gunicorn --preload) must not use the parent's client: its telemetry writer
    # and pipeline threads did not survive the fork. Left to the parent, not closed here; the
    # child builds its own, which finds the CPU pipelines already in memory.
    global _client, _lock
    _lock = threading.Lock()
    _client = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = ["get_client", "get_settings", "reset_client"]
