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
import threading
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tenants.db import Database
from tenants.policy import Decision

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


@dataclass
class Lease:
    """One live stream counted against a tenant's concurrency cap."""

    key: tuple[str, str]  # (tenant, grant id or "owner")
    decision: Decision
    released: bool = False
    shared_id: str | None = None  # the row in the shared lease table, for capped streams


class StreamCaps:
    """Live streams counted against their grants' concurrency caps.

    Without a :class:`LeaseStore` a cap holds for this process; with one, for every process
    and node on the database. With a store, ``acquire``, ``release`` and ``renew`` do blocking
    database work: call them off the event loop."""

    def __init__(self, shared: LeaseStore | None = None) -> None:
        self.shared = shared
        self._streams: dict[tuple[str, str], int] = {}
        # Guards the in-process count against two threads taking the last slot at once.
        self._lock = threading.Lock()

    def acquire(self, decision: Decision, now: datetime | None = None) -> Lease | None:
        """Count one stream against the decision's cap; None if the cap is reached."""
        assert decision.allow and decision.tenant is not None
        key = (decision.tenant, decision.grant_id or "owner")
        cap = decision.max_concurrent
        shared_id = None
        if cap is not None and self.shared is not None:
            # The database serialises takers of the key; the in-process lock is never held
            # across it, so an uncapped acquire on the event loop cannot wait for a database.
            shared_id = self.shared.acquire(f"{key[0]}:{key[1]}", cap, now)
            if shared_id is None:
                return None
            cap = None
        with self._lock:
            if cap is not None and self._streams.get(key, 0) >= cap:
                return None
            self._streams[key] = self._streams.get(key, 0) + 1
        return Lease(key, decision, shared_id=shared_id)

    def release(self, lease: Lease) -> None:
        with self._lock:
            if lease.released:
                return
            lease.released = True
            left = self._streams.get(lease.key, 1) - 1
            if left > 0:
                self._streams[lease.key] = left
            else:
                self._streams.pop(lease.key, None)
        if lease.shared_id is not None and self.shared is not None:
            self.shared.release(lease.shared_id)

    def streams(self, tenant: str, grant_id: str | None) -> int:
        return self._streams.get((tenant, grant_id or "owner"), 0)

    def renew(self, now: datetime | None = None) -> None:
        """Keep this process's shared leases alive (they expire if it dies)."""
        if self.shared is not None and self._streams:
            self.shared.renew(now)
