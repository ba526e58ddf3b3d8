"""What the Flask, Django and gateway endpoints share: request parsing, error bodies, image encoding.

Framework-free on purpose: each integration turns its request into ``(body, headers)``, calls
these functions and turns ``(status, body)`` back into its own response type.

Error bodies follow OpenAI's shape so every client sees one format::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "sla.deadline_s",
               "code": "validation"}}

Status codes: ``ValidationError`` and ``ContentRejected`` 400, auth 401/403, ``UnknownRequest``
404, ``NoFeasibleBackend`` 422 (the body lists the candidates and why each failed the SLA),
``RateLimited`` 429, ``ConfigError`` 500, other backend errors 502, ``BackendUnavailable``
and ``Cancelled`` 503, ``DeadlineExceeded`` 504.

Every error but an unexpected 500 also says whether retrying can help, in the header OpenAI's
clients obey (``x-should-retry``; they otherwise retry 408, 409, 429 and every 5xx twice): ``true``
for 429, 503 and upstream 502s, ``false`` for the rest. A 504 is ``false`` on purpose: the call
already spent its whole deadline (and may have been charged), and a retry would run the same SLA
again and could be charged again. ``QuotaExceeded`` (502) is ``false``: spent credit does not
come back by asking again.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .._edit import MAX_INPUT_BYTES
from .._errors import (
    BackendUnavailable,
    Cancelled,
    ConfigError,
    ContentRejected,
    DeadlineExceeded,
    NoFeasibleBackend,
    PixelrouteError,
    QuotaExceeded,
    RateLimited,
    UnknownRequest,
    ValidationError,
)
from .._redact import redact
from .._shown import shown

DEADLINE_HEADER = "X-Pixelroute-Deadline"
MAX_COST_HEADER = "X-Pixelroute-Max-Cost"
REQUEST_ID_HEADER = "X-Pixelroute-Request-Id"
#: OpenAI's clients obey it over their own retry rule (which would retry 504s twice)
SHOULD_RETRY_HEADER = "x-should-retry"
#: the statuses a retry can help: rate limits, a gateway starting or every backend's breaker
#: open, an upstream failure (not a missed deadline: see the module docstring)
RETRYABLE_STATUSES = frozenset({429, 502, 503})

#: body keys that map straight onto ``generate()`` keyword arguments
KNOBS = ("negative_prompt", "width", "height", "n", "steps", "guidance", "scheduler", "seed")
GENERATE_KEYS = frozenset({"prompt", "sla", "backend", "response_format", "stream", "previews", *KNOBS})
RESPONSE_FORMATS = ("b64_json", "png")
#: the actions an auth hook is asked about
ACTIONS = ("generate", "edit", "feedback", "trace", "metrics")
#: what an edit body adds to a generate body: the input image, its mask, how far it may move
EDIT_KEYS = frozenset({"image", "mask", "strength"})
#: the largest edit body: two inputs at the SDK's file limit plus room for the text fields
#: (refused by its ``Content-Length`` before anything is read; base64 JSON is 4/3 the size)
MAX_EDIT_BODY_BYTES = 2 * MAX_INPUT_BYTES * 4 // 3 + 1_000_000
#: knobs that take whole numbers, and the one that takes any number
INTEGER_KNOBS = frozenset({"width", "height", "n", "steps", "seed"})
NUMBER_KNOBS = frozenset({"guidance"})
#: no request body nests deeper than a few levels; refuse hostile nesting before anything walks it
MAX_JSON_DEPTH = 32
#: integer literals longer than this are read as :class:`LongNumber`: no field takes such a number
#: (a seed has at most 19 digits), and ``int()`` refuses strings past 4,300 digits with a ValueError
MAX_INT_DIGITS = 100


class LongNumber:
    """An integer literal too long for any field; validation refuses it naming the field."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"


@dataclass
class GenerateCall:
    """A validated ``POST /generate`` body: what to pass to ``generate()`` and how to answer."""

    prompt: str
    sla: dict[str, Any]
    knobs: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None
    response_format: str = "b64_json"
    #: answer with server-sent events (:mod:`pixelroute.contrib._sse`) instead of one JSON body
    stream: bool = False
    #: partial images asked for (streams only)
    previews: int = 0

    def kwargs(self) -> dict[str, Any]:
        extra = {"previews": self.previews} if self.previews else {}
        return {"sla": self.sla, "backend": self.backend, **self.knobs, **extra}


@dataclass
class EditCall(GenerateCall):
    """A validated edit body: a :class:`GenerateCall` plus the encoded input image, mask and strength."""

    image: bytes = b""
    mask: Any = None
    strength: float | None = None

    def kwargs(self) -> dict[str, Any]:
        return {**super().kwargs(), "mask": self.mask, "strength": self.strength}


class HTTPError(PixelrouteError):
    """An error that only exists at the HTTP layer (auth, unsupported media type)."""

    def __init__(self, status: int, message: str, *, type_: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.param = param


def unauthorized(message: str = "authentication required") -> HTTPError:
    return HTTPError(401, message, type_="authentication_error", code="unauthorized")


def forbidden(action: str) -> HTTPError:
    return HTTPError(
        403, f"not allowed to `{action}`", type_="permission_error", code="forbidden", param=None
    )


def parse_json(raw: bytes | str) -> Any:
    """Decode a request body; a clear 400 naming ``body`` when it is not JSON."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("`body` must be UTF-8 encoded JSON", field="body", value=None) from None
    if not raw.strip():
        raise ValidationError("`body` must be a JSON object but is empty", field="body", value="")
    try:
        value = json.loads(raw, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"`body` must be valid JSON but is not: {exc.msg} at line {exc.lineno} column {exc.colno}",
            field="body",
            value=raw[:80],
        ) from None
    except RecursionError:  # the decoder recurses once per level: 100,000 `[` exhaust the stack
        raise ValidationError(
            f"`body` must nest at most {MAX_JSON_DEPTH} levels deep but nests deeper than the parser can follow",
            field="body",
            value=None,
        ) from None
    depth = _depth(value)
    if depth > MAX_JSON_DEPTH:
        raise ValidationError(
            f"`body` must nest at most {MAX_JSON_DEPTH} levels deep but nests {depth}", field="body", value=None
        )
    return value


def _parse_int(text: str) -> int | LongNumber:
    return LongNumber(text) if len(text) > MAX_INT_DIGITS else int(text)


def _depth(value: Any) -> int:
    """How deep containers nest in ``value``, walked without recursion (stops past the limit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def parse_generate(body: Any, headers: Any, accept: str | None = None) -> GenerateCall:
    """Validate a generate body; the SLA comes from ``body["sla"]`` or, key by key, from the headers.

    A key in the body's ``sla`` beats the header of the same meaning. ``response_format`` beats
    ``Accept`` (``image/png`` asks for PNG); the default is base64 JSON.
    """
    if not isinstance(body, dict):
        raise ValidationError(
            f"`body` must be a JSON object but is {type(body).__name__}", field="body", value=body
        )
    unknown = sorted(set(body) - GENERATE_KEYS)
    if unknown:
        raise ValidationError(
            f"`{unknown[0]}` is not a known field; known: {', '.join(sorted(GENERATE_KEYS))}",
            field=unknown[0],
            value=body[unknown[0]],
        )
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ValidationError(f"`prompt` must be a string but is {shown(prompt)}", field="prompt", value=prompt)
    sla = sla_from(body.get("sla"), headers)
    backend = body.get("backend")
    if backend is not None and not isinstance(backend, str):
        raise ValidationError(
            f"`backend` must be a string but is {shown(backend)}", field="backend", value=backend
        )
    fmt = body.get("response_format")
    if fmt is None:
        fmt = "png" if accept and "image/png" in accept and "application/json" not in accept else "b64_json"
    if not isinstance(fmt, str) or fmt not in RESPONSE_FORMATS:
        raise ValidationError(
            f"`response_format` must be one of {', '.join(RESPONSE_FORMATS)} but is {shown(fmt)}",
            field="response_format",
            value=fmt,
        )
    knobs = {k: _knob(k, body[k]) for k in KNOBS if k in body}
    from .._types import build_request

    build_request(prompt=prompt, **knobs)  # every range refused here, before a client or a paid call
    if fmt == "png" and knobs.get("n", 1) > 1:
        raise ValidationError(
            "`response_format` png returns one image; ask for b64_json when `n` > 1",
            field="response_format",
            value=fmt,
        )
    stream, previews = _stream_options(body, fmt)
    return GenerateCall(prompt=prompt, sla=sla, knobs=knobs, backend=backend, response_format=fmt,
                        stream=stream, previews=previews)


def parse_edit(body: Any, headers: Any, accept: str | None = None) -> EditCall:
    """Validate an edit body: a generate body plus ``image`` (required), ``mask`` and ``strength``.

    ``image`` and ``mask`` are the files' bytes (a multipart upload) or base64 strings (JSON);
    the mask is pixelroute's (white = repaint). The images themselves are checked by ``edit()``.
    """
    if not isinstance(body, dict):
        raise ValidationError(
            f"`body` must be a JSON object but is {type(body).__name__}", field="body", value=body
        )
    if body.get("image") is None:
        raise ValidationError("`image` is required: the image to edit", field="image", value=None)
    image = _input_bytes(body["image"], "image")
    mask = None if body.get("mask") is None else _input_bytes(body["mask"], "mask")
    strength = body.get("strength")
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, int | float)):
        raise ValidationError(f"`strength` must be a number but is {shown(strength)}", field="strength",
                              value=strength)
    call = parse_generate({k: v for k, v in body.items() if k not in EDIT_KEYS}, headers, accept)
    return EditCall(**vars(call), image=image, mask=mask, strength=strength)


def _input_bytes(value: Any, field: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ValidationError(f"`{field}` must be a base64-encoded PNG, JPEG or WebP file but is not base64",
                                  field=field, value=f"{len(value)} characters") from None
    raise ValidationError(f"`{field}` must be a file upload or a base64 string but is {shown(value)}",
                          field=field, value=value)


def form_body(fields: Any, files: Any) -> dict[str, Any]:
    """A multipart edit form as a body :func:`parse_edit` reads: text fields typed, files as bytes.

    Form fields are all text; numbers and booleans are read here, naming the field when they are
    not one. ``sla[deadline_s]``-style fields (how the OpenAI client flattens ``extra_body``)
    build the ``sla`` object. ``fields`` and ``files`` are sequences of ``(name, text)`` and
    ``(name, bytes)`` pairs; a field sent twice is refused rather than one copy picked, and so
    are several images (``image[]`` is how the OpenAI client names a list of them).
    """
    body: dict[str, Any] = {}
    for name, data in files:
        field = "image" if name == "image[]" else name
        if field not in ("image", "mask"):
            raise ValidationError(f"`{name}` must be a text field but is a file", field=name, value=None)
        if field in body:
            raise ValidationError(f"`{field}` must be one image: no backend edits several at once",
                                  field=field, value=None)
        if len(data) > MAX_INPUT_BYTES:
            raise ValidationError(f"`{field}` must be at most {MAX_INPUT_BYTES:,} bytes but is {len(data):,} bytes",
                                  field=field, value=len(data))
        body[field] = data
    sla: dict[str, Any] = {}
    for name, text in fields:
        if name.startswith("sla[") and name.endswith("]"):
            key = name[4:-1]
            sla[key] = _form_value(f"sla.{key}", text, "bool" if key == "hedge" else "number")
            continue
        if name in body:
            raise ValidationError(f"`{name}` must be sent once but is sent more than once", field=name, value=text)
        body[name] = _form_value(name, text, _FORM_TYPES.get(name, "text"))
    if sla:
        body["sla"] = sla
    return body


_FORM_TYPES = {**dict.fromkeys(INTEGER_KNOBS | {"partial_images", "previews"}, "integer"),
               **dict.fromkeys(NUMBER_KNOBS | {"strength"}, "number"),
               **dict.fromkeys(("stream", "progress_events"), "bool")}


def _form_value(name: str, text: str, kind: str) -> Any:
    if kind == "text":
        return text
    if kind == "bool":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValidationError(f"`{name}` must be true or false but is {shown(text)}", field=name, value=text)
    try:
        return int(text) if kind == "integer" and len(text) <= MAX_INT_DIGITS else float(text)
    except ValueError:
        raise ValidationError(f"`{name}` must be {'an integer' if kind == 'integer' else 'a number'} "
                              f"but is {shown(text)}", field=name, value=text) from None


def check_body_size(content_length: Any) -> None:
    """Refuse an edit body over :data:`MAX_EDIT_BODY_BYTES` by its ``Content-Length``, before reading it."""
    try:
        size = int(content_length) if content_length is not None else None
    except ValueError:
        size = None
    if size is not None and size > MAX_EDIT_BODY_BYTES:
        raise body_too_large(size)


def body_too_large(size: int | None) -> HTTPError:
    what = "more" if size is None else f"{size:,} bytes"
    return HTTPError(413, f"`body` must be at most {MAX_EDIT_BODY_BYTES:,} bytes (two inputs at the "
                     f"{MAX_INPUT_BYTES:,}-byte file limit) but is {what}", type_="invalid_request_error",
                     code="payload_too_large", param="body")


def _stream_options(body: dict[str, Any], fmt: str) -> tuple[bool, int]:
    """``stream`` (a boolean) and ``previews`` (partial images, only in a stream)."""
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ValidationError(f"`stream` must be true or false but is {shown(stream)}", field="stream", value=stream)
    if stream and fmt == "png":
        raise ValidationError(
            "`response_format` png cannot be streamed: a stream sends JSON events (ask for b64_json)",
            field="response_format",
            value=fmt,
        )
    previews = body.get("previews")
    if previews is None:
        return stream, 0
    from ..events import MAX_PREVIEWS

    if isinstance(previews, bool) or not isinstance(previews, int) or not 0 <= previews <= MAX_PREVIEWS:
        raise ValidationError(
            f"`previews` must be an integer from 0 to {MAX_PREVIEWS} but is {shown(previews)}",
            field="previews",
            value=previews,
        )
    if previews and not stream:
        raise ValidationError(
            f"`previews` needs `stream: true` (partial images are streamed) but is {previews} without it",
            field="previews",
            value=previews,
        )
    return stream, previews


def _knob(name: str, value: Any) -> Any:
    """A knob's JSON value checked for its type; numbers in strings, lists, booleans are refused here.

    The request model checks the ranges. Being strict here matters: a lax ``"n": "3"`` would
    pass as 3 and, with ``response_format`` png, pay for images the answer cannot carry.
    """
    if value is None or (name not in INTEGER_KNOBS and name not in NUMBER_KNOBS):
        return value
    kind = "an integer" if name in INTEGER_KNOBS else "a number"
    # JSON true/false are ints to Python; a boolean where a number belongs is a mistake
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"`{name}` must be {kind} but is {shown(value)}", field=name, value=value)
    if name in INTEGER_KNOBS and isinstance(value, float):
        if not value.is_integer():
            raise ValidationError(f"`{name}` must be {kind} but is {shown(value)}", field=name, value=value)
        return int(value)
    return value


def sla_from(body_sla: Any, headers: Any) -> dict[str, Any]:
    """The SLA mapping from the body's ``sla`` object and the ``X-Pixelroute-*`` headers."""
    if body_sla is None:
        body_sla = {}
    if not isinstance(body_sla, dict):
        raise ValidationError(f"`sla` must be an object but is {shown(body_sla)}", field="sla", value=body_sla)
    sla: dict[str, Any] = {}
    for key, header in (("deadline_s", DEADLINE_HEADER), ("max_cost_usd", MAX_COST_HEADER)):
        raw = _header(headers, header)
        if raw is not None:
            sla[key] = _header_number(header, raw)
    from .._types import SLA, build_sla

    for key, value in body_sla.items():
        if key not in SLA.model_fields:  # named here: the model cannot name an empty or odd key
            raise ValidationError(
                f"`sla.{key}` is not a known field; known: {', '.join(sorted(SLA.model_fields))}",
                field=f"sla.{key}",
                value=value,
            )
        if isinstance(value, bool) and key != "hedge":
            raise ValidationError(
                f"`sla.{key}` must be a number but is {shown(value)}", field=f"sla.{key}", value=value
            )
        sla[key] = value
    try:
        build_sla(sla)
    except ValidationError as exc:
        name = exc.field or "sla"
        raise ValidationError(
            str(exc).replace(f"`{name}`", f"`sla.{name}`"), field=f"sla.{name}", value=exc.value
        ) from None
    return sla


def _header(headers: Any, name: str) -> str | None:
    # any mapping-like with .get: werkzeug Headers, Django's request.headers, Starlette Headers
    value: str | None = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _header_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(
            f"`{name}` header must be a number but is {shown(raw)}", field=name, value=raw
        ) from None
    if not math.isfinite(value):
        raise ValidationError(
            f"`{name}` header must be a finite number but is {shown(raw)}", field=name, value=raw
        )
    return value


def parse_feedback(body: Any) -> tuple[float, str]:
    """``{"seconds": 42.0, "verdict": "edited"}`` -> ``(42.0, "edited")``; the client checks values."""
    if not isinstance(body, dict):
        raise ValidationError(
            f"`body` must be a JSON object but is {type(body).__name__}", field="body", value=body
        )
    unknown = sorted(set(body) - {"seconds", "verdict"})
    if unknown:
        raise ValidationError(
            f"`{unknown[0]}` is not a known field; known: seconds, verdict",
            field=unknown[0],
            value=body[unknown[0]],
        )
    for key in ("seconds", "verdict"):
        if key not in body:
            raise ValidationError(f"`{key}` is required", field=key, value=None)
    seconds, verdict = body["seconds"], body["verdict"]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValidationError(
            f"`seconds` must be a number but is {shown(seconds)}", field="seconds", value=seconds
        )
    if not isinstance(verdict, str):
        raise ValidationError(
            f"`verdict` must be a string but is {shown(verdict)}", field="verdict", value=verdict
        )
    return float(seconds), verdict


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def result_json(result: Any) -> dict[str, Any]:
    """The JSON answer to a generation: OpenAI's ``created``/``data`` plus pixelroute's own fields."""
    return {
        "created": _now(),
        "data": [{"b64_json": base64.b64encode(png_bytes(img)).decode("ascii")} for img in result.images],
        "request_id": result.request_id,
        "backend": result.backend,
        "cost_usd": result.cost_usd,
        "latency_s": result.latency_s,
    }


def result_headers(result: Any) -> dict[str, str]:
    return {
        REQUEST_ID_HEADER: result.request_id,
        "X-Pixelroute-Backend": result.backend,
        "X-Pixelroute-Cost-Usd": f"{result.cost_usd:.6f}",
    }


def _now() -> int:
    import time

    return int(time.time())


def error_response(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, body, headers)`` for any exception; unexpected ones become an opaque 500."""
    headers: dict[str, str] = {}
    param: str | None = None
    extra: dict[str, Any] = {}
    if isinstance(exc, HTTPError):
        status, type_, code, param = exc.status, exc.type, exc.code, exc.param
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, ValidationError):
        status, type_, code, param = 400, "invalid_request_error", exc.error_code, exc.field
    elif isinstance(exc, ContentRejected):
        status, type_, code = 400, "invalid_request_error", exc.error_code
    elif isinstance(exc, UnknownRequest):
        status, type_, code, param = 404, "not_found_error", exc.error_code, "request_id"
    elif isinstance(exc, NoFeasibleBackend):
        status, type_, code, param = 422, "invalid_request_error", exc.error_code, "sla"
        extra["candidates"] = exc.candidates
    elif isinstance(exc, RateLimited):
        status, type_, code = 429, "rate_limit_error", exc.error_code
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif isinstance(exc, ConfigError):
        status, type_, code = 500, "server_error", exc.error_code
    elif isinstance(exc, BackendUnavailable | Cancelled):
        status, type_, code = 503, "server_error", exc.error_code
    elif isinstance(exc, DeadlineExceeded):
        status, type_, code, param = 504, "timeout_error", exc.error_code, "sla.deadline_s"
    elif isinstance(exc, QuotaExceeded | PixelrouteError):
        status, type_, code = 502, "upstream_error", exc.error_code
    else:
        # never echo an unexpected exception: it may carry internals; the server log has it
        return 500, _body("internal error", "server_error", None, "internal_error"), headers
    retry = status in RETRYABLE_STATUSES and not isinstance(exc, QuotaExceeded)
    headers[SHOULD_RETRY_HEADER] = "true" if retry else "false"
    body = _body(redact(str(exc)), type_, param, code)
    body["error"].update(json.loads(json.dumps(extra, default=str)))
    return status, body, headers


def _body(message: str, type_: str, param: str | None, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def load_callable(path: str, setting: str) -> Any:
    """Import ``"package.module:name"`` or ``"package.module.name"``; ``ConfigError`` naming ``setting``."""
    import importlib

    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"`{setting}` must name an importable callable but is {path!r}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"`{setting}` must name a callable but {path!r} is {type(target).__name__}")
    return target
