"""Claims: what a verified token says, the rules every token must meet, and the refusals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

MAX_TOKEN_BYTES: Final = 8 * 1024
MAX_LIFETIME: Final = timedelta(hours=24)
MIN_TTL: Final = timedelta(seconds=1)
OWN_ALGORITHMS: Final = ("EdDSA",)
PARTNER_ALGORITHMS: Final = frozenset({"EdDSA", "ES256", "ES384", "RS256", "PS256"})
# Clock skew allowed on exp/nbf/iat: enough for unsynchronised clocks, short enough that an
# expired token stops working within seconds (it once worked 30 s on).
DEFAULT_LEEWAY: Final = timedelta(seconds=5)
RESERVED_CLAIMS: Final = frozenset(
    {"iss", "aud", "sub", "tnt", "iat", "nbf", "exp", "jti", "cams", "roles", "purpose"}
)


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


def check_claims(
    p: dict[str, Any],
    digest: bytes,
    partner_tenant: str | None,
    now_ts: float,
    *,
    leeway: float,
    audience: str,
) -> tuple[Claims, float]:
    """Our own rules on a payload whose signature and registered claims PyJWT checked: the
    clock (``iat``, ``nbf``, ``exp`` within ``leeway`` s), the 24 h lifetime, the tenant
    binding (``partner_tenant``: the partner's tenant; None: our own token, which names its
    ``tnt``), ``jti`` and the feedgate claims. Returns the claims and ``exp``."""
    exp = _number(p, "exp")
    iat = _number(p, "iat")
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
    if partner_tenant is None:
        if tnt is None:
            raise TokenError("missing_claim", "token has no 'tnt' claim")
        if not isinstance(tnt, str) or not tnt:
            raise TokenError("malformed", "claim 'tnt' must be a non-empty string")
        tenant = tnt
    else:
        if tnt is not None and tnt != partner_tenant:
            raise TokenError("wrong_tenant", "partner token names another tenant")
        tenant = partner_tenant
    jti = p.get("jti")
    if jti is None and partner_tenant is None:
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
        audience=audience,
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
