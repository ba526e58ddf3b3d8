"""Public value types: :class:`SLA`, :class:`GenerateRequest`, :class:`Result`."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._errors import ValidationError
from ._shown import shown

if TYPE_CHECKING:  # pillow is light, but keep the import where it is needed
    from PIL.Image import Image

#: An upper bound on prompts: far past any text encoder, small enough to refuse garbage.
MAX_PROMPT_CHARS = 10_000
# Numeric bounds, shared with the CLI's argument checks. The upper ones are far past any real
# request; they exist so that a hostile number (1e308 seconds, a 5,000-digit seed) is refused
# here rather than overflowing a timer, a float or ``str()`` further down.
#: the longest deadline: one day
MAX_DEADLINE_S = 86_400.0
#: the largest cost cap: a million dollars per call
MAX_COST_USD = 1_000_000.0
MIN_SIDE = 8
#: no backend accepts more; Pillow refuses images past ~89 megapixels anyway
MAX_SIDE = 16_384
MAX_N = 16
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0
MAX_SEED = 2**63 - 1

# A lone surrogate cannot be encoded as UTF-8 (no store, file or HTTP body can hold it) and
# NUL ends strings in C libraries and is refused by PostgreSQL text: both are refused up front.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def check_text(field: str, value: str) -> str:
    """Refuse text that no store, file or provider can carry: ``ValueError`` naming the field and position."""
    match = _BAD_TEXT.search(value)
    if match is None:
        return value
    at = match.start()
    what = "a NUL character" if match.group() == "\x00" else "a lone surrogate"
    snippet = ascii(value[max(0, at - 10) : at + 10])
    raise ValueError(
        f"`{field}` must be valid Unicode text without NUL but contains {what} "
        f"at character {at}: `{snippet}`"
    )


class SLA(BaseModel):
    """What the caller needs: a result within ``deadline_s`` for at most ``max_cost_usd``.

    Usage::

        SLA()                                   # no deadline, no cost cap
        SLA(deadline_s=8.0)                     # 8 s for the whole call, retries and fallbacks included
        SLA(deadline_s=8.0, max_cost_usd=0.05)  # and at most 5 cents spent, across attempts
        SLA(deadline_s=8.0, hedge=True)         # allow a hedged second request on a slow primary

    The deadline covers the whole ``generate()`` call: every attempt, retry sleep, poll and
    download gets only what is left. Cost already spent on failed attempts counts against
    ``max_cost_usd``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    deadline_s: float | None = Field(default=None, description="Seconds for the whole call.")
    max_cost_usd: float | None = Field(default=None, description="USD cap across all attempts.")
    hedge: bool = Field(default=False, description="Allow a hedged request on a slow primary.")

    @field_validator("deadline_s")
    @classmethod
    def _positive_deadline(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v <= 0 or v > MAX_DEADLINE_S):
            raise ValueError(
                f"`deadline_s` must be a positive number of seconds, at most {MAX_DEADLINE_S:g}, but is {shown(v)}"
            )
        return v

    @field_validator("max_cost_usd")
    @classmethod
    def _non_negative_cost(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0 or v > MAX_COST_USD):
            raise ValueError(
                f"`max_cost_usd` must be a non-negative number, at most {MAX_COST_USD:g}, but is {shown(v)}"
            )
        return v


class GenerateRequest(BaseModel):
    """One text-to-image request. ``None`` knobs mean "the backend's model-family default"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: what the request asks a backend to do: "generate" here, "edit" for :class:`~pixelroute._edit.EditRequest`
    operation: ClassVar[str] = "generate"

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    n: int = 1
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    seed: int | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError(f"`prompt` must not be empty but is {v!r}")
        if len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"`prompt` must be at most {MAX_PROMPT_CHARS} characters but has {len(v)}")
        return check_text("prompt", v)

    @field_validator("negative_prompt")
    @classmethod
    def _negative_prompt(cls, v: str | None) -> str | None:
        if v is not None and len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"`negative_prompt` must be at most {MAX_PROMPT_CHARS} characters but has {len(v)}")
        return None if v is None else check_text("negative_prompt", v)

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str | None) -> str | None:
        return None if v is None else check_text("scheduler", v)

    @field_validator("width", "height")
    @classmethod
    def _size(cls, v: int | None, info: Any) -> int | None:
        if v is not None and (v < MIN_SIDE or v > MAX_SIDE):
            raise ValueError(
                f"`{info.field_name}` must be at least {MIN_SIDE} and at most {MAX_SIDE} pixels but is {shown(v)}"
            )
        return v

    @field_validator("n")
    @classmethod
    def _n(cls, v: int) -> int:
        if v < 1 or v > MAX_N:
            raise ValueError(f"`n` must be between 1 and {MAX_N} but is {shown(v)}")
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: int | None) -> int | None:
        if v is not None and (v < 1 or v > MAX_STEPS):
            raise ValueError(f"`steps` must be between 1 and {MAX_STEPS} but is {shown(v)}")
        return v

    @field_validator("guidance")
    @classmethod
    def _guidance(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0 or v > MAX_GUIDANCE):
            raise ValueError(f"`guidance` must be between 0 and {MAX_GUIDANCE:g} but is {shown(v)}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int | None) -> int | None:
        if v is not None and (v < 0 or v > MAX_SEED):
            raise ValueError(f"`seed` must be between 0 and 2**63-1 but is {shown(v)}")
        return v

    @model_validator(mode="after")
    def _both_sizes(self) -> GenerateRequest:
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise ValueError(f"`{missing}` must be given together with the other dimension")
        return self

    def size_or(self, default_width: int, default_height: int) -> tuple[int, int]:
        """The output size: the caller's ``width``/``height``, else the backend's defaults given."""
        return (self.width or default_width, self.height or default_height)

    @property
    def size_from_image(self) -> bool:
        """Whether the output size is the input image's (an edit without ``width``/``height``)."""
        return False

    def identity(self) -> list[Any]:
        """What makes two requests the same request (concurrent duplicates share one execution)."""
        return [self.operation, self.prompt, self.negative_prompt, self.params()]

    def params(self) -> dict[str, Any]:
        """The knobs as the telemetry record's ``params`` object (docs/telemetry.md)."""
        return {
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance": self.guidance,
            "n": self.n,
            "seed": self.seed,
            "scheduler": self.scheduler,
        }


class Result(BaseModel):
    """What ``generate()`` returns: the images and how they were made."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    images: list[Any]  # list[PIL.Image.Image]; Any keeps pydantic away from Pillow internals
    request_id: str
    backend: str
    latency_s: float
    cost_usd: float
    gpu_s: float | None = None
    trace: dict[str, Any] = Field(default_factory=dict)

    @property
    def image(self) -> Image:
        """The first image, for the common ``n=1`` case."""
        img: Image = self.images[0]
        return img


def build_request(**fields: Any) -> GenerateRequest:
    """Validate ``fields`` into a :class:`GenerateRequest`, raising our ``ValidationError``."""
    return _validated(GenerateRequest, fields)


def build_sla(sla: SLA | dict[str, Any] | None) -> SLA:
    """Accept an :class:`SLA`, a mapping or ``None`` (no constraints)."""
    if sla is None:
        return SLA()
    if isinstance(sla, SLA):
        return sla
    if isinstance(sla, dict):
        return _validated(SLA, sla)
    raise ValidationError(f"`sla` must be an SLA or a mapping but is {shown(sla)}", field="sla", value=sla)


def _validated(model: type[Any], fields: dict[str, Any]) -> Any:
    import pydantic

    try:
        return model(**fields)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or None
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")
        if field is None and msg.startswith("`"):  # a model-level check names its field first
            field = msg[1:].partition("`")[0] or None
        if field and f"`{field}`" not in msg:
            # shown(): the input may be a 5,000-digit integer, which repr() refuses
            msg = f"`{field}`: {msg} (got {shown(err.get('input'), name=field)})"
        raise ValidationError(msg, field=field, value=err.get("input")) from None
