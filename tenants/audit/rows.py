"""The audit log's two tables and how their rows become entries, leaves and checkpoints.

Portable SQL (SQLite and PostgreSQL). Each entry row stores, beside the entry, the hash chain
``chain_i = H(chain_{i-1} ‖ leaf_i)`` (``chain_{-1}`` = 32 zero bytes). Verification never
trusts it (it is recomputed); it only lets verification name the first entry that was changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from tenants.audit.entry import (
    AuditAction,
    AuditEntry,
    Checkpoint,
    canonical_fields,
    parse_time,
)
from tenants.audit.merkle import leaf_hash
from tenants.db import Database

__all__ = [
    "CP_COLUMNS",
    "ENTRY_COLUMNS",
    "MIGRATIONS",
    "PAGE",
    "ZERO",
    "chain_hash",
    "checkpoint_from_row",
    "entry_from_row",
    "fetch_row",
    "iter_rows",
    "row_leaf",
]

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE audit_entries (
        seq BIGINT NOT NULL PRIMARY KEY,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        tenant TEXT,
        principal TEXT,
        camera TEXT,
        purpose TEXT,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        chain TEXT NOT NULL
    );
    CREATE INDEX audit_entries_time ON audit_entries (time);
    CREATE TABLE audit_checkpoints (
        size BIGINT NOT NULL PRIMARY KEY,
        root TEXT NOT NULL,
        time TEXT NOT NULL,
        signature TEXT NOT NULL,
        key_id TEXT NOT NULL
    )
    """,
    # An entry drained from a node's audit spool carries its spool id, at most once in the log:
    # a crash between the append's commit and the spool's progress write drains it again.
    """
    ALTER TABLE audit_entries ADD COLUMN spool_id TEXT;
    CREATE UNIQUE INDEX audit_entries_spool_id ON audit_entries (spool_id)
    """,
)

ENTRY_COLUMNS = "seq, time, action, tenant, principal, camera, purpose, outcome, detail, chain"
CP_COLUMNS = "size, root, time, signature, key_id"
ZERO = bytes(32)  # the chain hash before the first entry
PAGE = 5000  # rows per query when streaming the table


def chain_hash(prev: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(prev + leaf).digest()


def row_canonical(row: Sequence[Any]) -> bytes:
    """The canonical bytes of a stored row (seq, time, action, ..., detail, chain).

    Raises ValueError/TypeError when the row cannot be an entry this module wrote."""
    seq, time_s, action, tenant, principal, camera, purpose, outcome, detail_s = row[:9]
    if not isinstance(time_s, str) or not isinstance(detail_s, str):
        raise ValueError("bad column type")
    parse_time(time_s)
    detail = json.loads(detail_s)
    if not isinstance(detail, dict):
        raise ValueError("detail is not an object")
    return canonical_fields(
        int(seq), time_s, action, tenant, principal, camera, purpose, outcome, detail
    )


def row_leaf(row: Sequence[Any], seq: int | None = None) -> bytes:
    """Leaf hash of a stored row; with `seq`, as if the row sat at that position."""
    if seq is not None:
        row = (seq, *row[1:])
    return leaf_hash(row_canonical(row))


def entry_from_row(row: Sequence[Any]) -> AuditEntry:
    seq, time_s, action, tenant, principal, camera, purpose, outcome, detail_s = row[:9]
    return AuditEntry(
        seq=int(seq),
        time=parse_time(time_s),
        action=AuditAction(action),
        tenant=tenant,
        principal=principal,
        camera=camera,
        purpose=purpose,
        outcome=outcome,
        detail=json.loads(detail_s),
    )


def checkpoint_from_row(row: Sequence[Any]) -> Checkpoint:
    size, root, time_s, signature, kid = row
    return Checkpoint(
        size=int(size),
        root=bytes.fromhex(root),
        time=parse_time(time_s),
        signature=bytes.fromhex(signature),
        key_id=str(kid),
    )


def iter_rows(db: Database, start: int = 0, end: int | None = None) -> Iterator[tuple[Any, ...]]:
    """Stored entry rows in seq order, a page at a time."""
    nxt = start
    while end is None or nxt < end:
        limit = PAGE if end is None else min(PAGE, end - nxt)
        rows = db.query(
            f"SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq >= ? ORDER BY seq LIMIT ?",
            (nxt, limit),
        )
        if end is not None:
            rows = [r for r in rows if int(r[0]) < end]
        yield from rows
        if len(rows) < limit:
            return
        nxt = int(rows[-1][0]) + 1


def fetch_row(db: Database, seq: int) -> tuple[Any, ...] | None:
    return db.query_one(f"SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq = ?", (seq,))
