"""Checking a stored audit log: every leaf, chain hash, checkpointed root and signature.

Someone who edits an entry *and* rewrites all later chain hashes is still caught by the signed
checkpoints; copies of the checkpoints kept where the database's writers cannot reach catch
someone who also deletes checkpoint rows (pass them to :func:`verify_log`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tenants.audit.entry import SKEW, Checkpoint, VerifyReport, parse_time
from tenants.audit.keys import AuditKeys
from tenants.audit.merkle import EMPTY_ROOT, Frontier
from tenants.audit.rows import (
    CP_COLUMNS,
    MIGRATIONS,
    ZERO,
    chain_hash,
    checkpoint_from_row,
    fetch_row,
    iter_rows,
    row_leaf,
)
from tenants.db import Database

__all__ = ["verify_log"]


def _links(row: Sequence[Any] | None, seq: int, prev: bytes) -> bool:
    """Does `row`, taken as the entry at position `seq`, chain from `prev` to its stored hash?"""
    if row is None:
        return False
    try:
        return bool(chain_hash(prev, row_leaf(row, seq)).hex() == row[9])
    except (ValueError, TypeError):
        return False


def _classify(db: Database, i: int, prev: bytes, prev2: bytes | None) -> tuple[str, int]:
    """Entry i's recomputed chain differs from its stored one (and all before matched, so
    `prev` / `prev2` are the true chain hashes of entries i-1 / i-2). Say what happened."""
    row_i = fetch_row(db, i)
    row_n = fetch_row(db, i + 1)
    # The row at i is the original entry i-1 pushed up by one: a row went in at i-1.
    if prev2 is not None and _links(row_i, i - 1, prev2):
        return f"entry {i - 1} was inserted", i - 1
    # Only the stored hash was changed: the content still chains on to entry i+1.
    try:
        own = chain_hash(prev, row_leaf(row_i, i)) if row_i is not None else None
    except (ValueError, TypeError):
        own = None
    if own is not None and _links(row_n, i + 1, own):
        return f"entry {i} was edited (its stored chain hash)", i
    # The original entry i now sits at i+1: either a row went in at i, or i and i+1 swapped.
    if _links(row_n, i, prev):
        assert row_n is not None
        if _links(row_i, i + 1, bytes.fromhex(row_n[9])):
            return f"entry {i} is out of order", i
        return f"entry {i} was inserted", i
    # The original entry i sits further on: rows were reordered.
    for row in iter_rows(db, i + 2):
        if _links(row, i, prev):
            return f"entry {i} is out of order", i
    return f"entry {i} was edited", i


def verify_log(
    db: Database,
    keys: AuditKeys | Ed25519PublicKey,
    *,
    checkpoints: Iterable[Checkpoint] = (),
) -> VerifyReport:
    """Recompute every leaf, chain hash and checkpointed root and check every signature.

    `keys` are the checkpoint keys trusted (:class:`~tenants.audit.keys.AuditKeys`: every key
    the log was ever signed with, each checkpoint checked against the key it names), or one
    public key for a log that never rotated.

    `checkpoints` adds checkpoints kept elsewhere (published, held by a witness), which catch
    someone who rewrote the table *and* deleted its checkpoint rows. The report names the first
    problem found and, as precisely as the data allows, the first bad entry."""
    db.migrate("audit", MIGRATIONS)
    trust = AuditKeys.trusting(keys) if isinstance(keys, Ed25519PublicKey) else keys
    stored = [
        checkpoint_from_row(r)
        for r in db.query(f"SELECT {CP_COLUMNS} FROM audit_checkpoints ORDER BY size")
    ]
    extra = [c for c in checkpoints if c not in stored]
    cps = sorted(stored + extra, key=lambda c: c.size)
    wanted = {c.size for c in cps}
    count_row = db.query_one("SELECT COUNT(*) FROM audit_entries")
    n_rows = int(count_row[0]) if count_row else 0

    def report(problem: str | None = None, bad: int | None = None) -> VerifyReport:
        return VerifyReport(problem is None, n_rows, len(cps), bad, problem)

    roots: dict[int, bytes] = {0: EMPTY_ROOT}
    frontier = Frontier()
    prev, prev2 = ZERO, None
    times: list[datetime] = []  # the last two entry times
    high: datetime | None = None  # latest entry time so far
    for row in iter_rows(db):
        i = frontier.size
        seq = int(row[0])
        if seq != i:
            if seq > i:
                return report(f"entry {i} is missing", i)
            return report(f"entry {seq} is out of order", seq)  # pragma: no cover - PK
        try:
            leaf = row_leaf(row)
            t = parse_time(row[1])
        except (ValueError, TypeError):
            return report(f"entry {i} was edited", i)
        chain = chain_hash(prev, leaf)
        if chain.hex() != row[9]:
            return report(*_classify(db, i, prev, prev2))
        if high is not None and t < high - SKEW:
            # Times went backwards (possible only if the chain was rewritten too). Blame the
            # previous entry if it alone jumped ahead, else this one.
            if len(times) == 2 and times[1] == high and t + SKEW >= times[0]:
                return report(f"entry {i - 1} is out of order", i - 1)
            return report(f"entry {i} is out of order", i)
        high = t if high is None or t > high else high
        times = [*times[-1:], t]
        frontier.push(leaf)
        prev, prev2 = chain, prev
        if frontier.size in wanted:
            roots[frontier.size] = frontier.root()

    n = frontier.size
    last_good = 0
    for cp in cps:
        matches = roots.get(cp.size) == cp.root
        why = trust.check(cp)
        if why is not None:
            return report(f"checkpoint at size {cp.size} {why}", None if matches else last_good)
        if cp.size > n:
            return report(f"entry {n} is missing", n)
        if not matches:
            # Everything up to the last good checkpoint is vouched for; the entries between it
            # and this one cannot be told apart without the original tree.
            return report(
                f"checkpoint at size {cp.size} does not match the entries"
                f" (the first changed entry is in {last_good}..{cp.size - 1})",
                last_good,
            )
        last_good = cp.size
    return report()
