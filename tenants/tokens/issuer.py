"""Signing our tokens, and publishing our keys as a JWKS."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from tenants.model import check_id
from tenants.tokens.claims import MAX_LIFETIME, MIN_TTL, RESERVED_CLAIMS
from tenants.tokens.keys import SigningKey


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
            clash = RESERVED_CLAIMS & set(extra)
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
