"""What the audit log records: the actions, an entry and its canonical bytes, a checkpoint.

An entry is serialized canonically (:meth:`AuditEntry.canonical`: sorted-key compact JSON in
UTF-8, times as ISO-8601 UTC with ``Z``); those bytes are the Merkle leaf. A checkpoint signs
(size, root, time) with Ed25519.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tenants.audit.merkle import leaf_hash

__all__ = [
    "DISCLOSURE_ACTIONS",
    "SKEW",
    "AuditAction",
    "AuditEntry",
    "Checkpoint",
    "VerifyReport",
    "canonical_fields",
    "check_text",
    "dumps",
    "format_time",
    "key_id",
    "parse_time",
    "utc",
]

MAX_TEXT = 1024  # characters in tenant, principal, camera, purpose, outcome
SKEW = timedelta(seconds=1)  # how far entry times may go backwards before it is an anomaly


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
    STILL = "still"  # a still picture of a camera shown (the console's thumbnails)
    EXPORT_DELETED = "export_deleted"  # an export's files removed when its retention ran out
    EVIDENCE_LOCK = "evidence_lock"  # a range of recordings held past retention
    EVIDENCE_RELEASE = "evidence_release"
    SAR = "sar"  # a subject access request opened, changed or closed
    RECORDING_DELETED = "recording_deleted"  # a segment deleted (retention, disk pressure)
    CAMERA_OUTAGE = "camera_outage"  # a camera's media stalled (outcome stalled) or resumed
    AUDIT_GAP = "audit_gap"  # entries a full audit spool could not keep (how many, when)


#: The entries that disclose footage to someone (ICO: log date, recipient and reason).
DISCLOSURE_ACTIONS: tuple[AuditAction, ...] = (
    AuditAction.SESSION_START,
    AuditAction.PLAYBACK,
    AuditAction.EXPORT,
    AuditAction.MASK_LIFT,
    AuditAction.STILL,
)


def dumps(obj: Any) -> str:
    """The canonical JSON text: sorted keys, no spaces, UTF-8 as is, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def format_time(t: datetime) -> str:
    """UTC, fixed width, microseconds, ``Z``: sorts as text in both databases."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str) -> datetime:
    t = datetime.fromisoformat(s)
    if t.tzinfo is None or not s.endswith("Z"):
        raise ValueError(f"not a UTC time: {s!r}")
    return t.astimezone(UTC)


def utc(t: datetime, what: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return t.astimezone(UTC)


def canonical_fields(
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
    return dumps(
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


def check_text(name: str, value: str | None, *, required: bool = False) -> str | None:
    """A text field of an entry: bounded, no NUL, valid Unicode."""
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{name} is longer than {MAX_TEXT} characters")
    if "\x00" in value:
        raise ValueError(f"{name} contains NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid Unicode text") from None
    return value


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a signing key: hex of SHA-256(raw public key)[:8]."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


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
        return canonical_fields(
            self.seq,
            format_time(self.time),
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
        return f"feedgate-audit-checkpoint\n{size}\n{root.hex()}\n{format_time(time)}\n".encode()

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
