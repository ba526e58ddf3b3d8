"""The Flask extension: one lazily built :class:`~pixelroute.Client` per app, and an optional blueprint.

::

    from flask import Flask
    from pixelroute.contrib.flask import Pixelroute

    pixelroute = Pixelroute()          # module level, no app yet (app-factory friendly)

    def key_auth(request, action):      # constant-time: `==` would leak the key's prefix by timing
        return hmac.compare_digest(request.headers.get("X-Key", "").encode(), KEY.encode())

    def create_app():
        app = Flask(__name__)
        app.config["PIXELROUTE_CONFIG"] = "pixelroute.toml"     # or PIXELROUTE_SETTINGS = {...}
        pixelroute.init_app(app, auth=key_auth)
        return app

    # in a view:  pixelroute.client.generate("a red bicycle", sla={"deadline_s": 8})

Config keys: ``PIXELROUTE_CONFIG`` (a TOML path), ``PIXELROUTE_SETTINGS`` (a mapping), and the
settings sections as keys of their own (``PIXELROUTE_TELEMETRY``, ``PIXELROUTE_ROUTER``,
``PIXELROUTE_EXECUTION``, ``PIXELROUTE_BACKENDS``, ``PIXELROUTE_CACHE_DIR``), which override the
file's. ``PIXELROUTE_BLUEPRINT`` (default ``True``) and ``PIXELROUTE_URL_PREFIX`` (default
``/pixelroute``) control the endpoints; ``PIXELROUTE_AUTH`` may name the auth hook as
``"module:function"``. Everything is validated by the same settings model at ``init_app`` time;
a bad key raises ``ConfigError`` naming it.

With ``[execution] preload = true`` (``PIXELROUTE_EXECUTION = {"preload": True}``) ``init_app``
builds the client and loads every pipeline at once, so the first request finds them loaded. A
client built before a fork (gunicorn ``--preload``) is not used by the forked workers: each
builds its own, which finds the CPU pipelines already in memory.

``POST /generate`` with ``"stream": true`` answers with server-sent events (the call's progress
events, ``done`` carrying the usual JSON; :mod:`pixelroute.contrib._sse`), ``"previews": k`` adding
``k`` partial images from local pipelines.

``POST /edit`` edits an image: a multipart form (``image`` and ``mask`` files, the other fields
as text) or JSON with base64 ``image``/``mask``; the mask is white where the image may change.
It answers (and streams) as ``/generate`` does.

The auth hook is ``auth(request, action) -> bool`` with ``action`` one of ``generate``, ``edit``,
``feedback``, ``trace``, ``metrics``. Without a hook every endpoint answers 401: an endpoint that
spends money or reveals prompts is closed until the app says who may use it. A multipart form can
be posted by a cross-site page: a hook that trusts a session cookie must check a CSRF token for
``edit``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from .._config import Settings, load_settings
from .._errors import ConfigError, PixelrouteError
from .._shown import shown
from . import _http, _sse

if TYPE_CHECKING:
    from flask import Blueprint, Flask, Request, Response

    from .._client import Client
    from ..events import Event

AuthHook = Callable[["Request", str], bool]
ClientFactory = Callable[[Settings], "Client"]

EXTENSION_KEY = "pixelroute"
#: extension options read from app.config; every other PIXELROUTE_* key must be a settings field
_OPTIONS = {
    "PIXELROUTE_CONFIG",
    "PIXELROUTE_SETTINGS",
    "PIXELROUTE_BLUEPRINT",
    "PIXELROUTE_URL_PREFIX",
    "PIXELROUTE_AUTH",
}


def deny_all(request: Request, action: str) -> bool:
    """The default auth hook: refuse everything until the app supplies its own."""
    raise _http.unauthorized(
        f"authentication required to `{action}`: no auth hook configured (pass `auth=` to init_app)"
    )


class _State:
    """Per-app state in ``app.extensions["pixelroute"]``: settings, hook, the client once built."""

    def __init__(self, settings: Settings, auth: AuthHook, factory: ClientFactory | None) -> None:
        self.settings = settings
        self.auth = auth
        self.factory = factory
        self.lock = threading.Lock()
        self.client: Client | None = None
        self.closed = False
        _STATES.add(self)

    def after_fork_in_child(self) -> None:
        """A forked child must not use its parent's client: its telemetry writer and pipeline
        threads did not survive the fork. It is left to the parent (closing it here would flush
        through dead threads); the child builds its own on first use."""
        self.lock = threading.Lock()
        self.client = None

    def get_client(self) -> Client:
        if self.client is None:
            with self.lock:
                if self.closed:
                    raise PixelrouteError("the pixelroute client of this app has been closed")
                if self.client is None:
                    if self.factory is not None:
                        self.client = self.factory(self.settings)
                    else:
                        from .._client import Client

                        self.client = Client(self.settings)
        return self.client

    def close(self) -> None:
        with self.lock:
            self.closed = True
            client, self.client = self.client, None
        if client is not None:
            client.close()


#: every app's state in this process, reset in a forked child (gunicorn --preload)
_STATES: weakref.WeakSet[_State] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for state in list(_STATES):
        state.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Pixelroute:
    """The extension object; holds no app (state lives in ``app.extensions``)."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        auth: AuthHook | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self._auth = auth
        self._client_factory = client_factory
        if app is not None:
            self.init_app(app)

    def init_app(
        self, app: Flask, *, auth: AuthHook | None = None, client_factory: ClientFactory | None = None
    ) -> None:
        """Validate the app's settings and register the blueprint; the client is built on first use,
        or here with its pipelines loaded when ``[execution] preload`` is true."""
        from .._extras import require

        require("flask", "pixelroute.contrib.flask")
        if EXTENSION_KEY in app.extensions:
            raise ConfigError(f"pixelroute is already initialised on app {app.name!r}")
        settings = settings_from_config(app.config)
        hook = auth or self._auth or _configured_auth(app.config) or deny_all
        state = _State(settings, hook, client_factory or self._client_factory)
        app.extensions[EXTENSION_KEY] = state
        # one client per app for the life of the process; closed at interpreter exit, not per request
        atexit.register(state.close)
        if app.config.get("PIXELROUTE_BLUEPRINT", True):
            app.register_blueprint(
                make_blueprint(), url_prefix=app.config.get("PIXELROUTE_URL_PREFIX", "/pixelroute")
            )
        if settings.execution.preload:
            took = state.get_client().warmup()
            app.logger.info("pixelroute: preloaded %s", ", ".join(f"{n} in {s:.2f} s" for n, s in took.items()))

    @property
    def client(self) -> Client:
        """The current app's client (built on first access)."""
        from flask import current_app

        return get_state(current_app).get_client()

    def close(self, app: Flask) -> None:
        """Close ``app``'s client now (tests, graceful shutdown hooks); it cannot be reused after."""
        get_state(app).close()


def get_state(app: Flask) -> _State:
    try:
        state: _State = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise ConfigError(f"pixelroute is not initialised on app {app.name!r}: call init_app(app)") from None
    return state


def settings_from_config(config: Any) -> Settings:
    """``app.config`` -> validated :class:`Settings`; errors name the ``PIXELROUTE_*`` key."""
    import tomllib
    from pathlib import Path

    data: dict[str, Any] = {}
    path = config.get("PIXELROUTE_CONFIG")
    if path is not None:
        try:
            with Path(path).open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"`PIXELROUTE_CONFIG` names {str(path)!r}, which does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"`PIXELROUTE_CONFIG` file {str(path)!r} cannot be read: {exc}") from None
    mapping = config.get("PIXELROUTE_SETTINGS")
    if mapping is not None:
        if not isinstance(mapping, dict):
            raise ConfigError(f"`PIXELROUTE_SETTINGS` must be a mapping but is {shown(mapping)}")
        data.update({k.lower(): v for k, v in mapping.items()})
    for key in config:
        if not key.startswith("PIXELROUTE_") or key in _OPTIONS:
            continue
        field = key.removeprefix("PIXELROUTE_").lower()
        if field not in Settings.model_fields:
            known = sorted(_OPTIONS | {f"PIXELROUTE_{f.upper()}" for f in Settings.model_fields})
            raise ConfigError(f"`{key}` is not a known setting (misspelt?); known: {', '.join(known)}")
        data[field] = config[key]
    if path is None and mapping is None and not data:
        from .._config import embedded_default

        return embedded_default()  # nothing configured: the same default as `Client()`
    try:
        return load_settings(data)
    except ConfigError as exc:
        raise ConfigError(f"Flask config (PIXELROUTE_*): {exc}") from None


def _configured_auth(config: Any) -> AuthHook | None:
    target = config.get("PIXELROUTE_AUTH")
    if target is None or callable(target):
        return target
    hook: AuthHook = _http.load_callable(str(target), "PIXELROUTE_AUTH")
    return hook


# -- the blueprint -------------------------------------------------------------------------------


def make_blueprint() -> Blueprint:
    """A fresh blueprint with the five endpoints (one per app, so apps never share state)."""
    from flask import Blueprint, current_app, request

    bp = Blueprint("pixelroute", __name__)

    def authorize(action: str) -> _State:
        state = get_state(current_app)
        if not state.auth(request, action):
            raise _http.forbidden(action)
        return state

    def json_body() -> Any:
        if not request.is_json:
            raise _http.ValidationError(
                f"`Content-Type` must be application/json but is {request.content_type!r}",
                field="Content-Type",
                value=request.content_type,
            )
        return _http.parse_json(request.get_data(cache=False))

    def answer(result: Any, call: _http.GenerateCall) -> Response:
        headers = _http.result_headers(result)
        if call.response_format == "png":
            return current_app.response_class(
                _http.png_bytes(result.images[0]), mimetype="image/png", headers=headers
            )
        return _json(_http.result_json(result), 200, headers)

    @bp.post("/generate")
    def generate() -> Response:
        state = authorize("generate")
        call = _http.parse_generate(json_body(), request.headers, request.headers.get("Accept"))
        if call.stream:
            return _streamed(state.get_client().stream(call.prompt, **call.kwargs()))
        return answer(state.get_client().generate(call.prompt, **call.kwargs()), call)

    @bp.post("/edit")
    def edit() -> Response:
        state = authorize("edit")
        _http.check_body_size(request.content_length)
        if request.mimetype == "multipart/form-data":
            # a chunked upload has no length to check; the request's own limit is settable from Flask 3.1
            with contextlib.suppress(AttributeError):
                request.max_content_length = _http.MAX_EDIT_BODY_BYTES
            body = _http.form_body(request.form.items(multi=True),
                                   [(name, f.read()) for name, f in request.files.items(multi=True)])
        else:
            body = json_body()
        call = _http.parse_edit(body, request.headers, request.headers.get("Accept"))
        client = state.get_client()
        if call.stream:
            return _streamed(client.stream_edit(call.image, call.prompt, **call.kwargs()))
        return answer(client.edit(call.image, call.prompt, **call.kwargs()), call)

    @bp.post("/feedback/<request_id>")
    def feedback(request_id: str) -> Response:
        state = authorize("feedback")
        seconds, verdict = _http.parse_feedback(json_body())
        state.get_client().report_correction(request_id, seconds, verdict)
        return _json({"request_id": request_id, "seconds": seconds, "verdict": verdict}, 200)

    @bp.get("/trace/<request_id>")
    def trace(request_id: str) -> Response:
        state = authorize("trace")
        return _json(state.get_client().trace(request_id), 200)

    @bp.get("/metrics")
    def metrics() -> Response:
        state = authorize("metrics")
        return current_app.response_class(
            state.get_client().metrics_text(), mimetype="text/plain; version=0.0.4"
        )

    @bp.errorhandler(PixelrouteError)
    def on_error(exc: PixelrouteError) -> Response:
        status, body, headers = _http.error_response(exc)
        if status >= 500:
            current_app.logger.error("pixelroute request failed: %s", _http.redact(str(exc)))
        return _json(body, status, headers)

    return bp


def _streamed(events: Generator[Event, None, None]) -> Response:
    """``"stream": true``: server-sent events; the first is awaited so routing errors keep their status."""
    from flask import current_app

    first = next(events)  # a validation or routing error leaves through the blueprint's error handler
    logger = current_app.logger

    def body() -> Iterator[str]:
        try:
            yield _sse.event_frame(first)
            for event in events:
                yield _sse.event_frame(event)
        except Exception as exc:  # the status line has gone: the error travels as an event
            logger.error("pixelroute stream failed: %s", _http.redact(f"{type(exc).__name__}: {exc}"))
            yield _sse.error_frame(exc)
        finally:
            events.close()  # a client that went away cancels the call (the server closes this body)

    headers = {**_sse.STREAM_HEADERS, _http.REQUEST_ID_HEADER: first.request_id}
    return current_app.response_class(body(), mimetype=_sse.MEDIA_TYPE, headers=headers)


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    from flask import current_app

    response: Response = current_app.json.response(body)  # type: ignore[assignment]
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


__all__ = ["Pixelroute", "deny_all", "get_state", "make_blueprint", "settings_from_config"]
