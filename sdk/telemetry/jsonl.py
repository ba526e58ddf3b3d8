"""JSON Lines interchange (docs/telemetry.md): one record per line, read and written losslessly.

Reading validates each line with :class:`TelemetryRecord` but yields the line's own dict, so
unknown keys and key order survive. A malformed line (not UTF-8, not JSON, a lone surrogate or
NUL escaped in it, a missing field, a value no store can hold, a truncated last line) is
reported with its line number and either skipped and counted or, with ``strict=True``, refused
with a ``ValidationError``. Files are read as bytes and decoded line by line, so one bad byte
costs one line, not the import.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import pydantic

from .._errors import ValidationError
from .._redact import redact
from ._encode import bad_text_path, encode
from ._encode import dumps as _dumps_record
from ._record import TelemetryRecord
from ._store import Store

#: how many malformed-line messages a report keeps (the count keeps going)
MAX_REPORTED_ERRORS = 100


@dataclass
class ImportReport:
    """What an import did: lines read, records new to the store, duplicates skipped, malformed lines."""

    lines: int = 0
    records: int = 0
    imported: int = 0
    malformed: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.records - self.imported

    @property
    def skipped(self) -> int:
        """Lines not imported because they were malformed (same as ``malformed``)."""
        return self.malformed

    def summary(self) -> str:
        text = (
            f"imported {self.imported} records ({self.duplicates} already present), "
            f"skipped {self.malformed} malformed lines"
        )
        shown = "".join(f"\n  line {n}: {msg}" for n, msg in self.errors)
        more = self.malformed - len(self.errors)
        return text + shown + (f"\n  ... and {more} more" if more > 0 else "")


def dumps(record: dict[str, Any]) -> str:
    """One record as one JSON line (no newline), secrets masked in its values."""
    return _dumps_record(record)


def write_jsonl(records: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Write records to a text stream, one per line; returns how many."""
    count = 0
    for record in records:
        out.write(dumps(record))
        out.write("\n")
        count += 1
    return count


def export_jsonl(
    store: Store,
    out: str | Path | TextIO | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
) -> int:
    """Stream the store's records to ``out`` (a path, a stream, or stdout when None).

    A path is written to a temporary file beside it and renamed into place: an interrupted
    export never leaves half a file under the final name.
    """
    records = store.iter_records(since=since, until=until)
    if out is None:
        return write_jsonl(records, sys.stdout)
    if not isinstance(out, str | Path):
        return write_jsonl(records, out)
    target = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            count = write_jsonl(records, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _line_error(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8: byte 0x{exc.object[exc.start]:02x} at column {exc.start + 1}"
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    if isinstance(exc, pydantic.ValidationError):
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ())).replace("schema_", "schema")
            parts.append(f"`{loc}`: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
        return "; ".join(parts)
    return str(exc).removeprefix("record 0: ")


def parse_line(text: str | bytes) -> dict[str, Any]:
    """One JSONL line -> its record dict, validated; raises on a malformed line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError(f"a record must be a JSON object but is a {type(obj).__name__}")
    # A decoded UTF-8 line holds no lone surrogate and JSON refuses a raw NUL: both can only
    # arrive as \u escapes, so the walk runs only when the line has one.
    if "\\u" in text:
        path = bad_text_path(obj)
        if path is not None:
            raise ValueError(f"`{path}` holds a lone surrogate or NUL (an escape like \\udcff or \\u0000)")
    TelemetryRecord.model_validate(obj)
    encode(obj)  # what a store can hold: e.g. an attempt number past a 32-bit integer
    return obj


def read_jsonl(
    source: Iterable[str | bytes], *, strict: bool = False, report: ImportReport | None = None
) -> Iterator[dict[str, Any]]:
    """Yield validated records from lines (text or bytes); malformed lines go to ``report`` (or raise if ``strict``).

    Blank lines are skipped. Error messages name the line and the field, never the line's text
    (it may hold a prompt). A last line without its newline is called truncated when it fails.
    """
    report = report if report is not None else ImportReport()
    for number, line in enumerate(source, start=1):
        report.lines = number
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf") if isinstance(line, bytes) else line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            record = parse_line(line)
        except (ValueError, RecursionError, pydantic.ValidationError) as exc:
            message = redact(_line_error(exc))
            if not (line.endswith(b"\n") if isinstance(line, bytes) else line.endswith("\n")):
                message += " (the last line has no newline: the file looks truncated)"
            if strict:
                raise ValidationError(f"line {number}: {message}", field=f"line {number}", value=None) from None
            report.malformed += 1
            if len(report.errors) < MAX_REPORTED_ERRORS:
                report.errors.append((number, message))
            continue
        report.records += 1
        yield record


def import_jsonl(
    source: str | Path | TextIO, store: Store, *, strict: bool = False, batch_size: int = 5000
) -> ImportReport:
    """Import a JSONL file or stream into ``store`` in batches.

    ``strict``: the whole input is checked first and nothing is written if any line is malformed.
    Otherwise malformed lines are skipped and counted in the report (``report.skipped``).
    Re-importing the same records is harmless: records already present are skipped and counted.
    A path (and ``sys.stdin``) is read as bytes, so a line that is not UTF-8 is one malformed line.
    """
    if isinstance(source, str | Path):
        with open(source, "rb") as fh:
            if strict:
                for _ in read_jsonl(fh, strict=True):
                    pass
                fh.seek(0)
            return _import(fh, store, strict, batch_size)
    stream: Any = getattr(source, "buffer", source)  # a text stdin: read its bytes
    if strict:  # a stream can be read once: hold it to check it before writing anything
        data = stream.read()
        held: Any = io.BytesIO(data) if isinstance(data, bytes) else io.StringIO(data)
        for _ in read_jsonl(held, strict=True):
            pass
        held.seek(0)
        stream = held
    return _import(stream, store, strict, batch_size)


def _import(lines: Iterable[str | bytes], store: Store, strict: bool, batch_size: int) -> ImportReport:
    report = ImportReport()
    batch: list[dict[str, Any]] = []
    for record in read_jsonl(lines, strict=strict, report=report):
        batch.append(record)
        if len(batch) >= batch_size:
            report.imported += store.insert_batch(batch)
            batch = []
    if batch:
        report.imported += store.insert_batch(batch)
    return report
