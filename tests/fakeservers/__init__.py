"""Local fault-injecting HTTP servers for tests: real sockets on 127.0.0.1, one thread each.

::

    with FakeServer() as server:                       # listening on 127.0.0.1:<free port>
        server.route("POST", "/v1/images/generations", lambda req: Response(json={"data": []}))
        server.script("POST", "/v1/images/generations", status(500), delay(0.2))  # next two requests
        ... point a backend's base_url at server.url ...
        server.requests                                 # every request seen, in order

A route's ``path`` may hold ``{name}`` placeholders (one path segment each). A script is a
queue of :class:`Fault` consumed one per matching request; when it is empty the route answers
normally. ``server.always(...)`` installs a fault for every request. Faults: :func:`delay`,
:func:`random_delay`, :func:`status`, :func:`body`, :func:`reset`, :func:`reset_mid_body`,
:func:`slow_drip`, :func:`slow_headers`. Provider-shaped routes live in :mod:`tests.fakeservers.providers`.
"""

from __future__ import annotations

from ._server import (
    FakeServer,
    Fault,
    Recorded,
    Response,
    body,
    delay,
    random_delay,
    reset,
    reset_mid_body,
    slow_drip,
    slow_headers,
    status,
)

__all__ = [
    "FakeServer",
    "Fault",
    "Recorded",
    "Response",
    "body",
    "delay",
    "random_delay",
    "reset",
    "reset_mid_body",
    "slow_drip",
    "slow_headers",
    "status",
]
