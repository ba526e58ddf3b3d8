"""Replicate predictions: the create -> poll -> result job protocol, with cancel and resume.

Wire format: ``POST {base_url}/v1/models/{owner}/{name}/predictions`` (or ``/v1/predictions``
with ``version``), JSON ``{"input": {...}}``, ``Authorization: Bearer``; poll
``GET /v1/predictions/{id}`` until ``status`` is ``succeeded | failed | canceled | aborted``;
``POST /v1/predictions/{id}/cancel``; ``output`` is a result URL or a list of them (downloaded
from ``replicate.delivery`` only). Sources: https://replicate.com/docs/reference/http and
https://replicate.com/docs/topics/predictions/create-a-prediction, as captured in
``provider_apis.md`` §6 (replicate-python ``prediction.py``, ``client.py``).

Inputs are model-specific, so the mapping is configuration: ``inputs`` names the model's input
for each of our knobs (``aspect_ratio``/``width``/``height``, ``n``, ``seed``, ``steps``,
``guidance``, ``negative_prompt``); a knob with no name is refused. The size rule is the same
nearest-ratio rule as the other aspect-ratio providers (``aspect_ratios``), or exact
``width``/``height`` inputs when configured. Defaults fit ``black-forest-labs/flux-schnell``:
inputs ``prompt``, ``aspect_ratio`` (the 11 ratios of ``DEFAULT_RATIOS``), ``num_outputs`` (1..4),
``seed``, ``num_inference_steps`` (1..4), ``output_format`` (webp | jpg | png). Sources: the
model's own schema, replicate/cog-flux ``predict.py`` (``Inputs``, ``ASPECT_RATIOS``,
``SchnellPredictor.predict``; its README names it as the code behind this model) and
https://replicate.com/black-forest-labs/flux-schnell/versions/c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e/api.
The 1..4 step range is not checked here: Replicate refuses more with a 422 (``BackendError``).

Safety: flux-schnell drops each image its NSFW checker flags, and fails the prediction with
"All generated images contained NSFW content. ..." only when every image was dropped
(cog-flux ``Predictor.postprocess``). So a ``failed`` prediction whose error mentions a safety
word, and a ``succeeded`` one with fewer outputs than ``n``, are both ContentRejected.

Paying once: the create POST is never retried (a retried create can start a second paid job);
the job id is in :attr:`BackendOutput.job_id`, and on a timeout or cancel it rides on the
exception (``exc.job_id``) after a best-effort cancel (``on_abandon = "cancel"``, the default,
bounded by ``cancel_grace_s``) or is left running for :meth:`ReplicateBackend.resume`
(``on_abandon = "keep"``). A succeeded prediction is billed: when its output is then refused (a
short batch, no output, a failed download) the error carries ``job_id`` and ``cost_usd`` too.
402 is what Replicate answers when billing is missing or credit is spent (problem-details
``{"title": "Billing required", "detail": ..., "status": 402}`` in
replicate/replicate-javascript#342, "failed with status 402 Payment Required" from
api.replicate.com in replicate/scribble-diffusion#88): QuotaExceeded. ``Cancel-After`` (sent
only with ``server_deadline = true``) is a unit-suffixed duration: the official examples are
``1m`` (https://replicate.com/changelog/2025-10-16-prediction-deadlines) and ``5m``
(replicate/replicate-python-beta ``tests/api_resources/test_predictions.py``); the seconds form
we send (``90s``) is still unverified against an official source.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from .._deadline import Deadline
from .._errors import BackendError, ContentRejected, InvalidOutput, PixelrouteError, ValidationError
from .._types import GenerateRequest
from ..events import AttemptProgress
from ._http import Call, Pause, Protocol, RemoteBackend, RemoteSettings, Reply, nearest_aspect
from .base import BackendOutput, Capabilities

TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SAFETY_WORDS = ("nsfw", "safety", "sensitive", "content policy", "flagged", "moderation")
DEFAULT_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]


class ReplicateSettings(RemoteSettings):
    """``kind = "replicate"``. ``model`` is ``owner/name``; ``version`` pins a version id."""

    kind: Literal["replicate"] = "replicate"
    model: str | None = "black-forest-labs/flux-schnell"
    version: str | None = None
    api_key_env: str | None = "REPLICATE_API_TOKEN"
    #: our knob -> the model's input name; knobs not listed are refused
    inputs: dict[str, str] = Field(default_factory=lambda: {
        "aspect_ratio": "aspect_ratio", "n": "num_outputs", "seed": "seed", "steps": "num_inference_steps"})
    aspect_ratios: list[str] = Field(default_factory=lambda: list(DEFAULT_RATIOS))
    #: fixed inputs sent with every prediction
    extra_input: dict[str, Any] = Field(default_factory=lambda: {"output_format": "png"})
    max_n: int = Field(default=4, ge=1, le=16)
    poll_interval_s: float = Field(default=0.5, gt=0)
    #: ``Prefer: wait=N`` on create (0 = return at once and poll)
    prefer_wait_s: int = Field(default=0, ge=0, le=60)
    on_abandon: Literal["cancel", "keep"] = "cancel"
    #: time allowed to a cancel sent after the deadline passed
    cancel_grace_s: float = Field(default=0.08, gt=0, le=5)
    #: also send ``Cancel-After: <N>s`` so the server stops the job at the deadline (the ``s`` unit is unverified)
    server_deadline: bool = False


class ReplicateBackend(RemoteBackend):
    """Replicate predictions (official models by name, or any version id)."""

    kind = "replicate"
    Settings: ClassVar[type[RemoteSettings]] = ReplicateSettings
    default_base_url = "https://api.replicate.com"
    default_download_hosts = ("replicate.delivery", "*.replicate.delivery")
    settings: ReplicateSettings

    @classmethod
    def capabilities_for(cls, settings: RemoteSettings) -> Capabilities:
        assert isinstance(settings, ReplicateSettings)
        names = settings.inputs
        exact = "width" in names and "height" in names
        return Capabilities(max_width=4096 if exact else 16384, max_height=4096 if exact else 16384,
                            size_multiple=8 if exact else 1, max_n=settings.max_n if "n" in names else 1,
                            supports_negative_prompt="negative_prompt" in names, supports_seed="seed" in names,
                            supports_steps="steps" in names, supports_guidance="guidance" in names)

    def validate(self, request: GenerateRequest) -> None:
        super().validate(request)
        self.request_body(request)

    def request_body(self, request: GenerateRequest) -> dict[str, Any]:
        """The exact JSON of the create call."""
        s = self.settings
        names = s.inputs
        model_input: dict[str, Any] = {"prompt": request.prompt, **s.extra_input}
        width, height = self.effective_size(request)
        if "width" in names and "height" in names:
            model_input[names["width"]] = width
            model_input[names["height"]] = height
        elif "aspect_ratio" in names:
            ratios = {r: _ratio(r) for r in s.aspect_ratios}
            model_input[names["aspect_ratio"]] = nearest_aspect(width, height, ratios, s.aspect_tolerance, self.name)
        elif request.width is not None:
            raise ValidationError(f"`width` cannot be honoured by backend `{self.name}` (no size input "
                                  f"configured) but is {request.width}.", field="width", value=request.width)
        knobs = {"n": request.n if "n" in names else None, "seed": request.seed, "steps": request.steps,
                 "guidance": request.guidance, "negative_prompt": request.negative_prompt}
        for knob, value in knobs.items():
            if value is not None and knob in names:
                model_input[names[knob]] = value
        body: dict[str, Any] = {"input": model_input}
        if s.version:
            body["version"] = s.version
        return body

    def create_path(self) -> str:
        s = self.settings
        if s.version:
            return "/v1/predictions"
        owner, _, name = (s.model or "").partition("/")
        if not owner or not name:
            raise ValidationError(f"`model` must be 'owner/name' for backend `{self.name}` but is {s.model!r}",
                                  field="model", value=s.model)
        return f"/v1/models/{owner}/{name}/predictions"

    def protocol(self, request: GenerateRequest, deadline: Deadline) -> Protocol:
        s = self.settings
        headers: dict[str, str] = {}
        left = deadline.timeout()
        if s.prefer_wait_s:
            wait = s.prefer_wait_s if left is None else max(1, min(s.prefer_wait_s, int(left)))
            headers["Prefer"] = f"wait={wait}"
        if s.server_deadline and left is not None and s.on_abandon == "cancel":
            headers["Cancel-After"] = f"{max(1, math.ceil(left))}s"
        # never retried: a second create could start (and bill) a second job
        reply = yield Call("POST", self.create_path(), json=self.request_body(request), headers=headers,
                           retry=False)
        assert reply is not None
        job = self._prediction(reply)
        return (yield from self._follow(job, reply, request, deadline.progress))

    def _follow(
        self, job: dict[str, Any], reply: Reply, request: GenerateRequest | None = None,
        progress: AttemptProgress | None = None,
    ) -> Protocol:
        """Poll ``job`` to its end and collect it (``request`` is None on resume: the job's input echo tells).

        ``progress`` hears each new non-final status: ``starting`` (booting or waiting for a
        worker) as queued, ``processing`` as processing.
        """
        job_id = str(job["id"])
        told = None
        try:
            while (status := job.get("status")) not in TERMINAL:
                if progress is not None and status != told and isinstance(status, str):
                    told = status
                    progress.status("processing" if status == "processing" else "queued", status, job_id)
                yield Pause(self.settings.poll_interval_s)
                polled = yield Call("GET", f"/v1/predictions/{job_id}")
                assert polled is not None
                reply, job = polled, self._prediction(polled)
        except PixelrouteError as exc:
            exc.job_id = job_id  # type: ignore[attr-defined]  # the engine records it for resume
            if self.settings.on_abandon == "cancel":
                yield Call("POST", f"/v1/predictions/{job_id}/cancel", grace_s=self.settings.cancel_grace_s)
            raise
        return (yield from self._collect(job, reply, request))

    def _collect(self, job: dict[str, Any], reply: Reply, request: GenerateRequest | None) -> Protocol:
        job_id = str(job["id"])
        status = job.get("status")
        if status != "succeeded":
            text = str(job.get("error") or f"prediction {status}")
            cls = ContentRejected if any(w in text.lower() for w in _SAFETY_WORDS) else BackendError
            exc = self.error(cls, f"prediction {job_id} {status}: {text[:300]}", reply)
            exc.job_id = job_id  # type: ignore[attr-defined]
            raise exc
        output = job.get("output")
        urls = [output] if isinstance(output, str) else output if isinstance(output, list) else []
        metrics = job.get("metrics")
        predict_s = metrics.get("predict_time") if isinstance(metrics, dict) else None
        if not isinstance(predict_s, int | float) or isinstance(predict_s, bool):
            predict_s = None
        asked = request.n if request is not None else self._asked_n(job)
        try:  # a succeeded prediction is billed: a refusal from here on keeps its job id and its cost
            if not urls:
                raise self.error(ContentRejected, f"prediction {job_id} succeeded with no output", reply)
            if asked is not None:
                # flux-schnell drops the images its safety checker flags and still succeeds
                self.check_batch(len(urls), asked, reply, f"prediction {job_id}")
            images = []
            for url in urls:
                if not isinstance(url, str):
                    raise self.error(InvalidOutput, f"prediction {job_id} output is not a URL", reply)
                got = yield Call("GET", url, download=True)
                assert got is not None
                images.append(self.decode_image(got.body))
        except PixelrouteError as exc:
            width, height = (self.effective_size(request) if request is not None
                             else (self.capabilities.default_width, self.capabilities.default_height))
            billed_n = max(asked or 1, len(urls))  # what was made, filtered or not
            self.billed(exc, self.price.estimate(width, height, billed_n, predict_s), job_id)
            raise
        return self.output(images, job_id=job_id, gpu_s=predict_s,
                           params={"input": job.get("input") if isinstance(job.get("input"), dict) else None})

    def _asked_n(self, job: dict[str, Any]) -> int | None:
        """How many outputs the prediction was asked for, from its ``input`` echo (so resume knows too)."""
        name = self.settings.inputs.get("n")
        echo = job.get("input")
        value = echo.get(name) if name and isinstance(echo, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def _prediction(self, reply: Reply) -> dict[str, Any]:
        job = reply.json()
        if not isinstance(job, dict) or not _JOB_ID.match(str(job.get("id", ""))):
            raise self.error(InvalidOutput, "response is not a prediction object with an `id`", reply)
        return job

    # -- jobs that outlive a call ---------------------------------------------------------------

    def resume(self, job_id: str, deadline: Deadline) -> BackendOutput:
        """Collect job ``job_id`` (polling until ``deadline``), e.g. after a timed-out call."""
        return self._drive(self._resume(job_id), deadline)

    async def aresume(self, job_id: str, deadline: Deadline) -> BackendOutput:
        return await self._adrive(self._resume(job_id), deadline)

    def _resume(self, job_id: str) -> Protocol:
        if not _JOB_ID.match(job_id):
            raise ValidationError(f"`job_id` is not a Replicate prediction id: {job_id[:80]!r}",
                                  field="job_id", value=job_id)
        reply = yield Call("GET", f"/v1/predictions/{job_id}")
        assert reply is not None
        return (yield from self._follow(self._prediction(reply), reply))

    def cancel_job(self, job_id: str) -> None:
        """Cancel prediction ``job_id`` (a finished one cannot be cancelled; that is not an error)."""
        if not _JOB_ID.match(job_id):
            raise ValidationError(f"`job_id` is not a Replicate prediction id: {job_id[:80]!r}",
                                  field="job_id", value=job_id)
        grace = Deadline(min(self.settings.timeout_s, 10.0), clock=self._clock)
        self._exchange_once(Call("POST", f"/v1/predictions/{job_id}/cancel"), grace)

    def error_for(self, reply: Reply) -> BackendError:
        return self.generic_error(reply, self.provider_message(reply))


def _ratio(text: str) -> tuple[int, int]:
    width, _, height = text.partition(":")
    try:
        return int(width), int(height)
    except ValueError:
        raise ValidationError(f"`aspect_ratios` entries must look like '16:9' but one is {text!r}",
                              field="aspect_ratios", value=text) from None
