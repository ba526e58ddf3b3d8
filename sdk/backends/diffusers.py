"""The local backend: any diffusers text-to-image pipeline, loaded with ``from_pretrained``.

::

    [[backends]]
    name = "sd35-turbo"
    kind = "diffusers"
    model = "stabilityai/stable-diffusion-3.5-large-turbo"   # hub id or local folder
    device = "auto"          # cuda > mps > cpu
    dtype = "auto"           # bfloat16/float16 on a GPU, float32 on CPU
    max_batch_size = 4       # micro-batch concurrent requests of the same shape
    price = { per_gpu_second = 0.0015 }

Knob defaults (steps, guidance, size) come from the model family, detected from the pipeline
class and the model id (see ``_families.py``), and the config can override each. A caller's
value is honoured or refused, never changed. Seeds: image ``i`` of a request with seed ``s``
uses ``s + i``; a request without a seed gets a random one, reported in ``params["seed"]``.

Edits (``Client.edit``) run the family's image-to-image pipeline, or its inpainting pipeline
when a mask is given, built from the loaded pipeline with diffusers' ``from_pipe`` (the same
modules: nothing is loaded twice). An edit with ``width``/``height`` resizes its input (and
mask) to that size first; ``strength`` defaults to diffusers' 0.8 (1.0 with a mask), and
``int(steps x strength)`` must leave at least one denoising step.

Nothing heavy happens when the backend is built: torch and diffusers are imported, the tiny
model built (``make_tiny``) and the pipeline loaded on the first request, or ahead of it by
:meth:`DiffusersBackend.warmup` (``Client.warmup``, ``[execution] preload``). :attr:`loaded`
says whether the pipeline is in memory now. Calls on one pipeline are serialised on its
worker thread; the deadline is checked at every denoising step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from .._deadline import Deadline
from .._errors import Cancelled, ConfigError, DeadlineExceeded, PixelrouteError, ValidationError
from .._types import GenerateRequest
from ._diffusers_run import Prepared, resolve_scheduler, run_batch
from ._families import Family, detect_family, estimate_load_s, local_class_name, null_components
from ._pipeline_cache import SHARED, LoadSpec, PipelineCache, PipelineSlot
from ._pipeline_worker import Job
from .base import Backend, BackendOutput, BackendSettings, Capabilities

if TYPE_CHECKING:
    from .._edit import EditRequest

log = logging.getLogger("pixelroute.diffusers")

#: how often a waiting caller re-checks its deadline and cancel token (real seconds)
_POLL_S = 0.02


class DiffusersSettings(BackendSettings):
    """Settings of the ``diffusers`` kind. Unset knobs fall back to the model family's defaults."""

    kind: Literal["diffusers"] = "diffusers"
    model: str = Field(description="Hub id or local folder with model_index.json.")
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    variant: str | None = None
    default_steps: int | None = Field(default=None, ge=1, le=1000)
    default_guidance: float | None = Field(default=None, ge=0, le=100)
    default_scheduler: str | None = None
    default_width: int | None = Field(default=None, ge=8)
    default_height: int | None = Field(default=None, ge=8)
    max_width: int | None = Field(default=None, ge=8)
    max_height: int | None = Field(default=None, ge=8)
    max_n: int = Field(default=4, ge=1, le=16)
    #: build a tiny random-weight pipeline of this family at ``model`` if the folder is missing
    make_tiny: Literal["sd15", "sdxl", "sd3"] | None = None
    #: pipeline cache budget in GB (the smallest configured budget wins); None = unbounded
    memory_budget_gb: float | None = Field(default=None, gt=0)
    #: images per pipeline call when micro-batching concurrent requests; 1 = off
    max_batch_size: int = Field(default=1, ge=1, le=64)
    #: how long the first request of a batch may wait for others (never past its deadline)
    batch_window_ms: float = Field(default=5.0, ge=0, le=1000)


class DiffusersBackend(Backend):
    """A local diffusers pipeline behind the :class:`~pixelroute.backends.base.Backend` interface."""

    kind: ClassVar[str] = "diffusers"
    local: ClassVar[bool] = True
    Settings: ClassVar[type[DiffusersSettings]] = DiffusersSettings

    def __init__(
        self,
        settings: DiffusersSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        pipeline_cache: PipelineCache | None = None,
    ) -> None:
        self.family = _family(settings)
        f, s = self.family, settings
        capabilities = Capabilities(
            max_width=s.max_width or f.max_side,
            max_height=s.max_height or f.max_side,
            size_multiple=f.size_multiple,
            max_n=s.max_n,
            default_width=s.default_width or f.width,
            default_height=s.default_height or f.height,
            default_steps=s.default_steps or f.steps,
            default_guidance=s.default_guidance if s.default_guidance is not None else f.guidance,
            supports_negative_prompt=f.negative_prompt,
            supports_scheduler=True,
            operations=("generate", "edit") if f.edits else ("generate",),
        )
        super().__init__(s.name, capabilities=capabilities, settings=s)
        self.config: DiffusersSettings = s
        self.clock = clock
        self._cache = pipeline_cache or SHARED
        if s.memory_budget_gb is not None:
            self._cache.limit(int(s.memory_budget_gb * 1e9))
        self._spec: LoadSpec | None = None
        #: what ``_spec`` will be, resolved without building or loading anything (see ``loaded``)
        self._expected_spec: LoadSpec | None = None
        self._closed = False

    @classmethod
    def from_settings(
        cls, settings: DiffusersSettings, *, clock: Callable[[], float] | None = None, **runtime: Any
    ) -> DiffusersBackend:
        return cls(settings, clock=clock or time.monotonic, pipeline_cache=runtime.get("pipeline_cache"))

    # -- the two entry points ----------------------------------------------------------------

    def generate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        """Run ``request`` on the pipeline's worker; stop at the next step when time runs out."""
        job = self._submit(request, deadline)
        bounded = not math.isinf(deadline.at) or deadline.cancel is not None
        # wait() rather than result(timeout=...): our DeadlineExceeded *is* a TimeoutError, which
        # result() would make indistinguishable from "not finished yet"
        while not futures_wait([job.future], timeout=_POLL_S if bounded else None).done:
            self._check_waiting(job, deadline)
        out: BackendOutput = job.future.result()
        return out

    def edit(self, request: EditRequest, deadline: Deadline) -> BackendOutput:
        """Run an edit on the family's image-to-image or inpainting pipeline (same worker, same rules)."""
        return self.generate(request, deadline)

    async def aedit(self, request: EditRequest, deadline: Deadline) -> BackendOutput:
        return await self.agenerate(request, deadline)

    def validate(self, request: GenerateRequest) -> None:
        super().validate(request)
        if request.operation == "edit":
            edit: EditRequest = request  # type: ignore[assignment]  # an EditRequest, by its operation
            steps = self.effective_steps(request) or 1
            strength = edit.effective_strength
            if int(steps * strength) < 1:
                raise ValidationError(
                    f"`strength` {strength} x {steps} steps leaves no denoising step for backend `{self.name}` "
                    f"(diffusers runs int(steps x strength)); raise `strength` or `steps`",
                    field="strength", value=strength,
                )

    async def agenerate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        """Async twin: the event loop never blocks; task cancellation interrupts the denoising."""
        if self._spec is not None and self._cache.peek(self._spec):
            job = self._submit(request, deadline)
        else:  # the first call may build and load a pipeline: seconds, so off the event loop
            job = await asyncio.to_thread(self._submit, request, deadline)
        waiting = asyncio.wrap_future(job.future)
        bounded = not math.isinf(deadline.at) or deadline.cancel is not None
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=_POLL_S if bounded else None)
                if done:
                    out: BackendOutput = waiting.result()
                    return out
                self._check_waiting(job, deadline)
        except asyncio.CancelledError:
            job.cancel()
            # wait (at most one denoising step) until the worker has really stopped the call
            with contextlib.suppress(BaseException):
                await asyncio.shield(waiting)
            raise

    # -- loading ahead of the first request -------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the pipeline is in memory now (so a request starts without loading it).

        False before the first load and after an eviction or :meth:`close`. Cheap: a dict
        lookup under the cache lock; it never builds, loads or imports anything.
        """
        spec = self._spec if self._spec is not None else self._expected()
        return spec is not None and self._cache.peek(spec)

    def warmup(self, deadline: Deadline | None = None) -> float:
        """Build the tiny model (``make_tiny``) and load the pipeline, as the first request would.

        Idempotent; returns the seconds it took (next to nothing once loaded). A load cannot be
        interrupted: when ``deadline`` passes (or its token is cancelled) first, this raises
        ``DeadlineExceeded`` (``Cancelled``) while the load goes on in the background, and
        :attr:`loaded` turns true when it lands.
        """
        if self._closed:
            raise PixelrouteError(f"backend `{self.name}` is closed: it cannot be warmed up")
        started = self.clock()
        deadline = deadline or Deadline(None)
        self._check_before_warmup(deadline)
        if math.isinf(deadline.at) and deadline.cancel is None:
            self._load_now()
        else:
            self._load_within(deadline)
        return self.clock() - started

    async def awarmup(self, deadline: Deadline | None = None) -> float:
        """Async twin of :meth:`warmup`; the load runs off the event loop."""
        if self.loaded and not self._closed:
            return 0.0
        return await asyncio.to_thread(self.warmup, deadline)

    def _load_estimate_s(self) -> float | None:
        """The ``typical_load_s`` setting, else the estimate from the family's size (``_families``)."""
        if self.config.typical_load_s is not None:
            return self.config.typical_load_s
        without_t5 = "text_encoder_3" in null_components(self.config.model)
        return estimate_load_s(self.family, device=self.config.device, dtype=self.config.dtype,
                               without_t5=without_t5)

    def _load_now(self) -> None:
        slot = self._cache.acquire(self._load_spec(), id(self))
        self._cache.release(slot)  # unpinned: it stays loaded until evicted or closed

    def _load_within(self, deadline: Deadline) -> None:
        done: Future[None] = Future()
        gave_up = threading.Event()

        def load() -> None:
            try:
                self._load_now()
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)
                if gave_up.is_set():  # nobody is waiting for the error: say it here
                    log.error("backend `%s`: loading in the background failed: %s", self.name, exc)

        threading.Thread(target=load, name=f"pixelroute-warmup-{self.name}", daemon=True).start()
        while not futures_wait([done], timeout=_POLL_S).done:
            if deadline.cancelled or deadline.expired():
                gave_up.set()
                if done.done():  # it landed (or failed) just now: report that instead
                    break
                if deadline.cancelled:
                    raise Cancelled(f"warm-up of backend `{self.name}` was cancelled; "
                                    "the load goes on in the background")
                raise DeadlineExceeded(f"backend `{self.name}` did not load before the deadline; "
                                       "the load goes on in the background")
        done.result()

    def _check_before_warmup(self, deadline: Deadline) -> None:
        if deadline.cancelled:
            raise Cancelled(f"warm-up of backend `{self.name}` was cancelled before it started")
        if deadline.expired():
            raise DeadlineExceeded(f"backend `{self.name}`: the deadline passed before the warm-up started")

    def _expected(self) -> LoadSpec | None:
        # Another backend may have loaded the same pipeline before this one's first request.
        # Without torch imported nothing can be loaded, and resolving the device would import it.
        if self._expected_spec is None:
            if "torch" not in sys.modules:
                return None
            try:
                self._expected_spec = self._resolve_spec()
            except ConfigError:  # e.g. `device = "cuda"` without CUDA: nothing of ours is loaded
                return None
        return self._expected_spec

    def close(self) -> None:
        """Unload the pipelines no other open backend uses (queued requests finish first)."""
        if not self._closed:
            self._closed = True
            self._cache.drop_user(id(self))

    # -- preparing a job (caller's thread) ---------------------------------------------------

    def _submit(self, request: GenerateRequest, deadline: Deadline) -> Job:
        self.validate(request)
        if deadline.cancelled:
            raise Cancelled(f"request to backend `{self.name}` was cancelled before it started")
        if deadline.expired():
            raise DeadlineExceeded(f"backend `{self.name}`: the deadline passed before the request started")
        slot = self._cache.acquire(self._load_spec(), id(self))
        try:
            job = self._job(slot, request, deadline)
            job.future.add_done_callback(lambda _: self._cache.release(slot))
        except BaseException:
            self._cache.release(slot)
            raise
        slot.worker.submit(job)
        return job

    def _job(self, slot: PipelineSlot, request: GenerateRequest, deadline: Deadline) -> Job:
        caps = self.capabilities
        width, height = self.effective_size(request)
        scheduler = request.scheduler or self.config.default_scheduler
        scheduler_name = resolve_scheduler(scheduler, slot.default_scheduler) if scheduler else None
        seed = request.seed if request.seed is not None else secrets.randbelow(2**63 - 16)
        image, mask, strength = _edit_inputs(request, width, height)
        item = Prepared(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            width=width,
            height=height,
            n=request.n,
            steps=request.steps if request.steps is not None else (caps.default_steps or 1),
            guidance=request.guidance if request.guidance is not None else (caps.default_guidance or 0.0),
            scheduler=scheduler_name,
            seed=seed,
            submitted_at=self.clock(),
            image=image,
            mask=mask,
            strength=strength,
        )
        predicted = slot.predict(item.shape(item.n), item.denoise_steps)
        if predicted is not None and predicted > deadline.remaining():
            raise DeadlineExceeded(
                f"backend `{self.name}`: {item.denoise_steps} steps at {width}x{height} take about {predicted:.2f} s "
                f"but {deadline.remaining():.2f} s are left; not started"
            )
        # edits never batch: each has its own input image
        batching = self.config.max_batch_size > 1 and image is None
        runner = partial(
            run_batch, slot, clock=self.clock, model=self.config.model, batch_invariant=batching,
            extra={"family": self.family.name, "device": slot.spec.device, "dtype": slot.spec.dtype},
        )
        return Job(
            payload=item,
            deadline=deadline,
            runner=runner,
            key=(self.name, width, height, item.steps, item.guidance, scheduler_name,
                 item.negative_prompt is not None) if batching else None,
            images=item.n,
            batch_limit=self.config.max_batch_size,
            window_s=self.config.batch_window_ms / 1000.0,
            predict=lambda batch: slot.predict(item.shape(sum(j.images for j in batch)), item.denoise_steps),
        )

    def _load_spec(self) -> LoadSpec:
        if self._spec is None:
            s = self.config
            if s.make_tiny is not None:
                from .._tiny import build_tiny, is_built

                if not is_built(Path(s.model).expanduser()):
                    log.warning("backend `%s`: building a tiny %s pipeline with RANDOM weights at %s",
                                self.name, s.make_tiny, s.model)
                    build_tiny(s.make_tiny, s.model)
            self._spec = self._resolve_spec()
            if s.default_scheduler is not None:
                self._check_default_scheduler(self._spec)
        return self._spec

    def _resolve_spec(self) -> LoadSpec:
        """The cache key of this backend's pipeline: device and dtype resolved; builds nothing."""
        from ._pipeline_cache import resolve_device, resolve_dtype

        s = self.config
        device = resolve_device(s.device)
        path = Path(s.model).expanduser()
        # a tiny model is built at exactly this path, so it is the key before the build too
        model = str(path) if s.make_tiny is not None or path.exists() else s.model
        return LoadSpec(model=model, device=device, dtype=resolve_dtype(s.dtype, device), variant=s.variant)

    def _check_default_scheduler(self, spec: LoadSpec) -> None:
        slot = self._cache.acquire(spec, id(self))
        try:
            resolve_scheduler(self.config.default_scheduler or "", slot.default_scheduler)
        except ValidationError as exc:
            self._spec = None
            raise ConfigError(f"backend `{self.name}`: `default_scheduler`: {exc}") from None
        finally:
            self._cache.release(slot)

    def _check_waiting(self, job: Job, deadline: Deadline) -> None:
        """Give up on a job whose caller's deadline passed or whose cancel token fired."""
        if deadline.cancelled:
            job.cancel()
            raise Cancelled(f"request to backend `{self.name}` was cancelled")
        if deadline.expired():
            job.cancel()
            raise DeadlineExceeded(f"backend `{self.name}` could not finish before the deadline")


def _edit_inputs(request: GenerateRequest, width: int, height: int) -> tuple[Any, Any, float | None]:
    """An edit's input image and mask at the output size, and its strength; ``None``s for a generation."""
    if request.operation != "edit":
        return None, None, None
    from PIL import Image

    edit: EditRequest = request  # type: ignore[assignment]  # an EditRequest, by its operation
    image = edit.image.image
    mask = None if edit.mask is None else edit.mask.image
    if image.size != (width, height):  # the caller asked for another size: honoured by resizing the input
        image = image.resize((width, height), Image.Resampling.LANCZOS)
        mask = None if mask is None else mask.resize((width, height), Image.Resampling.BILINEAR)
    return image, mask, edit.effective_strength


def _family(settings: DiffusersSettings) -> Family:
    from .._tiny import tiny_family

    tiny = settings.make_tiny or tiny_family(Path(settings.model).expanduser())
    return detect_family(local_class_name(settings.model), settings.model, tiny)
