"""Concurrent-stream leases shared by every gateway process on one database.

A grant's ``max_concurrent_streams`` holds for the tenant across all worker processes and all
nodes sharing the store, not per process. Each live capped stream is a row; taking one is a
check-and-insert under a lock the database enforces for every process (SQLite's write lock via
BEGIN IMMEDIATE, a PostgreSQL advisory lock per key). A process that dies cannot release its
rows, so rows expire unless their holder renews them: a crashed gateway's streams stop counting
after ``ttl`` seconds.
"""

from __future__ import annotations

import secrets
import zlib
from datetime import UTC, datetime, timedelta

from tenants.db import Database

MIGRATIONS = [
    """
    CREATE TABLE stream_leases (
        lease_id TEXT PRIMARY KEY,
        lease_key TEXT NOT NULL,
        holder TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX stream_leases_key ON stream_leases (lease_key, expires_at)
    """,
]


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseStore:
    def __init__(self, db: Database, *, holder: str | None = None, ttl: float = 30.0) -> None:
        self.db = db
        self.holder = holder or secrets.token_hex(8)
        self.ttl = timedelta(seconds=ttl)
        db.migrate("stream_leases", MIGRATIONS)

    def acquire(self, key: str, cap: int, now: datetime | None = None) -> str | None:
        """A lease id, or None when ``cap`` live leases already exist for ``key``."""
        now = now or datetime.now(UTC)
        with self.db.transaction():
            if self.db.dialect == "postgres":
                # Serialise takers of the same key across connections and nodes.
                self.db.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(key.encode()),))
            self.db.execute(
                "DELETE FROM stream_leases WHERE lease_key = ? AND expires_at < ?",
                (key, _ts(now)),
            )
            row = self.db.query_one(
                "SELECT COUNT(*) FROM stream_leases WHERE lease_key = ?", (key,)
            )
            if row is not None and int(row[0]) >= cap:
                return None
            lease_id = secrets.token_hex(12)
            self.db.execute(
                "INSERT INTO stream_leases (lease_id, lease_key, holder, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (lease_id, key, self.holder, _ts(now + self.ttl)),
            )
            return lease_id

    def release(self, lease_id: str) -> None:
        self.db.execute("DELETE FROM stream_leases WHERE lease_id = ?", (lease_id,))

    def renew(self, now: datetime | None = None) -> int:
        """Extend every lease this holder owns; the holder calls it well within ``ttl``."""
        now = now or datetime.now(UTC)
        return self.db.execute(
            "UPDATE stream_leases SET expires_at = ? WHERE holder = ?",
            (_ts(now + self.ttl), self.holder),
        )

    def count(self, key: str, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        row = self.db.query_one(
            "SELECT COUNT(*) FROM stream_leases WHERE lease_key = ? AND expires_at >= ?",
            (key, _ts(now)),
        )
        return int(row[0]) if row else 0
