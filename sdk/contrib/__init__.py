"""Integrations where users live: Flask, Django, task queues (the HTTP gateway is ``pixelroute.gateway``).

Each integration imports its framework lazily, so ``import pixelroute.contrib`` costs nothing. The
request parsing, error mapping and image encoding they share live in :mod:`pixelroute.contrib._http`,
so a request means the same thing and an error gets the same status and body everywhere.
"""

__all__: list[str] = []
