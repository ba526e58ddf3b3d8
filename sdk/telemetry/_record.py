"""The telemetry record (docs/telemetry.md): its pydantic model and the small helpers around it.

One record per attempt. The model validates JSONL import lines; the request path never builds
it (a plain dict is cheaper), and stores keep the record's own JSON so unknown keys survive.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._errors import ValidationError

SCHEMA = "pixelroute.telemetry/1"
VERDICTS = ("accepted", "edited", "rejected")
RETENTION_MODES = ("full", "hash", "none")
RetentionMode = Literal["full", "hash", "none"]

#: A human correction longer than a day is not a correction of one image but a lost ticket or a
#: typo (milliseconds sent as seconds). Refusing it keeps one bad report from dominating the
#: correction-time target the router learns (a squared loss is pulled hard by such outliers).
MAX_CORRECTION_SECONDS = 86_400.0


# --------------------------------------------------------------------------- record model


class _Open(BaseModel):
    """Nested objects keep unknown keys too: other systems' logs carry more than we know."""

    model_config = ConfigDict(extra="allow")


class Params(_Open):
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    n: int | None = None
    seed: int | None = None
    scheduler: str | None = None
    #: edits only: the caller's strength (null = the backend's default) and whether a mask was given
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    masked: bool | None = None


class InputRecord(_Open):
    """An edit's input image as telemetry keeps it: a digest of its pixels, its size and format, never pixels."""

    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mask_sha256: str | None = None


class SLARecord(_Open):
    deadline_s: float | None = None
    max_cost_usd: float | None = None


class Predicted(_Open):
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    p_fail: float | None = None
    correction_s: float | None = None
    cost_usd: float | None = None


class DecisionRecord(_Open):
    policy: str | None = None
    router_version: str | None = None
    propensity: float | None = Field(default=None, ge=0.0, le=1.0)
    explored: bool | None = None
    predicted: Predicted | None = None


class Outcome(_Open):
    ok: bool
    error: str | None = None
    latency_s: float | None = None
    queue_s: float | None = None
    gpu_s: float | None = None
    cost_usd: float | None = None


class Correction(_Open):
    seconds: float
    verdict: str
    ts: str | None = None

    @field_validator("verdict")
    @classmethod
    def _verdict(cls, v: str) -> str:
        if v not in VERDICTS:
            raise ValueError(f"`verdict` must be one of {', '.join(VERDICTS)} but is {v!r}")
        return v


class TelemetryRecord(_Open):
    """One attempt of one ``generate()`` call, as written to the store and to JSONL.

    Validates an import line; unknown keys are allowed at every level. Stores keep the input
    dict itself (not ``model_dump()``) so that a round trip is byte-for-byte faithful.
    """

    schema_: str = Field(alias="schema")
    request_id: str = Field(min_length=1, max_length=200)
    attempt: int = Field(ge=0)
    ts: str
    backend: str | None = None
    #: generate | edit; records written before edits existed have none and read as generate
    operation: Literal["generate", "edit"] | None = None
    input: InputRecord | None = None
    prompt: str | None = None
    prompt_sha256: str | None = None
    negative_prompt: str | None = None
    params: Params | None = None
    sla: SLARecord | None = None
    context: dict[str, Any] | None = None
    decision: DecisionRecord | None = None
    outcome: Outcome
    correction: Correction | None = None
    simulated: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: str) -> str:
        if v != SCHEMA:
            raise ValueError(f"`schema` must be {SCHEMA!r} but is {v!r}")
        return v

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: str) -> str:
        parse_ts(v, field="ts")
        return v


# --------------------------------------------------------------------------- timestamps


def format_ts(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``: the one spelling stored in indexed columns."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def now_ts() -> str:
    return format_ts(datetime.now(UTC))


def parse_ts(value: str | datetime, *, field: str = "ts") -> datetime:
    """Parse an ISO-8601 time; naive times are taken as UTC. Raises ``ValidationError`` naming ``field``."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise ValidationError(f"`{field}` must be an ISO-8601 time but is {value!r}", field=field, value=value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"`{field}` must be an ISO-8601 time like 2026-11-25T19:00:00.123Z but is {value!r}",
            field=field,
            value=value,
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def canonical_ts(value: Any) -> str:
    """The indexed-column spelling of a record's ``ts`` (fast path for the canonical form)."""
    if isinstance(value, str) and len(value) == 24 and value[-1] == "Z" and value[10] == "T":
        return value
    return format_ts(parse_ts(value))


# --------------------------------------------------------------------------- ids, retention, corrections

_id_lock = threading.Lock()
_last_ms = 0
_seq = 0


def make_request_id() -> str:
    """A time-ordered, UUIDv7-style id (RFC 9562: 48-bit ms time, 12-bit sequence, 62 random bits).

    Time order keeps the stores' request-id index append-mostly: with random UUID4 keys batched
    SQLite inserts fell from ~48,000 to ~14,000 rows/s. Within one millisecond the
    sequence counts up, so ids from one process sort in creation order.
    """
    global _last_ms, _seq
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _seq += 1
            if _seq > 0xFFF:  # 4096 ids in one millisecond: borrow the next millisecond
                _last_ms += 1
                _seq = 0
            ms = _last_ms
        else:
            _last_ms, _seq = ms, 0
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))


def prompt_sha256(prompt: str | None) -> str | None:
    return None if prompt is None else hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def apply_retention(record: dict[str, Any], mode: str) -> dict[str, Any]:
    """Apply ``prompt_retention`` to one record: ``full`` keeps it, ``hash`` keeps only the hash, ``none`` neither.

    Returns ``record`` itself for ``full`` and a shallow copy otherwise (the caller's dict is not
    modified). ``hash`` computes ``prompt_sha256`` if the record lacks it, so the hash survives.
    """
    if mode == "full":
        return record
    if mode not in RETENTION_MODES:
        raise ValidationError(
            f"`prompt_retention` must be one of {', '.join(RETENTION_MODES)} but is {mode!r}",
            field="prompt_retention",
            value=mode,
        )
    out = dict(record)
    if mode == "hash":
        if out.get("prompt_sha256") is None and out.get("prompt") is not None:
            out["prompt_sha256"] = prompt_sha256(out["prompt"])
        out["prompt_sha256"] = out.get("prompt_sha256")
    else:
        out["prompt_sha256"] = None
    out["prompt"] = None
    out["negative_prompt"] = None
    return out


def validate_correction(seconds: Any, verdict: Any) -> None:
    """Refuse a correction report that cannot be true: ``ValidationError`` naming the field and value.

    ``verdict`` is ``accepted``, ``edited`` or ``rejected``; ``seconds`` is a finite number in
    ``[0, 86400]`` (see :data:`MAX_CORRECTION_SECONDS` for why a day is the ceiling).
    """
    if verdict not in VERDICTS:
        raise ValidationError(
            f"`verdict` must be one of {', '.join(VERDICTS)} but is {verdict!r}", field="verdict", value=verdict
        )
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValidationError(f"`seconds` must be a number but is {seconds!r}", field="seconds", value=seconds)
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_CORRECTION_SECONDS:
        raise ValidationError(
            f"`seconds` must be between 0 and {MAX_CORRECTION_SECONDS:.0f} (one day) but is {seconds!r}",
            field="seconds",
            value=seconds,
        )


def example_record(
    request_id: str | None = None,
    attempt: int = 0,
    backend: str | None = "mock",
    *,
    prompt: str = "a red bicycle against a glass wall",
    ts: str | None = None,
    **outcome: Any,
) -> dict[str, Any]:
    """A complete §4 record for tests, demos and converters; ``outcome`` keys override the defaults."""
    return {
        "schema": SCHEMA,
        "request_id": request_id or make_request_id(),
        "attempt": attempt,
        "ts": ts or now_ts(),
        "backend": backend,
        "prompt": prompt,
        "prompt_sha256": prompt_sha256(prompt),
        "negative_prompt": None,
        "params": {"width": 1024, "height": 1024, "steps": 4, "guidance": 0.0, "n": 1, "seed": 7, "scheduler": None},
        "sla": {"deadline_s": 8.0, "max_cost_usd": 0.05},
        "context": {"in_flight": 0},
        "decision": {
            "policy": "lgbm",
            "router_version": "test",
            "propensity": 0.97,
            "explored": False,
            "predicted": {
                "latency_p50_s": 1.1,
                "latency_p95_s": 1.9,
                "p_fail": 0.01,
                "correction_s": 12.0,
                "cost_usd": 0.004,
            },
        },
        "outcome": {"ok": True, "error": None, "latency_s": 1.23, "queue_s": 0.05, "gpu_s": 1.1, "cost_usd": 0.0017}
        | outcome,
        "correction": None,
    }
