"""The worker side of the diffusers backend: one pipeline call for one or more jobs.

Runs on the pipeline's worker thread. Each job keeps its own seeds: image ``i`` of a request
with seed ``s`` is drawn from ``torch.Generator("cpu").manual_seed(s + i)``, and a batch passes
the list of every job's generators, so a batched image is the image the same request gets
alone. CPU generators make the noise identical on every device (diffusers' advice).

Edits run the family's image-to-image pipeline (no mask) or inpainting pipeline (a mask, white =
repaint), both built from the loaded one with ``from_pipe`` (:meth:`PipelineSlot.edit_pipeline`),
with the same seeds. They denoise ``int(steps x strength)`` steps, as diffusers computes it, and
never share a batch (each has its own input image).

The deadline is checked inside the denoising loop (``callback_on_step_end``): a job whose
remaining time cannot cover the remaining steps at the measured per-step speed, or whose
cancel token fired, is failed at once; when no job of the call is still wanted, the loop is
stopped with diffusers' documented ``pipe._interrupt = True`` and an exception that unwinds
the call. The pipeline keeps no state between calls, so the next request runs normally.

The same callback reports each live job's step to its progress listener (``deadline.progress``,
``None`` when nobody listens) and, on the steps the call picked for partial images, decodes that
job's slice of the latents with the pipeline's VAE (:mod:`._diffusers_preview`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import BackendError, Cancelled, DeadlineExceeded, PixelrouteError, ValidationError
from .._hf_quiet import quiet_hf
from ._diffusers_preview import decode_latents
from ._pipeline_cache import PipelineSlot
from ._pipeline_invariance import make_batch_invariant
from ._pipeline_worker import Job
from .base import BackendOutput

log = logging.getLogger("pixelroute.diffusers")

#: short names people use for schedulers (A1111 / ComfyUI habits) -> diffusers class
SCHEDULER_ALIASES = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "dpm++sde": "DPMSolverSDEScheduler",
    "unipc": "UniPCMultistepScheduler",
    "flow_euler": "FlowMatchEulerDiscreteScheduler",
    "flowmatch_euler": "FlowMatchEulerDiscreteScheduler",
    "flow_heun": "FlowMatchHeunDiscreteScheduler",
}


@dataclass(frozen=True)
class Prepared:
    """A validated request with every knob resolved (what the pipeline call needs)."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    n: int
    steps: int
    guidance: float
    scheduler: str | None  # a diffusers class name, or None for the pipeline's default
    seed: int
    submitted_at: float  # on the backend's clock, for queue_s
    #: an edit's input (RGB, already at width x height), mask (L, same size) and strength
    image: Any = None
    mask: Any = None
    strength: float | None = None

    @property
    def denoise_steps(self) -> int:
        """Steps the pipeline runs: all of them, or diffusers' ``int(steps * strength)`` for an edit."""
        return self.steps if self.strength is None else min(int(self.steps * self.strength), self.steps)

    @property
    def cfg(self) -> bool:
        """Classifier-free guidance doubles the denoiser's batch (diffusers: guidance > 1)."""
        return self.guidance > 1.0

    def shape(self, images: int) -> tuple[int, int, int, bool]:
        return (self.width, self.height, images, self.cfg)


def resolve_scheduler(name: str, default_scheduler: Any) -> str:
    """The class name for ``name`` among the pipeline's compatible schedulers, or a clear error."""
    compatibles = {cls.__name__: cls for cls in default_scheduler.compatibles}
    compatibles[type(default_scheduler).__name__] = type(default_scheduler)
    wanted = SCHEDULER_ALIASES.get(name.lower(), name)
    for cls_name in compatibles:
        if cls_name.lower() == wanted.lower():
            return cls_name
    raise ValidationError(
        f"`scheduler` must be one of the pipeline's compatible schedulers "
        f"({', '.join(sorted(compatibles))}) but is {name!r}",
        field="scheduler",
        value=name,
    )


class _Interrupted(Exception):
    """Unwinds the pipeline call after the deadline/cancel check has failed every job."""


@dataclass
class _StepWatch:
    """The ``callback_on_step_end`` state for one call."""

    jobs: list[Job]
    steps: int
    clock: Callable[[], float]
    started: float
    step_times: list[float] = field(default_factory=list)
    #: seconds spent decoding partial images: kept out of the step speed the deadline check and
    #: the latency model see
    preview_s: float = 0.0
    previews_failed: bool = False

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
                 ) -> dict[str, Any]:
        now = self.clock()
        self.step_times.append(now - self.preview_s)
        done = len(self.step_times)
        per_step = (self.step_times[-1] - self.started) / done
        steps_left = self.steps - done
        alive = 0
        offset = 0
        for job in self.jobs:
            first, offset = offset, offset + job.payload.n
            if job.future.done():
                continue
            if job.cancelled:
                job.fail(Cancelled(f"cancelled at denoising step {done}/{self.steps}"))
            elif job.deadline.remaining() < per_step * steps_left:
                job.fail(DeadlineExceeded(
                    f"stopped at denoising step {done}/{self.steps}: "
                    f"{steps_left} steps at {per_step:.3f} s/step do not fit the "
                    f"{job.deadline.remaining():.3f} s left"
                ))
            else:
                alive += 1
                progress = job.deadline.progress  # None unless someone listens: nothing built then
                if progress is not None:
                    previews: tuple[Any, ...] = ()
                    if progress.wants_preview(done, self.steps):
                        previews = self._previews(pipe, callback_kwargs, job, first)
                    progress.step(done, self.steps, previews)
        if not alive:
            pipe._interrupt = True  # diffusers' documented way to stop the denoising loop
            raise _Interrupted()
        return callback_kwargs

    def _previews(self, pipe: Any, callback_kwargs: dict[str, Any], job: Job, first: int) -> tuple[Any, ...]:
        """The job's intermediate latents decoded to images; none if this pipeline's cannot be."""
        latents = callback_kwargs.get("latents")
        if latents is None or self.previews_failed:
            return ()
        t0 = self.clock()
        item: Prepared = job.payload
        try:
            return tuple(decode_latents(pipe, latents[first:first + item.n], item.width, item.height))
        except Exception:  # a preview is a courtesy: the generation goes on without it
            self.previews_failed = True
            log.warning("partial images cannot be decoded for this pipeline (%s); the call goes on without them",
                        type(pipe).__name__, exc_info=True)
            return ()
        finally:
            self.preview_s += self.clock() - t0

    def per_step_s(self) -> float:
        if len(self.step_times) >= 2:
            return (self.step_times[-1] - self.step_times[0]) / (len(self.step_times) - 1)
        return self.step_times[0] - self.started if self.step_times else 0.0


def run_batch(
    slot: PipelineSlot,
    jobs: list[Job],
    *,
    clock: Callable[[], float],
    model: str,
    extra: dict[str, Any],
    batch_invariant: bool,
) -> None:
    """Run ``jobs`` (same call shape) as one pipeline call and settle every job's future."""
    import torch

    pipe = slot.pipe
    if batch_invariant and not slot.batch_invariant:
        make_batch_invariant(pipe)  # here, on the worker thread, so no call sees half of it
        slot.batch_invariant = True
    items: list[Prepared] = [j.payload for j in jobs]
    first = items[0]
    if first.image is not None:  # an edit (never batched with others)
        pipe = _edit_pipeline(slot, first, jobs)
        if pipe is None:
            return
    prompts: list[str] = []
    negatives: list[str] = []
    generators: list[Any] = []
    for item in items:
        for i in range(item.n):
            prompts.append(item.prompt)
            negatives.append(item.negative_prompt or "")
            generators.append(torch.Generator("cpu").manual_seed(item.seed + i))
    pipe.scheduler = _scheduler(slot, first.scheduler)
    started = clock()
    steps_run = first.denoise_steps
    watch = _StepWatch(jobs, steps_run, clock, started)
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "num_inference_steps": first.steps,
        "guidance_scale": first.guidance,
        "width": first.width,
        "height": first.height,
        "generator": generators,
        "callback_on_step_end": watch,
    }
    if first.negative_prompt is not None:  # the batch key guarantees all or none have one
        kwargs["negative_prompt"] = negatives
    if first.image is not None:
        kwargs.update(image=first.image, strength=first.strength)
        if first.mask is not None:
            kwargs["mask_image"] = first.mask
        if not _takes_size(type(pipe)):  # SD/SDXL image-to-image: the size is the (resized) image's
            del kwargs["width"], kwargs["height"]
    cuda = slot.spec.device.startswith("cuda")
    timer = _GpuTimer(cuda)
    # SDXL's image-to-image and inpainting pipelines log a notice on every call when they upcast the
    # VAE (as SDXL's VAE config asks): an embedding application should not see it per request
    notices = quiet_hf() if first.image is not None else contextlib.nullcontext()
    try:
        with torch.inference_mode(), notices:
            output = pipe(**kwargs)
    except _Interrupted:
        return  # every job was already failed with its own reason
    except PixelrouteError as exc:
        for job in jobs:
            job.fail(exc)
        return
    except Exception as exc:  # torch / diffusers errors, mapped at the boundary and chained
        err = BackendError(f"pipeline call failed: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        for job in jobs:
            job.fail(err)
        return
    gpu_s = timer.stop()
    total_s = clock() - started - watch.preview_s
    images = list(output.images)
    slot.record(first.shape(len(images)), steps_run, watch.per_step_s(), total_s)
    offset = 0
    for job, item in zip(jobs, items, strict=True):
        own = images[offset : offset + item.n]
        offset += item.n
        job.succeed(BackendOutput(
            images=own,
            gpu_s=gpu_s * item.n / len(images),
            queue_s=max(0.0, started - item.submitted_at),
            model=model,
            params={
                "width": item.width,
                "height": item.height,
                "steps": item.steps,
                "guidance": item.guidance,
                "scheduler": item.scheduler or type(slot.default_scheduler).__name__,
                "seed": item.seed,
                "n": item.n,
                **({"strength": item.strength} if item.strength is not None else {}),
            },
            extra={**extra, "seeds": [item.seed + i for i in range(item.n)], "batch_images": len(images)},
        ))


_TAKES_SIZE: dict[type, bool] = {}


def _takes_size(pipeline_class: type) -> bool:
    """Whether a pipeline's call accepts ``width``/``height`` (SD3's image-to-image does, and
    without them it would use its default size instead of the image's); memoised per class."""
    known = _TAKES_SIZE.get(pipeline_class)
    if known is None:
        params = inspect.signature(pipeline_class.__call__).parameters
        known = _TAKES_SIZE[pipeline_class] = "width" in params and "height" in params
    return known


def _edit_pipeline(slot: PipelineSlot, item: Prepared, jobs: list[Job]) -> Any:
    """The slot's image-to-image or inpainting pipeline; ``None`` (jobs failed) if diffusers has none."""
    try:
        return slot.edit_pipeline(masked=item.mask is not None)
    except (ValueError, KeyError, TypeError) as exc:  # AutoPipeline raises these for an unknown family
        err = BackendError(f"no {'inpainting' if item.mask is not None else 'image-to-image'} pipeline for "
                           f"{type(slot.pipe).__name__}: {exc}")
        err.__cause__ = exc
        for job in jobs:
            job.fail(err)
        return None


def _scheduler(slot: PipelineSlot, name: str | None) -> Any:
    if name is None or name == type(slot.default_scheduler).__name__:
        return slot.default_scheduler
    scheduler = slot.schedulers.get(name)
    if scheduler is None:
        import diffusers

        cls = getattr(diffusers, name)
        scheduler = slot.schedulers[name] = cls.from_config(slot.default_scheduler.config)
    return scheduler


class _GpuTimer:
    """GPU seconds of the call: CUDA events on a GPU, else this (worker) thread's CPU time.

    ``time.thread_time`` counts only the worker thread, which is right because the pipeline
    runs there; with torch intra-op threads > 1 it undercounts the other threads' share.
    """

    def __init__(self, cuda: bool) -> None:
        self._cuda = cuda
        if cuda:
            import torch

            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._cpu0 = time.thread_time()

    def stop(self) -> float:
        if self._cuda:
            self._end.record()
            self._end.synchronize()
            return float(self._start.elapsed_time(self._end)) / 1000.0
        return time.thread_time() - self._cpu0
