"""The call's deadline enforced on every socket operation of the sync transport.

httpx timeouts are per operation: each read may wait the whole read timeout again, so a server
that sends its status line and headers one byte every 50 ms keeps a read timeout of 2 s from
ever firing, and the call runs for as long as the server likes. The sync driver binds the
exchange's :class:`~pixelroute._deadline.Deadline` to its thread (:func:`bind`); the network backend
installed in the pooled transport (:func:`install`) clamps every connect, read, write and TLS
handshake to what is left of it, and fails with httpcore's own timeout once it has passed, so
headers, body and connection set-up are all bounded by the one deadline.

The clamp replaces a watchdog thread per request (started at the first body byte, so blind to
the headers); what it costs is one thread-local lookup and one clock read per socket operation.
The async drivers need none of this: ``asyncio.timeout`` cancels the whole exchange.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import httpcore
import httpx

from .._deadline import Deadline

_bound = threading.local()


def bind(deadline: Deadline | None) -> Deadline | None:
    """Bound this thread's socket operations by ``deadline``; returns the previous one, for :func:`bind` again."""
    previous: Deadline | None = getattr(_bound, "deadline", None)
    _bound.deadline = deadline
    return previous


def _clamp(timeout: float | None, expired: type[Exception]) -> float | None:
    deadline: Deadline | None = getattr(_bound, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline.remaining()
    if left <= 0:
        raise expired("the call's deadline has passed")
    if timeout is None:
        return None if math.isinf(left) else left  # a socket refuses an infinite timeout
    return left if left < timeout else timeout


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation gets at most what is left of the bound deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname,
                                                      _clamp(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineNetworkBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with connections whose operations honour the bound deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _clamp(timeout, httpcore.ConnectTimeout), local_address,
                                         socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, _clamp(timeout, httpcore.ConnectTimeout), socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install(transport: httpx.BaseTransport) -> bool:
    """Put the deadline clamp under ``transport``'s pool; False when it has no httpcore pool (a MockTransport)."""
    pool = getattr(transport, "_pool", None) if isinstance(transport, httpx.HTTPTransport) else None
    # httpcore keeps the backend in a private attribute (ConnectionPool and its proxy subclasses alike);
    # httpx does not expose the constructor argument
    inner = getattr(pool, "_network_backend", None)
    if inner is None:
        return False
    if not isinstance(inner, DeadlineNetworkBackend):
        pool._network_backend = DeadlineNetworkBackend(inner)  # type: ignore[union-attr]
    return True
