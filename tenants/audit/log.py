"""The audit log's writer: appends entries, keeps the Merkle tree, signs checkpoints.

Every use of the network that oversight cares about (sessions, denials, tokens, grant and mask
changes, mask lifts, PTZ, playback, export) is appended as one :class:`AuditEntry`, which
becomes a leaf of an RFC 6962 Merkle tree (:mod:`tenants.audit.merkle`). Signed checkpoints
(size, root, time) with Ed25519 are written every ``checkpoint_every`` entries, after
``checkpoint_interval`` seconds (:meth:`AuditLog.maybe_checkpoint`) and on close.

In memory the log keeps the RFC 6962 "compact range" (the frontier of perfect-subtree roots), so
each append costs O(log n) hashing and one INSERT. For proofs and past roots it keeps the root of
every complete, aligned 256-leaf chunk (32 bytes per 256 entries) and reads at most two chunks
of entries back from the database per proof.
"""

from __future__ import annotations

import json
import logging
import threading
import time as _time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenants.audit import merkle
from tenants.audit.entry import (
    SKEW,
    AuditAction,
    AuditEntry,
    Checkpoint,
    check_text,
    dumps,
    format_time,
    key_id,
    parse_time,
    utc,
)
from tenants.audit.merkle import EMPTY_ROOT, Frontier, leaf_hash, node_hash
from tenants.audit.rows import (
    CP_COLUMNS,
    ENTRY_COLUMNS,
    MIGRATIONS,
    ZERO,
    chain_hash,
    checkpoint_from_row,
    entry_from_row,
    iter_rows,
    row_leaf,
)
from tenants.audit.spool import AuditSpool, SpoolFull
from tenants.db import Database, DatabaseUnavailable, IntegrityError

log = logging.getLogger(__name__)

__all__ = ["AuditLog"]

_MAX_DETAIL = 16 * 1024  # bytes of canonical detail JSON
_LEAF_CHUNKS = 16  # chunks of leaf hashes kept after a proof read them (16 x 8 KiB)
# The PostgreSQL advisory lock on the log's head ("audit" in ASCII): every node's append and
# checkpoint takes it in its own transaction, so appends are serialised across nodes and the
# Merkle tree and hash chain stay linear. SQLite's BEGIN IMMEDIATE already serialises.
_HEAD_LOCK = 0x6175646974


class AuditLog:
    """The writer. One per process; thread-safe. Several processes or nodes may share one
    database: each append locks the log head (a PostgreSQL advisory transaction lock), catches
    up with rows others wrote, and appends after them; a seq collision is still retried."""

    _CHUNK = 256  # leaves per cached chunk root (a power of two)

    def __init__(
        self,
        db: Database,
        signer: Ed25519PrivateKey,
        *,
        checkpoint_every: int = 256,
        checkpoint_interval: float = 5.0,
        spool: AuditSpool | None = None,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")
        self._db = db
        self._signer = signer
        self._key_id = key_id(signer.public_key())
        self._every = checkpoint_every
        self._interval = checkpoint_interval
        self._lock = threading.RLock()
        self._closed = False
        # Where entries of facts wait while the database is unreachable (append_or_spool).
        self._spool = spool
        self._flushing = False
        #: The first inconsistency noticed while loading (None when the table looked intact).
        #: The log keeps appending either way; run :func:`verify_log` for the full story.
        self.integrity_warning: str | None = None
        db.migrate("audit", MIGRATIONS)
        self._reset()
        self._catch_up()
        self._load_last_checkpoint()

    # -- state

    def _reset(self) -> None:
        self._frontier = Frontier()
        self._chunks: list[bytes] = []  # roots of complete aligned chunks
        self._tail: list[bytes] = []  # leaf hashes of the incomplete last chunk
        self._perfect: dict[tuple[int, int], bytes] = {}  # (start, size) -> root, size > CHUNK
        self._leaves: OrderedDict[int, list[bytes]] = OrderedDict()  # recently read chunks
        self._chain = ZERO
        self._last_time: datetime | None = None

    @property
    def _size(self) -> int:
        return self._frontier.size

    def _push(self, leaf: bytes, chain: bytes, t: datetime) -> None:
        self._frontier.push(leaf)
        self._tail.append(leaf)
        if len(self._tail) == self._CHUNK:
            self._chunks.append(merkle.root_of(self._tail))
            self._tail = []
        self._chain = chain
        if self._last_time is None or t > self._last_time:
            self._last_time = t

    def _warn(self, problem: str) -> None:
        if self.integrity_warning is None:
            self.integrity_warning = problem
            log.error("audit log: %s; run verify_log for details", problem)

    def _catch_up(self) -> None:
        """Bring the in-memory state up to the table: read rows this instance has not seen
        (all of them when opening). If the table has fewer rows than we think (an enclosing
        transaction rolled back), start again from scratch."""
        row = self._db.query_one("SELECT MAX(seq) FROM audit_entries")
        top = -1 if row is None or row[0] is None else int(row[0])
        if top + 1 < self._size:
            log.warning("audit log: table shrank to %d entries (rolled back?); reloading", top + 1)
            self._reset()
        elif self._size:
            # The table must hold this writer's head as its entry size-1: an entry it counted
            # may never have been committed (a transaction it joined rolled back, a connection
            # lost at COMMIT) while another node took its seq.
            mine = self._db.query_one(
                "SELECT chain FROM audit_entries WHERE seq = ?", (self._size - 1,)
            )
            if mine is None or mine[0] != self._chain.hex():
                log.warning("audit log: the table's entry %d is not this writer's; reloading",
                            self._size - 1)  # fmt: skip
                self._reset()
        if top + 1 == self._size:
            return
        for r in iter_rows(self._db, self._size):
            seq = int(r[0])
            if seq != self._size:
                self._warn(f"entry {self._size} is missing")
                # Keep seq numbering aligned with the table so appends can continue.
                while self._size < seq:
                    self._push(leaf_hash(b""), self._chain, self._last_time or datetime.now(UTC))
            try:
                leaf = row_leaf(r)
                t = parse_time(r[1])
            except (ValueError, TypeError):
                self._warn(f"entry {seq} cannot be read")
                leaf, t = leaf_hash(b""), self._last_time or datetime.now(UTC)
            chain = chain_hash(self._chain, leaf)
            if chain.hex() != r[9]:
                self._warn(f"entry {seq} does not match its chain hash")
            self._push(leaf, chain, t)

    def _load_last_checkpoint(self) -> None:
        row = self._db.query_one(
            f"SELECT {CP_COLUMNS} FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
        )
        self._last_cp: Checkpoint | None = checkpoint_from_row(row) if row else None
        self._last_cp_mono = _time.monotonic()

    # -- writing

    def append(
        self,
        action: AuditAction | str,
        *,
        tenant: str | None = None,
        principal: str | None = None,
        camera: str | None = None,
        purpose: str | None = None,
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
        time: datetime | None = None,
        spool_id: str | None = None,
    ) -> AuditEntry:
        """Append one entry; it is committed when this returns (inside a caller's
        ``db.transaction()``, when that commits). Raises on a database failure: the caller
        should then refuse the action it meant to record.

        ``spool_id``: the entry comes from the audit spool under that id; if the log already
        holds it (a drain that crashed before recording its progress), that entry is returned
        and nothing is appended."""
        act = AuditAction(action)
        check_text("tenant", tenant)
        check_text("principal", principal)
        check_text("camera", camera)
        check_text("purpose", purpose)
        check_text("outcome", outcome, required=True)
        if detail is None:
            detail = {}
        if not isinstance(detail, Mapping):
            raise TypeError("detail must be a mapping")
        try:
            detail_s = dumps(dict(detail))
            detail_s.encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"detail is not JSON: {exc}") from None
        if len(detail_s.encode("utf-8")) > _MAX_DETAIL:
            raise ValueError(f"detail is larger than {_MAX_DETAIL} bytes")
        detail_v: dict[str, Any] = json.loads(detail_s)  # what a reader will get back
        given = utc(time, "time") if time is not None else None

        with self._lock:
            if self._closed:
                raise RuntimeError("audit log is closed")
            self._flush_spool()  # what waited goes first: the log stays in order
            for attempt in range(8):
                try:
                    with self._db.transaction():
                        self._lock_head()
                        self._catch_up()
                        done = self._spooled(spool_id) if spool_id is not None else None
                        if done is not None:
                            return done  # drained before, by a run that crashed after it
                        if given is None:
                            t = datetime.now(UTC)
                            if self._last_time is not None and t < self._last_time:
                                t = self._last_time  # the clock stepped back: stand still
                        else:
                            t = given
                            if self._last_time is not None and t < self._last_time - SKEW:
                                raise ValueError(
                                    f"time {format_time(t)} is before the last entry "
                                    f"({format_time(self._last_time)})"
                                )
                        entry = AuditEntry(
                            self._size,
                            t,
                            act,
                            tenant,
                            principal,
                            camera,
                            purpose,
                            outcome,
                            detail_v,
                        )
                        leaf = entry.leaf_hash()
                        chain = chain_hash(self._chain, leaf)
                        self._db.execute(
                            f"INSERT INTO audit_entries ({ENTRY_COLUMNS}, spool_id)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                entry.seq,
                                format_time(t),
                                act.value,
                                tenant,
                                principal,
                                camera,
                                purpose,
                                outcome,
                                detail_s,
                                chain.hex(),
                                spool_id,
                            ),
                        )
                    break
                except IntegrityError:
                    # Another process took this seq (PostgreSQL does not serialize us):
                    # catch up with its rows and try again.
                    if attempt == 7:
                        raise
            self._push(leaf, chain, t)
            if self._size - (self._last_cp.size if self._last_cp else 0) >= self._every:
                self.checkpoint()
            else:
                self.maybe_checkpoint()
            return entry

    def _spooled(self, spool_id: str) -> AuditEntry | None:
        row = self._db.query_one(
            f"SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE spool_id = ?", (spool_id,)
        )
        return entry_from_row(row) if row is not None else None

    def append_or_spool(
        self,
        action: AuditAction | str,
        *,
        tenant: str | None = None,
        principal: str | None = None,
        camera: str | None = None,
        purpose: str | None = None,
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an entry about something that has happened (a session's end, a refusal); if
        the database is unreachable, keep it in the durable local spool instead, to be appended
        in order when the database answers (:meth:`flush`). Without a spool, as :meth:`append`.
        """
        fields: dict[str, Any] = {
            "tenant": tenant,
            "principal": principal,
            "camera": camera,
            "purpose": purpose,
            "outcome": outcome,
            "detail": dict(detail or {}),
        }
        with self._lock:
            try:
                self.append(action, **fields)
                return
            except DatabaseUnavailable:
                if self._spool is None:
                    raise
            now = format_time(datetime.now(UTC))
            try:
                self._spool.put({"action": AuditAction(action).value, "occurred_at": now, **fields})
            except SpoolFull as exc:
                # Counted on disk and recorded in the log as an audit_gap once it answers.
                if self._spool.dropped == 1 or self._spool.dropped % 1000 == 0:
                    log.error("ALERT %s: %d entries not kept", exc, self._spool.dropped)
                return
            if self._spool.spooled == 1 or self._spool.spooled % 1000 == 0:
                log.warning(
                    "audit log: database unreachable; %d entries kept in %s",
                    self._spool.spooled,
                    self._spool.directory,
                )

    @property
    def spool_pending(self) -> bool:
        return self._spool is not None and (self._spool.pending or self._spool.has_lost)

    def spool_lost(self) -> int:
        """Entries a full spool could not keep that the log does not yet say were lost."""
        lost = self._spool.lost() if self._spool is not None and self._spool.has_lost else None
        return lost.count if lost is not None else 0

    def flush(self) -> int:
        """Append the spooled entries, in order; how many. Raises if the database is still
        unreachable (what is left stays spooled)."""
        with self._lock:
            return self._flush_spool()

    def _flush_spool(self) -> int:
        if self._spool is None or self._flushing or not self.spool_pending:
            return 0
        self._flushing = True
        n = 0
        try:
            for item in self._spool.entries():
                f = dict(item.fields)
                detail = {
                    **(f.get("detail") or {}),
                    "occurred_at": f.get("occurred_at"),
                    "spool_id": f.get("spool_id"),
                }
                try:
                    self.append(
                        str(f["action"]),
                        tenant=f.get("tenant"),
                        principal=f.get("principal"),
                        camera=f.get("camera"),
                        purpose=f.get("purpose"),
                        outcome=str(f.get("outcome") or "ok"),
                        detail=detail,
                        spool_id=str(f["spool_id"]) if f.get("spool_id") else None,
                    )
                except (ValueError, TypeError, KeyError) as exc:  # never blocks the rest
                    log.error(
                        "audit spool: entry %s cannot be appended: %s", f.get("spool_id"), exc
                    )
                self._spool.done(item.offset)
                n += 1
            lost = self._spool.lost()
            if lost is not None:  # after what was kept: the spool filled up after it
                self.append(
                    AuditAction.AUDIT_GAP,
                    outcome="lost",
                    detail={
                        "not_kept": lost.count,
                        "first_at": lost.first,
                        "last_at": lost.last,
                        "reason": "the audit spool was full while the database was unreachable",
                    },
                    spool_id=lost.id,
                )
                self._spool.lost_recorded(lost)
                log.error("audit log: recorded that %d entries could not be kept", lost.count)
        finally:
            self._flushing = False
        if n:
            log.warning("audit log: appended %d entries kept while the database was down", n)
        return n

    def _lock_head(self) -> None:
        """Inside a transaction: wait for the log head, held until this transaction ends."""
        if self._db.dialect == "postgres":
            self._db.query("SELECT pg_advisory_xact_lock(?)", (_HEAD_LOCK,))

    def checkpoint(self, now: datetime | None = None) -> Checkpoint:
        """Sign (size, root, time) and store it. If the log has not grown since the last
        checkpoint, that one is returned."""
        with self._lock:
            with self._db.transaction():
                self._lock_head()
                self._catch_up()
                if self._last_cp is not None and self._last_cp.size == self._size:
                    return self._last_cp
                t = parse_time(format_time(utc(now, "now") if now else datetime.now(UTC)))
                size, root = self._size, self._frontier.root()
                signature = self._signer.sign(Checkpoint.message(size, root, t))
                self._db.execute(
                    f"INSERT INTO audit_checkpoints ({CP_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (size) DO NOTHING",
                    (size, root.hex(), format_time(t), signature.hex(), self._key_id),
                )
                row = self._db.query_one(
                    f"SELECT {CP_COLUMNS} FROM audit_checkpoints WHERE size = ?", (size,)
                )
            assert row is not None
            cp = checkpoint_from_row(row)
            if self._last_cp is None or cp.size >= self._last_cp.size:
                self._last_cp = cp
            self._last_cp_mono = _time.monotonic()
            return cp

    def maybe_checkpoint(self, now: datetime | None = None) -> Checkpoint | None:
        """Checkpoint if the log grew and `checkpoint_interval` seconds passed since the last
        one; call it from a timer so a quiet log's tail is signed too."""
        with self._lock:
            if self._closed:
                return None
            if self._size == (self._last_cp.size if self._last_cp else 0):
                return None
            if _time.monotonic() - self._last_cp_mono < self._interval:
                return None
            return self.checkpoint(now)

    def close(self) -> Checkpoint | None:
        """Checkpoint the tail and refuse further appends (the database stays open)."""
        with self._lock:
            if self._closed:
                return self._last_cp
            cp = self.checkpoint() if self._size or self._last_cp is None else self._last_cp
            self._closed = True
            return cp

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_signer(self, signer: Ed25519PrivateKey) -> None:
        """Sign the next checkpoints with ``signer`` (a rotated audit key,
        :mod:`tenants.audit.keys`); the ones already written keep the kid they name."""
        with self._lock:
            self._signer = signer
            self._key_id = key_id(signer.public_key())

    # -- reading

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        return self._last_cp

    def size(self) -> int:
        return self._size

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[AuditEntry]:
        """Stored entries with start <= seq < end, in order."""
        for row in iter_rows(self._db, start, end):
            yield entry_from_row(row)

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._db.query(f"SELECT {CP_COLUMNS} FROM audit_checkpoints ORDER BY size")
        return [checkpoint_from_row(r) for r in rows]

    def root(self, size: int | None = None) -> bytes:
        """The Merkle tree head of the first `size` entries (default: all)."""
        with self._lock:
            if size is None or size == self._size:
                return self._frontier.root()
            self._check_size(size)
            return self._mth(0, size)

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        """RFC 6962 audit path for entry `seq` in the tree of the first `size` entries."""
        with self._lock:
            self._check_size(size)
            if not 0 <= seq < size:
                raise ValueError(f"seq {seq} is not in a tree of size {size}")
            return merkle.inclusion_proof(seq, size, self._mth)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 6962 consistency proof between the trees of `old_size` and `new_size` entries."""
        with self._lock:
            self._check_size(new_size)
            return merkle.consistency_proof(old_size, new_size, self._mth)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise ValueError(f"size {size} is not in 0..{self._size}")

    def _mth(self, a: int, b: int) -> bytes:
        """MTH of entries [a, b), from cached chunk roots and at most a few chunks of leaves."""
        n = b - a
        if n == 0:
            return EMPTY_ROOT
        if n == 1:
            return self._leaf(a)
        c = self._CHUNK
        if n & (n - 1) == 0 and a % n == 0 and n >= c:
            if n == c:
                return self._chunks[a // c]
            h = self._perfect.get((a, n))
            if h is None:
                h = node_hash(self._mth(a, a + n // 2), self._mth(a + n // 2, b))
                self._perfect[(a, n)] = h
            return h
        k = merkle.split(n)
        return node_hash(self._mth(a, a + k), self._mth(a + k, b))

    def _leaf(self, i: int) -> bytes:
        c = self._CHUNK
        chunk = i // c
        if chunk == len(self._chunks):
            return self._tail[i - chunk * c]
        leaves = self._leaves.get(chunk)
        if leaves is None:
            rows = list(iter_rows(self._db, chunk * c, (chunk + 1) * c))
            leaves = [row_leaf(r) for r in rows]
            if len(leaves) != c:
                raise RuntimeError(f"audit entries {chunk * c}..{(chunk + 1) * c - 1} are missing")
            self._leaves[chunk] = leaves
            while len(self._leaves) > _LEAF_CHUNKS:
                self._leaves.popitem(last=False)
        else:
            self._leaves.move_to_end(chunk)
        return leaves[i - chunk * c]

    # -- proof verification (RFC 9162 2.1.3.2 and 2.1.4.2), kept here for callers that hold
    # only the log class

    verify_inclusion = staticmethod(merkle.verify_inclusion)
    verify_consistency = staticmethod(merkle.verify_consistency)
