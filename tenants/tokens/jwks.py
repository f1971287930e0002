"""JWKS documents (ours and partners') read into verification keys, and partners' identity
providers (:class:`PartnerIssuer`) with the state of their fetched key sets."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tenants.model import Tenant, check_id
from tenants.tokens.claims import PARTNER_ALGORITHMS
from tenants.tokens.keys import PURPOSE, jwk_thumbprint

MAX_JWKS_BYTES: Final = 256 * 1024
MAX_JWKS_KEYS: Final = 64
PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


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
            url.scheme == "https" or (url.scheme == "http" and url.hostname in LOOPBACK_HOSTS)
        ):
            raise ValueError(f"partner {self.issuer!r}: jwks_url must be https://")

    @classmethod
    def from_tenant(cls, tenant: Tenant) -> PartnerIssuer | None:
        """The tenant's own identity provider, if it has one (``jwks_url`` and ``issuer``)."""
        if not tenant.jwks_url or not tenant.issuer:
            return None
        return cls(tenant.issuer, tenant.id, tenant.jwks_url, tuple(tenant.algorithms))


@dataclass(frozen=True)
class JwksKey:
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


def parse_jwks(doc: Any, algorithms: Iterable[str], source: str) -> dict[str, JwksKey]:
    """kid -> key, keeping only public signing keys usable with the pinned algorithms."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"{source}: not a JWKS (no 'keys' list)")
    allowed = frozenset(algorithms)
    out: dict[str, JwksKey] = {}
    for jwk in doc["keys"][:MAX_JWKS_KEYS]:
        if not isinstance(jwk, Mapping):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or kid in out:
            continue
        if PRIVATE_JWK_MEMBERS & set(jwk) or jwk.get("use", "sig") != "sig":
            continue  # never accept (or keep) private or encryption keys
        if jwk.get(PURPOSE, "token") != "token":
            continue  # a feedgate gateway's evidence or audit key signs no tokens
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
                out[kid] = JwksKey(jwk_thumbprint(jwk), MappingProxyType(by_alg))
            except ValueError:
                continue
    return out


@dataclass
class KeySet:
    keys: dict[str, JwksKey]
    fetched_at: float  # on the verifier's clock (time.monotonic() unless a test passes one)


@dataclass
class Partner:
    cfg: PartnerIssuer
    keyset: KeySet | None = None
    last_attempt: float = -math.inf  # the verifier's clock at the last fetch attempt
    last_failed: bool = False
    last_error: str = ""
    inflight: asyncio.Task[None] | None = None
