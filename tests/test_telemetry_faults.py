"""Fault, fuzz and tamper cases for telemetry (docs/operations.md lists each with its outcome).

Hostile text, a redaction that broke the JSON, kill -9 in the middle of a flush window, a locked
store meeting a malformed record, damaged JSONL files. Real SQLite and PostgreSQL stores, real
subprocesses killed with SIGKILL, the real gateway under uvicorn.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from test_gateway_server import KEY as GATEWAY_KEY
from test_gateway_server import ThreadedServer, gateway_settings
from test_telemetry_store import _drop_schema, _postgres_or_skip

from pixelroute import Client, ValidationError, _redact
from pixelroute.cli import main as cli_main
from pixelroute.contrib.flask import Pixelroute, get_state
from pixelroute.gateway import create_app
from pixelroute.telemetry import Recorder, build_trace, compute_stats, example_record, export_jsonl, open_store
from pixelroute.telemetry import _recorder as recorder_module
from pixelroute.telemetry._encode import EncodedBatch
from pixelroute.telemetry._store import Store
from pixelroute.telemetry.sqlite import SQLiteStore
from tests._import_root import SUBPROCESS_PYTHONPATH

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'telemetry.db'}"
        return
    url = _postgres_or_skip()
    yield url
    _drop_schema(url)


@pytest.fixture
def secrets_restored() -> Iterator[None]:
    """Registered secrets are process-wide: a test's short fake key must not redact later tests."""
    saved, needles = set(_redact._secrets), _redact._needles
    yield
    _redact._secrets.clear()
    _redact._secrets.update(saved)
    _redact._needles = needles


def mock_settings(tmp_path: Path, store: str | None = None) -> dict[str, Any]:
    return {
        "telemetry": {"store": store or f"sqlite:///{tmp_path / 'client.db'}"},
        "backends": [{"name": "mock-a", "kind": "mock"}],
    }


# --------------------------------------------------------------------------- 1. hostile text


@pytest.mark.parametrize(
    ("kwargs", "field", "what"),
    [
        ({"negative_prompt": "\udcff"}, "negative_prompt", "lone surrogate"),
        ({"prompt": "a red\x00 bicycle"}, "prompt", "NUL"),
        ({"prompt": "half a pair \ud83d"}, "prompt", "lone surrogate"),
        ({"scheduler": "ddim\udcff"}, "scheduler", "lone surrogate"),
    ],
)
def test_hostile_text_is_refused_naming_the_field(
    tmp_path: Path, kwargs: dict[str, Any], field: str, what: str
) -> None:
    args = {"prompt": "a red bicycle", **kwargs}
    with Client(mock_settings(tmp_path)) as client:
        with pytest.raises(ValidationError, match=f"`{field}`.*{what}") as info:
            client.generate(args.pop("prompt"), **args)
        assert info.value.field == field
        assert str(info.value).isascii()  # the message shows the bad character escaped, printable anywhere
        ok = client.generate("a red bicycle ☂ 😀")  # real Unicode is fine
        assert client.trace(ok.request_id)["request_id"] == ok.request_id


def test_hostile_text_through_the_gateway_and_flask_is_a_400(tmp_path: Path) -> None:
    raw = '{"model": "auto", "prompt": "x", "size": "64x64", "negative_prompt": "\\udcff"}'
    server = ThreadedServer(create_app(gateway_settings(tmp_path), api_key=GATEWAY_KEY)).start()
    try:
        r = httpx.post(
            f"{server.url}/v1/images/generations",
            content=raw,
            headers={"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "negative_prompt"
        ok = httpx.post(
            f"{server.url}/v1/images/generations",
            json={"model": "auto", "prompt": "x", "size": "64x64"},
            headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
            timeout=30,
        )
        assert ok.status_code == 200, ok.text
    finally:
        server.stop()

    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = mock_settings(tmp_path, f"sqlite:///{tmp_path / 'flask.db'}")
    Pixelroute().init_app(app, auth=lambda request, action: True)
    try:
        body = '{"prompt": "x", "negative_prompt": "\\udcff"}'
        r = app.test_client().post("/pixelroute/generate", data=body, content_type="application/json")
        assert r.status_code == 400
        assert r.get_json()["error"]["param"] == "negative_prompt"
    finally:
        get_state(app).close()


def test_poisoned_record_is_quarantined_and_never_blocks_the_others(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The campaign's case: one lone surrogate in a record stopped every later batch (726 of 746 lost)."""
    store = open_store(store_url)
    poisoned = example_record("poisoned") | {"negative_prompt": "\udcff"}
    with caplog.at_level(logging.WARNING, logger="pixelroute.telemetry"):
        rec = Recorder(store, batch_size=50, flush_interval_s=0.01)
        for i in range(745):
            rec.record(example_record(f"r-{i:04d}"))
            if i == 20:
                rec.record(poisoned)
        rec.flush(timeout=30)
    assert store.count() == 745
    assert store.losses() == {"invalid": 1}
    (quarantined,) = store.quarantined()
    assert quarantined["field"] == "negative_prompt"
    assert "lone surrogate" in quarantined["reason"]
    assert quarantined["record"]["negative_prompt"] == "\udcff"  # kept as it was, escaped in the table
    assert rec.stats()["invalid"] == 1 and rec.stats()["write_errors"] == 0
    assert any("quarantined" in r.getMessage() for r in caplog.records)
    rec.close()
    assert compute_stats(store.iter_records())["totals"]["attempts"] == 745
    store.close()


def test_reads_are_bounded_while_the_store_is_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flush() used to wait for ever: trace and stats hung behind a writer stuck on the store."""
    monkeypatch.setattr(recorder_module, "READ_FLUSH_TIMEOUT_S", 0.5)
    path = tmp_path / "client.db"
    client = Client(mock_settings(tmp_path, f"sqlite:///{path}"))
    done = client.generate("first")
    client.trace(done.request_id)  # written
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # a real lock: the writer now waits in SQLite's busy handler
    try:
        later = client.generate("second")
        outcome: dict[str, Any] = {}

        def read() -> None:
            outcome["trace"] = client.trace(done.request_id)
            outcome["stats"] = client.stats()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(20)
        assert not reader.is_alive(), "a read waited for a writer stuck on a locked store"
        assert outcome["trace"]["request_id"] == done.request_id
        assert outcome["stats"]["totals"]["attempts"] == 1  # what is stored so far
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    client.recorder.flush(timeout=30)
    assert client.trace(later.request_id)["request_id"] == later.request_id
    client.close()


def test_report_correction_does_not_wait_for_a_poisoned_batch(tmp_path: Path) -> None:
    """The campaign's hang: a poisoned record behind a request made report_correction wait for ever."""
    client = Client(mock_settings(tmp_path))
    done = client.generate("a red bicycle")
    client.recorder.record(example_record("poisoned") | {"negative_prompt": "\udcff"})  # as if it got past
    after = client.generate("a blue bicycle")
    finished = threading.Event()

    def correct() -> None:
        client.report_correction(done.request_id, 12.0, "edited")
        client.report_correction(after.request_id, 3.0, "accepted")
        finished.set()

    threading.Thread(target=correct, daemon=True).start()
    assert finished.wait(30), "report_correction hung behind the poisoned record"
    assert client.trace(after.request_id)["correction"]["verdict"] == "accepted"
    assert client.stats()["losses"] == {"invalid": 1}
    client.close()


def test_close_gives_up_after_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path, busy_timeout_s=60)
    rec = Recorder(store, flush_interval_s=60)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        rec.record(example_record())
        started = time.monotonic()
        rec.close(timeout=0.5)
        assert time.monotonic() - started < 20
        assert rec.record(example_record()) is False  # closed
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    rec._thread.join(90)  # the lock is gone: the writer finishes what it held
    assert not rec._thread.is_alive()
    assert store.count() == 1
    store.close()


# --------------------------------------------------------------------------- 2. redaction


def test_a_short_secret_inside_a_number_leaves_valid_json(
    store_url: str, tmp_path: Path, secrets_restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`api_key_env` with the key 1234 and a price of 0.1234 stored `"cost_usd":0.[REDACTED]`."""
    _redact.register_secret("1234")  # what a backend does with the key it reads
    record = example_record("short-key", ts="2026-11-25T19:00:00.000Z", cost_usd=0.1234)
    record["context"] = {"echo": "key=1234 rejected"}
    store = open_store(store_url)
    with Recorder(store) as rec:
        rec.record(record)
    (stored,) = store.records_for("short-key")
    assert stored["outcome"]["cost_usd"] == 0.1234
    assert stored["context"]["echo"] == "key=[REDACTED] rejected"
    assert build_trace(store.records_for("short-key"), [])["cost_usd"] == pytest.approx(0.1234)
    assert compute_stats(store.iter_records())["totals"]["cost_usd"] == pytest.approx(0.1234)
    assert store.recent_requests(5)[0]["request_id"] == "short-key"
    out = tmp_path / "export.jsonl"
    export_jsonl(store, out)
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["outcome"]["cost_usd"] == 0.1234
    assert "=1234" not in line
    store.close()


def test_hints_survive_redaction_and_secrets_do_not() -> None:
    hint = "authentication required: send `Authorization: Bearer <key>`"
    assert _redact.redact(hint) == hint
    assert _redact.redact("use `x-api-key: $IDEOGRAM_API_KEY`") == "use `x-api-key: $IDEOGRAM_API_KEY`"
    leaked = _redact.redact("proxy said: Authorization: Bearer sk-live-9f8e7d6c5b4a, x-api-key: abcd1234efgh")
    assert "sk-live" not in leaked and "abcd1234efgh" not in leaked
    assert leaked == "proxy said: Authorization: Bearer [REDACTED], x-api-key: [REDACTED]"


def test_the_gateway_401_hint_is_readable(tmp_path: Path) -> None:
    server = ThreadedServer(create_app(gateway_settings(tmp_path), api_key=GATEWAY_KEY)).start()
    try:
        r = httpx.get(f"{server.url}/metrics", timeout=30)
    finally:
        server.stop()
    assert r.status_code == 401
    assert "send `Authorization: Bearer <key>`" in r.json()["error"]["message"]


def test_a_damaged_stored_row_is_skipped_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Rows an older version wrote as `"cost_usd":0.[REDACTED]` must not break every read."""
    path = tmp_path / "t.db"
    store = open_store(f"sqlite:///{path}")
    store.write_batch([example_record("good")])
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO attempts (request_id, attempt, ts, backend, ok, record) VALUES ('bad', 0, ?, 'x', 1, ?)",
        ("2026-01-01T00:00:00.000Z", '{"outcome":{"cost_usd":0.[REDACTED]}}'),
    )
    conn.commit()
    conn.close()
    with caplog.at_level(logging.WARNING, logger="pixelroute.telemetry"):
        assert [r["request_id"] for r in store.iter_records()] == ["good"]
        assert store.records_for("bad") == []
    assert any("skipped 1 damaged records" in r.getMessage() for r in caplog.records)
    store.close()


# --------------------------------------------------------------------------- 3. kill -9

_KILLED_WRITER = """
import sys, time
from pixelroute.telemetry import Recorder, example_record, open_store
store = open_store(sys.argv[1])
rec = Recorder(store, batch_size=10_000, flush_interval_s=600)  # only flush() writes
for i in range(500):
    rec.record(example_record(f"w-{i:05d}"))
rec.flush()
for i in range(500, 500 + int(sys.argv[2])):
    rec.record(example_record(f"w-{i:05d}"))
print("ready", flush=True)
time.sleep(600)
"""


def test_kill_9_losses_are_counted_at_the_next_start(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    unwritten = 137
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "PIXELROUTE_TEST_TORCH": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, store_url, str(unwritten)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()
        assert line == "ready\n", proc.stderr.read()
        store = open_store(store_url)
        with Recorder(store) as alive_check:  # the writer is alive: its marker is not touched
            alive_check.flush(timeout=30)
        assert store.losses() == {}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:
            proc.kill()
    assert store.count() == 500
    with caplog.at_level(logging.WARNING, logger="pixelroute.telemetry"):
        with Recorder(store) as rec:
            rec.flush(timeout=30)
        with Recorder(store) as again:  # settled once, not twice
            again.flush(timeout=30)
    assert store.losses() == {"unwritten": unwritten}
    assert any(f"stopped with {unwritten} records" in r.getMessage() for r in caplog.records)
    assert not list(rec.marker_dir.glob("*.marker"))
    store.close()


def test_clean_close_leaves_no_marker_and_no_loss(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    with Recorder(store) as rec:
        for _ in range(10):
            rec.record(example_record())
        assert len(list(rec.marker_dir.glob("*.marker"))) == 1
    assert not list(rec.marker_dir.glob("*.marker"))
    with Recorder(store) as later:
        later.flush(timeout=30)
    assert store.losses() == {}
    assert store._query("SELECT COUNT(*) FROM recorder_sessions") == [(0,)]
    store.close()


def test_records_a_dead_store_kept_are_counted_by_the_next_recorder(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    rec = Recorder(store, flush_interval_s=0.01)
    for _ in range(7):
        rec.record(example_record())
    rec.close(timeout=30)  # gives up after a few retries: the 7 are lost, and said to be
    blocker.execute("ROLLBACK")
    blocker.close()
    assert rec.stats()["dropped"] == 7
    with Recorder(store) as rec2:
        rec2.flush(timeout=30)
    assert store.losses() == {"unwritten": 7}
    store.close()


# --------------------------------------------------------------------------- 4. the writer survives


def test_writer_survives_a_malformed_record_meeting_a_locked_store(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    bad = example_record("bad")
    del bad["ts"]
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    rec = Recorder(store, flush_interval_s=0.01)
    try:
        rec.record(example_record("good-1"))
        rec.record(bad)
        rec.record(example_record("good-2"))
        with pytest.raises(TimeoutError):
            rec.flush(timeout=0.5)
        assert rec._thread.is_alive()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    rec.flush(timeout=30)
    assert rec._thread.is_alive()
    assert {r["request_id"] for r in store.iter_records()} == {"good-1", "good-2"}
    assert store.losses() == {"invalid": 1}
    assert store.quarantined()[0]["field"] == "ts"
    rec.close()
    store.close()


class RefusingStore(SQLiteStore):
    """A real store whose database refuses one request id the way PostgreSQL refuses bad data."""

    def write_encoded(self, batch: EncodedBatch, session: str | None = None) -> int:
        if any(row[0] == "refused-by-db" for row in batch.rows):
            raise sqlite3.DataError("value out of range for column")
        return super().write_encoded(batch, session)


def test_a_record_the_database_refuses_is_found_and_quarantined(tmp_path: Path) -> None:
    store = RefusingStore(tmp_path / "t.db")
    with Recorder(store, flush_interval_s=0.01) as rec:
        for i in range(20):
            rec.record(example_record(f"ok-{i}"))
        rec.record(example_record("refused-by-db"))
        rec.record(example_record("ok-last"))
        rec.flush(timeout=30)
    assert store.count() == 21
    assert store.losses() == {"invalid": 1}
    assert store.quarantined()[0]["record"]["request_id"] == "refused-by-db"
    store.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"attempt": 2**40}, "attempt"),
        ({"backend": "a\x00b"}, "backend"),
        ({"backend": 7}, "backend"),
        ({"outcome": "fine"}, "outcome"),
        ({"request_id": "r\udcff"}, "request_id"),
        ({"context": {"k\udcff": 1}}, "context.k\\udcff"),
    ],
)
def test_records_no_store_can_hold_are_refused_naming_the_field(
    store_url: str, change: dict[str, Any], field: str
) -> None:
    store: Store = open_store(store_url)
    with pytest.raises(ValidationError) as info:
        store.write_batch([example_record() | change])
    assert info.value.field == field
    with Recorder(store) as rec:
        rec.record(example_record() | change)
        rec.record(example_record())
    assert store.count() == 1 and store.losses() == {"invalid": 1}
    store.close()


# --------------------------------------------------------------------------- 5. JSONL import


def _damaged_file(tmp_path: Path) -> tuple[Path, int]:
    good = [json.dumps(example_record(f"g-{i:03d}")) for i in range(40)]
    surrogate = json.dumps(example_record("s")).replace('"prompt": "', '"prompt": "\\udcff', 1)
    nul = json.dumps(example_record("n")).replace('"prompt": "', '"prompt": "\\u0000', 1)
    pair = json.dumps(example_record("emoji")).replace('"prompt": "', '"prompt": "\\ud83d\\ude00', 1)
    lines = [
        *(s.encode() for s in good[:10]),
        b'{"schema": "pixelroute.telemetry/1", "prompt": "caf\xe9"}',  # latin-1, not UTF-8: line 11
        *(s.encode() for s in good[10:20]),
        surrogate.encode(),  # line 22
        nul.encode(),  # line 23
        pair.encode(),  # a valid surrogate pair: fine
        *(s.encode() for s in good[20:]),
    ]
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n" + json.dumps(example_record("t")).encode()[:-9])  # truncated
    return path, len(lines) + 1


def test_damaged_jsonl_is_reported_by_line_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, last = _damaged_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert cli_main(["telemetry", "import", str(path), "--store", url, "--strict"]) == 1
    assert "line 11: not valid UTF-8: byte 0xe9" in capsys.readouterr().err
    with open_store(url) as store:
        assert store.count() == 0

    assert cli_main(["telemetry", "import", str(path), "--store", url]) == 3
    err = capsys.readouterr().err
    assert "imported 41 records" in err and "skipped 4 malformed lines" in err
    assert "line 11: not valid UTF-8" in err
    assert "line 22: `prompt` holds a lone surrogate or NUL" in err
    assert "line 23: `prompt` holds a lone surrogate or NUL" in err
    assert f"line {last}: not valid JSON" in err and "truncated" in err
    assert "--allow-skips" in err
    assert "Traceback" not in err

    assert cli_main(["telemetry", "import", str(path), "--store", url, "--allow-skips"]) == 0
    assert "41 already present" in capsys.readouterr().err
    with open_store(url) as store:
        assert store.count() == 41
        assert store.records_for("emoji")[0]["prompt"].startswith("😀")


def test_damaged_jsonl_on_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    path, _ = _damaged_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with path.open("rb") as raw:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(raw, encoding="utf-8"))
        assert cli_main(["telemetry", "import", "-", "--store", url]) == 3
    assert "line 11: not valid UTF-8" in capsys.readouterr().err
