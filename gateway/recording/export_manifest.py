"""The evidence manifest that goes with every export, and its Ed25519 signature.

An export is an MP4 file and, beside it, a signed manifest (``<id>.manifest.json``)::

    {"manifest": {...ExportManifest...},
     "signature": {"alg": "EdDSA", "kid": "<RFC 7638 thumbprint>", "value": "<base64url>"}}

The manifest says what the file is evidence of: the camera, the UTC range asked for and the
range the file actually holds (an unmasked cut starts at the keyframe at or before the start),
the masks burnt in, who asked (person and tenant), the purpose or incident reference, and the
file's size and SHA-256. The signature is over :func:`canonical_bytes` of the manifest object
exactly as it stands in the file (sorted keys, no spaces, UTF-8), prefixed with
:data:`SIGNING_CONTEXT`, so no other message the gateway signs (a JWT's signing input is
base64url text and never holds a newline) can be passed off as a manifest or the reverse.

The key is the gateway's evidence key (``keys/evidence-signing.pem`` under ``data_dir``), kept
apart from the token keys so that token key rotation never strands old evidence; its public
JWK is published in the gateway's JWKS (``/.well-known/jwks.json``) beside the token keys.
:func:`verify_export` checks a file and its manifest offline against a JWKS document or a PEM
key: the hash, the size, the signature, and only then the manifest's fields.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from tenants.tokens import SigningKey, jwk_thumbprint
from tenants.tokens.keys import PURPOSE

__all__ = [
    "MANIFEST_VERSION",
    "SIGNING_CONTEXT",
    "ExportManifest",
    "ManifestError",
    "MaskApplied",
    "Redaction",
    "Requester",
    "canonical_bytes",
    "file_digest",
    "keys_from_jwks",
    "keys_from_pem",
    "load_trusted_keys",
    "sign_manifest",
    "verify_export",
    "verify_signed",
]

MANIFEST_VERSION: Literal[1] = 1
SIGNING_CONTEXT = b"feedgate-export-manifest/v1\n"
MAX_MANIFEST_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024


class ManifestError(Exception):
    """A manifest or export that does not verify. ``reason`` is one stable word:
    ``malformed``, ``unknown_key``, ``bad_signature``, ``hash_mismatch``, ``size_mismatch``,
    ``invalid``, ``unreadable``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("times must carry a time zone (UTC)")
    return t.astimezone(UTC)


def _text_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Times in a manifest are UTC, written one way only, so a manifest re-serialises to the same
# bytes whatever produced it.
UtcTime = Annotated[datetime, AfterValidator(_utc), PlainSerializer(_text_time, return_type=str)]
_Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")]
_Text = Annotated[str, Field(min_length=1, max_length=512)]
# An RFC 7638 thumbprint is base64url: it may start with '-' or '_'.
_Kid = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
_Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Requester(_Strict):
    person: _Id  # the principal (subject) who asked
    tenant: _Id  # the organisation it belongs to


class MaskApplied(_Strict):
    """A privacy mask burnt into the export's pixels."""

    id: _Id
    kind: Literal["permanent", "liftable"]
    points: tuple[_Point, ...] = Field(min_length=3, max_length=64)


class Redaction(_Strict):
    """A subject access request's redaction zone: black from ``start`` to ``end``."""

    id: _Id
    start: UtcTime
    end: UtcTime
    points: tuple[_Point, ...] = Field(min_length=3, max_length=64)


class ExportManifest(_Strict):
    version: Literal[1] = MANIFEST_VERSION
    export_id: _Id
    kind: Literal["export", "sar_copy"] = "export"
    camera: _Id
    start: UtcTime  # the range asked for
    end: UtcTime
    media_start: UtcTime  # what the file holds: its first frame's capture time
    media_end: UtcTime
    gaps: tuple[tuple[UtcTime, UtcTime], ...] = ()  # spans inside the range with no footage
    masks_applied: tuple[MaskApplied, ...] = ()
    redactions: tuple[Redaction, ...] = ()
    reencoded: bool  # False: the camera's own packets, remuxed
    requester: Requester
    purpose: _Text | None = None
    incident_ref: _Text | None = None
    sar_id: _Id | None = None
    file_name: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$")]
    file_size: int = Field(ge=0)
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    created: UtcTime
    key_id: _Kid

    @model_validator(mode="after")
    def _ranges(self) -> ExportManifest:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.media_end < self.media_start:
            raise ValueError("media_end must not be before media_start")
        if self.purpose is None and self.incident_ref is None:
            raise ValueError("an export needs a purpose or an incident reference")
        return self


def canonical_bytes(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8 as is, no NaN: the bytes a signature covers."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_manifest(manifest: ExportManifest, key: SigningKey) -> dict[str, Any]:
    """The signed manifest document (write it with :func:`canonical_bytes` or json.dump)."""
    if manifest.key_id != key.kid:
        raise ValueError(f"manifest names key {manifest.key_id}, signing with {key.kid}")
    body = manifest.model_dump(mode="json")
    sig = key.private_key.sign(SIGNING_CONTEXT + canonical_bytes(body))
    return {"manifest": body, "signature": {"alg": "EdDSA", "kid": key.kid, "value": _b64url(sig)}}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_document(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError("malformed", f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError("malformed", f"manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"manifest", "signature"}:
        raise ManifestError("malformed", "expected an object with manifest and signature")
    sig = doc["signature"]
    if (
        not isinstance(doc["manifest"], dict)
        or not isinstance(sig, dict)
        or set(sig) != {"alg", "kid", "value"}
        or not all(isinstance(v, str) for v in sig.values())
    ):
        raise ManifestError("malformed", "signature must be {alg, kid, value} strings")
    return doc


def verify_signed(doc: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> ExportManifest:
    """The manifest of a signed document, once its signature checks out under one of
    ``keys`` (kid -> public key). The signature is checked over the manifest object as it
    stands, before any field is interpreted."""
    sig = doc["signature"]
    if sig["alg"] != "EdDSA":
        raise ManifestError("bad_signature", f"algorithm {sig['alg'][:32]!r} is not EdDSA")
    key = keys.get(sig["kid"])
    if key is None:
        raise ManifestError("unknown_key", f"no trusted key with id {sig['kid'][:64]!r}")
    try:
        value = _b64url_decode(sig["value"])
        if len(value) != 64 or _b64url(value) != sig["value"]:
            # One text per signature: the unused bits of the last character must be zero.
            raise ValueError("not a canonical Ed25519 signature")
        key.verify(value, SIGNING_CONTEXT + canonical_bytes(doc["manifest"]))
    except (InvalidSignature, ValueError):
        raise ManifestError("bad_signature", "the manifest's signature does not verify") from None
    try:
        manifest = ExportManifest.model_validate(doc["manifest"])
    except ValidationError as exc:
        raise ManifestError("invalid", f"signed manifest is not valid: {exc}") from None
    if manifest.key_id != sig["kid"]:
        raise ManifestError("invalid", "the manifest names another key than its signature")
    return manifest


def file_digest(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


@dataclass(frozen=True)
class Verified:
    manifest: ExportManifest
    sha256: str
    size: int


def verify_export(
    media: Path, manifest_path: Path, keys: Mapping[str, Ed25519PublicKey]
) -> Verified:
    """Check an exported file against its signed manifest, offline."""
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise ManifestError("unreadable", f"{manifest_path}: {exc.strerror}") from None
    manifest = verify_signed(parse_document(raw), keys)
    try:
        digest, size = file_digest(media)
    except OSError as exc:
        raise ManifestError("unreadable", f"{media}: {exc.strerror}") from None
    if size != manifest.file_size:
        raise ManifestError(
            "size_mismatch", f"{media}: {size} bytes, the manifest says {manifest.file_size}"
        )
    if not _same(digest, manifest.sha256):
        raise ManifestError("hash_mismatch", f"{media}: SHA-256 {digest} is not the manifest's")
    return Verified(manifest, digest, size)


def _same(a: str, b: str) -> bool:
    return hashlib.sha256(a.encode()).digest() == hashlib.sha256(b.encode()).digest()


def keys_from_jwks(doc: Any) -> dict[str, Ed25519PublicKey]:
    """The evidence keys of a JWKS document, by kid. A kid must be the key's RFC 7638
    thumbprint (ours always are), so a JWKS cannot pass one key off under another's id; and
    the key must be marked as an evidence key, since a gateway's JWKS also publishes its token
    and audit keys, which must not be able to sign a manifest."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ManifestError("malformed", "a JWKS is an object with a keys array")
    out: dict[str, Ed25519PublicKey] = {}
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        x, kid = jwk.get("x"), jwk.get("kid")
        if not isinstance(x, str) or not isinstance(kid, str) or "d" in jwk:
            continue
        if kid != jwk_thumbprint(jwk) or jwk.get(PURPOSE) != "evidence":
            continue
        try:
            out[kid] = Ed25519PublicKey.from_public_bytes(_b64url_decode(x))
        except ValueError:
            continue
    return out


def _thumbprint_of(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)})


def keys_from_pem(data: bytes) -> dict[str, Ed25519PublicKey]:
    """One Ed25519 key from PEM: a public key, or a private key (its public half)."""
    key: Any
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ManifestError("malformed", "not a PEM Ed25519 key") from None
        if isinstance(key, Ed25519PrivateKey):
            key = key.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ManifestError("malformed", "not an Ed25519 key")
    return {_thumbprint_of(key): key}


def load_trusted_keys(
    jwks: Iterable[Path] = (), pem: Iterable[Path] = ()
) -> dict[str, Ed25519PublicKey]:
    out: dict[str, Ed25519PublicKey] = {}
    for path in jwks:
        try:
            out.update(keys_from_jwks(json.loads(path.read_bytes())))
        except (OSError, ValueError) as exc:
            raise ManifestError("unreadable", f"{path}: {exc}") from None
    for path in pem:
        try:
            out.update(keys_from_pem(path.read_bytes()))
        except OSError as exc:
            raise ManifestError("unreadable", f"{path}: {exc.strerror}") from None
    return out


def public_pem(key: SigningKey) -> bytes:
    """The evidence key's public half as PEM, to hand to whoever verifies exports."""
    return key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
