"""Records to rows and back: what a store can hold, what it must refuse, and how it says so.

A record becomes one ``attempts`` row: the indexed columns plus the whole record as JSON text,
secrets masked value by value. A record that no store can hold (a lone surrogate cannot be
encoded as UTF-8, NUL cannot be in a PostgreSQL text column, a missing key, an attempt number
past a 32-bit integer) is refused with a ``ValidationError`` naming the field. The recorder
then quarantines it (the ``quarantine`` table keeps it as ASCII-escaped JSON, nothing is
lost) and counts it in ``losses``, so one poisoned record never blocks the others.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._errors import ValidationError
from .._redact import mentions_secret, redact, redact_values
from ._record import canonical_ts, format_ts, validate_correction

log = logging.getLogger("pixelroute.telemetry")

Row = tuple[str, int, str, str | None, bool | None, str | None, str]
Correction = tuple[str, float, str, str]

#: PostgreSQL's INTEGER; SQLite would take more, but one store must not accept what the other refuses
MAX_ATTEMPT = 2**31 - 1
#: the losses reason for records refused by the store and kept in ``quarantine``
INVALID = "invalid"


@dataclass
class Rejected:
    """A record the store refused: why (redacted, never the record's text), and the record itself."""

    message: str
    field: str | None
    record_json: str


@dataclass
class EncodedBatch:
    """Rows ready to insert, the corrections they carry, and the records refused (to quarantine).

    ``size`` is how many handed-over records this batch accounts for: rows plus rejects.
    """

    rows: list[Row] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.rejected)


def _finite(value: Any) -> Any:
    """Replace NaN/inf (not JSON; PostgreSQL's json type refuses them) by null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


# One encoder each, built once: json.dumps() with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=_json_default, allow_nan=False)


def _serialize(record: Any, encoder: json.JSONEncoder, index: int) -> str:
    try:
        try:
            return encoder.encode(record)
        except ValueError:  # NaN or infinity somewhere (a circular reference fails again below)
            return encoder.encode(_finite(record))
    except (ValueError, TypeError, RecursionError) as exc:
        raise ValidationError(
            f"record {index}: cannot be serialized as JSON ({type(exc).__name__}: {exc})", field="record", value=None
        ) from None


def dumps(record: Any, index: int = 0) -> str:
    """The record as compact JSON text (UTF-8 safe), secrets masked in its string values.

    The fast path serializes once; only text that mentions a credential word or a registered
    secret is serialized again from redacted values, so the JSON stays valid whatever a secret is.
    """
    text = _serialize(record, _ENCODER, index)
    if mentions_secret(text):
        text = _serialize(redact_values(record), _ENCODER, index)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            path = bad_text_path(record) or "record"
            raise ValidationError(
                f"record {index}: `{path}` holds a lone surrogate, which cannot be stored as UTF-8",
                field=path,
                value=None,
            ) from None
    return text


def bad_text_path(value: Any) -> str | None:
    """The dotted path (ASCII-escaped) of the first string or key holding a lone surrogate or NUL, else None."""
    found = _find_bad_text(value, "")
    return None if found is None else ascii(found)[1:-1]


def _find_bad_text(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return (path or "value") if _bad_text(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _bad_text(key):
                return where
            found = _find_bad_text(item, where)
            if found:
                return found
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_bad_text(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _bad_text(text: str) -> bool:
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _column_text(value: Any, name: str, index: int) -> str | None:
    """An indexed text column: a string without NUL or lone surrogates, or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(
            f"record {index}: `{name}` must be a string or null but is {ascii(value)[:80]}", field=name, value=value
        )
    if _bad_text(value):
        raise ValidationError(
            f"record {index}: `{name}` must be text without NUL or lone surrogates but is {ascii(value)[:80]}",
            field=name,
            value=value,
        )
    return value


def encode(record: dict[str, Any], index: int = 0) -> tuple[Row, Correction | None]:
    """One record -> (attempts row, its correction or None). ``ValidationError`` names the bad field."""
    if not isinstance(record, dict):
        raise ValidationError(
            f"record {index}: must be an object but is a {type(record).__name__}", field="record", value=None
        )
    try:
        request_id = record["request_id"]
        attempt = int(record["attempt"])
        ts = canonical_ts(record["ts"])
    except KeyError as exc:
        raise ValidationError(
            f"record {index}: `{exc.args[0]}` is required but missing", field=str(exc.args[0]), value=None
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"record {index}: {redact(str(exc))}", field="record", value=None) from None
    if not isinstance(request_id, str) or not request_id:
        raise ValidationError(
            f"record {index}: `request_id` must be a non-empty string but is {ascii(request_id)[:80]}",
            field="request_id",
            value=request_id,
        )
    if not 0 <= attempt <= MAX_ATTEMPT:
        raise ValidationError(
            f"record {index}: `attempt` must be an integer in 0..{MAX_ATTEMPT} but is {ascii(attempt)[:80]}",
            field="attempt",
            value=attempt,
        )
    correction = record.get("correction")
    corr_row = None
    if correction:
        try:
            seconds, verdict = float(correction["seconds"]), correction["verdict"]
        except (KeyError, TypeError, ValueError):
            raise ValidationError(
                f"record {index}: `correction` needs `seconds` and `verdict` but is {ascii(correction)[:200]}",
                field="correction",
                value=correction,
            ) from None
        validate_correction(seconds, verdict)
        corr_ts = _column_text(canonical_ts(correction.get("ts") or ts), "correction.ts", index) or ts
        corr_row = (request_id, seconds, verdict, corr_ts)
        record = {**record, "correction": None}
    outcome = record.get("outcome") or {}
    if not isinstance(outcome, dict):
        raise ValidationError(
            f"record {index}: `outcome` must be an object but is {ascii(outcome)[:80]}", field="outcome", value=None
        )
    ok = outcome.get("ok")
    backend, error = record.get("backend"), outcome.get("error")
    # One concatenation tests the four indexed text columns at once (~0.2 us); the per-column
    # checks, which name the field, run only when it finds something or a value is not a string.
    try:
        columns = request_id + ts + ("" if backend is None else backend) + ("" if error is None else error)
        suspect = "\x00" in columns or not columns.isascii()
    except TypeError:
        suspect = True
    if suspect:
        for value, name in ((request_id, "request_id"), (ts, "ts"), (backend, "backend"), (error, "outcome.error")):
            _column_text(value, name, index)
    row: Row = (
        request_id,
        attempt,
        ts,
        backend,
        None if ok is None else bool(ok),
        error,
        dumps(record, index),
    )
    return row, corr_row


def quarantine_json(record: Any) -> str:
    """The refused record as ASCII JSON (lone surrogates and NUL escaped, secrets masked), best effort."""
    try:
        return _ASCII_ENCODER.encode(_finite(redact_values(record)))
    except (ValueError, TypeError, RecursionError) as exc:
        try:
            shown = ascii(redact(repr(record)))[:10_000]
        except Exception:  # noqa: BLE001 - a repr that fails is itself the evidence kept
            shown = f"<unrepresentable {type(record).__name__}>"
        return _ASCII_ENCODER.encode({"unserializable": shown, "error": f"{type(exc).__name__}: {exc}"})


def encode_batch(records: list[dict[str, Any]]) -> EncodedBatch:
    """Encode every record; refused ones go to ``rejected`` instead of raising."""
    batch = EncodedBatch()
    for index, record in enumerate(records):
        try:
            row, correction = encode(record, index)
        except ValidationError as exc:
            batch.rejected.append(reject(record, str(exc), exc.field))
            continue
        batch.rows.append(row)
        if correction is not None:
            batch.corrections.append(correction)
    return batch


def reject(record: Any, message: str, field: str | None = None) -> Rejected:
    return Rejected(message=redact(message)[:2000], field=field, record_json=quarantine_json(record))


def decode(text: str, seconds: float | None, verdict: str | None, ts: str | None) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(text)
    record["correction"] = None if verdict is None else {"seconds": seconds, "verdict": verdict, "ts": ts}
    return record


_DATA_ERROR_NAMES = frozenset({"DataError", "IntegrityError", "InterfaceError"})


def is_data_error(exc: BaseException) -> bool:
    """Does this failure come from the data (retrying cannot help) rather than from the store?

    Python's own refusals (an unencodable string, an integer too large to bind) and the DB-API
    ``DataError``/``IntegrityError``/``InterfaceError`` of sqlite3 and psycopg are about the data; a
    locked, closed or unreachable store raises ``OperationalError`` and friends, which are retried.
    """
    if isinstance(exc, ValueError | TypeError | OverflowError | UnicodeError):
        return True
    return any(cls.__name__ in _DATA_ERROR_NAMES for cls in type(exc).__mro__)
