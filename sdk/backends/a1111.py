"""AUTOMATIC1111 stable-diffusion-webui API (also Forge and SD.Next): ``POST /sdapi/v1/txt2img``.

Wire format: JSON request, synchronous; response ``{"images": [base64...], "parameters": {...},
"info": "<JSON string>"}``; optional HTTP Basic auth (``--api-auth user:pass``, here the
``user:pass`` string comes from ``api_key_env``). Source: AUTOMATIC1111/stable-diffusion-webui
``modules/api/api.py`` and ``modules/api/models.py`` (the API's own schema, served at
``/docs``), as captured in ``provider_apis.md`` §5.

Mapping: every knob exists: ``width``/``height`` exact (multiples of 8), ``steps``,
``guidance`` -> ``cfg_scale``, ``negative_prompt``, ``seed`` (-1 = random when unset),
``scheduler`` -> ``sampler_name``, ``n`` -> ``batch_size`` (``n_iter`` 1), ``model`` ->
``override_settings.sd_model_checkpoint``. Unset steps/guidance are left to the server and the
effective values are read back from ``info``. Errors: the webui's ``{"error", "detail"}`` body;
500 (e.g. ``OutOfMemoryError``) -> ServerError (retried), 401/404/422 -> BackendError.
There is no moderation and no rate limit. SD.Next (vladmandic/automatic ``modules/api/models.py``,
``modules/api/generate.py``) builds its txt2img request model the same way, from the
``StableDiffusionProcessingTxt2Img`` constructor plus ``send_images``/``save_images``, validates
``sampler_name`` and answers ``{images, parameters, info}`` with ``info`` a JSON string; its
``sampler_index`` default is ``UniPC`` (we send ``sampler_name`` only when asked). Still
unverified: Forge, and per-field defaults of SD.Next's processing class.

Abandoned attempts: txt2img is one blocking request with no job id, and closing the connection
does not stop the server. So when an attempt is abandoned while its txt2img is on the server
(the deadline passed, or its cancel token fired, e.g. it lost a hedge race) the backend sends
``POST /sdapi/v1/interrupt`` (``modules/api/api.py``: ``add_api_route("/sdapi/v1/interrupt",
self.interruptapi, methods=["POST"])``, which calls ``shared.state.interrupt()``; ``provider_apis.md``
§5 "Progress, interrupt, skip") on a background thread or task, bounded by
``interrupt_grace_s``, so the caller's deadline is not spent on it. The blocked txt2img then
returns the images made so far; they are refused (``Cancelled`` / ``DeadlineExceeded``), never
returned as a result. The webui interrupts whatever job it is running: on a server shared with
other clients set ``interrupt_on_abandon = false``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import Field

from .._deadline import Deadline
from .._errors import BackendError, Cancelled, DeadlineExceeded, InvalidOutput, PixelrouteError
from .._redact import register_secret
from .._types import GenerateRequest
from ._http import Call, Protocol, RemoteBackend, RemoteSettings, Reply
from .base import BackendOutput, Capabilities

INTERRUPT_PATH = "/sdapi/v1/interrupt"


class A1111Settings(RemoteSettings):
    """``kind = "a1111"``: a self-hosted webui started with ``--api``."""

    kind: Literal["a1111"] = "a1111"
    #: holds ``user:pass`` for ``--api-auth``; unset = no auth
    api_key_env: str | None = None
    max_n: int = Field(default=8, ge=1, le=16)
    max_size: int = Field(default=2048, ge=64)
    default_size: int = Field(default=1024, ge=64)
    #: POST /sdapi/v1/interrupt when an attempt is abandoned mid-txt2img (see the module docstring)
    interrupt_on_abandon: bool = True
    #: budget of that best-effort POST; it runs in the background, never on the caller's deadline
    interrupt_grace_s: float = Field(default=0.5, gt=0, le=5)


class A1111Backend(RemoteBackend):
    """AUTOMATIC1111-compatible ``/sdapi/v1/txt2img``."""

    kind = "a1111"
    Settings: ClassVar[type[RemoteSettings]] = A1111Settings
    default_base_url = "http://127.0.0.1:7860"
    # no moderation here: a short batch is a run someone interrupted (it answers with what it made so far)
    short_batch_error = InvalidOutput
    short_batch_reason = "the run was interrupted"
    settings: A1111Settings

    @classmethod
    def capabilities_for(cls, settings: RemoteSettings) -> Capabilities:
        assert isinstance(settings, A1111Settings)
        return Capabilities(max_width=settings.max_size, max_height=settings.max_size, size_multiple=8,
                            max_n=settings.max_n, default_width=settings.default_size,
                            default_height=settings.default_size, supports_scheduler=True)

    def auth_headers(self, key: str) -> dict[str, str]:
        encoded = base64.b64encode(key.encode()).decode()
        register_secret(encoded)  # an upstream that echoes the header must not leak it in encoded form
        return {"Authorization": "Basic " + encoded}

    def request_body(self, request: GenerateRequest) -> dict[str, Any]:
        """The exact JSON sent."""
        width, height = self.effective_size(request)
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or "",
            "width": width,
            "height": height,
            "seed": -1 if request.seed is None else request.seed,
            "batch_size": request.n,
            "n_iter": 1,
            "send_images": True,
            "save_images": False,
        }
        if request.steps is not None:
            body["steps"] = request.steps
        if request.guidance is not None:
            body["cfg_scale"] = request.guidance
        if request.scheduler is not None:
            body["sampler_name"] = request.scheduler
        if self.settings.model:
            body["override_settings"] = {"sd_model_checkpoint": self.settings.model}
        return body

    # -- generate, interrupting the server when the attempt is abandoned ---------------------

    def generate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        self.validate(request)
        guard = self._interrupt_guard(deadline, lambda: self.fire_and_forget(self._interrupt_call()))
        try:
            return self._drive(self._txt2img(request, deadline, guard), deadline)
        except (DeadlineExceeded, Cancelled):
            guard.fire()
            raise
        finally:
            guard.disarm()

    async def agenerate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        self.validate(request)
        loop = asyncio.get_running_loop()
        guard = self._interrupt_guard(deadline, lambda: self.afire_and_forget(self._interrupt_call(), loop))
        try:
            return await self._adrive(self._txt2img(request, deadline, guard), deadline)
        except (DeadlineExceeded, Cancelled, asyncio.CancelledError):  # CancelledError: a hedge race lost
            guard.fire()
            raise
        finally:
            guard.disarm()

    def _interrupt_guard(self, deadline: Deadline, send: Callable[[], None]) -> InterruptGuard:
        guard = InterruptGuard(send if self.settings.interrupt_on_abandon else None)
        if deadline.cancel is not None:
            # a sync attempt blocks inside txt2img: the token's callback is what can still act
            deadline.cancel.on_cancel(guard.fire)
        return guard

    def _interrupt_call(self) -> Call:
        return Call("POST", INTERRUPT_PATH, retry=False, grace_s=self.settings.interrupt_grace_s)

    def protocol(self, request: GenerateRequest, deadline: Deadline) -> Protocol:
        return self._txt2img(request, deadline, InterruptGuard(None))

    def _txt2img(self, request: GenerateRequest, deadline: Deadline, guard: InterruptGuard) -> Protocol:
        self._check(deadline)  # already cancelled or late: the request never leaves, nothing to interrupt
        guard.arm()  # from here until the reply, the server may be computing this request
        reply = yield Call("POST", "/sdapi/v1/txt2img", json=self.request_body(request))
        guard.disarm()
        assert reply is not None
        process_s = _float(reply.headers.get("x-process-time"))
        try:  # the GPU time is spent once txt2img answers: a refusal from here on carries its cost
            # an interrupted run answers 200 with the images made so far: never a result
            self._check(deadline)
            data = reply.json()
            encoded = data.get("images") if isinstance(data, dict) else None
            if not isinstance(encoded, list) or not encoded:
                raise self.error(InvalidOutput, "response has no `images`", reply)
            self.check_batch(len(encoded), request.n, reply, "the webui")
            # scripts such as X/Y plot put a grid first; the last `n` are the requested images
            images = [self.decode_b64_image(text) for text in encoded[-request.n:]]
        except PixelrouteError as exc:
            self.billed(exc, self.estimate_cost(request, process_s))
            raise
        info = _info(data.get("info"))
        params = {"steps": info.get("steps"), "guidance": info.get("cfg_scale"), "seed": info.get("seed"),
                  "scheduler": info.get("sampler_name"), "seeds": info.get("all_seeds")}
        return self.output(images, params=params, gpu_s=process_s)

    def error_for(self, reply: Reply) -> BackendError:
        return self.generic_error(reply, self.provider_message(reply))


class InterruptGuard:
    """Sends the interrupt at most once, and only while this attempt's txt2img may be running.

    Armed just before txt2img is sent and disarmed when its reply arrives or the attempt ends,
    so a cancel that comes later (or a request that never left) cannot stop someone else's job.
    """

    def __init__(self, send: Callable[[], None] | None) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._armed = False
        self.sent = False

    def arm(self) -> None:
        with self._lock:
            self._armed = True

    def disarm(self) -> None:
        with self._lock:
            self._armed = False

    def fire(self) -> None:
        with self._lock:
            if not self._armed or self.sent or self._send is None:
                return
            self.sent = True
        self._send()  # outside the lock: it only schedules the request


def _info(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
