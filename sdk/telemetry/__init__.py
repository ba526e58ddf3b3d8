"""Telemetry that loses nothing: records, the background recorder, stores, JSONL, traces, stats.

::

    store = open_store("sqlite:///pixelroute.db")      # or "postgresql://user@host/db"
    rec = Recorder(store, prompt_retention="hash")
    rec.record(record)                                  # request path: enqueue only
    rec.flush(); store.add_correction(request_id, 42.0, "edited")
    build_trace(store.records_for(request_id), store.correction_history(request_id))
    print(format_stats(compute_stats(store.iter_records())))

The record format is documented field by field in docs/telemetry.md.
"""

from ._record import (
    SCHEMA,
    TelemetryRecord,
    apply_retention,
    example_record,
    format_ts,
    make_request_id,
    parse_ts,
    prompt_sha256,
    validate_correction,
)
from ._recorder import Recorder
from ._store import Store, open_store
from .jsonl import ImportReport, export_jsonl, import_jsonl, read_jsonl, write_jsonl
from .stats import compute_stats, format_stats, prometheus_text
from .trace import build_trace, summarize_request

__all__ = [
    "SCHEMA",
    "ImportReport",
    "Recorder",
    "Store",
    "TelemetryRecord",
    "apply_retention",
    "build_trace",
    "compute_stats",
    "example_record",
    "export_jsonl",
    "format_stats",
    "format_ts",
    "import_jsonl",
    "make_request_id",
    "open_store",
    "parse_ts",
    "prometheus_text",
    "prompt_sha256",
    "read_jsonl",
    "summarize_request",
    "validate_correction",
    "write_jsonl",
]
