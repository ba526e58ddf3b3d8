"""The gateway's ``stream: true`` answer: a generation's events as OpenAI's image-streaming events.

OpenAI's images API streams ``text/event-stream`` events whose JSON carries a ``type``:
``image_generation.partial_image`` (``b64_json``, ``partial_image_index``, ``size``, ``quality``,
``background``, ``output_format``, ``created_at``) while the image is made, then
``image_generation.completed`` (the same without the index, plus ``usage``); edits stream the same
events as ``image_edit.partial_image`` and ``image_edit.completed`` (the official client's
``ImageEditPartialImageEvent``/``ImageEditCompletedEvent``); ``partial_images``
(0-3) asks for that many partial images, and "the final image may be sent before the full number
of partial images" (the official client's ``ImageGenPartialImageEvent``/``ImageGenCompletedEvent``
types and ``partial_images`` docstring; the API reference's "Image Streaming" page). Here:

- partial images are a local pipeline's decoded intermediate latents (:mod:`pixelroute.events`);
  a remote backend makes none, which those semantics allow;
- ``n`` > 1 sends one ``completed`` event per image (so do the OpenAI-compatible servers we read;
  what OpenAI itself sends for ``n`` > 1 is unverified), and a partial image per requested image,
  each with pixelroute's ``image_index``;
- each frame has an ``event:`` line naming its type beside the ``data:`` line (as the
  OpenAI-compatible servers we read do; whether OpenAI sends ``event:`` lines is unverified, and
  its client reads only ``data:``); no ``[DONE]`` line is sent;
- ``usage`` is all zeros (no tokens are counted), ``quality`` is ``auto``, ``background`` is
  ``opaque`` and ``output_format`` ``png``; ``completed`` adds pixelroute's ``request_id``,
  ``backend``, ``cost_usd`` and ``latency_s``;
- with ``progress_events: true`` pixelroute's own events come too, as ``pixelroute.<type>``
  (``pixelroute.decided``, ``pixelroute.step``, ...); off by default, because strictly typed
  clients refuse types they do not know;
- a failure once the stream has started is an ``error`` event whose data is the usual error
  body ``{"error": {...}}``, which the official client raises as ``APIError``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from .contrib import _http, _sse
from .events import Done, Event, Step, to_dict

#: images above this many pixels are PNG-encoded off the event loop
ENCODE_INLINE_PIXELS = 256 * 256
_ZERO_USAGE = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
               "output_tokens": 0, "total_tokens": 0}


async def openai_frames(first: Event, events: AsyncGenerator[Event, None], *, progress_events: bool,
                        kind: str = "image_generation") -> AsyncIterator[str]:
    """The SSE body: ``first`` (already received, so routing errors got their own status) and the rest.

    ``kind`` prefixes the event types: ``image_generation`` or, for ``/v1/images/edits``, ``image_edit``.
    """
    try:
        event: Event | None = first
        while event is not None:
            for item in await _frames(event, progress_events, kind):
                yield item
            event = await anext(events, None)
    except Exception as exc:  # the status line has gone: the error travels as an event
        yield _sse.error_frame(exc)
    finally:
        await events.aclose()  # leaving early cancels the generation


async def _frames(event: Event, progress_events: bool, kind: str) -> list[str]:
    out = [_sse.frame(f"pixelroute.{event.type}", {**to_dict(event), "type": f"pixelroute.{event.type}"})
           ] if progress_events else []
    if isinstance(event, Step) and event.previews:
        images = list(event.previews)
        encoded = await _encoded(images)
        out += [_sse.frame(f"{kind}.partial_image", {
            **_common(img, b64), "type": f"{kind}.partial_image",
            "partial_image_index": event.preview_index, "image_index": i, "request_id": event.request_id,
        }) for i, (img, b64) in enumerate(zip(images, encoded, strict=True))]
    elif isinstance(event, Done):
        result = event.result
        encoded = await _encoded(result.images)
        out += [_sse.frame(f"{kind}.completed", {
            **_common(img, b64), "type": f"{kind}.completed", "usage": _ZERO_USAGE, "image_index": i,
            "request_id": result.request_id, "backend": result.backend, "cost_usd": result.cost_usd,
            "latency_s": result.latency_s,
        }) for i, (img, b64) in enumerate(zip(result.images, encoded, strict=True))]
    return out


def _common(image: Any, b64: str) -> dict[str, Any]:
    width, height = image.size
    return {"b64_json": b64, "created_at": int(time.time()), "size": f"{width}x{height}", "quality": "auto",
            "background": "opaque", "output_format": "png"}


async def _encoded(images: list[Any]) -> list[str]:
    if sum(w * h for w, h in (img.size for img in images)) > ENCODE_INLINE_PIXELS:
        return await asyncio.to_thread(_b64, images)
    return _b64(images)


def _b64(images: list[Any]) -> list[str]:
    return [base64.b64encode(_http.png_bytes(img)).decode("ascii") for img in images]
