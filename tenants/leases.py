"""Concurrent-stream leases shared by every gateway process on one database.

A grant's ``max_concurrent_streams`` holds for the tenant across all worker processes and all
nodes sharing the store, not per process. Each live capped stream is a row; taking one is a
check-and-insert under a lock the database enforces for every process (SQLite's write lock via
BEGIN IMMEDIATE, a PostgreSQL advisory lock per key).

A process that dies cannot release its rows. Each row names its holder (a node and worker,
stable across restarts) and the holder's incarnation (new at every start), so:
- a holder that restarts voids every row of its earlier incarnations as it opens the store: a
  partner capped at N is not locked out by the N streams the crash left behind;
- rows expire unless their incarnation renews them, so a node that crashes and stays down
  frees its slots after ``ttl``.
"""

from __future__ import annotations

import secrets
import threading
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

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
    """
    ALTER TABLE stream_leases ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
    CREATE INDEX stream_leases_holder ON stream_leases (holder)
    """,
]


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseStore:
    """The shared lease table, as one holder sees it.

    ``holder`` must be unique among live processes and stable across restarts (``node/w0``);
    without one the holder is random and its leases only ever expire."""

    def __init__(
        self,
        db: Database,
        *,
        holder: str | None = None,
        ttl: float = 30.0,
        now: datetime | None = None,
    ) -> None:
        self.db = db
        self.holder = holder or secrets.token_hex(8)
        # New at every start; ordered by start time only to be read by people.
        start = (now or datetime.now(UTC)).astimezone(UTC)
        self.incarnation = f"{start:%Y%m%dT%H%M%S.%f}-{secrets.token_hex(4)}"
        self.ttl = timedelta(seconds=ttl)
        db.migrate("stream_leases", MIGRATIONS)
        self.voided = self._void_earlier() if holder else 0

    def _void_earlier(self) -> int:
        """Drop the rows an earlier incarnation of this holder left (it is dead: we are it)."""
        return self.db.execute(
            "DELETE FROM stream_leases WHERE holder = ? AND incarnation <> ?",
            (self.holder, self.incarnation),
        )

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
                "INSERT INTO stream_leases (lease_id, lease_key, holder, incarnation, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (lease_id, key, self.holder, self.incarnation, _ts(now + self.ttl)),
            )
            return lease_id

    def release(self, lease_id: str) -> None:
        self.db.execute("DELETE FROM stream_leases WHERE lease_id = ?", (lease_id,))

    def renew(self, now: datetime | None = None) -> int:
        """Extend every lease this incarnation holds; call it well within ``ttl``."""
        now = now or datetime.now(UTC)
        return self.db.execute(
            "UPDATE stream_leases SET expires_at = ? WHERE holder = ? AND incarnation = ?",
            (_ts(now + self.ttl), self.holder, self.incarnation),
        )

    def count(self, key: str, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        row = self.db.query_one(
            "SELECT COUNT(*) FROM stream_leases WHERE lease_key = ? AND expires_at >= ?",
            (key, _ts(now)),
        )
        return int(row[0]) if row else 0


class SharedLeases(Protocol):
    """Where capped streams are counted across processes: the database's lease table
    (:class:`LeaseStore`) or, in a cluster, Redis (``gateway.cluster.caps``). Blocking."""

    holder: str
    ttl: timedelta

    def acquire(self, key: str, cap: int, now: datetime | None = None) -> str | None: ...

    def release(self, lease_id: str) -> None: ...

    def renew(self, now: datetime | None = None) -> int: ...

    def count(self, key: str, now: datetime | None = None) -> int: ...


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

    def __init__(self, shared: SharedLeases | None = None) -> None:
        self.shared = shared
        self._streams: dict[tuple[str, str], int] = {}
        self._shared_held = 0  # of those, streams with a row in the shared table
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
            self._shared_held += shared_id is not None
        return Lease(key, decision, shared_id=shared_id)

    def release(self, lease: Lease) -> None:
        with self._lock:
            if lease.released:
                return
            lease.released = True
            self._shared_held -= lease.shared_id is not None
            left = self._streams.get(lease.key, 1) - 1
            if left > 0:
                self._streams[lease.key] = left
            else:
                self._streams.pop(lease.key, None)
        if lease.shared_id is not None and self.shared is not None:
            self.shared.release(lease.shared_id)

    def streams(self, tenant: str, grant_id: str | None) -> int:
        return self._streams.get((tenant, grant_id or "owner"), 0)

    def renew(self, now: datetime | None = None) -> tuple[int, int]:
        """Keep this process's shared leases alive (they expire if it dies). Returns how many
        rows were renewed and how many this process holds: fewer renewed means another process
        opened the store as the same holder and voided ours (two nodes share a node id)."""
        held = self._shared_held
        if self.shared is None or not held:
            return 0, held
        return self.shared.renew(now), held
