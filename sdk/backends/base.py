"""The backend extension point: one abstract method, ``generate(request, deadline)``.

A backend declares what it can do (:class:`Capabilities`), what it costs (:class:`Price`) and
turns a :class:`~pixelroute.GenerateRequest` into a :class:`BackendOutput` before ``deadline``.
Validation against the capabilities happens before any compute or network call.

Backends that can also edit images declare ``"edit"`` in ``Capabilities.operations`` and
implement :meth:`Backend.edit` (an :class:`~pixelroute._edit.EditRequest` in, the same
:class:`BackendOutput` out); the drivers call :meth:`Backend.run`, which picks the method by the
request's ``operation``. A backend's ``operations`` setting can narrow what its kind supports.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._deadline import Deadline
from .._errors import ConfigError, DeadlineExceeded, ValidationError
from .._types import GenerateRequest

if TYPE_CHECKING:
    from .._edit import EditRequest

#: what a backend may be asked to do
OPERATIONS = ("generate", "edit")
Operation = Literal["generate", "edit"]


class Price(BaseModel):
    """How a backend charges. Exactly one of the three rates is set.

    ``per_image`` (remote APIs), ``per_megapixel`` (fal-style), ``per_gpu_second`` (local GPUs
    valued at a rental rate, or time-billed hosts).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_image: float | None = Field(default=None, ge=0)
    per_megapixel: float | None = Field(default=None, ge=0)
    per_gpu_second: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_rate(self) -> Price:
        rates = [r for r in (self.per_image, self.per_megapixel, self.per_gpu_second) if r is not None]
        if len(rates) > 1:
            raise ValueError("`price` takes exactly one of per_image, per_megapixel, per_gpu_second")
        return self

    def estimate(self, width: int, height: int, n: int, gpu_s: float | None = None) -> float:
        """USD for ``n`` images of ``width`` x ``height``; ``gpu_s`` for time-billed backends."""
        if self.per_image is not None:
            return self.per_image * n
        if self.per_megapixel is not None:
            return self.per_megapixel * n * width * height / 1e6
        if self.per_gpu_second is not None:
            return self.per_gpu_second * (gpu_s or 0.0)
        return 0.0

    def as_dict(self) -> dict[str, float]:
        """The rate that is set, as in the config file: ``{"per_image": 0.04}``."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


@dataclass(frozen=True)
class Capabilities:
    """What a backend accepts. Requests outside these limits are refused before any work."""

    max_width: int = 2048
    max_height: int = 2048
    size_multiple: int = 8
    max_n: int = 4
    default_width: int = 1024
    default_height: int = 1024
    default_steps: int | None = None
    default_guidance: float | None = None
    supports_negative_prompt: bool = True
    supports_seed: bool = True
    supports_steps: bool = True
    supports_guidance: bool = True
    supports_scheduler: bool = False
    #: fixed sizes the provider accepts, e.g. OpenAI's ("1024x1024", ...); empty = any multiple
    allowed_sizes: tuple[tuple[int, int], ...] = ()
    #: what the backend can do: "generate" (text to image) and/or "edit" (image and prompt to image)
    operations: tuple[str, ...] = ("generate",)

    def validate(self, request: GenerateRequest, backend: str, *, check_size: bool = True) -> None:
        """Raise :class:`ValidationError` naming the field when ``request`` is out of bounds.

        ``check_size=False`` skips the size rules (an edit whose provider picks the output size).
        """
        if check_size:
            self._validate_size(request, backend)
        if request.n > self.max_n:
            raise ValidationError(
                f"`n` must be at most {self.max_n} for backend `{backend}` but is {request.n}.",
                field="n",
                value=request.n,
            )
        unsupported: tuple[tuple[str, object, bool], ...] = (
            ("negative_prompt", request.negative_prompt, self.supports_negative_prompt),
            ("seed", request.seed, self.supports_seed),
            ("steps", request.steps, self.supports_steps),
            ("guidance", request.guidance, self.supports_guidance),
            ("scheduler", request.scheduler, self.supports_scheduler),
        )
        for knob, given, supported in unsupported:
            if given is not None and not supported:
                raise ValidationError(
                    f"`{knob}` cannot be honoured by backend `{backend}` but is {given!r}; "
                    f"leave it unset or pin a backend that supports it.",
                    field=knob,
                    value=given,
                )

    def _validate_size(self, request: GenerateRequest, backend: str) -> None:
        width, height = request.size_or(self.default_width, self.default_height)
        # an edit without width/height keeps its input's size: say so rather than blame `width`
        source = "the input image's " if request.size_from_image else ""
        hint = "; pass `width` and `height` to resize it" if request.size_from_image else ""
        for name, value, limit in (("width", width, self.max_width), ("height", height, self.max_height)):
            if value % self.size_multiple:
                raise ValidationError(
                    f"{source}`{name}` must be a multiple of {self.size_multiple} for backend `{backend}` "
                    f"but is {value}{hint}.",
                    field="image" if source else name,
                    value=value,
                )
            if value > limit:
                raise ValidationError(
                    f"{source}`{name}` must be at most {limit} for backend `{backend}` but is {value}{hint}.",
                    field="image" if source else name,
                    value=value,
                )
        if self.allowed_sizes and (width, height) not in self.allowed_sizes:
            sizes = ", ".join(f"{w}x{h}" for w, h in self.allowed_sizes)
            raise ValidationError(
                f"{source}`width`x`height` must be one of {sizes} for backend `{backend}` but is "
                f"{width}x{height}{hint}.",
                field="image" if source else "width",
                value=(width, height),
            )


@dataclass
class BackendOutput:
    """What one successful attempt produced."""

    images: list[Any]  # PIL images
    gpu_s: float | None = None
    #: the actual charge when the backend knows it; else the client prices it with ``Price``
    cost_usd: float | None = None
    queue_s: float = 0.0
    model: str | None = None
    #: remote job id (async-job protocols), persisted so a timed-out result can be collected
    job_id: str | None = None
    #: effective knobs after defaults (steps, guidance, width, height, scheduler)
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class BackendSettings(BaseModel):
    """Settings common to every backend kind; each kind subclasses this with its own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    model: str | None = None
    price: Price = Field(default_factory=Price)
    max_concurrency: int = Field(default=4, ge=1)
    #: step counts the router may choose between (joint choice of backend and knobs)
    step_options: list[int] = Field(default_factory=list)
    #: declared strengths in [0, 1] per scenario (typography, counting, composition, ...)
    strengths: dict[str, float] = Field(default_factory=dict)
    #: prior typical latency in seconds for one default-size image (cold-start routing)
    typical_latency_s: float | None = Field(default=None, gt=0)
    #: prior seconds to load the backend before its first request (local pipelines); unset =
    #: the backend's own estimate (diffusers: from the model family's size), none for remote APIs
    typical_load_s: float | None = Field(default=None, ge=0)
    #: prior failure rate (cold-start routing)
    typical_failure_rate: float | None = Field(default=None, ge=0, le=1)
    #: the operations this backend may serve (generate, edit); unset = every one its kind and model can do
    operations: list[Operation] | None = Field(default=None, min_length=1)


class Backend(ABC):
    """A place that turns a request into images.

    Subclasses implement :meth:`generate`; :meth:`agenerate` defaults to running it in a
    worker thread and remote backends override it with native async I/O. Backends that can edit
    declare it in their capabilities and implement :meth:`edit` (and :meth:`aedit` where they
    have native async I/O). Backends with something to load before their first request (local
    pipelines) override :attr:`loaded` and :meth:`warmup`; for the others both are trivially
    true and free.
    """

    kind: ClassVar[str] = "custom"
    local: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        *,
        capabilities: Capabilities | None = None,
        price: Price | None = None,
        settings: BackendSettings | None = None,
    ) -> None:
        self.name = name
        self.capabilities = capabilities or Capabilities()
        self.price = price or (settings.price if settings else Price())
        self.settings = settings
        #: what this backend serves: its capabilities, narrowed by the ``operations`` setting
        self.operations: tuple[str, ...] = _operations(self.capabilities.operations, settings, name, self.kind)

    @abstractmethod
    def generate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        """Produce images for ``request`` before ``deadline`` or raise a ``PixelrouteError``."""

    async def agenerate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        """Async twin of :meth:`generate`; the default runs it in a worker thread."""
        return await asyncio.to_thread(self.generate, request, deadline)

    def edit(self, request: EditRequest, deadline: Deadline) -> BackendOutput:
        """Edit ``request.image`` as ``request.prompt`` says, before ``deadline``; backends that edit override it."""
        raise self.cannot(request)

    async def aedit(self, request: EditRequest, deadline: Deadline) -> BackendOutput:
        """Async twin of :meth:`edit`; the default runs it in a worker thread."""
        return await asyncio.to_thread(self.edit, request, deadline)

    def run(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        """:meth:`generate` or :meth:`edit`, by ``request.operation`` (what the client's drivers call)."""
        if request.operation == "edit":
            return self.edit(request, deadline)  # type: ignore[arg-type]  # an EditRequest, by its operation
        return self.generate(request, deadline)

    async def arun(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        """Async twin of :meth:`run`."""
        if request.operation == "edit":
            return await self.aedit(request, deadline)  # type: ignore[arg-type]
        return await self.agenerate(request, deadline)

    def cannot(self, request: GenerateRequest) -> ValidationError:
        """The error for a request whose operation this backend does not serve."""
        return ValidationError(
            f"backend `{self.name}` ({self.kind}) cannot {request.operation} images: it serves "
            f"{', '.join(self.operations)}",
            field="backend", value=self.name,
        )

    def validate(self, request: GenerateRequest) -> None:
        """Refuse ``request`` before any compute if it is outside the capabilities."""
        if request.operation not in self.operations:
            raise self.cannot(request)
        self.capabilities.validate(request, self.name, check_size=self.size_is_sent(request))
        strength = getattr(request, "strength", None)  # an edit's
        if strength is not None and not self.supports_strength(request):  # type: ignore[arg-type]
            raise ValidationError(
                f"`strength` cannot be honoured by backend `{self.name}` for this edit but is {strength!r}; "
                f"leave it unset or pin a backend that supports it.",
                field="strength", value=strength,
            )

    def size_is_sent(self, request: GenerateRequest) -> bool:
        """Whether the size rules apply: not to an edit whose output size the provider picks."""
        return True

    def supports_strength(self, request: EditRequest) -> bool:
        """Whether an edit's ``strength`` can be honoured (local pipelines: always)."""
        return True

    def effective_size(self, request: GenerateRequest) -> tuple[int, int]:
        """The ``(width, height)`` this backend makes for ``request``, its defaults filling what is unset
        (an edit's unset size is its input image's)."""
        return request.size_or(self.capabilities.default_width, self.capabilities.default_height)

    def effective_steps(self, request: GenerateRequest) -> int | None:
        """The step count it runs for ``request``: the request's, else its default (``None``: none declared)."""
        return request.steps if request.steps is not None else self.capabilities.default_steps

    def estimate_cost(self, request: GenerateRequest, gpu_s: float | None = None) -> float:
        """USD for ``request`` at this backend's price; ``gpu_s`` for time-billed prices."""
        width, height = self.effective_size(request)
        return self.price.estimate(width, height, request.n, gpu_s)

    @property
    def loaded(self) -> bool:
        """Whether a request would start without loading anything first.

        Cheap (the router asks it per decision) and never loads: ``True`` unless a subclass
        has something to load (a local pipeline not in memory yet, or evicted).
        """
        return True

    def warmup(self, deadline: Deadline | None = None) -> float:
        """Load what the first request would load, so that it does not pay for it; idempotent.

        Returns the seconds it took. Nothing to load here: remote backends build their
        connection pools on first use and no network call is made.
        """
        return 0.0

    async def awarmup(self, deadline: Deadline | None = None) -> float:
        """Async twin of :meth:`warmup`; the default runs it in a worker thread (loads block)."""
        if type(self).warmup is Backend.warmup:
            return 0.0  # nothing to load: no thread hop
        return await asyncio.to_thread(self.warmup, deadline)

    def _load_estimate_s(self) -> float | None:
        """Prior seconds :meth:`warmup` takes when not :attr:`loaded`; the setting, else ``None``."""
        return self.settings.typical_load_s if self.settings else None

    def cancel_job(self, job_id: str) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Cancel a remote job (protocols with a cancel endpoint override this)."""

    def resume(self, job_id: str, deadline: Deadline) -> BackendOutput:
        """Collect a job that finished after the client gave up (async-job protocols)."""
        raise NotImplementedError(f"backend `{self.name}` ({self.kind}) has no resumable jobs")

    def describe(self) -> dict[str, Any]:
        """A plain description for the router: kind, locality, price, knobs and priors."""
        s = self.settings
        caps = self.capabilities
        return {
            "name": self.name,
            "kind": self.kind,
            "local": self.local,
            "price": self.price.as_dict(),
            "default_steps": caps.default_steps,
            "default_guidance": caps.default_guidance,
            "default_width": caps.default_width,
            "default_height": caps.default_height,
            "step_options": list(s.step_options) if s else [],
            "strengths": dict(s.strengths) if s else {},
            "typical_latency_s": s.typical_latency_s if s else None,
            "typical_failure_rate": s.typical_failure_rate if s else None,
            "typical_load_s": self._load_estimate_s(),
            "supports_negative_prompt": caps.supports_negative_prompt,
            "supports_steps": caps.supports_steps,
            "operations": list(self.operations),
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, connection pools, GPU memory)."""

    async def aclose(self) -> None:
        """Async twin of ``close``."""
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


Handler = Callable[[GenerateRequest, Deadline], BackendOutput | Awaitable[BackendOutput]]


class MockSettings(BackendSettings):
    """Settings of the ``mock`` kind: a solid-colour image after an optional delay."""

    kind: Literal["mock"] = "mock"
    delay_s: float = Field(default=0.0, ge=0)
    failure: Literal["server_error", "rate_limited", "content_rejected", "timeout"] | None = None
    local: bool = False


class MockBackend(Backend):
    """A backend whose behaviour is a function you supply: for tests of code that uses pixelroute.

    ::

        def handler(request, deadline):
            return BackendOutput(images=[Image.new("RGB", (64, 64))])
        client = Client(backends=[MockBackend("fake", handler)])

    Without a handler it returns solid images of the requested size, after ``delay_s``, and
    raises ``DeadlineExceeded`` if the delay does not fit the deadline (as a real backend would).
    It edits too (``operations``, default both): the handler gets the
    :class:`~pixelroute._edit.EditRequest`; without one, the input image comes back at the output
    size with the masked area (or, without a mask, the whole image) painted in the seed's colour.
    """

    kind = "mock"

    def __init__(
        self,
        name: str = "mock",
        handler: Handler | None = None,
        *,
        capabilities: Capabilities | None = None,
        price: Price | None = None,
        settings: BackendSettings | None = None,
        delay_s: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        local: bool = False,
        operations: tuple[str, ...] | None = None,
    ) -> None:
        caps = capabilities or Capabilities(default_width=64, default_height=64, default_steps=4,
                                            operations=OPERATIONS)
        if operations is not None:
            caps = replace(caps, operations=tuple(operations))
        super().__init__(name, capabilities=caps, price=price, settings=settings)
        self.handler = handler
        self.delay_s = delay_s
        self._sleep = sleep
        self.local = local  # type: ignore[misc]  # instance override of the class default
        self.calls = 0

    @classmethod
    def from_settings(cls, settings: MockSettings, **_: Any) -> MockBackend:
        handler = _failing_handler(settings.failure) if settings.failure else None
        return cls(settings.name, handler, settings=settings, delay_s=settings.delay_s, local=settings.local)

    def describe(self) -> dict[str, Any]:
        # a mock that sleeps tells the router so: two mocks with different delays must not look
        # alike (a test then depends on exploration or ties to pick the fast one)
        d = super().describe()
        if d.get("typical_latency_s") is None and self.delay_s > 0:
            d["typical_latency_s"] = self.delay_s
        return d

    def generate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        self.calls += 1
        if self.handler is not None:
            out = self.handler(request, deadline)
            if asyncio.iscoroutine(out):
                raise TypeError("an async handler needs AsyncClient; Client.generate cannot await it")
            assert isinstance(out, BackendOutput)
            return out
        return self._default(request, deadline)

    async def agenerate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        self.calls += 1
        if self.handler is not None:
            out = self.handler(request, deadline)
            if asyncio.iscoroutine(out) or isinstance(out, Awaitable):
                out = await out
            assert isinstance(out, BackendOutput)
            return out
        if self.delay_s:
            if self.delay_s > deadline.remaining():
                await asyncio.sleep(deadline.remaining())
                raise DeadlineExceeded(f"backend `{self.name}` could not finish before the deadline")
            await asyncio.sleep(self.delay_s)
        return self._image(request)

    def edit(self, request: EditRequest, deadline: Deadline) -> BackendOutput:
        return self.generate(request, deadline)

    async def aedit(self, request: EditRequest, deadline: Deadline) -> BackendOutput:
        return await self.agenerate(request, deadline)

    def _default(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        if self.delay_s:
            if self.delay_s > deadline.remaining():
                left = deadline.remaining()
                if not math.isinf(left):
                    self._sleep(left)
                raise DeadlineExceeded(f"backend `{self.name}` could not finish before the deadline")
            self._sleep(self.delay_s)
        return self._image(request)

    def _image(self, request: GenerateRequest) -> BackendOutput:
        from PIL import Image

        width, height = self.effective_size(request)
        seed = request.seed or 0
        colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
        edit: EditRequest | None = request if request.operation == "edit" else None  # type: ignore[assignment]
        if edit is None:
            images = [Image.new("RGB", (width, height), colour) for _ in range(request.n)]
        else:
            base = edit.image.image.resize((width, height))
            mask = None if edit.mask is None else edit.mask.image.resize((width, height))
            paint = Image.new("RGB", (width, height), colour)
            images = [Image.composite(paint, base, mask) if mask is not None else Image.blend(base, paint, 0.5)
                      for _ in range(request.n)]
        return BackendOutput(images=images, model="mock", params={"width": width, "height": height})


def _operations(supported: tuple[str, ...], settings: BackendSettings | None, name: str, kind: str) -> tuple[str, ...]:
    """What the backend serves: all it can, or the ``operations`` setting when that is a subset."""
    wanted = settings.operations if settings is not None else None
    if wanted is None:
        return supported
    extra = [op for op in wanted if op not in supported]
    if extra:
        raise ConfigError(f"backend `{name}`: `operations` includes {', '.join(map(repr, extra))} but this "
                          f"{kind} backend (model {settings.model if settings else None!r}) can only "
                          f"{' and '.join(supported)}")
    return tuple(op for op in OPERATIONS if op in wanted)


def _failing_handler(failure: str) -> Handler:
    from .. import _errors

    exc_type: type[Exception] = {
        "server_error": _errors.ServerError,
        "rate_limited": _errors.RateLimited,
        "content_rejected": _errors.ContentRejected,
        "timeout": _errors.DeadlineExceeded,
    }[failure]

    def handler(request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        raise exc_type(f"mock backend configured to fail with {failure}")

    return handler
