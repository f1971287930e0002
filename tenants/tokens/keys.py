"""Our signing keys: one Ed25519 key whose ``kid`` is its RFC 7638 JWK thumbprint."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# One JWKS publishes the token keys, the evidence key and the audit checkpoint keys, all
# Ed25519 with use "sig"; this member says which a key is, so a verifier of one kind (a token,
# an export manifest) never trusts another kind's key: a leaked audit key must not mint tokens,
# and a token key must not sign evidence.
PURPOSE: Final = "feedgate_purpose"
KeyPurpose = Literal["token", "evidence", "audit"]

log = logging.getLogger(__name__)

# RFC 7638 required members, per key type.
THUMBPRINT_MEMBERS: Final = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint (base64url SHA-256) of a public JWK (OKP, EC or RSA)."""
    members = THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise ValueError("JWK thumbprint: unsupported or incomplete key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


class SigningKey:
    """One Ed25519 signing key; ``kid`` is its RFC 7638 JWK thumbprint."""

    __slots__ = ("_jwk", "kid", "private_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("SigningKey needs an Ed25519 private key")
        self.private_key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        base = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        self.kid: str = jwk_thumbprint(base)
        self._jwk = {**base, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """Load a PEM (PKCS#8) Ed25519 key, or create one: file 0600, new parent dir 0700.

        Creation is atomic (written to a temporary file, then hard-linked into place), so two
        processes starting together end up with the same key.
        """
        path = Path(path)
        try:
            return cls.load(path)
        except FileNotFoundError:
            pass
        parent = path.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            os.chmod(parent, 0o700)
        key = cls.generate()
        try:
            write_private_key(path, key)
        except FileExistsError:
            return cls.load(path)  # another process won the race
        log.info("created signing key %s at %s", key.kid, path)
        return key

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """The Ed25519 key in a PEM (PKCS#8) file; ValueError if it is another kind of key."""
        data = Path(path).read_bytes()
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(private)

    def public_jwk(self, purpose: KeyPurpose = "token") -> dict[str, Any]:
        """The public JWK (``kty, crv, x, kid, alg, use``) marked with what the key signs
        (:data:`PURPOSE`): never any private member."""
        return {**self._jwk, PURPOSE: purpose}

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


def write_private_key(path: Path, key: SigningKey) -> None:
    """``key`` as PKCS#8 PEM at ``path`` (0600), atomically: written to a temporary file, then
    hard-linked into place, so a reader never sees half a key and an existing file is never
    replaced (FileExistsError)."""
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the new name durable too
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
