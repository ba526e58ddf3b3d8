"""An OpenAI-compatible HTTP gateway over :class:`~pixelroute.AsyncClient` (``pixelroute serve``).

Any language's OpenAI client can use the router::

    from openai import OpenAI
    oai = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=os.environ["PIXELROUTE_GATEWAY_KEY"])
    img = oai.images.generate(model="auto", prompt="a red bicycle", size="1024x1024",
                              response_format="b64_json",
                              extra_body={"sla": {"deadline_s": 8, "max_cost_usd": 0.05}, "seed": 7})

Endpoints:

============================================  ====================================================
``POST /v1/images/generations``               OpenAI's images API; ``model: "auto"`` routes, a
                                              backend name pins; ``size`` ``"WxH"``; ``n``;
                                              ``response_format`` ``b64_json``; ``stream`` and
                                              ``partial_images`` (0-3) answer with server-sent
                                              events (:mod:`pixelroute._gateway_stream`). Extra
                                              body keys: ``sla``, ``seed``, ``steps``,
                                              ``guidance``, ``negative_prompt``, ``scheduler``,
                                              ``progress_events``.
``POST /v1/images/edits``                     OpenAI's multipart edit: ``image`` (one file),
                                              ``mask`` (transparent = edit), the generation
                                              fields, ``strength``; routed to ``edit()``;
                                              ``stream`` sends ``image_edit.*`` events
``POST /v1/images/variations``                a clear 400: no backend kind makes variations
``POST /v1/feedback/{request_id}``            ``{"seconds": 42.0, "verdict": "edited"}``
``GET /v1/trace/{request_id}``                the stored trace
``GET /v1/models``                            ``auto`` and every configured backend
``GET /v1/models/{id}``                       one of those; 404 ``model_not_found`` otherwise
``GET /metrics``                              Prometheus text
``GET /healthz``                              liveness (no auth); backend names, breaker
                                              states and which are loaded only with the key,
                                              or for everyone when built with
                                              ``public_health_details=True``
============================================  ====================================================

The SLA also comes from the ``X-Pixelroute-Deadline`` / ``X-Pixelroute-Max-Cost`` headers.
Every request but ``/healthz`` needs ``Authorization: Bearer <key>``; with no key configured
the gateway refuses everything unless built with ``allow_anonymous=True``. Errors have
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, with ``x-should-retry``
saying whether a retry can help (statuses and the retry rule in :mod:`pixelroute.contrib._http`).
``response_format: "url"`` is refused: the gateway keeps no images.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from ._errors import ValidationError
from ._gateway_stream import ENCODE_INLINE_PIXELS, openai_frames
from ._shown import shown
from .contrib import _http, _sse

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from ._client import AsyncClient, ConfigSource
    from .events import Event

logger = logging.getLogger("pixelroute.gateway")

#: OpenAI parameters we accept; anything else is refused by name rather than silently ignored
_OPENAI_KEYS = {"prompt", "model", "n", "size", "response_format", "user", "output_format", "stream",
                "partial_images"}
_EXTENSION_KEYS = {"sla", "seed", "steps", "guidance", "negative_prompt", "scheduler", "progress_events"}
#: OpenAI's range for ``partial_images``
_MAX_PARTIAL_IMAGES = 3
#: ``"WIDTHxHEIGHT"`` in ASCII digits; five digits are past every backend's limit, and the bound
#: keeps ``int()`` away from 5,000-digit strings (it refuses past 4,300)
_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})\Z")


def create_app(
    config: ConfigSource = None,
    *,
    client: AsyncClient | None = None,
    api_key: str | None = None,
    allow_anonymous: bool = False,
    public_health_details: bool = False,
    close_client: bool = False,
) -> Starlette:
    """The Starlette app. It builds an :class:`AsyncClient` from ``config`` at startup (unless
    ``client`` is given) and closes it at shutdown; a ``client`` you pass stays yours to close,
    unless ``close_client=True`` hands it over (``pixelroute serve`` builds the client before the
    server starts, so a bad config is a one-line error rather than a failed startup).

    ``GET /healthz`` needs no key and answers ``{"status": "ok"}``; the backend names, their
    breaker states and which are loaded are added only for callers that send the key (or in
    anonymous mode), unless ``public_health_details=True`` shows them to everyone (a load
    balancer that reads them).

    With ``[execution] preload = true`` startup also loads every backend's pipeline, so the
    server accepts no request before it is warm (and does not start if a pipeline fails to load).
    """
    from ._extras import optional_imports

    with optional_imports("pixelroute.gateway"):
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

    state: dict[str, Any] = {"client": client}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        build = state["client"] is None
        owned = build or close_client
        if build:
            from ._client import AsyncClient

            state["client"] = await asyncio.to_thread(AsyncClient, config)
        try:
            started: AsyncClient = state["client"]
            if started.settings.execution.preload:
                took = await started.warmup()
                logger.info("preloaded %s", ", ".join(f"{n} in {s:.2f} s" for n, s in took.items()))
            yield
        finally:
            if owned:
                await state["client"].aclose()

    def current() -> AsyncClient:
        c: AsyncClient | None = state["client"]
        if c is None:
            raise _http.HTTPError(503, "the gateway is starting", type_="server_error", code="starting")
        return c

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                _authorize(request, api_key, allow_anonymous)
                return await handler(request)
            except Exception as exc:  # every failure leaves as an OpenAI-style error body
                return _error(exc)

        return endpoint

    async def generations(request: Request) -> Response:
        client = current()
        body = _http.parse_json(await request.body())
        with _size_named(body):
            call = _openai_call(body, request.headers, client)
            if call.stream:
                return await _streamed(client.stream(call.prompt, **call.kwargs()), _progress_events(body))
            result = await client.generate(call.prompt, **call.kwargs())
        return await _answer(result)

    async def edits(request: Request) -> Response:
        client = current()
        body = await _edit_form(request)
        inputs = {k: body.pop(k) for k in _http.EDIT_KEYS if k in body}
        with _size_named(body):
            call = _openai_call(body, request.headers, client, inputs)
            assert isinstance(call, _http.EditCall)
            if call.mask is not None:
                call.mask = await asyncio.to_thread(_openai_mask, call.mask)
            if call.stream:
                events = client.stream_edit(call.image, call.prompt, **call.kwargs())
                return await _streamed(events, _progress_events(body), kind="image_edit")
            result = await client.edit(call.image, call.prompt, **call.kwargs())
        return await _answer(result)

    async def variations(request: Request) -> Response:
        await request.body()  # read (and drop) the upload, so the connection stays usable
        names = ", ".join(current().backends)
        raise _http.HTTPError(
            400,
            f"`POST /v1/images/variations` is not supported: no configured backend ({names}) makes variations",
            type_="invalid_request_error",
            code="unsupported",
            param="model",
        )

    async def feedback(request: Request) -> Response:
        client = current()
        request_id = request.path_params["request_id"]
        seconds, verdict = _http.parse_feedback(_http.parse_json(await request.body()))
        await asyncio.to_thread(client.report_correction, request_id, seconds, verdict)
        return _json({"request_id": request_id, "seconds": seconds, "verdict": verdict}, 200)

    async def trace(request: Request) -> Response:
        return _json(await asyncio.to_thread(current().trace, request.path_params["request_id"]), 200)

    async def models(request: Request) -> Response:
        names = ["auto", *current().backends]
        return _json({"object": "list", "data": [_model(n) for n in names]}, 200)

    async def model(request: Request) -> Response:
        name = request.path_params["model"]
        if name != "auto" and name not in current().backends:
            raise _http.HTTPError(
                404,
                f"the model {shown(name)} does not exist: `model` must be auto or one of "
                f"{', '.join(current().backends)}",
                type_="invalid_request_error",
                code="model_not_found",
                param="model",
            )
        return _json(_model(name), 200)

    async def metrics(request: Request) -> Response:
        from starlette.responses import PlainTextResponse

        text = await asyncio.to_thread(current().metrics_text)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def healthz(request: Request) -> Response:
        try:
            client = current()
            if not (public_health_details or _authorized(request, api_key, allow_anonymous)):
                # backend names and breaker states tell a stranger what we run and what is failing
                return _json({"status": "ok"}, 200)
            loaded = {name: b.loaded for name, b in client.backends.items()}
            return _json({"status": "ok", "backends": client.health(), "loaded": loaded}, 200)
        except Exception as exc:
            return _error(exc)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        err = _http.HTTPError(
            status,
            f"{request.method} {request.url.path}: {exc}",
            type_="invalid_request_error",
            code="not_found" if status == 404 else "http_error",
        )
        return _error(err)

    routes = [
        Route("/v1/images/generations", guarded(generations), methods=["POST"]),
        Route("/v1/images/edits", guarded(edits), methods=["POST"]),
        Route("/v1/images/variations", guarded(variations), methods=["POST"]),
        Route("/v1/feedback/{request_id}", guarded(feedback), methods=["POST"]),
        Route("/v1/trace/{request_id}", guarded(trace), methods=["GET"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/models/{model:path}", guarded(model), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_found})


def _authorize(request: Request, api_key: str | None, allow_anonymous: bool) -> None:
    if api_key is None:
        if allow_anonymous:
            return
        raise _http.unauthorized("authentication required: the gateway has no API key configured")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _http.unauthorized("authentication required: send `Authorization: Bearer <key>`")
    if not hmac.compare_digest(token.encode(), api_key.encode()):
        raise _http.HTTPError(
            401, "the API key is not valid", type_="authentication_error", code="invalid_api_key"
        )


def _authorized(request: Request, api_key: str | None, allow_anonymous: bool) -> bool:
    try:
        _authorize(request, api_key, allow_anonymous)
    except _http.HTTPError:
        return False
    return True


def _openai_call(body: Any, headers: Any, client: AsyncClient, inputs: dict[str, Any] | None = None
                 ) -> _http.GenerateCall:
    """Translate an OpenAI images body into pixelroute's, so one parser validates both.

    ``inputs`` (an edit's ``image``, ``mask`` and ``strength``) make it an :class:`~pixelroute.contrib._http.EditCall`.
    """
    if not isinstance(body, dict):
        raise ValidationError(
            f"`body` must be a JSON object but is {type(body).__name__}", field="body", value=body
        )
    unknown = sorted(set(body) - _OPENAI_KEYS - _EXTENSION_KEYS)
    if unknown:
        raise ValidationError(
            f"`{unknown[0]}` is not supported by the pixelroute gateway; supported: "
            f"{', '.join(sorted(_OPENAI_KEYS | _EXTENSION_KEYS))}",
            field=unknown[0],
            value=body[unknown[0]],
        )
    fmt = body.get("response_format") or "b64_json"
    if fmt != "b64_json":
        raise ValidationError(
            f"`response_format` must be b64_json (the gateway keeps no images) but is {shown(fmt)}",
            field="response_format",
            value=fmt,
        )
    if body.get("output_format") not in (None, "png"):
        raise ValidationError(
            f"`output_format` must be png but is {shown(body['output_format'])}",
            field="output_format",
            value=body["output_format"],
        )
    inner = {k: body[k] for k in _EXTENSION_KEYS - {"progress_events"} | {"prompt", "n", "stream"} if k in body}
    partial = body.get("partial_images")
    if partial is not None:
        if isinstance(partial, bool) or not isinstance(partial, int) or not 0 <= partial <= _MAX_PARTIAL_IMAGES:
            raise ValidationError(
                f"`partial_images` must be an integer from 0 to {_MAX_PARTIAL_IMAGES} but is {shown(partial)}",
                field="partial_images",
                value=partial,
            )
        if partial and body.get("stream") is not True:
            raise ValidationError(
                f"`partial_images` needs `stream: true` (partial images are streamed) but is {partial} without it",
                field="partial_images",
                value=partial,
            )
        inner["previews"] = partial
    if body.get("progress_events") and body.get("stream") is not True:
        raise ValidationError(
            "`progress_events` needs `stream: true` (the events are streamed)",
            field="progress_events",
            value=body["progress_events"],
        )
    model = body.get("model")
    if model is not None and model != "auto":
        # a list or an object is unhashable: test the type before looking it up
        if not isinstance(model, str) or model not in client.backends:
            raise ValidationError(
                f"`model` must be auto or one of {', '.join(client.backends)} but is {shown(model)}",
                field="model",
                value=model,
            )
        inner["backend"] = model
    inner.update(_size(body.get("size")))
    if inputs is not None:
        return _http.parse_edit({**inner, **inputs}, headers)
    return _http.parse_generate(inner, headers)


@contextmanager
def _size_named(body: Any) -> Iterator[None]:
    """A width or height the caller wrote as ``size`` is refused naming ``size``."""
    try:
        yield
    except ValidationError as exc:
        if exc.field in ("width", "height") and isinstance(body, dict):
            raise ValidationError(
                f"`size` {shown(body.get('size'))} is not accepted: {exc}", field="size", value=body.get("size")
            ) from None
        raise


async def _answer(result: Any) -> Response:
    if sum(w * h for w, h in (img.size for img in result.images)) > ENCODE_INLINE_PIXELS:
        answer = await asyncio.to_thread(_http.result_json, result)
    else:
        answer = _http.result_json(result)
    return _json(answer, 200, _http.result_headers(result))


async def _edit_form(request: Request) -> dict[str, Any]:
    """The multipart body of ``/v1/images/edits``, bounded in size, as :func:`_http.form_body` types it.

    The body is read up to :data:`~pixelroute.contrib._http.MAX_EDIT_BODY_BYTES` (refused by its
    ``Content-Length`` first, and while reading when it has none), then parsed from memory.
    """
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    _http.check_body_size(request.headers.get("content-length"))
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ValidationError(
            f"`Content-Type` must be multipart/form-data (as OpenAI's images.edit sends) but is {shown(ctype)}",
            field="Content-Type", value=ctype,
        )
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > _http.MAX_EDIT_BODY_BYTES:
            raise _http.body_too_large(None)

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": bytes(data), "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=64, max_part_size=1_000_000)
    except HTTPException as exc:  # starlette's answer to a malformed form or too many parts
        raise ValidationError(f"`body` is not an acceptable multipart form: {exc.detail}", field="body",
                              value=None) from None
    files: list[tuple[str, bytes]] = []
    fields: list[tuple[str, str]] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields.append((name, value))
            else:
                files.append((name, await value.read()))
    finally:
        await form.close()
    return _http.form_body(fields, files)


def _openai_mask(data: Any) -> Any:
    """An OpenAI mask (transparent = edit) as pixelroute's (white = repaint), refused when it marks nothing."""
    from PIL import ImageOps

    from ._edit import MAX_INPUT_PIXELS
    from .backends._http_safety import UnsafeImage, open_untrusted_image

    try:
        image = open_untrusted_image(data, MAX_INPUT_PIXELS, what="it")
    except UnsafeImage as exc:
        raise ValidationError(f"`mask` is not an acceptable PNG image: {exc.why}", field="mask",
                              value=f"{len(data)} bytes") from exc
    if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
        raise ValidationError(
            "`mask` must be a PNG with an alpha channel (OpenAI's convention: transparent pixels mark the "
            f"area to edit) but is {image.mode} without one", field="mask", value=image.mode,
        )
    alpha = image.convert("RGBA").getchannel("A")
    if alpha.getextrema()[0] == 255:
        raise ValidationError("`mask` must have transparent pixels (the area to edit) but is fully opaque",
                              field="mask", value="opaque")
    return ImageOps.invert(alpha)


def _progress_events(body: dict[str, Any]) -> bool:
    """pixelroute's own events in the stream too (``progress_events``, an extension: off by default)."""
    value = body.get("progress_events", False)
    if not isinstance(value, bool):
        raise ValidationError(
            f"`progress_events` must be true or false but is {shown(value)}", field="progress_events", value=value
        )
    return value


async def _streamed(events: AsyncGenerator[Event, None], progress_events: bool, kind: str = "image_generation"
                    ) -> Response:
    """``stream: true``: wait for the first event, so validation and routing errors keep their status."""
    from starlette.responses import StreamingResponse

    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise
    headers = {**_sse.STREAM_HEADERS, _http.REQUEST_ID_HEADER: first.request_id}
    return StreamingResponse(openai_frames(first, events, progress_events=progress_events, kind=kind),
                             media_type=_sse.MEDIA_TYPE, headers=headers)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "pixelroute"}


def _size(size: Any) -> dict[str, int]:
    if size in (None, "auto"):
        return {}
    if isinstance(size, str):
        match = _SIZE.match(size.lower())
        if match:
            return {"width": int(match[1]), "height": int(match[2])}
    raise ValidationError(
        f'`size` must be "WIDTHxHEIGHT" (e.g. "1024x1024") or auto but is {shown(size)}', field="size", value=size
    )


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)


def _error(exc: BaseException) -> Response:
    status, body, headers = _http.error_response(exc)
    if status >= 500:
        logger.error("gateway request failed: %s", _http.redact(f"{type(exc).__name__}: {exc}"))
    return _json(body, status, headers)


__all__ = ["create_app"]
