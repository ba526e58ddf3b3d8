"""The background recorder: queue-full policies, failures and retries, kill -9, retention, the canary secret."""

from __future__ import annotations

import io
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pixelroute._errors import ConfigError
from pixelroute.cli import main as cli_main
from pixelroute.telemetry import Recorder, apply_retention, example_record, export_jsonl, open_store, prompt_sha256
from pixelroute.telemetry._encode import EncodedBatch
from pixelroute.telemetry.sqlite import SQLiteStore
from tests._import_root import SUBPROCESS_PYTHONPATH

REPO = Path(__file__).resolve().parents[1]


class GatedStore(SQLiteStore):
    """A real SQLite store whose writes wait for a gate, so a test can fill the recorder's queue."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.writing = threading.Event()

    def write_encoded(self, batch: EncodedBatch, session: str | None = None) -> int:
        self.writing.set()
        assert self.gate.wait(30), "test never opened the gate"
        return super().write_encoded(batch, session)


class FlakyStore(SQLiteStore):
    """A real SQLite store whose first ``failures`` writes fail the way a locked or lost database does."""

    def __init__(self, path: Path, failures: int, message: str = "database is locked") -> None:
        super().__init__(path)
        self.failures = failures
        self.message = message

    def write_encoded(self, batch: EncodedBatch, session: str | None = None) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError(self.message)
        return super().write_encoded(batch, session)


def test_flush_and_close_write_everything(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    rec = Recorder(store, flush_interval_s=60)  # only flush() can write within the test
    for _ in range(2500):
        assert rec.record(example_record())
    rec.flush(timeout=10)
    assert store.count() == 2500
    assert rec.stats() == {
        "enqueued": 2500,
        "written": 2500,
        "dropped": 0,
        "queue_depth": 0,
        "write_errors": 0,
        "invalid": 0,
    }
    for _ in range(10):
        rec.record(example_record())
    rec.close()
    rec.close()  # twice is fine
    assert store.count() == 2510
    assert not rec._thread.is_alive()
    assert rec.record(example_record()) is False  # after close: refused and counted
    assert rec.stats()["dropped"] == 1
    store.close()


def test_writer_flushes_on_its_own_within_the_interval(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    with Recorder(store, flush_interval_s=0.05) as rec:
        rec.record(example_record())
        deadline = time.monotonic() + 5
        while store.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.count() == 1
    store.close()


def test_queue_full_drop_is_counted_logged_and_persisted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = GatedStore(tmp_path / "t.db")
    rec = Recorder(store, queue_size=10, batch_size=5, on_full="drop", flush_interval_s=0.01)
    rec.record(example_record())
    assert store.writing.wait(5)  # the writer holds one batch and waits at the gate
    with caplog.at_level(logging.WARNING, logger="pixelroute.telemetry"):
        results = [rec.record(example_record()) for _ in range(15)]
    assert results.count(True) == 10 and results.count(False) == 5
    assert rec.stats()["dropped"] == 5 and rec.stats()["queue_depth"] == 10
    assert len([r for r in caplog.records if "dropped a record" in r.getMessage()]) == 1  # rate-limited
    store.gate.set()
    rec.close()
    assert store.count() == 11
    assert store.losses() == {"queue_full": 5}
    store.close()
    out = io.StringIO()
    sys.stdout, saved = out, sys.stdout
    try:
        assert cli_main(["stats", "--store", store.url]) == 0
    finally:
        sys.stdout = saved
    assert "TELEMETRY DROPPED: 5 records" in out.getvalue()


def test_queue_full_block_waits_for_room_then_gives_up(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "t.db")
    rec = Recorder(store, queue_size=3, batch_size=1, on_full="block", block_timeout_s=5, flush_interval_s=0.01)
    rec.record(example_record())
    assert store.writing.wait(5)
    for _ in range(3):
        assert rec.record(example_record())
    threading.Timer(0.2, store.gate.set).start()  # room appears while the next record() waits
    started = time.monotonic()
    assert rec.record(example_record()) is True
    assert 0.1 < time.monotonic() - started < 5
    rec.close()
    assert store.count() == 5 and rec.stats()["dropped"] == 0

    store.gate.clear()
    store.writing.clear()
    quick = Recorder(store, queue_size=1, batch_size=1, on_full="block", block_timeout_s=0.05, flush_interval_s=0.01)
    quick.record(example_record())
    assert store.writing.wait(5)
    assert quick.record(example_record())
    started = time.monotonic()
    assert quick.record(example_record()) is False
    assert time.monotonic() - started >= 0.05
    assert quick.stats()["dropped"] == 1
    store.gate.set()
    quick.close()
    store.close()


def test_store_failures_are_retried_and_nothing_is_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(tmp_path / "t.db", failures=3)
    with caplog.at_level(logging.WARNING, logger="pixelroute.telemetry"):
        rec = Recorder(store, flush_interval_s=0.01)
        for _ in range(100):
            rec.record(example_record())
        rec.flush(timeout=10)
    assert store.count() == 100
    stats = rec.stats()
    assert stats["write_errors"] == 3 and stats["written"] == 100 and stats["dropped"] == 0
    assert any("will retry" in r.getMessage() for r in caplog.records)
    rec.close()
    store.close()


def test_flush_times_out_while_the_store_is_down(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "t.db", failures=10**9)
    rec = Recorder(store, flush_interval_s=0.01)
    rec.record(example_record())
    with pytest.raises(TimeoutError, match="did not finish within 0.2"):
        rec.flush(timeout=0.2)
    rec.close()  # gives up after a few retries and counts the record as lost, loudly
    assert rec.stats()["dropped"] == 1
    store.close()


def test_malformed_record_does_not_sink_its_batch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    bad = example_record()
    del bad["request_id"]
    with caplog.at_level(logging.WARNING, logger="pixelroute.telemetry"), Recorder(store) as rec:
        rec.record(example_record())
        rec.record(bad)
        rec.record(example_record())
    assert store.count() == 2
    assert rec.stats()["invalid"] == 1
    assert any("`request_id` is required" in r.getMessage() for r in caplog.records)
    store.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_full": "wait"}, "`on_full`.*'wait'"),
        ({"prompt_retention": "partial"}, "`prompt_retention`.*'partial'"),
        ({"queue_size": 0}, "`queue_size`.*0"),
        ({"flush_interval_s": -1}, "`flush_interval_s`.*-1"),
    ],
)
def test_bad_recorder_settings(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(ConfigError, match=match):
        Recorder(store, **kwargs)
    store.close()


# --------------------------------------------------------------------------- kill -9

_BURST_WRITER = """
import sys
from pixelroute.telemetry import Recorder, example_record, open_store
store = open_store(sys.argv[1])
rec = Recorder(store, batch_size=500, flush_interval_s=0.02)
i = 0
while True:
    for _ in range(1000):
        rec.record(example_record(f"r-{i:08d}"))
        i += 1
    rec.flush()
    print(i, flush=True)
"""


def test_kill_9_mid_burst_leaves_a_sound_database(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "PIXELROUTE_TEST_TORCH": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _BURST_WRITER, f"sqlite:///{path}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    flushed = 0
    try:
        while flushed < 8000:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "writer died"
            flushed = int(line)
        time.sleep(0.013)  # land somewhere inside the next burst
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for line in proc.stdout:  # flushes reported between our last read and the kill
            flushed = int(line)
    finally:
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = {rid for (rid,) in conn.execute("SELECT request_id FROM attempts")}
    conn.close()
    assert {f"r-{i:08d}" for i in range(flushed)} <= stored
    with open_store(f"sqlite:///{path}") as store:  # and it opens and takes writes again
        store.write_batch([example_record()])
        assert store.count() == len(stored) + 1


# --------------------------------------------------------------------------- privacy


@pytest.mark.parametrize("mode", ["full", "hash", "none"])
def test_retention_modes_in_store_and_export(tmp_path: Path, mode: str) -> None:
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    record = example_record(prompt="my secret product launch") | {"negative_prompt": "blurry"}
    with Recorder(store, prompt_retention=mode) as rec:
        rec.record(record)
    (stored,) = store.records_for(record["request_id"])
    out = io.StringIO()
    export_jsonl(store, out)
    store.close()
    expected = {
        "full": ("my secret product launch", "blurry", prompt_sha256("my secret product launch")),
        "hash": (None, None, prompt_sha256("my secret product launch")),
        "none": (None, None, None),
    }[mode]
    assert (stored["prompt"], stored["negative_prompt"], stored["prompt_sha256"]) == expected
    assert ("my secret product launch" in out.getvalue()) == (mode == "full")
    assert record["prompt"] == "my secret product launch"  # the caller's dict is untouched


def test_apply_retention_hash_computes_a_missing_hash() -> None:
    record = example_record(prompt="abc") | {"prompt_sha256": None}
    assert apply_retention(record, "hash")["prompt_sha256"] == prompt_sha256("abc")
    assert apply_retention(record, "full") is record


CANARY = "sk-canary-7f3a9c1e5b2d4086"


def test_canary_secret_appears_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("IDEOGRAM_API_KEY", CANARY)  # as a user deploys it; the recorder treats it as secret
    leaky = example_record(ok=False, error="server_error") | {"context": {"echo": f"x-api-key: {CANARY}"}}
    leaky["outcome"]["error_message"] = f"502 from proxy: Authorization: Bearer {CANARY} rejected"
    leaky["prompt"] = f"ignore this {CANARY}"
    path = tmp_path / "t.db"
    store = FlakyStore(path, failures=1, message=f"refused key {CANARY}")  # the failure text carries it too
    with caplog.at_level(logging.DEBUG), Recorder(store, flush_interval_s=0.01, queue_size=2) as rec:
        rec.record(leaky)
        rec.flush(timeout=10)
        rec.record(example_record())
        rec.record(example_record())
        rec.record(example_record())  # dropped: the drop warning is checked too
    out = tmp_path / "export.jsonl"
    export_jsonl(store, out)
    store.close()
    raw = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("t.db-*"))
    assert CANARY.encode() not in raw
    assert CANARY not in out.read_text()
    assert caplog.records and all(CANARY not in r.getMessage() for r in caplog.records)
    assert "[REDACTED]" in out.read_text()
