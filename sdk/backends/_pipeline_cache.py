"""Load each pipeline once; evict the least recently used ones when over the memory budget.

A :class:`PipelineSlot` is one loaded pipeline with its own worker thread (calls on one
pipeline are serialised there) and its own timing statistics (seconds per denoising step,
used to decide whether a request fits its deadline). Backends that name the same model,
device, dtype and variant share one slot. A slot in use (pinned by an in-flight request) is
never evicted; the budget may be exceeded rather than break a running call, and that is logged.

Fork (gunicorn ``--preload`` loads in the master, then forks workers): a forked child keeps the
CPU pipelines (copy-on-write pages) with fresh locks and workers, since threads do not survive
a fork. Pipelines on CUDA or MPS cannot be used from a forked child at all; the child drops
them and logs why (load per worker instead, see the operations docs).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError
from ._families import null_components
from ._pipeline_worker import PipelineWorker

log = logging.getLogger("pixelroute.diffusers")


@dataclass(frozen=True)
class LoadSpec:
    """What identifies a loaded pipeline: model, resolved device and dtype, weight variant."""

    model: str
    device: str
    dtype: str
    variant: str | None = None


@dataclass
class StepStats:
    """Exponential moving averages of one call shape's cost, on the backend's clock."""

    per_step_s: float
    overhead_s: float  # text encoding, latent set-up and VAE decode: the part that is not steps


@dataclass
class PipelineSlot:
    """One loaded pipeline, its worker, its schedulers and its measured speed."""

    spec: LoadSpec
    pipe: Any
    nbytes: int
    worker: PipelineWorker
    default_scheduler: Any
    schedulers: dict[str, Any] = field(default_factory=dict)
    stats: dict[tuple[int, int, int, bool], StepStats] = field(default_factory=dict)
    pins: int = 0
    #: backends (by id) that use this slot; the last one to close unloads it
    users: set[int] = field(default_factory=set)
    batch_invariant: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: image-to-image and inpainting pipelines built from ``pipe`` (same modules, no second load)
    edit_pipes: dict[str, Any] = field(default_factory=dict)

    def edit_pipeline(self, masked: bool) -> Any:
        """diffusers' image-to-image (``masked=False``) or inpainting pipeline of this family.

        Built on first use with ``AutoPipeline...from_pipe(pipe)``, which reuses the loaded
        modules (UNet/transformer, VAE, text encoders): no weights are loaded or copied. Called on
        the worker thread, like every use of the pipeline.
        """
        kind = "inpaint" if masked else "img2img"
        derived = self.edit_pipes.get(kind)
        if derived is None:
            from .._hf_quiet import quiet_hf

            with quiet_hf():
                from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

                auto = AutoPipelineForInpainting if masked else AutoPipelineForImage2Image
                derived = auto.from_pipe(self.pipe)
            derived.set_progress_bar_config(disable=True)
            self.edit_pipes[kind] = derived
        return derived

    def record(self, shape: tuple[int, int, int, bool], steps: int, per_step_s: float,
               total_s: float) -> None:
        """Fold one measured call into the averages (``shape`` = width, height, images, cfg)."""
        overhead = max(0.0, total_s - per_step_s * steps)
        with self.lock:
            old = self.stats.get(shape)
            if old is None:
                self.stats[shape] = StepStats(per_step_s, overhead)
            else:
                self.stats[shape] = StepStats(0.7 * old.per_step_s + 0.3 * per_step_s,
                                              0.7 * old.overhead_s + 0.3 * overhead)

    def predict(self, shape: tuple[int, int, int, bool], steps: int) -> float | None:
        """Predicted seconds for a call; scaled from the nearest measured shape; ``None`` if none."""
        with self.lock:
            exact = self.stats.get(shape)
            if exact is not None:
                return exact.overhead_s + exact.per_step_s * steps
            if not self.stats:
                return None
            # cost grows roughly with pixels x images; take the closest measurement and scale it
            work = shape[0] * shape[1] * shape[2] * (2 if shape[3] else 1)
            near, st = min(
                self.stats.items(),
                key=lambda kv: abs(kv[0][0] * kv[0][1] * kv[0][2] * (2 if kv[0][3] else 1) - work),
            )
            ratio = work / max(1, near[0] * near[1] * near[2] * (2 if near[3] else 1))
            return (st.overhead_s + st.per_step_s * steps) * ratio


class PipelineCache:
    """Loaded pipelines keyed by :class:`LoadSpec`, LRU-evicted past ``budget_bytes``."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._slots: OrderedDict[LoadSpec, PipelineSlot] = OrderedDict()
        self._loading: dict[LoadSpec, threading.Lock] = {}
        self._lock = threading.Lock()
        _CACHES.add(self)

    def limit(self, budget_bytes: int | None) -> None:
        """Tighten the budget (the smallest configured budget wins: it is a hard limit)."""
        if budget_bytes is None:
            return
        with self._lock:
            if self.budget_bytes is None or budget_bytes < self.budget_bytes:
                self.budget_bytes = budget_bytes

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._slots.values())

    def loaded(self) -> list[LoadSpec]:
        with self._lock:
            return list(self._slots)

    def peek(self, spec: LoadSpec) -> bool:
        """Whether ``spec`` is loaded (so :meth:`acquire` will not block on a load)."""
        with self._lock:
            return spec in self._slots

    def acquire(self, spec: LoadSpec, user: int) -> PipelineSlot:
        """The slot for ``spec``, loading it on first use; pinned until :meth:`release`."""
        with self._lock:
            slot = self._hit(spec)
            if slot is not None:
                slot.users.add(user)
                return slot
            loading = self._loading.setdefault(spec, threading.Lock())
        with loading:  # one loader per spec; others wait for it and then hit
            with self._lock:
                slot = self._hit(spec)
                if slot is not None:
                    slot.users.add(user)
                    return slot
            pipe = load_pipeline(spec)
            nbytes = pipeline_nbytes(pipe)
            slot = PipelineSlot(
                spec=spec, pipe=pipe, nbytes=nbytes,
                worker=PipelineWorker(spec.model.rsplit("/", 1)[-1] or "pipeline"),
                default_scheduler=pipe.scheduler,
            )
            with self._lock:
                slot.pins = 1
                slot.users.add(user)
                self._slots[spec] = slot
                self._loading.pop(spec, None)
                evicted = self._evict_over_budget()
        for old in evicted:
            _unload(old)
        return slot

    def release(self, slot: PipelineSlot) -> None:
        with self._lock:
            slot.pins -= 1
            evicted = self._evict_over_budget()
        for old in evicted:
            _unload(old)

    def drop_user(self, user: int) -> None:
        """A backend closed: unload the slots nobody else uses (queued jobs finish first)."""
        with self._lock:
            unused = []
            for spec, slot in list(self._slots.items()):
                slot.users.discard(user)
                if not slot.users:
                    del self._slots[spec]
                    unused.append(slot)
        for slot in unused:
            _unload(slot)

    def close(self) -> None:
        """Stop every worker and drop every pipeline."""
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            _unload(slot)

    def _after_fork_in_child(self) -> None:
        """Make the inherited cache usable in a forked child (only this thread survived the fork)."""
        self._lock = threading.Lock()  # may have been held by a thread that no longer exists
        self._loading = {}
        unusable = []
        for spec, slot in list(self._slots.items()):
            if spec.device != "cpu":
                # the parent's CUDA/MPS context is not valid here; touching it (even to free
                # memory) fails, so the slot is only forgotten
                del self._slots[spec]
                unusable.append(spec.model)
                continue
            slot.lock = threading.Lock()
            slot.pins = 0  # the parent's in-flight calls do not exist in this process
            slot.users.clear()  # nor do its backends: this process's own backends re-acquire it
            slot.worker = PipelineWorker(slot.worker.name)
        if unusable:
            log.error(
                "pipelines loaded on a GPU before this process was forked cannot be used here: %s; "
                "with CUDA, preload in each worker (e.g. gunicorn's post_worker_init hook or no "
                "--preload), never in the parent", ", ".join(unusable),
            )

    def _hit(self, spec: LoadSpec) -> PipelineSlot | None:
        slot = self._slots.get(spec)
        if slot is not None:
            self._slots.move_to_end(spec)
            slot.pins += 1
        return slot

    def _evict_over_budget(self) -> list[PipelineSlot]:
        if self.budget_bytes is None:
            return []
        evicted: list[PipelineSlot] = []
        total = sum(s.nbytes for s in self._slots.values())
        for spec, slot in list(self._slots.items()):  # oldest first
            if total <= self.budget_bytes:
                break
            if slot.pins > 0 or slot.worker.busy:
                continue
            del self._slots[spec]
            total -= slot.nbytes
            evicted.append(slot)
        if total > self.budget_bytes:
            log.warning("pipeline cache holds %.2f GB, over its %.2f GB budget: the rest are in use",
                        total / 1e9, self.budget_bytes / 1e9)
        return evicted


def _unload(slot: PipelineSlot) -> None:
    slot.worker.close()
    log.info("unloading pipeline %s (%.1f MB)", slot.spec.model, slot.nbytes / 1e6)
    device = slot.spec.device
    slot.pipe = None
    slot.default_scheduler = None
    slot.schedulers.clear()
    slot.edit_pipes.clear()
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


#: every cache in the process, reset in a forked child
_CACHES: weakref.WeakSet[PipelineCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_CACHES):
        cache._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)

#: the process-wide cache that backends share unless given their own
SHARED = PipelineCache()


def resolve_device(device: str) -> str:
    """``auto`` = cuda > mps > cpu; an explicit device that is not present is a ``ConfigError``."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("`device` is 'cuda' but torch sees no CUDA device")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("`device` is 'mps' but torch sees no MPS device")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` = bfloat16 on a GPU that supports it, else float16 on GPU, float32 on CPU."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


def load_pipeline(spec: LoadSpec) -> Any:
    """``DiffusionPipeline.from_pretrained`` for ``spec``, moved to its device; errors mapped."""
    import torch

    from .._hf_quiet import quiet_hf

    started = time.perf_counter()
    # no progress bars or "accelerate not found" notices in the embedding application's output;
    # the user's own diffusers/transformers settings come back afterwards
    with quiet_hf():
        import diffusers.utils.deprecation_utils as deprecation
        from diffusers import DiffusionPipeline

        # newer diffusers renamed `torch_dtype` to `dtype` (the old name warns); older ones know only it
        dtype_kwarg = "dtype" if hasattr(deprecation, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
        kwargs: dict[str, Any] = {dtype_kwarg: getattr(torch, spec.dtype)}
        if spec.variant:
            kwargs["variant"] = spec.variant
        kwargs.update(null_components(spec.model))  # e.g. SD3 saved without T5
        try:
            pipe = DiffusionPipeline.from_pretrained(spec.model, **kwargs)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"`model` {spec.model!r} could not be loaded: {exc}") from exc
        pipe = pipe.to(spec.device)
    pipe.set_progress_bar_config(disable=True)  # the denoising loop's bar, on every call
    log.info("loaded %s (%s) on %s/%s in %.2f s", spec.model, type(pipe).__name__, spec.device, spec.dtype,
             time.perf_counter() - started)
    return pipe


def pipeline_nbytes(pipe: Any) -> int:
    """Bytes held by the pipeline's modules (parameters and buffers)."""
    import torch

    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in component.parameters())
            total += sum(t.numel() * t.element_size() for t in component.buffers())
    return total
