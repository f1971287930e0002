"""One small database layer over SQLite (embedded default) and PostgreSQL (shared deployments).

SQL is written once with ``?`` placeholders and portable types; this module translates the
placeholders for psycopg and runs each component's ordered migrations exactly once.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from tenacity import RetryCallState, Retrying, wait_exponential_jitter

log = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgres"]

_PLACEHOLDER = re.compile(r"\?")
# The PostgreSQL advisory lock key that serialises schema migrations across processes.
_MIGRATION_LOCK = 0x66656564


class DatabaseError(RuntimeError):
    """The database refused or is unreachable."""


class IntegrityError(DatabaseError):
    """A uniqueness or foreign-key rule was broken (e.g. a duplicate id)."""


class DatabaseUnavailable(DatabaseError):
    """The server cannot be reached now (down, restarting, the connection dropped); the
    connection is made again, with backoff, by a later call."""


# Reconnection attempts to PostgreSQL back off from the first to at most the last (seconds): a
# node finds a restarted server within a second without hammering one that stays down.
RECONNECT_BACKOFF = (0.1, 1.0)
CONNECT_TIMEOUT = 2  # seconds, per attempt
# tenacity's exponential backoff (with up to 0.1 s of jitter, so the nodes of a cluster do not
# reconnect in step) decides when the next attempt is due. It is not a blocking retry loop: a
# call that finds the server down before then fails at once with DatabaseUnavailable, so
# nothing queues behind a reconnect on the database thread.
_RECONNECT = Retrying(
    wait=wait_exponential_jitter(
        multiplier=RECONNECT_BACKOFF[0], max=RECONNECT_BACKOFF[1], jitter=RECONNECT_BACKOFF[0]
    )
)


class Database:
    """A connection with a lock: safe to share between the event loop's worker threads."""

    def __init__(self, conn: Any, dialect: Dialect, url: str) -> None:
        self._conn = conn
        self.dialect: Dialect = dialect
        self.url = url
        self._lock = threading.RLock()
        self._in_tx = 0
        #: monotonic time the server was found unreachable (None: it answers).
        self.unavailable_since: float | None = None
        self._retry_at = 0.0
        self._reconnects = RetryCallState(_RECONNECT, None, (), {})  # failed attempts so far

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Database:
        """``sqlite:///path/to/file.db``, ``sqlite://:memory:`` or ``postgresql://...``.

        ``create=False``: an SQLite file that does not exist is an error, not a new empty
        database (for commands that read what a gateway wrote)."""
        if url.startswith("sqlite://"):
            path = url[len("sqlite://") :]  # sqlite:///abs/path or sqlite://rel/path
            if path in (":memory:", "/:memory:"):
                path = ":memory:"
            elif create:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            elif not Path(path).is_file():
                raise DatabaseError(f"no database at {Path(path).resolve()}")
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            return cls(conn, "sqlite", url)
        if url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError:  # pragma: no cover - psycopg is a dependency
                raise DatabaseError("PostgreSQL needs the psycopg package") from None
            try:
                pg_conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
            except psycopg.Error as exc:
                raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from None
            return cls(pg_conn, "postgres", url)
        raise DatabaseError(f"unsupported database URL {url.split(':', 1)[0]!r}")

    def _sql(self, sql: str) -> str:
        # psycopg reads every % as a placeholder: keep literal ones (LIKE 'a%') literal.
        if self.dialect == "postgres":
            return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
        return sql

    @property
    def available(self) -> bool:
        return self.unavailable_since is None

    def _connection(self) -> Any:
        """The connection, made again if PostgreSQL dropped it (never inside a transaction:
        that transaction is lost with its connection and fails as a whole)."""
        conn = self._conn
        if self.dialect != "postgres" or not (conn.closed or conn.broken):
            return conn
        if self._in_tx:
            raise DatabaseUnavailable("the connection to PostgreSQL was lost in a transaction")
        import psycopg

        now = time.monotonic()
        if now < self._retry_at:
            raise DatabaseUnavailable("PostgreSQL is unreachable (retrying)")
        try:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            self._retry_at = time.monotonic() + _RECONNECT.wait(self._reconnects)
            self._reconnects.prepare_for_next_attempt()
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: {type(exc).__name__}") from None
        self._reconnects = RetryCallState(_RECONNECT, None, (), {})
        self.unavailable_since = None
        log.warning("reconnected to PostgreSQL")
        return self._conn

    def _lost(self, exc: Exception) -> DatabaseUnavailable:
        if self.unavailable_since is None:
            self.unavailable_since = time.monotonic()
            log.warning("lost the connection to PostgreSQL: %s", type(exc).__name__)
        return DatabaseUnavailable(f"PostgreSQL is unreachable: {type(exc).__name__}")

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        try:
            conn = self._connection()
        except DatabaseUnavailable:
            if self.unavailable_since is None:
                self.unavailable_since = time.monotonic()
            raise
        try:
            return conn.execute(self._sql(sql), tuple(params))
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from None
        except sqlite3.Error as exc:
            raise DatabaseError(str(exc)) from None
        except Exception as exc:
            if self.dialect == "postgres":
                import psycopg

                if isinstance(exc, psycopg.errors.IntegrityError):
                    raise IntegrityError(str(exc)) from None
                if isinstance(exc, psycopg.OperationalError) or conn.broken:
                    raise self._lost(exc) from None
                if isinstance(exc, psycopg.Error):
                    raise DatabaseError(str(exc)) from None
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            cur = self._run(sql, params)
            return int(cur.rowcount or 0)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement for many rows; return the rows it changed (SQLite reports it)."""
        with self._lock:
            if self.dialect == "sqlite":
                try:
                    cur = self._conn.executemany(sql, rows)
                    return int(cur.rowcount or 0)
                except sqlite3.IntegrityError as exc:
                    raise IntegrityError(str(exc)) from None
                except sqlite3.Error as exc:
                    raise DatabaseError(str(exc)) from None
            import psycopg

            try:
                with self._connection().cursor() as cur:
                    cur.executemany(self._sql(sql), rows)
                    return int(cur.rowcount or 0)
            except psycopg.errors.IntegrityError as exc:
                raise IntegrityError(str(exc)) from None
            except psycopg.OperationalError as exc:
                raise self._lost(exc) from None
            except psycopg.Error as exc:
                raise DatabaseError(str(exc)) from None

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """PostgreSQL COPY ... FROM STDIN: the fast bulk path (no SQL text to build or parse).
        ``table`` and ``columns`` are our own identifiers, never user input."""

        def feed(copy: Any) -> None:
            for row in rows:
                copy.write_row(row)

        self._copy(table, columns, feed)

    def copy_text(self, table: str, columns: Sequence[str], data: str) -> None:
        """PostgreSQL COPY ... FROM STDIN of text that is already in COPY's text format (tab
        separated, one row per line, newline-terminated): no per-row work in Python at all."""
        self._copy(table, columns, lambda copy: copy.write(data))

    def _copy(self, table: str, columns: Sequence[str], feed: Any) -> None:
        # Raises IntegrityError on a duplicate key, so callers can take a slower path.
        if self.dialect != "postgres":
            raise DatabaseError("COPY is PostgreSQL only")
        import psycopg

        with self._lock:
            try:
                with (
                    self._connection().cursor() as cur,
                    cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
                ):
                    feed(copy)
            except psycopg.errors.IntegrityError as exc:
                raise IntegrityError(str(exc)) from None
            except psycopg.OperationalError as exc:
                raise self._lost(exc) from None
            except psycopg.Error as exc:
                raise DatabaseError(str(exc)) from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cur = self._run(sql, params)
            return [tuple(r) for r in cur.fetchall()]

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing. Holds the lock throughout, so other threads wait rather than
        interleave statements; nested use joins the outer transaction."""
        with self._lock:
            if self._in_tx:
                self._in_tx += 1
                try:
                    yield
                finally:
                    self._in_tx -= 1
                return
            begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"
            self._run(begin, ())
            self._in_tx = 1
            try:
                yield
            except BaseException:
                self._in_tx = 0
                try:
                    self._run("ROLLBACK", ())
                except DatabaseUnavailable:
                    pass  # the server dropped the transaction with the connection
                raise
            self._in_tx = 0
            self._run("COMMIT", ())

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Apply this component's migrations not yet applied, in order; return how many ran.
        Each migration is one string of ;-separated statements, applied in one transaction.

        Safe when several processes or nodes start at once on a fresh database: the version is
        read inside the migration's transaction, under a lock every process respects (SQLite's
        write lock, a PostgreSQL advisory lock), so exactly one of them applies each step."""
        with self._lock:
            self._create_migrations_table()
            applied = 0
            for version, script in enumerate(migrations, start=1):
                with self.transaction():
                    if self.dialect == "postgres":
                        self._run("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                    row = self.query_one(
                        "SELECT 1 FROM schema_migrations WHERE component = ? AND version = ?",
                        (component, version),
                    )
                    if row is not None:
                        continue
                    for statement in _statements(script):
                        self._run(statement, ())
                    self._run(
                        "INSERT INTO schema_migrations (component, version) VALUES (?, ?)",
                        (component, version),
                    )
                applied += 1
            return applied

    def _create_migrations_table(self) -> None:
        # CREATE TABLE IF NOT EXISTS can still race on PostgreSQL's catalog: lock first.
        with self.transaction():
            if self.dialect == "postgres":
                self._run("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            self._run(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " component TEXT NOT NULL, version INTEGER NOT NULL,"
                " PRIMARY KEY (component, version))",
                (),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
