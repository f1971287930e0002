"""Bearer tokens: our own EdDSA tokens, and tokens signed by partners' identity providers.

* :class:`SigningKey` is one Ed25519 key whose ``kid`` is its RFC 7638 JWK thumbprint.
* :class:`TokenIssuer` signs our tokens (first key) and publishes every key as a JWKS, so a
  rotated-out key keeps verifying until it is removed.
* :class:`TokenVerifier` verifies ours and partners' tokens. The unverified header and payload
  are read only to route the token (``iss``, ``kid``, ``alg``); the signature and the claims are
  then checked by ``jwt.decode`` with the algorithms pinned per issuer, plus our own rules
  (``iat`` not in the future, lifetime at most 24 h, tenant binding). Partners' JWKS are fetched
  with httpx, never on the event loop's thread, cached, refetched for an unknown ``kid`` at most
  once per ``refetch_min_interval``, with concurrent fetches coalesced.
* Successful verifications are kept in an LRU keyed by SHA-256 of the token, because RTSP
  clients present the same token on DESCRIBE, SETUP, PLAY and every reconnect. A hit still checks
  ``exp`` and that the signing key is still in its issuer's key set. Failures are never cached.

Errors are :class:`TokenError` with a machine-readable ``reason``; no message or log line ever
contains the token.

This module imports no other feedgate package (only ``tenants.model``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.types import Options

from tenants.model import Tenant, check_id

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES: Final = 8 * 1024
MAX_LIFETIME: Final = timedelta(hours=24)
MIN_TTL: Final = timedelta(seconds=1)
OWN_ALGORITHMS: Final = ("EdDSA",)
PARTNER_ALGORITHMS: Final = frozenset({"EdDSA", "ES256", "ES384", "RS256", "PS256"})
MAX_JWKS_BYTES: Final = 256 * 1024
MAX_JWKS_KEYS: Final = 64
DEFAULT_HTTP_TIMEOUT: Final = 5.0
# Clock skew allowed on exp/nbf/iat: enough for unsynchronised clocks, short enough that an
# expired token stops working within seconds (it once worked 30 s on).
DEFAULT_LEEWAY: Final = timedelta(seconds=5)
_RESERVED_CLAIMS: Final = frozenset(
    {"iss", "aud", "sub", "tnt", "iat", "nbf", "exp", "jti", "cams", "roles", "purpose"}
)
_PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 7638 required members, per key type.
_THUMBPRINT_MEMBERS: Final = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


class TokenError(Exception):
    """A token was refused. ``reason`` is a short code; ``str()`` a message without the token.

    Reasons: ``malformed``, ``alg_not_allowed``, ``unknown_issuer``, ``unknown_kid``,
    ``bad_signature``, ``wrong_audience``, ``wrong_issuer``, ``missing_claim``, ``expired``,
    ``iat_in_future``, ``not_yet_valid`` (``nbf``), ``lifetime_too_long`` (exp - iat > 24 h),
    ``wrong_tenant`` (a partner's token naming another tenant), ``jwks_unavailable``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __repr__(self) -> str:
        return f"TokenError({self.reason!r}, {str(self)!r})"


@dataclass(frozen=True)
class Claims:
    issuer: str
    subject: str  # principal id
    tenant: str  # "tnt" (own tokens) or the partner's tenant
    audience: str
    issued_at: datetime
    expires_at: datetime
    token_id: str  # "jti"; for a partner token without one, "sha256:" + 32 hex of the token
    cameras: frozenset[str] | None  # "cams"; None = any camera the tenant is granted
    roles: frozenset[str]
    purpose: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False, hash=False)


# --------------------------------------------------------------------------- keys


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint (base64url SHA-256) of a public JWK (OKP, EC or RSA)."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise ValueError("JWK thumbprint: unsupported or incomplete key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


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
        base = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
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
            return cls._load(path)
        except FileNotFoundError:
            pass
        parent = path.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            os.chmod(parent, 0o700)
        key = cls.generate()
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return cls._load(path)  # another process won the race
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        log.info("created token signing key %s at %s", key.kid, path)
        return key

    @classmethod
    def _load(cls, path: Path) -> SigningKey:
        data = path.read_bytes()
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(private)

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK (``kty, crv, x, kid, alg, use``): never any private member."""
        return dict(self._jwk)

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


class TokenIssuer:
    """Signs our tokens with the first key; publishes all keys (rotation: prepend the new one,
    keep the old one until its tokens have expired, then drop it)."""

    def __init__(
        self, keys: list[SigningKey], issuer: str = "feedgate", audience: str = "feedgate"
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience must be non-empty")
        self.issuer = issuer
        self.audience = audience
        self._keys: tuple[SigningKey, ...] = ()
        self.set_keys(keys)

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return self._keys

    def set_keys(self, keys: Iterable[SigningKey]) -> None:
        """Replace the key list (first one signs). Verifiers built on this issuer follow."""
        keys = tuple(keys)
        if not keys:
            raise ValueError("TokenIssuer needs at least one key")
        if len({k.kid for k in keys}) != len(keys):
            raise ValueError("TokenIssuer: duplicate key")
        self._keys = keys

    def issue(
        self,
        *,
        tenant: str,
        subject: str,
        ttl: timedelta = timedelta(minutes=15),
        cameras: Iterable[str] | None = None,
        roles: Iterable[str] = (),
        purpose: str | None = None,
        now: datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        if not MIN_TTL <= ttl <= MAX_LIFETIME:
            raise ValueError("ttl must be between 1 s and 24 h")
        check_id("tenant", tenant)
        check_id("principal", subject)
        if isinstance(cameras, str) or isinstance(roles, str):
            raise TypeError("cameras and roles are iterables of ids, not a string")
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        iat = int(now.timestamp())
        payload: dict[str, Any] = {}
        if extra:
            clash = _RESERVED_CLAIMS & set(extra)
            if clash:
                raise ValueError(f"extra claims may not override {sorted(clash)}")
            payload.update(extra)
        payload.update(
            iss=self.issuer,
            aud=self.audience,
            sub=subject,
            tnt=tenant,
            iat=iat,
            nbf=iat,
            exp=iat + int(ttl.total_seconds()),
            jti=uuid.uuid4().hex,
            roles=sorted(set(roles)),
        )
        if cameras is not None:
            payload["cams"] = sorted({check_id("camera", c) for c in cameras})
        if purpose is not None:
            payload["purpose"] = purpose
        key = self._keys[0]
        return jwt.encode(
            payload, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": "JWT"}
        )

    def jwks(self) -> dict[str, Any]:
        """``{"keys": [...]}`` for ``/.well-known/jwks.json``: public material only."""
        return {"keys": [k.public_jwk() for k in self._keys]}


# --------------------------------------------------------------------------- partners


@dataclass(frozen=True)
class PartnerIssuer:
    """A partner's identity provider whose tokens are accepted for ``tenant``.

    Only asymmetric algorithms; ``jwks_url`` must be https (plain http only to loopback).
    """

    issuer: str
    tenant: str
    jwks_url: str
    algorithms: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.issuer, str) or not self.issuer:
            raise ValueError("partner issuer: empty iss")
        check_id("tenant", self.tenant)
        algorithms = tuple(self.algorithms)
        object.__setattr__(self, "algorithms", algorithms)
        if not algorithms:
            raise ValueError(f"partner {self.issuer!r}: no algorithms pinned")
        bad = [a for a in algorithms if a not in PARTNER_ALGORITHMS]
        if bad:
            raise ValueError(
                f"partner {self.issuer!r}: algorithms {bad} not allowed "
                f"(only {sorted(PARTNER_ALGORITHMS)})"
            )
        url = urlsplit(self.jwks_url)
        if not url.hostname or not (
            url.scheme == "https" or (url.scheme == "http" and url.hostname in _LOOPBACK_HOSTS)
        ):
            raise ValueError(f"partner {self.issuer!r}: jwks_url must be https://")

    @classmethod
    def from_tenant(cls, tenant: Tenant) -> PartnerIssuer | None:
        """The tenant's own identity provider, if it has one (``jwks_url`` and ``issuer``)."""
        if not tenant.jwks_url or not tenant.issuer:
            return None
        return cls(tenant.issuer, tenant.id, tenant.jwks_url, tuple(tenant.algorithms))


# --------------------------------------------------------------------------- verifier


@dataclass(frozen=True)
class _Key:
    thumbprint: str
    by_alg: Mapping[str, jwt.PyJWK]  # the key bound to each algorithm it may verify


def _candidate_algs(jwk: Mapping[str, Any]) -> frozenset[str]:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv in ("Ed25519", "Ed448"):
        return frozenset({"EdDSA"})
    if kty == "EC" and crv == "P-256":
        return frozenset({"ES256"})
    if kty == "EC" and crv == "P-384":
        return frozenset({"ES384"})
    if kty == "RSA":
        return frozenset({"RS256", "PS256"})
    return frozenset()


def _parse_jwks(doc: Any, algorithms: Iterable[str], source: str) -> dict[str, _Key]:
    """kid -> key, keeping only public signing keys usable with the pinned algorithms."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"{source}: not a JWKS (no 'keys' list)")
    allowed = frozenset(algorithms)
    out: dict[str, _Key] = {}
    for jwk in doc["keys"][:MAX_JWKS_KEYS]:
        if not isinstance(jwk, Mapping):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or kid in out:
            continue
        if _PRIVATE_JWK_MEMBERS & set(jwk) or jwk.get("use", "sig") != "sig":
            continue  # never accept (or keep) private or encryption keys
        algs = _candidate_algs(jwk) & allowed
        if "alg" in jwk:
            algs &= {jwk["alg"]}
        by_alg: dict[str, jwt.PyJWK] = {}
        for alg in sorted(algs):
            try:
                pyjwk = jwt.PyJWK(dict(jwk), algorithm=alg)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
                continue
            if isinstance(pyjwk.key, RSAPublicKey) and pyjwk.key.key_size < 2048:
                continue
            by_alg[alg] = pyjwk
        if by_alg:
            try:
                out[kid] = _Key(jwk_thumbprint(jwk), MappingProxyType(by_alg))
            except ValueError:
                continue
    return out


@dataclass
class _KeySet:
    keys: dict[str, _Key]
    fetched_at: float  # time.monotonic()


@dataclass
class _Partner:
    cfg: PartnerIssuer
    keyset: _KeySet | None = None
    last_attempt: float = -math.inf  # monotonic time of the last fetch attempt
    last_failed: bool = False
    last_error: str = ""
    inflight: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class _Entry:
    claims: Claims
    exp: float
    partner: PartnerIssuer | None  # None: our own token
    kid: str
    alg: str
    thumbprint: str


class _NeedFetch(Exception):  # internal control flow, not an error
    def __init__(self, partner: _Partner, why: str) -> None:
        super().__init__(why)
        self.partner = partner
        self.why = why


# PyJWT exception -> reason, most specific first.
_JWT_REASONS: Final[tuple[tuple[type[Exception], str], ...]] = (
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidAlgorithmError, "alg_not_allowed"),
    (jwt.InvalidKeyError, "bad_signature"),
)


def _str_set(value: Any, name: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenError("malformed", f"claim {name!r} must be a list of strings")
    return frozenset(value)


def _number(payload: Mapping[str, Any], name: str) -> float:
    value = payload.get(name)
    if value is None:
        raise TokenError("missing_claim", f"token has no {name!r} claim")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError("malformed", f"claim {name!r} must be a number")
    return float(value)


class TokenVerifier:
    """Verifies our own tokens and partners' tokens; see the module docstring.

    ``issuer`` is our :class:`TokenIssuer` (its key list is followed live, so rotation there is
    seen here), or our public JWKS (``{"keys": [...]}``) with ``own_issuer`` naming its ``iss``.
    Meant for one event loop (or one thread): it holds no locks.
    """

    def __init__(
        self,
        issuer: TokenIssuer | Mapping[str, Any],
        *,
        audience: str = "feedgate",
        leeway: timedelta = DEFAULT_LEEWAY,
        partners: Iterable[PartnerIssuer] = (),
        http: httpx.AsyncClient | None = None,
        jwks_ttl: float = 300.0,
        refetch_min_interval: float = 30.0,
        cache_size: int = 10000,
        own_issuer: str = "feedgate",
        http_timeout: float = DEFAULT_HTTP_TIMEOUT,
    ) -> None:
        if not audience:
            raise ValueError("audience must be non-empty")
        if leeway < timedelta(0) or leeway > timedelta(minutes=5):
            raise ValueError("leeway must be between 0 and 5 minutes")
        if cache_size < 0 or jwks_ttl <= 0 or refetch_min_interval < 0:
            raise ValueError("cache_size, jwks_ttl and refetch_min_interval must be positive")
        self.audience = audience
        self.leeway = leeway.total_seconds()
        self.jwks_ttl = float(jwks_ttl)
        self.refetch_min_interval = float(refetch_min_interval)
        self.cache_size = cache_size
        self.http_timeout = http_timeout
        self._http = http
        self._own_http = False
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._own_source: TokenIssuer | None = None
        self._own_seen: tuple[SigningKey, ...] | None = None
        self._own_keys: dict[str, _Key] = {}
        self.own_issuer = own_issuer
        self.set_own_keys(issuer, own_issuer=own_issuer)
        self._partners: dict[str, _Partner] = {}
        self.set_partners(partners)
        # With an explicit `now`, PyJWT's own clock checks are off (it has no clock parameter)
        # and ours, in _claims, decide alone; with the real clock both run.
        self._options_clock: Options = {"require": ["exp", "iat", "aud", "iss", "sub"]}
        self._options_no_clock: Options = {
            "require": ["exp", "iat", "aud", "iss", "sub"],
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
        }

    # ---------------------------------------------------------------- configuration

    def set_own_keys(
        self, issuer: TokenIssuer | Mapping[str, Any], *, own_issuer: str | None = None
    ) -> None:
        """Our issuer (followed live) or a fixed JWKS of our public keys."""
        if isinstance(issuer, TokenIssuer):
            self._own_source = issuer
            self._own_seen = None
            self.own_issuer = issuer.issuer
            self._refresh_own()
        else:
            self._own_source = None
            self._own_keys = _parse_jwks(issuer, OWN_ALGORITHMS, "own JWKS")
            if own_issuer is not None:
                self.own_issuer = own_issuer
        if self.own_issuer in getattr(self, "_partners", {}):
            raise ValueError(f"issuer {self.own_issuer!r} is ours and a partner's")

    def set_partners(self, partners: Iterable[PartnerIssuer]) -> None:
        """Replace the partner list; a partner whose configuration is unchanged keeps its keys."""
        new: dict[str, _Partner] = {}
        for cfg in partners:
            if cfg.issuer in new:
                raise ValueError(f"partner issuer {cfg.issuer!r} listed twice")
            if cfg.issuer == self.own_issuer:
                raise ValueError(f"partner issuer {cfg.issuer!r} is our own issuer")
            old = getattr(self, "_partners", {}).get(cfg.issuer)
            new[cfg.issuer] = old if old is not None and old.cfg == cfg else _Partner(cfg)
        self._partners = new

    async def aclose(self) -> None:
        """Close the httpx client if this verifier created it."""
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
            self._own_http = False

    def cache_clear(self) -> None:
        self._cache.clear()

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    # ---------------------------------------------------------------- verification

    def verify(self, token: str, *, now: datetime | None = None) -> Claims:
        """Verify without I/O. A partner token needing a JWKS (re)fetch -> ``jwks_unavailable``;
        use :meth:`verify_async` for partners."""
        try:
            return self._verify(token, now)
        except _NeedFetch as e:
            raise TokenError(
                "jwks_unavailable",
                f"issuer {e.partner.cfg.issuer!r}: {e.why}; fetching needs verify_async",
            ) from None

    async def verify_async(self, token: str, *, now: datetime | None = None) -> Claims:
        """Verify, fetching a partner's JWKS with httpx when needed (coalesced, rate-limited)."""
        try:
            return self._verify(token, now)
        except _NeedFetch as e:
            need = e
        ok = await self._fetch(need.partner)
        if not ok and (need.partner.keyset is None or not self._fresh(need.partner)):
            raise TokenError(
                "jwks_unavailable",
                f"issuer {need.partner.cfg.issuer!r}: JWKS unavailable ({need.partner.last_error})",
            )
        try:
            return self._verify(token, now)
        except _NeedFetch as e:  # fetched just now, still not usable: no second fetch
            raise TokenError(
                "jwks_unavailable", f"issuer {e.partner.cfg.issuer!r}: {e.why}"
            ) from None

    def _verify(self, token: str, now: datetime | None) -> Claims:
        if not isinstance(token, str):
            raise TokenError("malformed", "token must be a string")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError("malformed", f"token longer than {MAX_TOKEN_BYTES} bytes")
        if now is None:
            now_ts = time.time()
        elif now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        else:
            now_ts = now.timestamp()
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise TokenError("malformed", "token is not ASCII") from None
        digest = hashlib.sha256(raw).digest()

        entry = self._cache.get(digest)
        if entry is not None:
            claims = self._check_hit(digest, entry, now_ts)
            if claims is not None:
                return claims

        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise TokenError("malformed", "not a compact JWS (header.payload.signature)")
        header = self._peek(parts[0])
        alg = header.get("alg")
        kid = header.get("kid")

        # Route: a kid of ours (an RFC 7638 thumbprint of our key) goes to our keys without
        # reading the payload (jwt.decode then checks iss: "wrong_issuer"); anything else by iss.
        partner: _Partner | None = None
        if not (isinstance(kid, str) and kid in self._current_own_keys()):
            iss = self._peek(parts[1]).get("iss")
            partner = self._partners.get(iss) if isinstance(iss, str) else None
            if partner is None and iss != self.own_issuer:
                raise TokenError("unknown_issuer", "token issuer is not trusted")
        if partner is not None:
            cfg: PartnerIssuer | None = partner.cfg
            algorithms: tuple[str, ...] = partner.cfg.algorithms
            expected_iss = partner.cfg.issuer
        else:
            cfg = None
            algorithms = OWN_ALGORITHMS
            expected_iss = self.own_issuer

        if not isinstance(alg, str) or alg not in algorithms:
            raise TokenError(
                "alg_not_allowed", f"alg {str(alg)[:16]!r} not allowed for issuer (pinned)"
            )
        if not isinstance(kid, str) or not kid:
            raise TokenError("unknown_kid", "token header has no kid")

        if partner is not None:
            keys = self._partner_keys(partner, kid)
        else:
            keys = self._current_own_keys()
        key = keys.get(kid)
        if key is None:
            raise TokenError("unknown_kid", "no key with this kid for the token's issuer")
        pyjwk = key.by_alg.get(alg)
        if pyjwk is None:
            raise TokenError("alg_not_allowed", f"key {kid[:64]!r} is not usable with {alg}")

        try:
            verified: dict[str, Any] = jwt.decode(
                token,
                key=pyjwk,
                algorithms=[alg],
                audience=self.audience,
                issuer=expected_iss,
                leeway=self.leeway,
                options=self._options_clock if now is None else self._options_no_clock,
            )
        except jwt.ImmatureSignatureError as e:
            reason = "iat_in_future" if "(iat)" in str(e) else "not_yet_valid"
            raise TokenError(reason, f"token not yet valid: {e}") from None
        except jwt.InvalidTokenError as e:
            for cls, reason in _JWT_REASONS:
                if isinstance(e, cls):
                    raise TokenError(reason, str(e)) from None
            raise TokenError("malformed", str(e)) from None
        except (ValueError, TypeError) as e:  # defensive: odd key/token combinations
            raise TokenError("malformed", type(e).__name__) from None

        claims, exp = self._claims(verified, digest, cfg, now_ts)
        if self.cache_size:
            self._cache[digest] = _Entry(claims, exp, cfg, kid, alg, key.thumbprint)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return claims

    def _check_hit(self, digest: bytes, entry: _Entry, now_ts: float) -> Claims | None:
        """The cached claims if still valid; raises ``expired``; None = verify again."""
        if entry.exp <= now_ts - self.leeway:
            del self._cache[digest]
            raise TokenError("expired", "token has expired")
        if entry.partner is None:
            keys = self._current_own_keys()
        else:
            partner = self._partners.get(entry.partner.issuer)
            if partner is None or partner.cfg != entry.partner:
                del self._cache[digest]
                return None
            keys = self._partner_keys(partner, None)  # may raise _NeedFetch (stale JWKS)
        key = keys.get(entry.kid)
        if key is None or key.thumbprint != entry.thumbprint or entry.alg not in key.by_alg:
            del self._cache[digest]  # the key was removed or replaced
            return None
        self._cache.move_to_end(digest)
        return entry.claims

    @staticmethod
    def _peek(segment: str) -> dict[str, Any]:
        """An unverified header or payload, only to route the token."""
        try:
            value = json.loads(_b64url_decode(segment))
        except (ValueError, binascii.Error, RecursionError):
            raise TokenError("malformed", "token header or payload is not base64url JSON") from None
        if not isinstance(value, dict):
            raise TokenError("malformed", "token header and payload must be JSON objects")
        return value

    def _current_own_keys(self) -> dict[str, _Key]:
        src = self._own_source
        if src is not None and src.keys is not self._own_seen:
            self._refresh_own()
        return self._own_keys

    def _refresh_own(self) -> None:
        assert self._own_source is not None
        self._own_seen = self._own_source.keys
        self._own_keys = _parse_jwks(self._own_source.jwks(), OWN_ALGORITHMS, "own keys")

    def _fresh(self, partner: _Partner) -> bool:
        ks = partner.keyset
        return ks is not None and time.monotonic() - ks.fetched_at < self.jwks_ttl

    def _partner_keys(self, partner: _Partner, kid: str | None) -> dict[str, _Key]:
        """The partner's cached keys, or _NeedFetch / TokenError when they cannot be used.

        ``kid`` not None and unknown: a refetch is asked for, at most once per
        ``refetch_min_interval``; otherwise the (fresh) cached keys are returned as they are.
        """
        mono = time.monotonic()
        since_attempt = mono - partner.last_attempt
        if not self._fresh(partner):
            if partner.last_failed and since_attempt < self.refetch_min_interval:
                raise TokenError(
                    "jwks_unavailable",
                    f"issuer {partner.cfg.issuer!r}: JWKS unavailable ({partner.last_error})",
                )
            raise _NeedFetch(partner, "JWKS not cached" if partner.keyset is None else "stale")
        assert partner.keyset is not None
        keys = partner.keyset.keys
        if kid is not None and kid not in keys and since_attempt >= self.refetch_min_interval:
            raise _NeedFetch(partner, "unknown kid, JWKS refetch needed")
        return keys

    def _claims(
        self, p: dict[str, Any], digest: bytes, cfg: PartnerIssuer | None, now_ts: float
    ) -> tuple[Claims, float]:
        exp = _number(p, "exp")
        iat = _number(p, "iat")
        leeway = self.leeway
        if iat > now_ts + leeway:
            raise TokenError("iat_in_future", "token issued in the future")
        if "nbf" in p and _number(p, "nbf") > now_ts + leeway:
            raise TokenError("not_yet_valid", "token not valid yet (nbf)")
        if exp <= now_ts - leeway:
            raise TokenError("expired", "token has expired")
        if exp <= iat:
            raise TokenError("malformed", "token expires before it was issued")
        if exp - iat > MAX_LIFETIME.total_seconds():
            raise TokenError("lifetime_too_long", "token lifetime exceeds 24 h")

        sub = p["sub"]
        if not isinstance(sub, str) or not sub:
            raise TokenError("malformed", "claim 'sub' must be a non-empty string")
        tnt = p.get("tnt")
        if cfg is None:
            if tnt is None:
                raise TokenError("missing_claim", "token has no 'tnt' claim")
            if not isinstance(tnt, str) or not tnt:
                raise TokenError("malformed", "claim 'tnt' must be a non-empty string")
            tenant = tnt
        else:
            if tnt is not None and tnt != cfg.tenant:
                raise TokenError("wrong_tenant", "partner token names another tenant")
            tenant = cfg.tenant
        jti = p.get("jti")
        if jti is None and cfg is None:
            raise TokenError("missing_claim", "token has no 'jti' claim")
        if jti is not None and (not isinstance(jti, str) or not jti):
            raise TokenError("malformed", "claim 'jti' must be a non-empty string")
        cams = p.get("cams")
        roles = p.get("roles")
        purpose = p.get("purpose")
        if purpose is not None and not isinstance(purpose, str):
            raise TokenError("malformed", "claim 'purpose' must be a string")
        claims = Claims(
            issuer=p["iss"],
            subject=sub,
            tenant=tenant,
            audience=self.audience,
            issued_at=datetime.fromtimestamp(iat, UTC),
            expires_at=datetime.fromtimestamp(exp, UTC),
            token_id=jti if jti is not None else "sha256:" + digest.hex()[:32],
            cameras=None if cams is None else _str_set(cams, "cams"),
            roles=frozenset() if roles is None else _str_set(roles, "roles"),
            purpose=purpose,
            raw=MappingProxyType(p),
        )
        return claims, exp

    # ---------------------------------------------------------------- JWKS fetching

    async def _fetch(self, partner: _Partner) -> bool:
        """Fetch the partner's JWKS once for every concurrent caller; True on success."""
        task = partner.inflight
        if task is None or task.done():
            partner.last_attempt = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._do_fetch(partner))
            partner.inflight = task
        await asyncio.shield(task)
        return not partner.last_failed

    async def _do_fetch(self, partner: _Partner) -> None:
        cfg = partner.cfg
        try:
            if self._http is None:
                # Building a client loads the CA bundle: 50-200 ms, so off the event loop.
                client = await asyncio.to_thread(
                    httpx.AsyncClient,
                    timeout=httpx.Timeout(self.http_timeout),
                    follow_redirects=False,
                )
                if self._http is None:
                    self._http, self._own_http = client, True
                else:  # another partner's fetch made one meanwhile
                    await client.aclose()
            body = bytearray()
            async with self._http.stream(
                "GET", cfg.jwks_url, headers={"Accept": "application/json"}
            ) as resp:
                if resp.status_code != 200:
                    raise ValueError(f"HTTP {resp.status_code}")
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
            keys = _parse_jwks(json.loads(body), cfg.algorithms, cfg.jwks_url)
        except (httpx.HTTPError, ValueError, RecursionError) as e:
            partner.last_failed = True
            partner.last_error = f"{type(e).__name__}: {e}"[:200]
            log.warning("JWKS fetch for issuer %r failed: %s", cfg.issuer, partner.last_error)
            return
        finally:
            partner.last_attempt = time.monotonic()
            partner.inflight = None
        partner.keyset = _KeySet(keys, time.monotonic())
        partner.last_failed = False
        partner.last_error = ""
        log.info("JWKS for issuer %r: %d usable keys", cfg.issuer, len(keys))
