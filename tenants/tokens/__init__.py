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

This package imports no other feedgate package (only ``tenants.model``). Its modules:
``claims`` (the rules and refusals), ``keys`` (our Ed25519 keys), ``issuer``, ``jwks`` (key sets
and partners' providers), ``verifier``.
"""

from __future__ import annotations

from tenants.tokens.claims import (
    DEFAULT_LEEWAY,
    MAX_LIFETIME,
    MAX_TOKEN_BYTES,
    MIN_TTL,
    OWN_ALGORITHMS,
    PARTNER_ALGORITHMS,
    Claims,
    TokenError,
)
from tenants.tokens.issuer import TokenIssuer
from tenants.tokens.jwks import PartnerIssuer
from tenants.tokens.keys import SigningKey, jwk_thumbprint
from tenants.tokens.verifier import TokenVerifier

__all__ = [
    "DEFAULT_LEEWAY",
    "MAX_LIFETIME",
    "MAX_TOKEN_BYTES",
    "MIN_TTL",
    "OWN_ALGORITHMS",
    "PARTNER_ALGORITHMS",
    "Claims",
    "PartnerIssuer",
    "SigningKey",
    "TokenError",
    "TokenIssuer",
    "TokenVerifier",
    "jwk_thumbprint",
]
