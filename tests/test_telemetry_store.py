"""The same store suite against SQLite and PostgreSQL, plus migrations and concurrent writers.

PostgreSQL comes from PIXELROUTE_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
each test gets its own schema and drops it. No server: skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pixelroute._errors import ConfigError, UnknownRequest, ValidationError
from pixelroute.telemetry import Recorder, Store, example_record, format_ts, make_request_id, open_store
from pixelroute.telemetry._store import SCHEMA_VERSION
from tests._import_root import SUBPROCESS_PYTHONPATH

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("PIXELROUTE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_or_skip() -> str:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        reason = f"PostgreSQL not reachable at {PG_URL} ({type(exc).__name__}: {exc})".strip()
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must provide PostgreSQL")
        pytest.skip(reason)
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema=pixelroute_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'telemetry.db'}"
        return
    url = _postgres_or_skip()
    yield url
    _drop_schema(url)


def _drop_schema(url: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{url.rsplit("schema=", 1)[1]}" CASCADE')


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def _ts(seconds: float) -> str:
    return format_ts(datetime(2026, 11, 25, 19, 0, tzinfo=UTC) + timedelta(seconds=seconds))


# --------------------------------------------------------------------------- the shared suite


def test_round_trip_keeps_unknown_keys_and_order(store: Store) -> None:
    rec = example_record(ts=_ts(0), model="m1", hedge=False) | {"simulated": True, "vendor": {"x": [1, 2]}}
    rec["decision"]["candidates"] = [{"backend": "mock", "feasible": True, "why_not": None}]
    store.write_batch([rec])
    (back,) = store.records_for(rec["request_id"])
    assert back == rec
    assert list(back) == list(rec)


def test_records_for_orders_attempts_and_unknown_is_empty(store: Store) -> None:
    rid = make_request_id()
    store.write_batch([example_record(rid, 2, "c"), example_record(rid, 0, "a"), example_record(rid, 1, "b")])
    assert [r["backend"] for r in store.records_for(rid)] == ["a", "b", "c"]
    assert store.records_for("no-such-id") == []


def test_rewriting_a_batch_is_idempotent(store: Store) -> None:
    batch = [example_record() for _ in range(5)]
    assert store.insert_batch(batch) == 5
    assert store.insert_batch(batch + [example_record()]) == 1
    assert store.count() == 6


def test_missing_key_refuses_the_whole_batch(store: Store) -> None:
    bad = example_record()
    del bad["ts"]
    with pytest.raises(ValidationError, match="record 1: `ts` is required"):
        store.write_batch([example_record(), bad])
    assert store.count() == 0


def test_corrections_latest_wins_history_kept(store: Store) -> None:
    rid = make_request_id()
    store.write_batch([example_record(rid, 0), example_record(rid, 1)])
    t0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
    store.add_correction(rid, 30.0, "edited", ts=t0)
    store.add_correction(rid, 0.0, "accepted", ts=t0 + timedelta(minutes=5))
    history = store.correction_history(rid)
    assert [(h["seconds"], h["verdict"]) for h in history] == [(30.0, "edited"), (0.0, "accepted")]
    for record in store.records_for(rid):
        assert record["correction"] == {
            "seconds": 0.0,
            "verdict": "accepted",
            "ts": format_ts(t0 + timedelta(minutes=5)),
        }


def test_correction_for_unknown_request_and_absurd_values(store: Store) -> None:
    with pytest.raises(UnknownRequest, match="`nope`"):
        store.add_correction("nope", 10.0, "accepted")
    rid = make_request_id()
    store.write_batch([example_record(rid)])
    with pytest.raises(ValidationError, match="`seconds`.*-1"):
        store.add_correction(rid, -1, "edited")
    with pytest.raises(ValidationError, match="`seconds`.*one day"):
        store.add_correction(rid, 90_000, "edited")
    with pytest.raises(ValidationError, match="`verdict`.*'meh'"):
        store.add_correction(rid, 1.0, "meh")
    assert store.correction_history(rid) == []


def test_imported_correction_lands_in_history_once(store: Store) -> None:
    rid = make_request_id()
    corr = {"seconds": 12.5, "verdict": "edited", "ts": _ts(60)}
    batch = [
        example_record(rid, 0, ts=_ts(0)) | {"correction": corr},
        example_record(rid, 1, ts=_ts(1)) | {"correction": corr},
    ]
    store.write_batch(batch)
    store.write_batch(batch)  # a re-import
    assert store.correction_history(rid) == [corr]
    assert [r["correction"] for r in store.records_for(rid)] == [corr, corr]


def test_iter_records_streams_in_ts_order_within_window(store: Store) -> None:
    records = [example_record(ts=_ts(s)) for s in (50, 10, 30, 20, 40)]
    store.write_batch(records)
    assert [r["ts"] for r in store.iter_records(chunk_size=2)] == [_ts(s) for s in (10, 20, 30, 40, 50)]
    window = list(store.iter_records(since=_ts(20), until=datetime(2026, 11, 25, 19, 0, 40, tzinfo=UTC)))
    assert [r["ts"] for r in window] == [_ts(20), _ts(30)]
    with pytest.raises(ValidationError, match="`since`"):
        list(store.iter_records(since="yesterday"))


def test_iter_records_carries_latest_correction(store: Store) -> None:
    rid = make_request_id()
    store.write_batch([example_record(rid, ts=_ts(0)), example_record(ts=_ts(1))])
    store.add_correction(rid, 5.0, "rejected")
    corrections = [r["correction"] for r in store.iter_records()]
    assert corrections[0]["verdict"] == "rejected" and corrections[1] is None


def test_recent_requests_newest_first(store: Store) -> None:
    ids = [make_request_id() for _ in range(6)]
    for i, rid in enumerate(ids):
        store.write_batch(
            [
                example_record(rid, 0, "a", ts=_ts(i * 10), ok=False, error="timeout", cost_usd=0.0),
                example_record(rid, 1, "b", ts=_ts(i * 10 + 2), cost_usd=0.04),
            ]
        )
    recent = store.recent_requests(limit=3)
    assert [r["request_id"] for r in recent] == ids[::-1][:3]
    assert recent[0] | {"request_id": None, "ts": None} == {
        "request_id": None,
        "ts": None,
        "backend": "b",
        "operation": "generate",  # example records predate edits: no `operation`, read as generate
        "ok": True,
        "error": None,
        "attempts": 2,
        "latency_s": 3.23,
        "cost_usd": 0.04,
        "prompt": recent[0]["prompt"],
        "correction": None,
    }


def test_losses_are_persisted_for_other_processes(store: Store) -> None:
    store.record_losses(3, "queue_full")
    store.record_losses(2, "queue_full")
    assert store.losses() == {"queue_full": 5}
    assert store.losses(since=datetime.now(UTC) + timedelta(hours=1)) == {}


def test_many_threads_through_one_recorder(store: Store) -> None:
    rec = Recorder(store, batch_size=300, flush_interval_s=0.05)
    per_thread, threads = 1500, 4
    ids: list[list[str]] = [[] for _ in range(threads)]

    def work(k: int) -> None:
        for _ in range(per_thread):
            record = example_record()
            ids[k].append(record["request_id"])
            assert rec.record(record)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rec.close()
    assert rec.stats()["written"] == per_thread * threads and rec.stats()["dropped"] == 0
    stored = {r["request_id"] for r in store.iter_records()}
    assert stored == {rid for chunk in ids for rid in chunk}


_WRITER = """
import sys
from pixelroute.telemetry import Recorder, example_record, open_store
url, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(url)
rec = Recorder(store, batch_size=500, flush_interval_s=0.05)
for i in range(n):
    rec.record(example_record(f"{tag}-{i:06d}"))
rec.close()
store.close()
"""


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "PIXELROUTE_TEST_TORCH": "0"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_write_at_once(store: Store, store_url: str) -> None:
    n = 3000
    procs = [_python(_WRITER, store_url, tag, str(n)) for tag in ("p1", "p2")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    ids = {r["request_id"] for r in store.iter_records()}
    assert ids == {f"{tag}-{i:06d}" for tag in ("p1", "p2") for i in range(n)}


def test_concurrent_corrections_from_threads_are_all_kept(store: Store) -> None:
    rid = make_request_id()
    store.write_batch([example_record(rid)])

    def report(k: int) -> None:
        for j in range(10):
            store.add_correction(rid, float(k * 10 + j), "edited")

    workers = [threading.Thread(target=report, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(h["seconds"] for h in store.correction_history(rid)) == [float(i) for i in range(40)]


def test_closed_store_refuses_use(store_url: str) -> None:
    s = open_store(store_url)
    s.close()
    with pytest.raises(ConfigError, match="closed"):
        s.records_for("x")


# --------------------------------------------------------------------------- URLs and migrations


@pytest.mark.parametrize("url", ["", "mysql://u:hunter2@h/db", "sqlite:///", "sqlite:///:memory:", "file.db"])
def test_bad_url_names_it_and_hides_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match="telemetry.store") as info:
        open_store(url)
    assert "hunter2" not in str(info.value)


def test_postgres_bad_schema_name() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError, match="`schema`.*drop table"):
        open_store("postgresql://postgres@127.0.0.1/test?schema=drop table")


_V1_RECORD = json.dumps(example_record("old-1", ok=False, error="timeout"))


@pytest.mark.parametrize("create", [True, False], ids=["writer", "reader"])
def test_sqlite_migrates_a_v1_database(tmp_path: Path, create: bool) -> None:
    # a reader (create=False) too: an existing store is upgraded in place, which creates nothing
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE attempts (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, attempt INTEGER NOT NULL,
                               ts TEXT NOT NULL, backend TEXT, ok INTEGER, record TEXT NOT NULL);
        CREATE UNIQUE INDEX attempts_request ON attempts (request_id, attempt);
        CREATE INDEX attempts_ts ON attempts (ts);
        CREATE TABLE corrections (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, seconds REAL NOT NULL,
                                  verdict TEXT NOT NULL, ts TEXT NOT NULL);
        CREATE INDEX corrections_request ON corrections (request_id, ts, id);
        """
    )
    conn.execute(
        "INSERT INTO attempts (request_id, attempt, ts, backend, ok, record) VALUES (?, 0, ?, 'mock', 0, ?)",
        ("old-1", json.loads(_V1_RECORD)["ts"], _V1_RECORD),
    )
    conn.commit()
    conn.close()
    with open_store(f"sqlite:///{path}", create=create) as store:
        assert store.schema_version() == SCHEMA_VERSION == 3
        assert store.records_for("old-1")[0]["outcome"]["error"] == "timeout"
        assert store._query("SELECT error FROM attempts") == [("timeout",)]
        store.record_losses(1, "queue_full")  # the v2 table exists
        assert store.quarantined() == []  # and the v3 one
        store.write_batch([example_record()])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_postgres_migrates_a_v1_schema() -> None:
    url = _postgres_or_skip()
    import psycopg

    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute(
            'CREATE TABLE attempts (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, request_id TEXT COLLATE "C" '
            'NOT NULL, attempt INTEGER NOT NULL, ts TEXT COLLATE "C" NOT NULL, backend TEXT, ok BOOLEAN, '
            "record TEXT NOT NULL)"
        )
        conn.execute("CREATE UNIQUE INDEX attempts_request ON attempts (request_id, attempt)")
        conn.execute(
            'CREATE TABLE corrections (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, request_id TEXT COLLATE "C" '
            'NOT NULL, seconds DOUBLE PRECISION NOT NULL, verdict TEXT NOT NULL, ts TEXT COLLATE "C" NOT NULL)'
        )
        conn.execute(
            "INSERT INTO attempts (request_id, attempt, ts, backend, ok, record) VALUES (%s, 0, %s, 'mock', false, %s)",
            ("old-1", json.loads(_V1_RECORD)["ts"], _V1_RECORD),
        )
    store = open_store(url)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 3
        assert store._query("SELECT error FROM attempts") == [("timeout",)]
        assert store.records_for("old-1")[0]["outcome"]["ok"] is False
    finally:
        store.close()
        _drop_schema(url)


def test_newer_schema_is_refused(store_url: str) -> None:
    with open_store(store_url) as store, store._transaction(store._conn()) as cur:
        cur.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ConfigError, match="schema version 99, newer"):
        open_store(store_url)


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable telemetry database"):
        open_store(f"sqlite:///{path}")
