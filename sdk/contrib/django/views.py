"""The five endpoints as async Django views; the blocking work runs in worker threads.

``POST generate/`` · ``POST edit/`` · ``POST feedback/<request_id>/`` · ``GET trace/<request_id>/`` ·
``GET metrics/``

``POST generate/`` and ``POST edit/`` with ``"stream": true`` answer with server-sent events
(served as they come under ASGI; :mod:`pixelroute.contrib._sse`).

Bodies, SLA headers, statuses and error bodies are the Flask blueprint's (:mod:`pixelroute.contrib._http`).
The views are CSRF-exempt API endpoints that only accept ``application/json`` bodies, which a
cross-site HTML form cannot send, but for multipart edits, which pass Django's CSRF check; every
request passes the permission check first (``pixelroute.edit`` for edits).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from ..._streams import stream_threaded
from ...events import Event, Listener
from .. import _http, _sse
from . import get_client

logger = logging.getLogger("pixelroute.django")

View = Callable[..., Awaitable[HttpResponse]]


def default_permission_check(request: HttpRequest, action: str) -> bool:
    """Django auth: anonymous -> 401, lacking ``pixelroute.<action>`` -> 403."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise _http.unauthorized(f"authentication required to `{action}`")
    return bool(user.has_perm(f"pixelroute.{action}"))


def _permission_check() -> Callable[[HttpRequest, str], bool]:
    from django.conf import settings

    target = getattr(settings, "PIXELROUTE_PERMISSION_CHECK", None)
    if target is None:
        return default_permission_check
    if callable(target):
        return target
    check: Callable[[HttpRequest, str], bool] = _http.load_callable(
        str(target), "PIXELROUTE_PERMISSION_CHECK"
    )
    return check


def endpoint(action: str) -> Callable[[View], View]:
    """Permission check first, then the view; every ``PixelrouteError`` becomes its JSON error."""

    def wrap(view: View) -> View:
        async def run(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                allowed = await sync_to_async(_permission_check())(request, action)
                if not allowed:
                    raise _http.forbidden(action)
                return await view(request, *args, **kwargs)
            except _http.PixelrouteError as exc:
                status, body, headers = _http.error_response(exc)
                if status >= 500:
                    logger.error("pixelroute request failed: %s", _http.redact(str(exc)))
                return JsonResponse(body, status=status, headers=headers)

        run.__name__ = view.__name__
        run.__doc__ = view.__doc__
        return run

    return wrap


def _json_body(request: HttpRequest) -> Any:
    if request.content_type != "application/json":
        raise _http.ValidationError(
            f"`Content-Type` must be application/json but is {request.content_type!r}",
            field="Content-Type",
            value=request.content_type,
        )
    return _http.parse_json(request.body)


def _in_thread(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    # the client is thread-safe; don't serialise generations on Django's single sync thread
    return sync_to_async(fn, thread_sensitive=False)


@csrf_exempt
@require_POST
@endpoint("generate")
async def generate(request: HttpRequest) -> HttpResponse:
    """Generate images: JSON body in; base64 JSON (default) or PNG (``Accept: image/png``) out."""
    call = _http.parse_generate(_json_body(request), request.headers, request.headers.get("Accept"))
    client = await _in_thread(get_client)()
    if call.stream:
        def run(listener: Listener, token: Any) -> Any:
            return client.generate(call.prompt, cancel=token, on_progress=listener, **call.kwargs())

        return await _streamed(run)
    return await _answer(await _in_thread(client.generate)(call.prompt, **call.kwargs()), call)


@csrf_exempt
@require_POST
@endpoint("edit")
async def edit(request: HttpRequest) -> HttpResponse:
    """Edit an image: multipart (``image``, ``mask`` files and text fields) or JSON with base64 inputs.

    A multipart form can come from a cross-site page, so multipart requests pass Django's CSRF
    check (JSON ones, like every other view's, cannot and are exempt).
    """
    call = _http.parse_edit(await _in_thread(_edit_body)(request), request.headers, request.headers.get("Accept"))
    client = await _in_thread(get_client)()
    if call.stream:
        def run(listener: Listener, token: Any) -> Any:
            return client.edit(call.image, call.prompt, cancel=token, on_progress=listener, **call.kwargs())

        return await _streamed(run)
    return await _answer(await _in_thread(client.edit)(call.image, call.prompt, **call.kwargs()), call)


def _edit_body(request: HttpRequest) -> Any:
    _http.check_body_size(request.headers.get("Content-Length"))
    if request.content_type != "multipart/form-data":
        return _json_body(request)
    from django.middleware.csrf import CsrfViewMiddleware

    if CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {}) is not None:
        raise _http.HTTPError(403, "CSRF verification failed: a multipart edit needs Django's CSRF token "
                              "(or send JSON)", type_="permission_error", code="csrf_failed")
    files = [(name, f.read()) for name, items in request.FILES.lists() for f in items]
    return _http.form_body([(k, v) for k, values in request.POST.lists() for v in values], files)


async def _answer(result: Any, call: _http.GenerateCall) -> HttpResponse:
    headers = _http.result_headers(result)
    if call.response_format == "png":
        png = await _in_thread(_http.png_bytes)(result.images[0])
        return HttpResponse(png, content_type="image/png", headers=headers)
    return JsonResponse(await _in_thread(_http.result_json)(result), headers=headers)


async def _streamed(run: Callable[[Listener, Any], Any]) -> HttpResponse:
    """Server-sent events; the first is awaited so validation and routing errors keep their status."""
    events = stream_threaded(run)
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise

    async def body() -> AsyncIterator[str]:
        event: Event | None = first
        try:
            while event is not None:
                yield await _in_thread(_sse.event_frame)(event)  # PNG encoding off the event loop
                event = await anext(events, None)
        except Exception as exc:  # the status line has gone: the error travels as an event
            logger.error("pixelroute stream failed: %s", _http.redact(f"{type(exc).__name__}: {exc}"))
            yield _sse.error_frame(exc)
        finally:
            await events.aclose()  # a client that went away cancels the call

    headers = {**_sse.STREAM_HEADERS, _http.REQUEST_ID_HEADER: first.request_id}
    return StreamingHttpResponse(body(), content_type=_sse.MEDIA_TYPE, headers=headers)


@csrf_exempt
@require_POST
@endpoint("feedback")
async def feedback(request: HttpRequest, request_id: str) -> HttpResponse:
    """Record a person's correction time and verdict for a request."""
    seconds, verdict = _http.parse_feedback(_json_body(request))
    client = await _in_thread(get_client)()
    await _in_thread(client.report_correction)(request_id, seconds, verdict)
    return JsonResponse({"request_id": request_id, "seconds": seconds, "verdict": verdict})


@require_GET
@endpoint("trace")
async def trace(request: HttpRequest, request_id: str) -> HttpResponse:
    """The stored trace of a request."""
    client = await _in_thread(get_client)()
    return JsonResponse(await _in_thread(client.trace)(request_id))


@require_GET
@endpoint("metrics")
async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition."""
    client = await _in_thread(get_client)()
    text = await _in_thread(client.metrics_text)()
    return HttpResponse(text, content_type="text/plain; version=0.0.4")
