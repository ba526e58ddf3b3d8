"""The fault-injecting server itself (see the package docstring for usage)."""

from __future__ import annotations

import contextlib
import json as jsonlib
import random
import re
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return jsonlib.loads(self.body or b"null")


@dataclass
class Response:
    """What a route answers: ``json`` (serialised) or raw ``body``."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def encode(self) -> tuple[bytes, str]:
        if self.body is not None:
            return self.body, self.content_type or "application/octet-stream"
        return jsonlib.dumps(self.json).encode(), self.content_type or "application/json"


@dataclass
class Fault:
    """A way to answer one request; unset fields keep the route's normal answer."""

    delay_s: float = 0.0
    random_delay_s: tuple[float, float] | None = None
    response: Response | None = None
    #: close with a TCP reset: before anything (0) or after this many body bytes
    reset_after_bytes: int | None = None
    drip_interval_s: float | None = None
    drip_chunk: int = 1
    #: send the status line and headers one byte at a time, this far apart (a trickling upstream)
    header_drip_interval_s: float | None = None


def delay(seconds: float) -> Fault:
    """Answer normally after ``seconds``."""
    return Fault(delay_s=seconds)


def random_delay(low: float, high: float) -> Fault:
    """Answer normally after a uniform random delay in [low, high]."""
    return Fault(random_delay_s=(low, high))


def status(code: int, json: Any = None, headers: dict[str, str] | None = None, *, delay_s: float = 0.0) -> Fault:
    """Answer with ``code`` and a JSON body."""
    return Fault(delay_s=delay_s, response=Response(code, json=json if json is not None else {}, headers=headers or {}))


def body(data: bytes, content_type: str = "application/json", code: int = 200,
         headers: dict[str, str] | None = None) -> Fault:
    """Answer with raw bytes (malformed JSON, a non-image, a truncated PNG...)."""
    return Fault(response=Response(code, body=data, content_type=content_type, headers=headers or {}))


def reset() -> Fault:
    """Reset the connection before answering."""
    return Fault(reset_after_bytes=0)


def reset_mid_body(after_bytes: int = 16) -> Fault:
    """Send the headers and ``after_bytes`` of the body, then reset the connection."""
    return Fault(reset_after_bytes=max(1, after_bytes))


def slow_drip(interval_s: float, chunk: int = 1) -> Fault:
    """Send the normal body ``chunk`` bytes at a time, ``interval_s`` apart."""
    return Fault(drip_interval_s=interval_s, drip_chunk=chunk)


def slow_headers(interval_s: float) -> Fault:
    """Send the status line and headers one byte every ``interval_s`` (each read sees progress), then the body."""
    return Fault(header_drip_interval_s=interval_s)


Handler = Callable[[Recorded], Response]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    script: deque[Fault] = field(default_factory=deque)
    always: Fault | None = None


class FakeServer:
    """An HTTP/1.1 keep-alive server on 127.0.0.1:0 in a background thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._routes: list[_Route] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self.requests: list[Recorded] = []
        self._rng = random.Random(0)
        owner = self

        class _Handler(_RequestHandler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer((host, 0), _Handler)
        self._httpd.daemon_threads = False  # so server_close() joins every handler thread
        self.host, self.port = self._httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fakeserver-{self.port}", daemon=True)
        self._thread.start()

    # -- configuration -------------------------------------------------------------------

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer ``method path`` with ``handler(request)``; ``{name}`` matches one segment.

        Routing the same method and path again replaces the handler (scripts are kept).
        """
        with self._lock:
            for route in self._routes:
                if route.method == method.upper() and route.pattern.pattern == _regex(path):
                    route.handler = handler
                    return
            self._routes.append(_Route(method.upper(), re.compile(_regex(path)), handler))

    def script(self, method: str, path: str, *faults: Fault) -> None:
        """Apply ``faults`` to the next matching requests, one each, in order."""
        self._find_route(method, path).script.extend(faults)

    def always(self, method: str, path: str, fault: Fault | None) -> None:
        """Apply ``fault`` to every matching request (``None`` removes it)."""
        self._find_route(method, path).always = fault

    def count(self, method: str, path_prefix: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.method == method.upper() and r.path.startswith(path_prefix))

    def close(self) -> None:
        """Stop serving, cut open connections and join every thread."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _find_route(self, method: str, path: str) -> _Route:
        with self._lock:
            for route in self._routes:
                if route.method == method.upper() and route.pattern.pattern == _regex(path):
                    return route
        raise KeyError(f"no route {method} {path}; add it with route() first")

    def _dispatch(self, req: Recorded) -> tuple[Fault | None, Response]:
        with self._lock:
            self.requests.append(req)
            for route in self._routes:
                match = route.pattern.match(req.path)
                if route.method == req.method and match:
                    req.params = match.groupdict()
                    fault = route.script.popleft() if route.script else route.always
                    handler = route.handler
                    break
            else:
                return None, Response(404, json={"error": f"no route {req.method} {req.path}"})
        if fault is not None and fault.response is not None:
            return fault, fault.response
        return fault, handler(req)

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server is closing; True if it is."""
        return self._closing.wait(seconds) if seconds > 0 else self._closing.is_set()

    def _random(self, low: float, high: float) -> float:
        with self._lock:
            return self._rng.uniform(low, high)


def _regex(path: str) -> str:
    return "^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_owner: FakeServer
    timeout = 30

    def setup(self) -> None:
        super().setup()
        with self.server_owner._lock:
            self.server_owner._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server_owner._lock:
            self.server_owner._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return None

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        owner = self.server_owner
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        req = Recorded(self.command, split.path, parse_qs(split.query),
                       {k.lower(): v for k, v in self.headers.items()}, data)
        fault, response = owner._dispatch(req)
        fault = fault or Fault()
        wait = fault.delay_s + (owner._random(*fault.random_delay_s) if fault.random_delay_s else 0.0)
        if owner._wait(wait):
            return self._abort()
        if fault.reset_after_bytes == 0:
            return self._abort()
        payload, content_type = response.encode()
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        try:
            if fault.header_drip_interval_s is not None:
                head, self._headers_buffer = b"".join(self._headers_buffer) + b"\r\n", []
                for i in range(len(head)):
                    self.wfile.write(head[i : i + 1])
                    self.wfile.flush()
                    if owner._wait(fault.header_drip_interval_s):
                        return self._abort()
            else:
                self.end_headers()
            if fault.reset_after_bytes is not None:
                self.wfile.write(payload[: fault.reset_after_bytes])
                return self._abort()
            if fault.drip_interval_s is not None:
                for i in range(0, len(payload), fault.drip_chunk):
                    self.wfile.write(payload[i : i + fault.drip_chunk])
                    if owner._wait(fault.drip_interval_s):
                        return self._abort()
                return None
            self.wfile.write(payload)
        except OSError:  # the client gave up: that is what several tests provoke
            self.close_connection = True
        return None

    def _abort(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), the way a crashed upstream does."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
