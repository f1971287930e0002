"""Verifying our tokens and partners' tokens (see :mod:`tenants.tokens`)."""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
import jwt
from jwt.types import Options

from tenants.tokens.claims import (
    DEFAULT_LEEWAY,
    MAX_TOKEN_BYTES,
    OWN_ALGORITHMS,
    Claims,
    TokenError,
    check_claims,
)
from tenants.tokens.issuer import TokenIssuer
from tenants.tokens.jwks import (
    MAX_JWKS_BYTES,
    JwksKey,
    KeySet,
    Partner,
    PartnerIssuer,
    parse_jwks,
)
from tenants.tokens.keys import SigningKey, b64url_decode

log = logging.getLogger(__name__)

DEFAULT_HTTP_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class _Entry:
    claims: Claims
    exp: float
    partner: PartnerIssuer | None  # None: our own token
    kid: str
    alg: str
    thumbprint: str


class _NeedFetch(Exception):  # internal control flow, not an error
    def __init__(self, partner: Partner, why: str) -> None:
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
        clock: Callable[[], float] = time.monotonic,
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
        # What JWKS freshness and the refetch interval are measured on: monotonic seconds
        # (a test passes its own clock, so a slow machine cannot move an interval past it).
        self._clock = clock
        self._http = http
        self._own_http = False
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._own_source: TokenIssuer | None = None
        self._own_seen: tuple[SigningKey, ...] | None = None
        self._own_keys: dict[str, JwksKey] = {}
        self.own_issuer = own_issuer
        self.set_own_keys(issuer, own_issuer=own_issuer)
        self._partners: dict[str, Partner] = {}
        self.set_partners(partners)
        # With an explicit `now`, PyJWT's own clock checks are off (it has no clock parameter)
        # and ours, in check_claims, decide alone; with the real clock both run.
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
            self._own_keys = parse_jwks(issuer, OWN_ALGORITHMS, "own JWKS")
            if own_issuer is not None:
                self.own_issuer = own_issuer
        if self.own_issuer in getattr(self, "_partners", {}):
            raise ValueError(f"issuer {self.own_issuer!r} is ours and a partner's")

    def set_partners(self, partners: Iterable[PartnerIssuer]) -> None:
        """Replace the partner list; a partner whose configuration is unchanged keeps its keys."""
        new: dict[str, Partner] = {}
        for cfg in partners:
            if cfg.issuer in new:
                raise ValueError(f"partner issuer {cfg.issuer!r} listed twice")
            if cfg.issuer == self.own_issuer:
                raise ValueError(f"partner issuer {cfg.issuer!r} is our own issuer")
            old = getattr(self, "_partners", {}).get(cfg.issuer)
            new[cfg.issuer] = old if old is not None and old.cfg == cfg else Partner(cfg)
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
        partner: Partner | None = None
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

        claims, exp = check_claims(
            verified,
            digest,
            None if cfg is None else cfg.tenant,
            now_ts,
            leeway=self.leeway,
            audience=self.audience,
        )
        if self.cache_size:
            self._cache[digest] = _Entry(claims, exp, cfg, kid, alg, key.thumbprint)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self._drop_expired(now_ts)
        return claims

    def _drop_expired(self, now_ts: float, at_most: int = 8) -> None:
        """Look at a few tokens at the least recently used end: drop the expired ones, send the
        rest to the back. So the cache holds the tokens in use rather than every token seen
        until it is full (a long run of reconnecting viewers, each with a fresh token, grew it
        by ~2.3 KB a token), even when a longer-lived token sits at that end: stopping at it
        kept every expired token behind it for as long as it lived."""
        cache = self._cache
        for _ in range(min(at_most, len(cache))):
            digest, entry = next(iter(cache.items()))
            if entry.exp > now_ts - self.leeway:
                cache.move_to_end(digest)
            else:
                del cache[digest]

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
            value = json.loads(b64url_decode(segment))
        except (ValueError, binascii.Error, RecursionError):
            raise TokenError("malformed", "token header or payload is not base64url JSON") from None
        if not isinstance(value, dict):
            raise TokenError("malformed", "token header and payload must be JSON objects")
        return value

    def _current_own_keys(self) -> dict[str, JwksKey]:
        src = self._own_source
        if src is not None and src.keys is not self._own_seen:
            self._refresh_own()
        return self._own_keys

    def _refresh_own(self) -> None:
        assert self._own_source is not None
        self._own_seen = self._own_source.keys
        self._own_keys = parse_jwks(self._own_source.jwks(), OWN_ALGORITHMS, "own keys")

    def _fresh(self, partner: Partner) -> bool:
        ks = partner.keyset
        return ks is not None and self._clock() - ks.fetched_at < self.jwks_ttl

    def _partner_keys(self, partner: Partner, kid: str | None) -> dict[str, JwksKey]:
        """The partner's cached keys, or _NeedFetch / TokenError when they cannot be used.

        ``kid`` not None and unknown: a refetch is asked for, at most once per
        ``refetch_min_interval``; otherwise the (fresh) cached keys are returned as they are.
        """
        mono = self._clock()
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

    async def _fetch(self, partner: Partner) -> bool:
        """Fetch the partner's JWKS once for every concurrent caller; True on success."""
        task = partner.inflight
        if task is None or task.done():
            partner.last_attempt = self._clock()
            task = asyncio.get_running_loop().create_task(self._do_fetch(partner))
            partner.inflight = task
        await asyncio.shield(task)
        return not partner.last_failed

    async def _do_fetch(self, partner: Partner) -> None:
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
            keys = parse_jwks(json.loads(body), cfg.algorithms, cfg.jwks_url)
        except (httpx.HTTPError, ValueError, RecursionError) as e:
            partner.last_failed = True
            partner.last_error = f"{type(e).__name__}: {e}"[:200]
            log.warning("JWKS fetch for issuer %r failed: %s", cfg.issuer, partner.last_error)
            return
        finally:
            partner.last_attempt = self._clock()
            partner.inflight = None
        partner.keyset = KeySet(keys, self._clock())
        partner.last_failed = False
        partner.last_error = ""
        log.info("JWKS for issuer %r: %d usable keys", cfg.issuer, len(keys))
