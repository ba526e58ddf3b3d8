"""The vocabulary a remote protocol speaks: :class:`Call` and :class:`Pause` out, :class:`Reply` back.

A protocol is a generator (:data:`Protocol`) that does no I/O; the drivers in
:mod:`pixelroute.backends._http_driver` run it over httpx, sync or async.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .._errors import InvalidOutput
from ._http_safety import url_for_message
from .base import BackendOutput


@dataclass(frozen=True)
class Call:
    """One HTTP exchange a protocol asks for."""

    method: str
    #: relative to ``base_url``, or absolute (poll URLs, result downloads)
    url: str
    json: Any = None
    #: multipart/form-data text fields (sent as multipart even when there is no file)
    form: Mapping[str, str] | None = None
    #: multipart/form-data file parts beside ``form``: field name -> (file name, bytes, content type)
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: an untrusted result URL: host rules apply and no credentials are sent
    download: bool = False
    #: whether 5xx / resets / 429 may be retried (a non-idempotent create may not be)
    retry: bool = True
    #: a best-effort exchange after the deadline (job cancel): this budget, errors swallowed
    grace_s: float | None = None


@dataclass(frozen=True)
class Pause:
    """Wait this long (a poll interval), or until the deadline if sooner."""

    seconds: float


@dataclass(frozen=True)
class Reply:
    """A complete, size-capped response."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str

    def json(self) -> Any:
        """The body as JSON; malformed JSON is :class:`InvalidOutput`."""
        import json

        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise InvalidOutput(f"response from {url_for_message(self.url)} is not valid JSON") from exc

    def json_or_none(self) -> Any:
        """The body as JSON, or ``None`` when it is not JSON (error bodies vary)."""
        try:
            return self.json()
        except InvalidOutput:
            return None


Protocol = Generator[Call | Pause, Reply | None, BackendOutput]


@dataclass
class RunState:
    """Bookkeeping of one protocol run: how many retries it has made so far."""

    retries: int = 0


def retry_after(reply: Reply) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    ms = reply.headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = reply.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
