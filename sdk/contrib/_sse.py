"""Server-sent events for the streaming endpoints: framing, pixelroute's own events, the error event.

The Flask blueprint and the Django views stream a generation as pixelroute's events (``POST
generate`` with ``"stream": true``)::

    event: decided
    data: {"type": "decided", "request_id": "...", "attempt": 0, "backend": "local-fast", "why": "..."}

    event: step
    data: {"type": "step", ..., "step": 2, "steps": 4, "previews": 1, "preview_index": 0,
           "preview_b64": ["iVBORw0..."]}

    event: done
    data: {"type": "done", "created": ..., "data": [{"b64_json": "..."}], "request_id": "...", ...}

``done`` carries the same JSON as a non-streamed answer; a failure after the stream started is
``event: error`` with the usual error body ``{"error": {...}}``. The gateway uses the same framing
with OpenAI's event names (:mod:`pixelroute.gateway`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..events import Done, Event, Step, to_dict
from . import _http

#: response headers of every event stream: no caching, and no buffering by a proxy (nginx honours
#: ``X-Accel-Buffering``), so each event reaches the client when it is sent
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MEDIA_TYPE = "text/event-stream"


def frame(name: str, data: dict[str, Any]) -> str:
    """One event: its name and its JSON on a single ``data:`` line (JSON never holds a raw newline)."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def error_frame(exc: BaseException) -> str:
    """A failure after the stream started: the error body an unstreamed request would have had."""
    _, body, _ = _http.error_response(exc)
    return frame("error", body)


def event_data(event: Event) -> dict[str, Any]:
    """A pixelroute event as JSON: partial images and the result's images as base64 PNG."""
    if isinstance(event, Done):
        return {"type": "done", **_http.result_json(event.result)}
    data = to_dict(event)
    if isinstance(event, Step) and event.previews:
        data["preview_b64"] = [base64.b64encode(_http.png_bytes(img)).decode("ascii") for img in event.previews]
    return data


def event_frame(event: Event) -> str:
    return frame(event.type, event_data(event))
