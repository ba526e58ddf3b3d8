"""Integrations where users live: Flask, Django, task queues (the HTTP gateway is ``sdk.gateway``).

Each integration imports its framework lazily, so ``import sdk.contrib`` costs nothing. The
request parsing, error mapping and image encoding they share live in :mod:`sdk.contrib._http`,
so a request means the same thing and an error gets the same status and body everywhere.
"""

__all__: list[str] = []
