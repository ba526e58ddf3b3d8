"""A recording handler for ``httpx.MockTransport``: the exact-wire tests of every protocol use it."""

from __future__ import annotations

from typing import Any

import httpx


class Recorder:
    """A MockTransport handler that records requests and answers like the provider."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.answer(request) if callable(self.answer) else self.answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]
