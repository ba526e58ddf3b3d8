"""The store interface, shared by SQLite and PostgreSQL, and :func:`open_store` that picks one by URL.

Schema (the same in both, created and migrated by :meth:`Store._migrate`)::

    schema_version(version)                          one row: the applied migration
    attempts(id, request_id, attempt, ts, backend, ok, error, record)
        record = the full §4 JSON (unknown keys kept), its "correction" left null;
        UNIQUE (request_id, attempt) makes re-imports and retried batches idempotent
    corrections(id, request_id, seconds, verdict, ts)  append-only: never updated, so many
        processes can report at once without a read-modify-write race; the latest (ts, id) wins
    losses(id, ts, count, reason, pid)                 records the recorder had to drop
    quarantine(id, ts, reason, field, record, pid)     records the store refused (ASCII JSON), also in losses
    recorder_sessions(session, accounted, pid, ts)     per recorder: records written or quarantined so
        far, bumped in the same transaction; with the marker file's count it says what a kill lost

``ts`` columns hold the canonical ``YYYY-MM-DDTHH:MM:SS.mmmZ`` text, which sorts in time order
(PostgreSQL declares it ``COLLATE "C"`` so that holds there too), and one SQL text serves both.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from .._errors import ConfigError, UnknownRequest, ValidationError
from ._encode import INVALID, EncodedBatch, Row, decode, encode, encode_batch
from ._record import format_ts, now_ts, parse_ts, validate_correction

__all__ = ["SCHEMA_VERSION", "UNWRITTEN", "Row", "Store", "decode", "encode", "encode_batch", "open_store"]

log = logging.getLogger("pixelroute.telemetry")

#: The newest schema this code writes; older stores are migrated forward on open.
SCHEMA_VERSION = 3
#: the losses reason for attempts a process enqueued and never wrote (kill -9, crash, store down at exit)
UNWRITTEN = "unwritten"

# One statement serves both dialects: PostgreSQL's placeholders are rewritten from "?".
_LATEST_CORRECTION = (
    "LEFT JOIN corrections c ON c.id = (SELECT c2.id FROM corrections c2 WHERE c2.request_id = a.request_id "
    "ORDER BY c2.ts DESC, c2.id DESC LIMIT 1)"
)
SELECT_RECORDS = f"SELECT a.record, c.seconds, c.verdict, c.ts FROM attempts a {_LATEST_CORRECTION}"
INSERT_CORRECTION_IF_KNOWN = (
    "INSERT INTO corrections (request_id, seconds, verdict, ts) SELECT ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM attempts WHERE request_id = ?)"
)
# Imported records carry their correction; re-importing the same file must not duplicate it.
INSERT_CORRECTION_IF_NEW = (
    "INSERT INTO corrections (request_id, seconds, verdict, ts) SELECT ?, ?, ?, ? "
    "WHERE NOT EXISTS (SELECT 1 FROM corrections WHERE request_id = ? AND seconds = ? AND verdict = ? AND ts = ?)"
)


def safe_url(url: str) -> str:
    """``url`` with any password masked, for error messages."""
    return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (creating or migrating) the store at ``url``.

    ``sqlite:///relative/file.db``, ``sqlite:////absolute/file.db`` or ``postgresql://user@host/db``
    (add ``?schema=NAME`` to keep the tables in their own PostgreSQL schema). Anything else is a
    :class:`ConfigError` naming the URL (password masked).

    ``create=False`` is for readers (``pixelroute stats``, ``telemetry export``, ``trace``, ``train``):
    a store that does not exist yet (no SQLite file; no pixelroute tables in the PostgreSQL
    database or schema) is a :class:`ConfigError` naming it instead of a new, empty store. An
    existing store of an older schema is still migrated forward.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(f"`telemetry.store` must be a URL like sqlite:///pixelroute.db but is {url!r}")
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise ConfigError(
                f"`telemetry.store` {url!r} names no file; an in-memory store would lose everything at exit"
            )
        from .sqlite import SQLiteStore

        return SQLiteStore(path, create=create)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url, create=create)
    raise ConfigError(f"`telemetry.store` must start with sqlite:/// or postgresql:// but is {safe_url(url)!r}")


def no_tables_message(url: str) -> str:
    """What a reader says about a database that exists but was never written to by pixelroute."""
    return (
        f"`telemetry.store` {safe_url(url)!r} holds no pixelroute telemetry (no tables): nothing has been "
        "recorded there. Check the URL; commands that only read never create a store"
    )


def decode_rows(rows: Iterable[Sequence[Any]], url: str) -> Iterator[dict[str, Any]]:
    """Decode stored rows; a damaged one (not JSON, e.g. written by an older version) is skipped, loudly."""
    damaged = 0
    for row in rows:
        try:
            yield decode(*row)
        except (ValueError, TypeError):
            damaged += 1
    if damaged:
        log.warning(
            "pixelroute telemetry skipped %d damaged records in %s (their stored JSON does not parse)",
            damaged,
            safe_url(url),
        )


def ts_bound(value: datetime | str | None, field: str) -> str | None:
    return None if value is None else format_ts(parse_ts(value, field=field))


def where_window(since: str | None, until: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if since is not None:
        clauses.append("a.ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("a.ts < ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


# --------------------------------------------------------------------------- the interface


class Store(ABC):
    """Where telemetry records live. Thread-safe: each thread gets its own connection."""

    url: str

    def __init__(self) -> None:
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._closed = False

    # -- dialect hooks ---------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _transaction(self, conn: Any, write: bool = True) -> AbstractContextManager[Any]:
        """A context manager yielding a cursor: inside one write transaction, or for reading."""

    @abstractmethod
    def _insert(self, cur: Any, rows: list[Row]) -> int:
        """Insert ``rows`` (skipping ones already present); return how many were new."""

    @abstractmethod
    def iter_records(
        self, since: datetime | str | None = None, until: datetime | str | None = None, chunk_size: int = 5000
    ) -> Iterator[dict[str, Any]]:
        """Every record in ``[since, until)``, ordered by ``ts``, streamed ``chunk_size`` rows at a time."""

    def _sql(self, sql: str) -> str:
        return sql

    #: migration n brings a store from version n-1 to n; never edit one that has shipped
    MIGRATIONS: dict[int, list[str]]

    def _before_migrations(self, cur: Any, create: bool) -> None:  # noqa: B027 - optional, a no-op by default
        """Dialect hook run first inside the migration transaction (e.g. take a lock)."""

    @abstractmethod
    def _has_schema_table(self, cur: Any) -> bool:
        """Whether the ``schema_version`` table exists (the store was created by pixelroute)."""

    def _migrate(self, create: bool = True) -> None:
        with self._transaction(self._conn()) as cur:
            self._before_migrations(cur, create)
            if not create and not self._has_schema_table(cur):
                raise ConfigError(no_tables_message(self.url))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT MAX(version) FROM schema_version")
            version = cur.fetchone()[0] or 0
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"`telemetry.store` {safe_url(self.url)!r} has schema version {version}, newer than "
                    f"this pixelroute understands ({SCHEMA_VERSION}); upgrade pixelroute"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in self.MIGRATIONS[step]:
                    cur.execute(statement)
            if version < SCHEMA_VERSION:
                cur.execute("DELETE FROM schema_version")
                cur.execute(self._sql("INSERT INTO schema_version (version) VALUES (?)"), (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        """The schema version the store is at (after opening: always :data:`SCHEMA_VERSION`)."""
        return int(self._query("SELECT MAX(version) FROM schema_version")[0][0])

    # -- connections -----------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise ConfigError(f"the telemetry store {safe_url(self.url)!r} is closed")
            conn = self._connect()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._transaction(self._conn(), write=False) as cur:
            cur.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())

    def close(self) -> None:
        """Close every connection this store opened (in any thread)."""
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------
    def write_batch(self, records: list[dict[str, Any]]) -> None:
        """Write §4 records (one per attempt) in one transaction; all or nothing."""
        self.insert_batch(records)

    def insert_batch(self, records: list[dict[str, Any]]) -> int:
        """Like :meth:`write_batch`, returning how many records were new (re-imports are skipped).

        A record the store cannot hold refuses the whole batch with a ``ValidationError`` naming it.
        """
        if not records:
            return 0
        batch = EncodedBatch()
        for i, record in enumerate(records):
            row, correction = encode(record, i)
            batch.rows.append(row)
            if correction is not None:
                batch.corrections.append(correction)
        return self.write_encoded(batch)

    def write_encoded(self, batch: EncodedBatch, session: str | None = None) -> int:
        """One transaction: the rows, their corrections, the refused records (quarantined and counted
        in ``losses``) and, for a recorder ``session``, how many records it has now accounted for.

        Returns how many rows were new.
        """
        with self._transaction(self._conn()) as cur:
            inserted = self._insert(cur, batch.rows) if batch.rows else 0
            if batch.corrections:
                sql = self._sql(INSERT_CORRECTION_IF_NEW)
                for c in dict.fromkeys(batch.corrections):  # the attempts of one request repeat it
                    cur.execute(sql, (*c, *c))
            if batch.rejected:
                stamp, pid = now_ts(), os.getpid()
                sql = self._sql("INSERT INTO quarantine (ts, reason, field, record, pid) VALUES (?, ?, ?, ?, ?)")
                for r in batch.rejected:
                    cur.execute(sql, (stamp, r.message, r.field, r.record_json, pid))
                self._add_losses(cur, len(batch.rejected), INVALID)
            if session is not None:
                self._account(cur, session, batch.size)
        return inserted

    def _add_losses(self, cur: Any, count: int, reason: str, pid: int | None = None) -> None:
        cur.execute(
            self._sql("INSERT INTO losses (ts, count, reason, pid) VALUES (?, ?, ?, ?)"),
            (now_ts(), int(count), reason, os.getpid() if pid is None else pid),
        )

    def _account(self, cur: Any, session: str, count: int) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO recorder_sessions (session, accounted, pid, ts) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (session) DO UPDATE SET accounted = recorder_sessions.accounted + excluded.accounted"
            ),
            (session, int(count), os.getpid(), now_ts()),
        )

    def add_correction(self, request_id: str, seconds: float, verdict: str, ts: datetime | None = None) -> None:
        """Append a human correction report; ``UnknownRequest`` if no attempt has ``request_id``."""
        validate_correction(seconds, verdict)
        stamp = format_ts(ts) if ts is not None else now_ts()
        with self._transaction(self._conn()) as cur:
            cur.execute(self._sql(INSERT_CORRECTION_IF_KNOWN), (request_id, float(seconds), verdict, stamp, request_id))
            if cur.rowcount != 1:
                raise UnknownRequest(request_id)

    def record_losses(self, count: int, reason: str) -> None:
        """Persist that ``count`` records were dropped, so ``pixelroute stats`` in another process sees it."""
        with self._transaction(self._conn()) as cur:
            self._add_losses(cur, count, reason)

    # -- recorder sessions (write-ahead counts, see pixelroute.telemetry._marker) -----------------
    def settle_session(self, session: str, enqueued: int, pid: int | None = None) -> int:
        """A recorder ``session`` that enqueued ``enqueued`` records is over: count the ones it never
        wrote in ``losses`` (reason ``unwritten``) and return how many. Idempotent: settling twice
        counts them once.
        """
        with self._transaction(self._conn()) as cur:
            cur.execute(self._sql("SELECT accounted FROM recorder_sessions WHERE session = ?"), (session,))
            row = cur.fetchone()
            accounted = int(row[0]) if row else 0
            lost = max(0, int(enqueued) - accounted)
            if lost:
                self._add_losses(cur, lost, UNWRITTEN, pid)
                self._account(cur, session, lost)
        return lost

    def forget_session(self, session: str) -> None:
        """Drop a settled session's counter row (its marker file is already gone)."""
        with self._transaction(self._conn()) as cur:
            cur.execute(self._sql("DELETE FROM recorder_sessions WHERE session = ?"), (session,))

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest records the store refused, newest first: ``ts``, ``reason``, ``field``, ``record``.

        ``record`` is the refused record decoded from its ASCII-escaped JSON (a lone surrogate comes
        back as the same Python string), for inspection or repair and re-import.
        """
        rows = self._query(
            "SELECT ts, reason, field, record FROM quarantine ORDER BY id DESC LIMIT ?", (int(limit),)
        )
        return [{"ts": ts, "reason": reason, "field": f, "record": json.loads(rec)} for ts, reason, f, rec in rows]

    # -- reading ---------------------------------------------------------------------------
    def records_for(self, request_id: str) -> list[dict[str, Any]]:
        """All attempts of one request in attempt order, each with the latest correction; ``[]`` if unknown."""
        rows = self._query(f"{SELECT_RECORDS} WHERE a.request_id = ? ORDER BY a.attempt", (request_id,))
        return list(decode_rows(rows, self.url))

    def correction_history(self, request_id: str) -> list[dict[str, Any]]:
        """Every correction report for ``request_id``, oldest first (the last one is in effect)."""
        rows = self._query(
            "SELECT seconds, verdict, ts FROM corrections WHERE request_id = ? ORDER BY ts, id", (request_id,)
        )
        return [{"seconds": s, "verdict": v, "ts": t} for s, v, t in rows]

    def losses(self, since: datetime | str | None = None) -> dict[str, int]:
        """Dropped-record counts by reason, from every process that wrote to this store."""
        bound = ts_bound(since, "since")
        where, params = (" WHERE ts >= ?", [bound]) if bound else ("", [])
        rows = self._query(f"SELECT reason, SUM(count) FROM losses{where} GROUP BY reason", params)
        return {reason: int(total) for reason, total in rows}

    def recent_requests(self, limit: int = 50) -> list[dict[str, Any]]:
        """Summaries of the ``limit`` newest requests, newest first (for admin pages)."""
        from .trace import summarize_request

        if limit < 1:
            raise ValidationError(f"`limit` must be at least 1 but is {limit}", field="limit", value=limit)
        ids: dict[str, None] = {}
        offset, page = 0, max(4 * limit, 64)
        while len(ids) < limit:  # walk the ts index backwards until `limit` distinct requests are seen
            rows = self._query(
                "SELECT request_id FROM attempts ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?", (page, offset)
            )
            for (rid,) in rows:
                ids.setdefault(rid, None)
            if len(rows) < page:
                break
            offset += page
        return [summarize_request(self.records_for(rid)) for rid in list(ids)[:limit]]

    def count(self) -> int:
        """How many attempt records the store holds."""
        return int(self._query("SELECT COUNT(*) FROM attempts")[0][0])
