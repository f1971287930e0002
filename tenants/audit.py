"""An append-only, tamper-evident audit log for oversight (RFC 6962 / RFC 9162 style).

Every use of the network that oversight cares about (sessions, denials, tokens, grant and mask
changes, mask lifts, PTZ, playback, export) is appended as one :class:`AuditEntry`. Each entry
is serialized canonically (:meth:`AuditEntry.canonical`) and becomes a leaf of a Merkle tree:

- leaf hash ``H(0x00 ‖ canonical)``, node hash ``H(0x01 ‖ left ‖ right)`` (SHA-256);
- a hash chain ``chain_i = H(chain_{i-1} ‖ leaf_i)`` (``chain_{-1}`` = 32 zero bytes) is stored
  beside each entry. It is *not* trusted by :func:`verify_log` (it is recomputed); it only lets
  verification name the first entry that was changed;
- signed checkpoints (size, root, time) with Ed25519, every ``checkpoint_every`` entries, after
  ``checkpoint_interval`` seconds (:meth:`AuditLog.maybe_checkpoint`) and on close. Someone who
  edits an entry *and* rewrites all later chain hashes is still caught by the checkpoints; copy
  them somewhere the database's writers cannot reach (and pass them to :func:`verify_log`) to
  catch someone who also deletes checkpoint rows.

In memory the log keeps the RFC 6962 "compact range" (the frontier of perfect-subtree roots), so
each append costs O(log n) hashing and one INSERT. For proofs and past roots it keeps the root of
every complete, aligned 256-leaf chunk (32 bytes per 256 entries) and reads at most two chunks
of entries back from the database per proof.

Disclosures (SESSION_START, PLAYBACK, EXPORT, MASK_LIFT) can be exported as the ICO asks: date,
recipient organisation and person, reason (:func:`export_disclosures`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import threading
import time as _time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TextIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tenants.db import Database, IntegrityError

log = logging.getLogger(__name__)

__all__ = [
    "DISCLOSURE_ACTIONS",
    "EMPTY_ROOT",
    "AuditAction",
    "AuditEntry",
    "AuditLog",
    "Checkpoint",
    "VerifyReport",
    "export_disclosures",
    "key_id",
    "leaf_hash",
    "node_hash",
    "verify_log",
]


class AuditAction(StrEnum):
    SESSION_START = "session_start"
    SESSION_END = "session_end"
    DENIED = "denied"
    TOKEN_ISSUED = "token_issued"
    GRANT_CREATED = "grant_created"
    GRANT_REVOKED = "grant_revoked"
    TENANT_CHANGED = "tenant_changed"
    MASK_CHANGED = "mask_changed"
    MASK_LIFT = "mask_lift"
    PTZ = "ptz"
    EXPORT = "export"
    PLAYBACK = "playback"
    LOGIN = "login"
    CONFIG = "config"


#: The entries that disclose footage to someone (ICO: log date, recipient and reason).
DISCLOSURE_ACTIONS: tuple[AuditAction, ...] = (
    AuditAction.SESSION_START,
    AuditAction.PLAYBACK,
    AuditAction.EXPORT,
    AuditAction.MASK_LIFT,
)

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
)

_ENTRY_COLUMNS = "seq, time, action, tenant, principal, camera, purpose, outcome, detail, chain"
_CP_COLUMNS = "size, root, time, signature, key_id"
EMPTY_ROOT = hashlib.sha256(b"").digest()
_ZERO = bytes(32)
_MAX_TEXT = 1024  # characters in tenant, principal, camera, purpose, outcome
_MAX_DETAIL = 16 * 1024  # bytes of canonical detail JSON
_SKEW = timedelta(seconds=1)  # how far entry times may go backwards before it is an anomaly
_PAGE = 5000  # rows per query when streaming the table
_LEAF_CHUNKS = 16  # chunks of leaf hashes kept after a proof read them (16 x 8 KiB)


# ----------------------------------------------------------------------------- hashing


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 ‖ data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _chain(prev: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(prev + leaf).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _dumps(obj: Any) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _fmt_time(t: datetime) -> str:
    """UTC, fixed width, microseconds, ``Z``: sorts as text in both databases."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(s: str) -> datetime:
    t = datetime.fromisoformat(s)
    if t.tzinfo is None or not s.endswith("Z"):
        raise ValueError(f"not a UTC time: {s!r}")
    return t.astimezone(UTC)


def _utc(t: datetime, what: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return t.astimezone(UTC)


def _canonical_fields(
    seq: int,
    time_s: str,
    action: str,
    tenant: str | None,
    principal: str | None,
    camera: str | None,
    purpose: str | None,
    outcome: str,
    detail: Any,
) -> bytes:
    return _dumps(
        {
            "seq": seq,
            "time": time_s,
            "action": action,
            "tenant": tenant,
            "principal": principal,
            "camera": camera,
            "purpose": purpose,
            "outcome": outcome,
            "detail": detail,
        }
    ).encode("utf-8")


def _row_canonical(row: Sequence[Any]) -> bytes:
    """The canonical bytes of a stored row (seq, time, action, ..., detail, chain).

    Raises ValueError/TypeError when the row cannot be an entry this module wrote."""
    seq, time_s, action, tenant, principal, camera, purpose, outcome, detail_s = row[:9]
    if not isinstance(time_s, str) or not isinstance(detail_s, str):
        raise ValueError("bad column type")
    _parse_time(time_s)
    detail = json.loads(detail_s)
    if not isinstance(detail, dict):
        raise ValueError("detail is not an object")
    return _canonical_fields(
        int(seq), time_s, action, tenant, principal, camera, purpose, outcome, detail
    )


def _row_leaf(row: Sequence[Any], seq: int | None = None) -> bytes:
    """Leaf hash of a stored row; with `seq`, as if the row sat at that position."""
    if seq is not None:
        row = (seq, *row[1:])
    return leaf_hash(_row_canonical(row))


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a signing key: hex of SHA-256(raw public key)[:8]."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: datetime
    action: AuditAction
    tenant: str | None
    principal: str | None
    camera: str | None
    purpose: str | None
    outcome: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def canonical(self) -> bytes:
        """Sorted-key compact JSON in UTF-8, times as ISO-8601 UTC with ``Z``: what is hashed."""
        return _canonical_fields(
            self.seq,
            _fmt_time(self.time),
            str(self.action),
            self.tenant,
            self.principal,
            self.camera,
            self.purpose,
            self.outcome,
            dict(self.detail),
        )

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.canonical())


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: bytes
    time: datetime
    signature: bytes
    key_id: str

    @staticmethod
    def message(size: int, root: bytes, time: datetime) -> bytes:
        """The signed bytes: a small text note naming the log, its size, root and time."""
        return f"feedgate-audit-checkpoint\n{size}\n{root.hex()}\n{_fmt_time(time)}\n".encode()

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        if self.key_id != key_id(public_key):
            return False
        try:
            public_key.verify(self.signature, self.message(self.size, self.root, self.time))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    checkpoints: int
    first_bad_seq: int | None = None
    problem: str | None = None


def _entry_from_row(row: Sequence[Any]) -> AuditEntry:
    seq, time_s, action, tenant, principal, camera, purpose, outcome, detail_s = row[:9]
    return AuditEntry(
        seq=int(seq),
        time=_parse_time(time_s),
        action=AuditAction(action),
        tenant=tenant,
        principal=principal,
        camera=camera,
        purpose=purpose,
        outcome=outcome,
        detail=json.loads(detail_s),
    )


def _checkpoint_from_row(row: Sequence[Any]) -> Checkpoint:
    size, root, time_s, signature, kid = row
    return Checkpoint(
        size=int(size),
        root=bytes.fromhex(root),
        time=_parse_time(time_s),
        signature=bytes.fromhex(signature),
        key_id=str(kid),
    )


def _text(name: str, value: str | None, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > _MAX_TEXT:
        raise ValueError(f"{name} is longer than {_MAX_TEXT} characters")
    if "\x00" in value:
        raise ValueError(f"{name} contains NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid Unicode text") from None
    return value


def _iter_rows(db: Database, start: int = 0, end: int | None = None) -> Iterator[tuple[Any, ...]]:
    """Stored entry rows in seq order, a page at a time."""
    nxt = start
    while end is None or nxt < end:
        limit = _PAGE if end is None else min(_PAGE, end - nxt)
        rows = db.query(
            f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE seq >= ? ORDER BY seq LIMIT ?",
            (nxt, limit),
        )
        if end is not None:
            rows = [r for r in rows if int(r[0]) < end]
        yield from rows
        if len(rows) < limit:
            return
        nxt = int(rows[-1][0]) + 1


class _Frontier:
    """The compact range [0, size): roots of the perfect subtrees, largest (leftmost) first."""

    __slots__ = ("size", "stack")

    def __init__(self) -> None:
        self.size = 0
        self.stack: list[bytes] = []

    def push(self, leaf: bytes) -> None:
        h, n = leaf, self.size
        while n & 1:
            h = node_hash(self.stack.pop(), h)
            n >>= 1
        self.stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        r = self.stack[-1]
        for h in reversed(self.stack[:-1]):
            r = node_hash(h, r)
        return r


# ----------------------------------------------------------------------------- the log


class AuditLog:
    """The writer. One per process; thread-safe. Several processes may share one database
    (a writer that finds rows it did not write catches up; seq collisions are retried)."""

    _CHUNK = 256  # leaves per cached chunk root (a power of two)

    def __init__(
        self,
        db: Database,
        signer: Ed25519PrivateKey,
        *,
        checkpoint_every: int = 256,
        checkpoint_interval: float = 5.0,
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
        #: The first inconsistency noticed while loading (None when the table looked intact).
        #: The log keeps appending either way; run :func:`verify_log` for the full story.
        self.integrity_warning: str | None = None
        db.migrate("audit", MIGRATIONS)
        self._reset()
        self._catch_up()
        self._load_last_checkpoint()

    # -- state

    def _reset(self) -> None:
        self._frontier = _Frontier()
        self._chunks: list[bytes] = []  # roots of complete aligned chunks
        self._tail: list[bytes] = []  # leaf hashes of the incomplete last chunk
        self._perfect: dict[tuple[int, int], bytes] = {}  # (start, size) -> root, size > CHUNK
        self._leaves: OrderedDict[int, list[bytes]] = OrderedDict()  # recently read chunks
        self._chain = _ZERO
        self._last_time: datetime | None = None

    @property
    def _size(self) -> int:
        return self._frontier.size

    def _push(self, leaf: bytes, chain: bytes, t: datetime) -> None:
        self._frontier.push(leaf)
        self._tail.append(leaf)
        if len(self._tail) == self._CHUNK:
            self._chunks.append(self._mth_list(self._tail))
            self._tail = []
        self._chain = chain
        if self._last_time is None or t > self._last_time:
            self._last_time = t

    @staticmethod
    def _mth_list(leaves: Sequence[bytes]) -> bytes:
        n = len(leaves)
        if n == 0:
            return EMPTY_ROOT
        if n == 1:
            return leaves[0]
        k = _split(n)
        return node_hash(AuditLog._mth_list(leaves[:k]), AuditLog._mth_list(leaves[k:]))

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
        if top + 1 == self._size:
            return
        if top + 1 < self._size:
            log.warning("audit log: table shrank to %d entries (rolled back?); reloading", top + 1)
            self._reset()
        for r in _iter_rows(self._db, self._size):
            seq = int(r[0])
            if seq != self._size:
                self._warn(f"entry {self._size} is missing")
                # Keep seq numbering aligned with the table so appends can continue.
                while self._size < seq:
                    self._push(leaf_hash(b""), self._chain, self._last_time or datetime.now(UTC))
            try:
                leaf = _row_leaf(r)
                t = _parse_time(r[1])
            except (ValueError, TypeError):
                self._warn(f"entry {seq} cannot be read")
                leaf, t = leaf_hash(b""), self._last_time or datetime.now(UTC)
            chain = _chain(self._chain, leaf)
            if chain.hex() != r[9]:
                self._warn(f"entry {seq} does not match its chain hash")
            self._push(leaf, chain, t)

    def _load_last_checkpoint(self) -> None:
        row = self._db.query_one(
            f"SELECT {_CP_COLUMNS} FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
        )
        self._last_cp: Checkpoint | None = _checkpoint_from_row(row) if row else None
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
    ) -> AuditEntry:
        """Append one entry; it is committed when this returns (inside a caller's
        ``db.transaction()``, when that commits). Raises on a database failure: the caller
        should then refuse the action it meant to record."""
        act = AuditAction(action)
        _text("tenant", tenant)
        _text("principal", principal)
        _text("camera", camera)
        _text("purpose", purpose)
        _text("outcome", outcome, required=True)
        if detail is None:
            detail = {}
        if not isinstance(detail, Mapping):
            raise TypeError("detail must be a mapping")
        try:
            detail_s = _dumps(dict(detail))
            detail_s.encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"detail is not JSON: {exc}") from None
        if len(detail_s.encode("utf-8")) > _MAX_DETAIL:
            raise ValueError(f"detail is larger than {_MAX_DETAIL} bytes")
        detail_v: dict[str, Any] = json.loads(detail_s)  # what a reader will get back
        given = _utc(time, "time") if time is not None else None

        with self._lock:
            if self._closed:
                raise RuntimeError("audit log is closed")
            for attempt in range(8):
                try:
                    with self._db.transaction():
                        self._catch_up()
                        if given is None:
                            t = datetime.now(UTC)
                            if self._last_time is not None and t < self._last_time:
                                t = self._last_time  # the clock stepped back: stand still
                        else:
                            t = given
                            if self._last_time is not None and t < self._last_time - _SKEW:
                                raise ValueError(
                                    f"time {_fmt_time(t)} is before the last entry "
                                    f"({_fmt_time(self._last_time)})"
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
                        chain = _chain(self._chain, leaf)
                        self._db.execute(
                            f"INSERT INTO audit_entries ({_ENTRY_COLUMNS})"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                entry.seq,
                                _fmt_time(t),
                                act.value,
                                tenant,
                                principal,
                                camera,
                                purpose,
                                outcome,
                                detail_s,
                                chain.hex(),
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

    def checkpoint(self, now: datetime | None = None) -> Checkpoint:
        """Sign (size, root, time) and store it. If the log has not grown since the last
        checkpoint, that one is returned."""
        with self._lock:
            with self._db.transaction():
                self._catch_up()
                if self._last_cp is not None and self._last_cp.size == self._size:
                    return self._last_cp
                t = _parse_time(_fmt_time(_utc(now, "now") if now else datetime.now(UTC)))
                size, root = self._size, self._frontier.root()
                signature = self._signer.sign(Checkpoint.message(size, root, t))
                self._db.execute(
                    f"INSERT INTO audit_checkpoints ({_CP_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (size) DO NOTHING",
                    (size, root.hex(), _fmt_time(t), signature.hex(), self._key_id),
                )
                row = self._db.query_one(
                    f"SELECT {_CP_COLUMNS} FROM audit_checkpoints WHERE size = ?", (size,)
                )
            assert row is not None
            cp = _checkpoint_from_row(row)
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
        for row in _iter_rows(self._db, start, end):
            yield _entry_from_row(row)

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._db.query(f"SELECT {_CP_COLUMNS} FROM audit_checkpoints ORDER BY size")
        return [_checkpoint_from_row(r) for r in rows]

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
            proof: list[bytes] = []
            lo, hi, m = 0, size, seq
            while hi - lo > 1:  # top-down, then reversed: RFC order is leaf-to-root
                k = _split(hi - lo)
                if m < k:
                    proof.append(self._mth(lo + k, hi))
                    hi = lo + k
                else:
                    proof.append(self._mth(lo, lo + k))
                    lo, m = lo + k, m - k
            proof.reverse()
            return proof

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 6962 consistency proof between the trees of `old_size` and `new_size` entries."""
        with self._lock:
            self._check_size(new_size)
            if not 0 <= old_size <= new_size:
                raise ValueError("need 0 <= old_size <= new_size")
            if old_size in (0, new_size):
                return []
            proof: list[bytes] = []
            lo, hi, m, whole = 0, new_size, old_size, True
            while m != hi - lo:
                k = _split(hi - lo)
                if m <= k:
                    proof.append(self._mth(lo + k, hi))
                    hi = lo + k
                else:
                    proof.append(self._mth(lo, lo + k))
                    lo, m, whole = lo + k, m - k, False
            if not whole:
                proof.append(self._mth(lo, hi))
            proof.reverse()
            return proof

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
        k = _split(n)
        return node_hash(self._mth(a, a + k), self._mth(a + k, b))

    def _leaf(self, i: int) -> bytes:
        c = self._CHUNK
        chunk = i // c
        if chunk == len(self._chunks):
            return self._tail[i - chunk * c]
        leaves = self._leaves.get(chunk)
        if leaves is None:
            rows = list(_iter_rows(self._db, chunk * c, (chunk + 1) * c))
            leaves = [_row_leaf(r) for r in rows]
            if len(leaves) != c:
                raise RuntimeError(f"audit entries {chunk * c}..{(chunk + 1) * c - 1} are missing")
            self._leaves[chunk] = leaves
            while len(self._leaves) > _LEAF_CHUNKS:
                self._leaves.popitem(last=False)
        else:
            self._leaves.move_to_end(chunk)
        return leaves[i - chunk * c]

    # -- proof verification (RFC 9162 2.1.3.2 and 2.1.4.2)

    @staticmethod
    def verify_inclusion(
        leaf_hash: bytes, seq: int, size: int, proof: Sequence[bytes], root: bytes
    ) -> bool:
        if not 0 <= seq < size:
            return False
        fn, sn, r = seq, size - 1, leaf_hash
        for p in proof:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                r = node_hash(p, r)
                if not fn & 1:
                    while fn and not fn & 1:
                        fn >>= 1
                        sn >>= 1
            else:
                r = node_hash(r, p)
            fn >>= 1
            sn >>= 1
        return sn == 0 and r == root

    @staticmethod
    def verify_consistency(
        old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
    ) -> bool:
        if not 0 <= old_size <= new_size:
            return False
        if old_size == new_size:
            return not proof and old_root == new_root
        if old_size == 0:
            return not proof and old_root == EMPTY_ROOT
        if not proof:
            return False
        path = list(proof)
        if old_size & (old_size - 1) == 0:
            path.insert(0, old_root)
        fn, sn = old_size - 1, new_size - 1
        while fn & 1:
            fn >>= 1
            sn >>= 1
        fr = sr = path[0]
        for c in path[1:]:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                fr = node_hash(c, fr)
                sr = node_hash(c, sr)
                if not fn & 1:
                    while fn and not fn & 1:
                        fn >>= 1
                        sn >>= 1
            else:
                sr = node_hash(sr, c)
            fn >>= 1
            sn >>= 1
        return fr == old_root and sr == new_root and sn == 0


# ----------------------------------------------------------------------------- verification


def _fetch_row(db: Database, seq: int) -> tuple[Any, ...] | None:
    return db.query_one(f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE seq = ?", (seq,))


def _links(row: Sequence[Any] | None, seq: int, prev: bytes) -> bool:
    """Does `row`, taken as the entry at position `seq`, chain from `prev` to its stored hash?"""
    if row is None:
        return False
    try:
        return bool(_chain(prev, _row_leaf(row, seq)).hex() == row[9])
    except (ValueError, TypeError):
        return False


def _classify(db: Database, i: int, prev: bytes, prev2: bytes | None) -> tuple[str, int]:
    """Entry i's recomputed chain differs from its stored one (and all before matched, so
    `prev` / `prev2` are the true chain hashes of entries i-1 / i-2). Say what happened."""
    row_i = _fetch_row(db, i)
    row_n = _fetch_row(db, i + 1)
    # The row at i is the original entry i-1 pushed up by one: a row went in at i-1.
    if prev2 is not None and _links(row_i, i - 1, prev2):
        return f"entry {i - 1} was inserted", i - 1
    # Only the stored hash was changed: the content still chains on to entry i+1.
    try:
        own = _chain(prev, _row_leaf(row_i, i)) if row_i is not None else None
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
    for row in _iter_rows(db, i + 2):
        if _links(row, i, prev):
            return f"entry {i} is out of order", i
    return f"entry {i} was edited", i


def verify_log(
    db: Database, public_key: Ed25519PublicKey, *, checkpoints: Iterable[Checkpoint] = ()
) -> VerifyReport:
    """Recompute every leaf, chain hash and checkpointed root and check every signature.

    `checkpoints` adds checkpoints kept elsewhere (published, held by a witness), which catch
    someone who rewrote the table *and* deleted its checkpoint rows. The report names the first
    problem found and, as precisely as the data allows, the first bad entry."""
    db.migrate("audit", MIGRATIONS)
    stored = [
        _checkpoint_from_row(r)
        for r in db.query(f"SELECT {_CP_COLUMNS} FROM audit_checkpoints ORDER BY size")
    ]
    extra = [c for c in checkpoints if c not in stored]
    cps = sorted(stored + extra, key=lambda c: c.size)
    wanted = {c.size for c in cps}
    count_row = db.query_one("SELECT COUNT(*) FROM audit_entries")
    n_rows = int(count_row[0]) if count_row else 0

    def report(problem: str | None = None, bad: int | None = None) -> VerifyReport:
        return VerifyReport(problem is None, n_rows, len(cps), bad, problem)

    roots: dict[int, bytes] = {0: EMPTY_ROOT}
    frontier = _Frontier()
    prev, prev2 = _ZERO, None
    times: list[datetime] = []  # the last two entry times
    high: datetime | None = None  # latest entry time so far
    for row in _iter_rows(db):
        i = frontier.size
        seq = int(row[0])
        if seq != i:
            if seq > i:
                return report(f"entry {i} is missing", i)
            return report(f"entry {seq} is out of order", seq)  # pragma: no cover - PK
        try:
            leaf = _row_leaf(row)
            t = _parse_time(row[1])
        except (ValueError, TypeError):
            return report(f"entry {i} was edited", i)
        chain = _chain(prev, leaf)
        if chain.hex() != row[9]:
            return report(*_classify(db, i, prev, prev2))
        if high is not None and t < high - _SKEW:
            # Times went backwards (possible only if the chain was rewritten too). Blame the
            # previous entry if it alone jumped ahead, else this one.
            if len(times) == 2 and times[1] == high and t + _SKEW >= times[0]:
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
        if not cp.verify(public_key):
            return report(
                f"checkpoint at size {cp.size} has a bad signature",
                None if matches else last_good,
            )
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


# ----------------------------------------------------------------------------- disclosures

_CSV_HEADER = (
    "date",
    "recipient_organisation",
    "recipient_person",
    "reason",
    "camera",
    "action",
    "outcome",
    "seq",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str | None) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def export_disclosures(db: Database, start: datetime, end: datetime, out: TextIO) -> int:
    """Write the disclosures (SESSION_START, PLAYBACK, EXPORT, MASK_LIFT) with start <= time <
    end as CSV with a header row; return the number of data rows. Dates are ISO-8601 UTC."""
    db.migrate("audit", MIGRATIONS)
    lo, hi = _fmt_time(_utc(start, "start")), _fmt_time(_utc(end, "end"))
    actions = [a.value for a in DISCLOSURE_ACTIONS]
    marks = ", ".join("?" for _ in actions)
    writer = csv.writer(out)
    writer.writerow(_CSV_HEADER)
    written, nxt = 0, 0
    while True:
        rows = db.query(
            "SELECT seq, time, action, tenant, principal, camera, purpose, outcome"
            f" FROM audit_entries WHERE action IN ({marks}) AND time >= ? AND time < ?"
            " AND seq >= ? ORDER BY seq LIMIT ?",
            (*actions, lo, hi, nxt, _PAGE),
        )
        for seq, time_s, action, tenant, principal, camera, purpose, outcome in rows:
            date = _parse_time(time_s).strftime("%Y-%m-%dT%H:%M:%SZ")
            writer.writerow(
                (
                    date,
                    _cell(tenant),
                    _cell(principal),
                    _cell(purpose),
                    _cell(camera),
                    _cell(action),
                    _cell(outcome),
                    int(seq),
                )
            )
            written += 1
        if len(rows) < _PAGE:
            return written
        nxt = int(rows[-1][0]) + 1
