"""The audit checkpoint keys: several by kid, the newest signs, every key ever used verifies.

An audit log must stay verifiable for as long as it is kept, so a replaced checkpoint key is
never forgotten, only disarmed. The keys live in one directory, beside the first one
(``keys.audit_key``, which started at the epoch, as ``token-signing.pem`` does for tokens):

* ``audit-<YYYYMMDDTHHMMSSZ>.pem``: a private key (PKCS#8) that starts signing at that UTC time
  (:class:`~tenants.tokens.keyring.KeyRing` with the ``audit`` prefix). The newest started
  key signs; one still to come is already trusted, so a node that meets its checkpoints before
  it has re-read the directory still verifies them.
* ``audit-<YYYYMMDDTHHMMSSZ>.pub``: the public half of a retired key whose private half
  :meth:`AuditKeyRing.prune` deleted (PEM SubjectPublicKeyInfo). Kept forever.

A key *retires* when its successor starts. A checkpoint it signs more than ``grace`` after that
(the token keys' overlap: slow reloads and clock skew) is refused by :meth:`AuditKeys.check`, so
a leaked retired key cannot vouch for entries written after it was replaced.

Checkpoints name their key by :func:`~tenants.audit.entry.key_id` (hex of SHA-256 of the raw
public key, 16 digits), as they always have; the published JWK carries that id beside its
RFC 7638 thumbprint ``kid``. Reading the files is blocking: call this off the event loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tenants.audit.entry import Checkpoint, format_time, key_id
from tenants.tokens.keyring import (
    DEFAULT_OVERLAP,
    EPOCH,
    KeyRing,
    KeyRingError,
    RingKey,
    key_name,
    parse_key_name,
)
from tenants.tokens.keys import PURPOSE, SigningKey, b64url, jwk_thumbprint

__all__ = ["PREFIX", "AuditKeyRing", "AuditKeys", "TrustedKey"]

PREFIX: Final = "audit"
_PUBLIC: Final = "pub"
MAX_PUBLIC_KEYS: Final = 1024


@dataclass(frozen=True)
class TrustedKey:
    """One audit key that verifies: its public half, when it started and when it retired."""

    public_key: Ed25519PublicKey
    starts: datetime
    retired: datetime | None  # when its successor started; None while it is the newest
    path: Path
    private: bool  # the private half is still on disk (it signs, or may until pruned)

    @property
    def kid(self) -> str:
        return key_id(self.public_key)

    def jwk(self) -> dict[str, Any]:
        """The public JWK: ``kid`` is its RFC 7638 thumbprint (as every key we publish), and
        ``feedgate_audit_kid`` the id checkpoints name it by."""
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        base = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        return {
            **base,
            "kid": jwk_thumbprint(base),
            "alg": "EdDSA",
            "use": "sig",
            PURPOSE: "audit",
            "feedgate_audit_kid": self.kid,
        }


@dataclass(frozen=True)
class AuditKeys:
    """Which key signs now, and every key that verifies."""

    signer: SigningKey | None  # None: a verifier's set, holding no private key
    trusted: tuple[TrustedKey, ...]  # in start order
    grace: timedelta = DEFAULT_OVERLAP

    @classmethod
    def single(cls, key: SigningKey) -> AuditKeys:
        """One key that signs, never retired (a log with no rotation)."""
        trusted = TrustedKey(key.private_key.public_key(), EPOCH, None, Path(), True)
        return cls(key, (trusted,))

    @classmethod
    def trusting(cls, *public_keys: Ed25519PublicKey) -> AuditKeys:
        """Public keys only, none retired: what a verifier holding them trusts."""
        return cls(None, tuple(TrustedKey(k, EPOCH, None, Path(), False) for k in public_keys))

    @property
    def signer_kid(self) -> str | None:
        return None if self.signer is None else key_id(self.signer.private_key.public_key())

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(k.kid for k in self.trusted)

    def find(self, kid: str) -> TrustedKey | None:
        for k in self.trusted:
            if k.kid == kid:
                return k
        return None

    def check(self, cp: Checkpoint) -> str | None:
        """Why ``cp`` does not verify (worded to follow "checkpoint at size N"), or None."""
        k = self.find(cp.key_id)
        if k is None:
            return f"is signed by an unknown key ({cp.key_id})"
        if not cp.verify(k.public_key):
            return "has a bad signature"
        if k.retired is not None and cp.time > k.retired + self.grace:
            return (
                f"is signed by key {k.kid} at {format_time(cp.time)}, after it was retired"
                f" ({format_time(k.retired)})"
            )
        return None

    def jwks(self) -> list[dict[str, Any]]:
        return [k.jwk() for k in self.trusted]


class AuditKeyRing:
    """The audit keys in the directory of ``first`` (``keys.audit_key``); see the module
    docstring."""

    def __init__(self, first: Path | str, *, overlap: timedelta = DEFAULT_OVERLAP) -> None:
        self.first = Path(first)
        self.directory = self.first.parent
        self.overlap = overlap
        self.ring = KeyRing(self.directory, overlap=overlap, prefix=PREFIX, legacy=self.first.name)

    def _public(self) -> list[tuple[datetime, Ed25519PublicKey, Path]]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KeyRingError(f"{self.directory}: {exc.strerror or exc}") from None
        out = []
        for name in names:
            starts = parse_key_name(name, PREFIX, _PUBLIC)
            if starts is None:
                continue
            path = self.directory / name
            try:
                key = serialization.load_pem_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise KeyRingError(f"{path}: not a usable public key ({exc})") from None
            if not isinstance(key, Ed25519PublicKey):
                raise KeyRingError(f"{path}: not an Ed25519 public key")
            out.append((starts, key, path))
        if len(out) > MAX_PUBLIC_KEYS:
            raise KeyRingError(f"{self.directory}: {len(out)} retired audit keys (at most 1024)")
        return out

    def exists(self) -> bool:
        """Is there any audit key at all (private or retired)?"""
        try:
            return bool(self._private()) or bool(self._public())
        except KeyRingError:
            return True  # an unusable file is an error to report, not a reason to make keys

    def _private(self) -> list[RingKey]:
        if not self.directory.exists():
            return []
        return self.ring.read()

    def load(self, now: datetime | None = None) -> AuditKeys:
        """The keys now. KeyRingError (naming the directory or the file) if none can sign."""
        now = now or datetime.now(UTC)
        private = self._private()
        if not private:
            raise KeyRingError(
                f"{self.first}: no audit checkpoint key (create it with `feedgate keys init`)"
            )
        sched = self.ring.load(now)
        every: list[tuple[datetime, Ed25519PublicKey, Path, bool]] = [
            (k.starts, k.key.private_key.public_key(), k.path, True) for k in private
        ]
        seen = {key_id(pub) for _, pub, _, _ in every}
        for starts, pub, path in self._public():
            if key_id(pub) not in seen:  # a pruned key restored from backup is listed once
                seen.add(key_id(pub))
                every.append((starts, pub, path, False))
        every.sort(key=lambda e: (e[0], key_id(e[1])))
        trusted = []
        for i, (starts, pub, path, has_private) in enumerate(every):
            successor = every[i + 1][0] if i + 1 < len(every) else None
            retired = successor if successor is not None and successor <= now else None
            trusted.append(TrustedKey(pub, starts, retired, path, has_private))
        return AuditKeys(sched.current.key, tuple(trusted), self.overlap)

    def rotate(self, now: datetime | None = None, *, start_in: timedelta) -> RingKey:
        """A new audit key that starts signing ``start_in`` from now (after the newest)."""
        now = now or datetime.now(UTC)
        latest = max((s for s, _, _ in self._public()), default=None)
        if latest is not None and now + start_in <= latest:
            start_in = latest - now + timedelta(seconds=1)
        return self.ring.rotate(now, start_in=start_in)

    def prune(self, now: datetime | None = None) -> list[Path]:
        """Keys retired longer than the overlap lose their private half; the public half stays
        as ``audit-<start>.pub``. The private files removed."""
        now = now or datetime.now(UTC)
        removed = []
        for k in self.ring.load(now).expired:
            pub = self.directory / key_name(k.starts, PREFIX, _PUBLIC)
            _write_public(pub, k.key)
            with contextlib.suppress(FileNotFoundError):
                k.path.unlink()
            removed.append(k.path)
        return removed

    def entries(self, now: datetime | None = None) -> Iterable[tuple[TrustedKey, str]]:
        """Every key with its state (signing, next, retired, public only), for listing."""
        keys = self.load(now)
        for k in keys.trusted:
            if k.kid == keys.signer_kid:
                state = "signing"
            elif k.retired is None:
                state = "next"
            else:
                state = f"retired {format_time(k.retired)[:19]}Z"
            yield k, state if k.private else f"{state}, public key only"


def _write_public(path: Path, key: SigningKey) -> None:
    """The public half at ``path``, atomically and never over another file's key."""
    pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if path.exists():
        if path.read_bytes() == pem:
            return
        raise KeyRingError(f"{path}: exists with another key")
    tmp = path.parent / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
