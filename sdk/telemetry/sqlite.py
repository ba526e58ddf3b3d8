"""The default store: one SQLite file in WAL mode, batched transactions, forward migrations.

WAL with ``synchronous=NORMAL``: a committed batch survives the process being killed (it is in
the WAL file the OS holds), readers never block the writer, and a crash can never corrupt the
file, only lose the batch that was not yet committed. Several processes may write: SQLite
serializes them, each waiting up to ``busy_timeout`` for the lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._store import SELECT_RECORDS, Row, Store, decode_rows, no_tables_message, ts_bound, where_window

MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE attempts (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, attempt INTEGER NOT NULL, "
        "ts TEXT NOT NULL, backend TEXT, ok INTEGER, record TEXT NOT NULL)",
        "CREATE UNIQUE INDEX attempts_request ON attempts (request_id, attempt)",
        "CREATE INDEX attempts_ts ON attempts (ts)",
        "CREATE TABLE corrections (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, seconds REAL NOT NULL, "
        "verdict TEXT NOT NULL, ts TEXT NOT NULL)",
        "CREATE INDEX corrections_request ON corrections (request_id, ts, id)",
    ],
    2: [
        # the error class becomes a column so failure counts need no JSON parsing
        "ALTER TABLE attempts ADD COLUMN error TEXT",
        "UPDATE attempts SET error = json_extract(record, '$.outcome.error')",
        "CREATE TABLE losses (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, count INTEGER NOT NULL, "
        "reason TEXT NOT NULL, pid INTEGER)",
    ],
    3: [
        # records the store refused, kept (as ASCII JSON) instead of blocking the others
        "CREATE TABLE quarantine (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, reason TEXT NOT NULL, field TEXT, "
        "record TEXT NOT NULL, pid INTEGER)",
        # per recorder: records written or quarantined, bumped in the batch's own transaction
        "CREATE TABLE recorder_sessions (session TEXT PRIMARY KEY, accounted INTEGER NOT NULL, pid INTEGER, "
        "ts TEXT NOT NULL)",
    ],
}

_INSERT = "INSERT OR IGNORE INTO attempts (request_id, attempt, ts, backend, ok, error, record) VALUES "
# Many rows per statement: one sqlite3_step (one release of the GIL) per chunk instead of per row.
# executemany re-takes the GIL after every row, so a busy request thread could stall the writer
# for a whole switch interval (5 ms) each time; this is also ~15% faster on its own. SQLite before
# 3.32 allows only 999 bound variables in one statement.
_ROWS_PER_STATEMENT = 500 if sqlite3.sqlite_version_info >= (3, 32) else 140


class SQLiteStore(Store):
    """Telemetry in one SQLite file (``sqlite:///path``)."""

    MIGRATIONS = MIGRATIONS

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0, create: bool = True) -> None:
        """``create=False`` opens only an existing store (see :func:`~pixelroute.telemetry.open_store`)."""
        super().__init__()
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout_s = busy_timeout_s
        if not create:
            self._refuse_unless_created()
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"`telemetry.store` {self.url!r}: cannot create its folder ({exc})") from exc
        try:
            self._migrate(create)
        except sqlite3.Error as exc:
            self.close()
            raise ConfigError(f"`telemetry.store` {self.url!r} is not a usable telemetry database: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _transaction(self, conn: Any, write: bool = True) -> Iterator[Any]:
        cur = conn.cursor()
        try:
            if not write:
                yield cur
                return
            # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _has_schema_table(self, cur: Any) -> bool:
        cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
        return cur.fetchone() is not None

    def _refuse_unless_created(self) -> None:
        """For a reader: the file must exist and hold pixelroute's tables. Checked on a read-only
        connection, so a file that is not a store is left exactly as it was (no WAL switch)."""
        if not Path(self.path).is_file():
            raise ConfigError(
                f"`telemetry.store` {self.url!r} does not exist (no file {self.path}): nothing has been recorded "
                "there. Check the path; commands that only read never create a store"
            )
        try:
            conn = sqlite3.connect(f"{Path(self.path).resolve().as_uri()}?mode=ro", uri=True)
            try:
                created = self._has_schema_table(conn.cursor())
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise ConfigError(f"`telemetry.store` {self.url!r} is not a usable telemetry database: {exc}") from exc
        if not created:
            raise ConfigError(no_tables_message(self.url))

    def _insert(self, cur: Any, rows: list[Row]) -> int:
        inserted = 0
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            cur.execute(_INSERT + ",".join(["(?,?,?,?,?,?,?)"] * len(chunk)), list(chain.from_iterable(chunk)))
            inserted += cur.rowcount
        return inserted

    def iter_records(
        self, since: datetime | str | None = None, until: datetime | str | None = None, chunk_size: int = 5000
    ) -> Iterator[dict[str, Any]]:
        where, params = where_window(ts_bound(since, "since"), ts_bound(until, "until"))
        # A connection of its own: the read snapshot lives as long as the iteration, and the
        # caller may write (e.g. corrections) from this thread meanwhile.
        conn = self._connect()
        try:
            cur = conn.execute(f"{SELECT_RECORDS}{where} ORDER BY a.ts, a.id", params)
            yield from decode_rows(_chunks(cur, chunk_size), self.url)
        finally:
            conn.close()

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a healthy file."""
        return str(self._query("PRAGMA integrity_check")[0][0])


def _chunks(cur: sqlite3.Cursor, size: int) -> Iterator[Any]:
    while rows := cur.fetchmany(size):
        yield from rows
