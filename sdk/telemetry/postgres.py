"""The PostgreSQL store (psycopg 3, imported only when a ``postgresql://`` URL is opened).

The same schema and SQL as SQLite. Batches go in with COPY into a per-connection temporary
table, then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (COPY's speed, with retried
batches and re-imports staying idempotent). Many application processes may write at once:
attempts never conflict (each has its own key), corrections are append-only, and migrations
run under an advisory lock. ``?schema=NAME`` in the URL keeps the tables in their own schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._errors import ConfigError
from .._redact import redact
from ._store import SELECT_RECORDS, Row, Store, decode_rows, safe_url, ts_bound, where_window

MIGRATIONS: dict[int, list[str]] = {
    1: [
        'CREATE TABLE attempts (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, request_id TEXT COLLATE "C" '
        'NOT NULL, attempt INTEGER NOT NULL, ts TEXT COLLATE "C" NOT NULL, backend TEXT, ok BOOLEAN, '
        "record TEXT NOT NULL)",
        "CREATE UNIQUE INDEX attempts_request ON attempts (request_id, attempt)",
        "CREATE INDEX attempts_ts ON attempts (ts)",
        'CREATE TABLE corrections (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, request_id TEXT COLLATE "C" '
        'NOT NULL, seconds DOUBLE PRECISION NOT NULL, verdict TEXT NOT NULL, ts TEXT COLLATE "C" NOT NULL)',
        "CREATE INDEX corrections_request ON corrections (request_id, ts, id)",
    ],
    2: [
        "ALTER TABLE attempts ADD COLUMN error TEXT",
        "UPDATE attempts SET error = record::json -> 'outcome' ->> 'error'",
        'CREATE TABLE losses (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ts TEXT COLLATE "C" NOT NULL, '
        "count BIGINT NOT NULL, reason TEXT NOT NULL, pid INTEGER)",
    ],
    3: [
        'CREATE TABLE quarantine (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ts TEXT COLLATE "C" NOT NULL, '
        "reason TEXT NOT NULL, field TEXT, record TEXT NOT NULL, pid INTEGER)",
        "CREATE TABLE recorder_sessions (session TEXT PRIMARY KEY, accounted BIGINT NOT NULL, pid INTEGER, "
        "ts TEXT NOT NULL)",
    ],
}

#: any constant works; it only has to be the same in every process migrating this database
_MIGRATION_LOCK = 0x7069786C726F7574  # "pixlrout"
_COLUMNS = "request_id, attempt, ts, backend, ok, error, record"
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS pixelroute_stage (request_id TEXT, attempt INTEGER, ts TEXT, "
    "backend TEXT, ok BOOLEAN, error TEXT, record TEXT) ON COMMIT DELETE ROWS"
)


class PostgresStore(Store):
    """Telemetry in PostgreSQL (``postgresql://user@host/db[?schema=NAME]``)."""

    MIGRATIONS = MIGRATIONS

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create=False`` opens only an existing store (see :func:`~pixelroute.telemetry.open_store`)."""
        super().__init__()
        from .._extras import optional_imports

        with optional_imports(f"`telemetry.store` {safe_url(url)!r}"):
            import psycopg
        self._psycopg = psycopg
        self.url = url
        self._conninfo, self.schema = _split_schema(url)
        try:
            self._migrate(create)
        except psycopg.Error as exc:
            self.close()
            raise ConfigError(f"`telemetry.store` {safe_url(url)!r}: {redact(str(exc)).strip()}") from exc
        except BaseException:
            self.close()
            raise

    def _connect(self, autocommit: bool = True) -> Any:
        conn = self._psycopg.connect(self._conninfo, autocommit=autocommit, connect_timeout=10)
        if self.schema:
            conn.execute(f'SET search_path TO "{self.schema}"')
            if not autocommit:
                conn.commit()
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def _transaction(self, conn: Any, write: bool = True) -> Iterator[Any]:
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except BaseException:
            # a rolled-back transaction takes a staging table created inside it along
            self._local.stage_ready = False
            raise

    def _insert(self, cur: Any, rows: list[Row]) -> int:
        if not getattr(self._local, "stage_ready", False):
            cur.execute(_STAGE)
            self._local.stage_ready = True
        with cur.copy(f"COPY pixelroute_stage ({_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO attempts ({_COLUMNS}) SELECT {_COLUMNS} FROM pixelroute_stage "
            "ON CONFLICT (request_id, attempt) DO NOTHING"
        )
        return int(cur.rowcount)

    def _before_migrations(self, cur: Any, create: bool) -> None:
        # two processes opening a fresh database at once must not both create the tables
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        if self.schema and create:
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

    def _has_schema_table(self, cur: Any) -> bool:
        # resolved through search_path: this store's schema when it has one (a missing schema: none)
        cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        return bool(cur.fetchone()[0])

    def iter_records(
        self, since: datetime | str | None = None, until: datetime | str | None = None, chunk_size: int = 5000
    ) -> Iterator[dict[str, Any]]:
        where, params = where_window(ts_bound(since, "since"), ts_bound(until, "until"))
        conn = self._connect(autocommit=False)  # a server-side cursor lives inside a transaction
        try:
            with conn.cursor(name="pixelroute_iter") as cur:
                cur.itersize = chunk_size
                cur.execute(self._sql(f"{SELECT_RECORDS}{where} ORDER BY a.ts, a.id"), params)
                yield from decode_rows(_chunks(cur, chunk_size), self.url)
            conn.rollback()
        finally:
            conn.close()

    def drop_schema(self) -> None:
        """Drop this store's schema and everything in it (tests and throwaway stores only)."""
        if not self.schema:
            raise ConfigError("drop_schema() needs a store opened with ?schema=NAME")
        with self._transaction(self._conn()) as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def _split_schema(url: str) -> tuple[str, str | None]:
    """Take our ``schema`` parameter out of the URL (libpq would refuse it) and check its name."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise ConfigError(f"`schema` in the telemetry store URL must be a plain identifier but is {schema!r}")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def _chunks(cur: Any, size: int) -> Iterator[Any]:
    while rows := cur.fetchmany(size):
        yield from rows
