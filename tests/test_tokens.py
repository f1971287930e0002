"""Specification tests for tenants.tokens: our EdDSA tokens, partners' tokens, the verify cache.

The attack battery runs against the real PyJWT and, for partners, a real JWKS served over HTTP
by an aiohttp server on 127.0.0.1 that counts its requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from conftest import wait_for
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from loopstall import StallMonitor

from tenants.model import Tenant, TenantKind
from tenants.tokens import (
    Claims,
    PartnerIssuer,
    SigningKey,
    TokenError,
    TokenIssuer,
    TokenVerifier,
    jwk_thumbprint,
)

PARTNER_ISS = "https://idp.met.example"
PARTNER_TENANT = "met"
PARTNER_KID = "met-2024"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forge(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def own_claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "feedgate",
        "aud": "feedgate",
        "sub": "alice",
        "tnt": "westminster",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "roles": ["viewer"],
    }
    for k, v in over.items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


def eddsa(key: SigningKey | Ed25519PrivateKey) -> Callable[[bytes], bytes]:
    private = key.private_key if isinstance(key, SigningKey) else key
    return private.sign


def reason_of(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as info:
        verifier.verify(token)
    assert token not in str(info.value) and token not in repr(info.value)
    return info.value.reason


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def issuer(key: SigningKey) -> TokenIssuer:
    return TokenIssuer([key])


@pytest.fixture
def verifier(issuer: TokenIssuer) -> TokenVerifier:
    return TokenVerifier(issuer)


# --------------------------------------------------------------------------- issuing


def test_issued_token_verifies_to_its_claims(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    token = issuer.issue(
        tenant="westminster",
        subject="alice",
        ttl=timedelta(minutes=5),
        cameras=["cam-2", "cam-1"],
        roles=["viewer", "operator"],
        purpose="incident 4711",
        now=now,
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == issuer.keys[0].kid
    claims = verifier.verify(token)
    assert claims.issuer == "feedgate" and claims.audience == "feedgate"
    assert claims.subject == "alice" and claims.tenant == "westminster"
    assert claims.issued_at == now and claims.expires_at == now + timedelta(minutes=5)
    assert claims.cameras == frozenset({"cam-1", "cam-2"})
    assert claims.roles == frozenset({"viewer", "operator"})
    assert claims.purpose == "incident 4711"
    assert len(claims.token_id) == 32 and int(claims.token_id, 16) >= 0
    assert claims.raw["nbf"] == claims.raw["iat"]
    with pytest.raises(TypeError):
        claims.raw["tnt"] = "other"  # type: ignore[index]


def test_no_cameras_means_any_granted_and_no_purpose_is_none(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    claims = verifier.verify(issuer.issue(tenant="westminster", subject="vms-1"))
    assert claims.cameras is None and claims.roles == frozenset() and claims.purpose is None
    only_none = verifier.verify(issuer.issue(tenant="westminster", subject="b", cameras=[]))
    assert only_none.cameras == frozenset()  # an explicit empty list grants nothing


@pytest.mark.parametrize(
    "ttl", [timedelta(0), timedelta(milliseconds=999), timedelta(hours=24, seconds=1)]
)
def test_ttl_is_bounded_to_one_second_and_a_day(issuer: TokenIssuer, ttl: timedelta) -> None:
    with pytest.raises(ValueError):
        issuer.issue(tenant="westminster", subject="alice", ttl=ttl)


def test_ttl_bounds_themselves_are_allowed(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    for ttl in (timedelta(seconds=1), timedelta(hours=24)):
        verifier.verify(issuer.issue(tenant="westminster", subject="alice", ttl=ttl))


def test_extra_claims_are_carried_but_cannot_override_reserved_ones(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = issuer.issue(tenant="westminster", subject="alice", extra={"case": "C-1"})
    assert verifier.verify(token).raw["case"] == "C-1"
    for name in ("tnt", "exp", "iss", "cams"):
        with pytest.raises(ValueError):
            issuer.issue(tenant="westminster", subject="alice", extra={name: "x"})


def test_issue_refuses_bad_ids_and_naive_now(issuer: TokenIssuer) -> None:
    with pytest.raises(ValueError):
        issuer.issue(tenant="Bad Tenant", subject="alice")
    with pytest.raises(ValueError):
        issuer.issue(tenant="westminster", subject="alice", now=datetime(2025, 1, 1))


# --------------------------------------------------------------------------- keys and JWKS


def test_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert jwk_thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    d = unb64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(d))
    assert key.public_jwk()["x"] == jwk["x"]
    assert key.kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_jwks_publishes_every_key_and_only_public_material() -> None:
    k1, k2 = SigningKey.generate(), SigningKey.generate()
    doc = TokenIssuer([k2, k1]).jwks()
    assert [k["kid"] for k in doc["keys"]] == [k2.kid, k1.kid]
    for jwk in doc["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use", "feedgate_purpose"}
        assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["alg"] == "EdDSA"
        assert "d" not in jwk
    for k in (k1, k2):  # the private scalar appears nowhere
        d = k.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        assert b64(d) not in json.dumps(doc)


def test_key_file_is_created_0600_in_a_0700_dir_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "nested" / "signing.pem"
    key = SigningKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = SigningKey.load_or_create(path)
    assert again.kid == key.kid
    assert [p.name for p in path.parent.iterdir()] == ["signing.pem"]  # no temp files left


def test_key_file_mode_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "k.pem"
        SigningKey.load_or_create(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    with pytest.raises(ValueError):
        SigningKey.load_or_create(path)


# --------------------------------------------------------------------------- attack battery


def _hs256_with_public_key(key: SigningKey, raw: bool) -> str:
    pub = key.private_key.public_key()
    secret = (
        pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if raw
        else pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return forge(
        {"alg": "HS256", "typ": "JWT", "kid": key.kid},
        own_claims(),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )


def _tampered(key: SigningKey) -> str:
    token = forge({"alg": "EdDSA", "kid": key.kid}, own_claims(), eddsa(key))
    header, payload, sig = token.split(".")
    claims = json.loads(unb64(payload))
    claims["tnt"] = "someone-else"
    return f"{header}.{b64json(claims)}.{sig}"


def _oversized(key: SigningKey) -> str:
    return forge({"alg": "EdDSA", "kid": key.kid}, own_claims(pad="x" * 9000), eddsa(key))


def _battery(key: SigningKey) -> list[tuple[str, str, str]]:
    """(name, token, expected reason) for every attack on our own tokens."""
    kid = key.kid
    h = {"alg": "EdDSA", "typ": "JWT", "kid": kid}
    s = eddsa(key)
    now = int(time.time())
    stranger = Ed25519PrivateKey.generate()
    none_token = forge({"alg": "none", "kid": kid}, own_claims(), lambda _: b"")
    return [
        (
            "alg none",
            forge({"alg": "none", "kid": kid}, own_claims(), lambda _: b"x"),
            "alg_not_allowed",
        ),
        ("alg none, empty signature", none_token, "malformed"),
        (
            "alg None, capitalised",
            forge({"alg": "None", "kid": kid}, own_claims(), s),
            "alg_not_allowed",
        ),
        (
            "HS256 keyed with raw public key",
            _hs256_with_public_key(key, raw=True),
            "alg_not_allowed",
        ),
        (
            "HS256 keyed with PEM public key",
            _hs256_with_public_key(key, raw=False),
            "alg_not_allowed",
        ),
        (
            "ES256 header on our key",
            forge({**h, "alg": "ES256"}, own_claims(), s),
            "alg_not_allowed",
        ),
        ("unknown kid", forge({**h, "kid": "nope"}, own_claims(), s), "unknown_kid"),
        ("no kid", forge({"alg": "EdDSA"}, own_claims(), s), "unknown_kid"),
        ("wrong aud", forge(h, own_claims(aud="mediamtx"), s), "wrong_audience"),
        ("wrong iss, our key", forge(h, own_claims(iss="evil"), s), "wrong_issuer"),
        (
            "unknown iss",
            forge({**h, "kid": "k"}, own_claims(iss="evil"), eddsa(stranger)),
            "unknown_issuer",
        ),
        ("missing exp", forge(h, own_claims(exp=None), s), "missing_claim"),
        ("missing iat", forge(h, own_claims(iat=None), s), "missing_claim"),
        ("missing sub", forge(h, own_claims(sub=None), s), "missing_claim"),
        ("missing aud", forge(h, own_claims(aud=None), s), "missing_claim"),
        ("missing iss", forge(h, own_claims(iss=None), s), "missing_claim"),
        ("missing tnt", forge(h, own_claims(tnt=None), s), "missing_claim"),
        (
            "iat in future",
            forge(h, own_claims(iat=now + 3600, nbf=None, exp=now + 4000), s),
            "iat_in_future",
        ),
        ("nbf in future", forge(h, own_claims(nbf=now + 3600), s), "not_yet_valid"),
        ("expired", forge(h, own_claims(iat=now - 7200, nbf=None, exp=now - 3600), s), "expired"),
        ("lifetime over 24 h", forge(h, own_claims(exp=now + 90000), s), "lifetime_too_long"),
        ("exp as string", forge(h, own_claims(exp=str(now + 60)), s), "malformed"),
        ("cams not a list", forge(h, own_claims(cams="cam-1"), s), "malformed"),
        ("tampered payload (tnt changed)", _tampered(key), "bad_signature"),
        ("other key, our kid", forge(h, own_claims(), eddsa(stranger)), "bad_signature"),
        ("truncated signature", forge(h, own_claims(), s)[:-10], "bad_signature"),
        (
            "embedded jwk header",
            forge(
                {**h, "kid": "attacker", "jwk": SigningKey(stranger).public_jwk()},
                own_claims(),
                eddsa(stranger),
            ),
            "unknown_kid",
        ),
        ("oversized", _oversized(key), "malformed"),
        ("garbage", "not.a.token", "malformed"),
        ("two segments", "abc.def", "malformed"),
        ("non-ascii", "\u00e9.\u00e9.\u00e9", "malformed"),
        ("header is a list", b64json([1]) + ".e30.c2ln", "malformed"),
    ]


BATTERY_NAMES = [name for name, _, _ in _battery(SigningKey.generate())]


@pytest.mark.parametrize("name", BATTERY_NAMES)
def test_attack_is_refused_with_its_reason(
    name: str, key: SigningKey, verifier: TokenVerifier
) -> None:
    _, token, reason = next(b for b in _battery(key) if b[0] == name)
    assert reason_of(verifier, token) == reason


async def test_attack_battery_refused_async_without_blocking_the_loop(
    key: SigningKey, verifier: TokenVerifier
) -> None:
    battery = _battery(key)
    async with StallMonitor() as beat:
        for _, token, reason in battery:
            with pytest.raises(TokenError) as info:
                await verifier.verify_async(token)
            assert info.value.reason == reason
            await asyncio.sleep(0)
    assert beat.worst < 0.05, beat
    assert verifier.cache_len == 0  # failures are never cached


def test_oversized_token_is_refused_before_any_decoding(
    key: SigningKey, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded an oversized token")

    monkeypatch.setattr(jwt, "decode", boom)
    monkeypatch.setattr(TokenVerifier, "_peek", staticmethod(boom))
    token = _oversized(key)
    assert len(token) > 8 * 1024
    assert reason_of(verifier, token) == "malformed"


def test_error_messages_and_logs_never_carry_the_token(
    key: SigningKey, verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _, token, _ in _battery(key):
        with pytest.raises(TokenError) as info:
            verifier.verify(token)
        signature = token.rsplit(".", 1)[-1]
        assert token not in str(info.value)
        if len(signature) > 8:
            assert signature not in str(info.value) and signature not in caplog.text


def test_leeway_tolerates_small_clock_skew(key: SigningKey, verifier: TokenVerifier) -> None:
    now = int(time.time())
    h = {"alg": "EdDSA", "kid": key.kid}
    skewed = forge(h, own_claims(iat=now + 3, nbf=now + 3, exp=now + 600), eddsa(key))
    assert verifier.verify(skewed).subject == "alice"
    just_expired = forge(h, own_claims(iat=now - 600, exp=now - 3), eddsa(key))
    assert verifier.verify(just_expired).subject == "alice"
    strict = TokenVerifier(TokenIssuer([key]), leeway=timedelta(0))
    assert reason_of(strict, just_expired) == "expired"


def test_an_expired_token_stops_working_within_seconds(key: SigningKey) -> None:
    """Issue #10: with the old 30 s default an expired token played on for half a minute. The
    default leeway is a few seconds, for clock skew only."""
    verifier = TokenVerifier(TokenIssuer([key]))
    now = int(time.time())
    h = {"alg": "EdDSA", "kid": key.kid}
    expired = forge(h, own_claims(iat=now - 600, exp=now - 10), eddsa(key))
    assert reason_of(verifier, expired) == "expired"
    early = forge(h, own_claims(iat=now + 20, nbf=now + 20, exp=now + 600), eddsa(key))
    assert reason_of(verifier, early) in ("iat_in_future", "not_yet_valid")


def test_explicit_now_drives_every_time_check(issuer: TokenIssuer) -> None:
    verifier = TokenVerifier(issuer, cache_size=0)
    t0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    token = issuer.issue(tenant="westminster", subject="alice", ttl=timedelta(minutes=1), now=t0)
    assert verifier.verify(token, now=t0 + timedelta(seconds=30)).subject == "alice"
    for when, reason in [
        (t0 + timedelta(seconds=66), "expired"),  # 60 s life and the 5 s leeway
        (t0 - timedelta(seconds=6), "iat_in_future"),
    ]:
        with pytest.raises(TokenError) as info:
            verifier.verify(token, now=when)
        assert info.value.reason == reason
    with pytest.raises(ValueError):
        verifier.verify(token, now=datetime(2030, 5, 1, 12, 0))  # naive


# --------------------------------------------------------------------------- rotation and cache


def test_rotation_old_key_still_verifies_and_removed_key_stops(key: SigningKey) -> None:
    issuer = TokenIssuer([key])
    verifier = TokenVerifier(issuer)
    old = issuer.issue(tenant="westminster", subject="alice")
    assert verifier.verify(old).subject == "alice"  # now cached

    new_key = SigningKey.generate()
    issuer.set_keys([new_key, key])  # rotate: new one signs, old one still published
    new = issuer.issue(tenant="westminster", subject="bob")
    assert jwt.get_unverified_header(new)["kid"] == new_key.kid
    assert verifier.verify(old).subject == "alice"
    assert verifier.verify(new).subject == "bob"

    issuer.set_keys([new_key])  # the old key is withdrawn
    assert reason_of(verifier, old) == "unknown_kid"  # the cached verification is gone too
    assert verifier.verify(new).subject == "bob"


def test_verifier_from_our_published_jwks(issuer: TokenIssuer) -> None:
    verifier = TokenVerifier(json.loads(json.dumps(issuer.jwks())))
    token = issuer.issue(tenant="westminster", subject="alice")
    assert verifier.verify(token).tenant == "westminster"
    verifier.set_own_keys({"keys": []})
    assert reason_of(verifier, token) == "unknown_kid"


@dataclass
class DecodeCounter:
    calls: int = 0


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> DecodeCounter:
    counter = DecodeCounter()
    real = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter.calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)  # the module tenants.tokens calls
    return counter


def test_cache_returns_the_same_claims_without_reverifying(
    issuer: TokenIssuer, verifier: TokenVerifier, decodes: DecodeCounter
) -> None:
    token = issuer.issue(tenant="westminster", subject="alice")
    first = verifier.verify(token)  # DESCRIBE
    second = verifier.verify(token)  # SETUP
    third = verifier.verify(token)  # PLAY
    assert first is second is third
    assert decodes.calls == 1


async def test_cache_is_shared_by_sync_and_async_verify(
    issuer: TokenIssuer, verifier: TokenVerifier, decodes: DecodeCounter
) -> None:
    token = issuer.issue(tenant="westminster", subject="alice")
    assert (await verifier.verify_async(token)) is verifier.verify(token)
    assert decodes.calls == 1


def test_cached_token_is_still_refused_once_expired(
    issuer: TokenIssuer, decodes: DecodeCounter
) -> None:
    verifier = TokenVerifier(issuer, leeway=timedelta(seconds=30))
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    token = issuer.issue(tenant="westminster", subject="alice", ttl=timedelta(minutes=2), now=t0)
    verifier.verify(token, now=t0)
    assert verifier.verify(token, now=t0 + timedelta(seconds=149)).subject == "alice"
    with pytest.raises(TokenError) as info:
        verifier.verify(token, now=t0 + timedelta(seconds=151))
    assert info.value.reason == "expired"
    assert decodes.calls == 1  # decided from the cache entry
    with pytest.raises(TokenError) as info:
        verifier.verify(token, now=t0 + timedelta(seconds=151))
    assert info.value.reason == "expired"


def test_failures_are_not_cached_and_cannot_evict_good_entries(
    key: SigningKey, issuer: TokenIssuer, decodes: DecodeCounter
) -> None:
    verifier = TokenVerifier(issuer, cache_size=2)
    good = issuer.issue(tenant="westminster", subject="alice")
    verifier.verify(good)
    stranger = Ed25519PrivateKey.generate()
    for _ in range(100):
        bad = forge({"alg": "EdDSA", "kid": key.kid}, own_claims(), eddsa(stranger))
        assert reason_of(verifier, bad) == "bad_signature"
    assert decodes.calls == 101
    verifier.verify(good)
    assert decodes.calls == 101  # still cached
    assert verifier.cache_len == 1


def test_cache_is_bounded_lru(issuer: TokenIssuer, decodes: DecodeCounter) -> None:
    verifier = TokenVerifier(issuer, cache_size=2)
    a, b, c = (issuer.issue(tenant="westminster", subject=s) for s in ("a", "b", "c"))
    verifier.verify(a)
    verifier.verify(b)
    verifier.verify(a)  # a is now the most recently used
    verifier.verify(c)  # evicts b
    assert verifier.cache_len == 2 and decodes.calls == 3
    verifier.verify(a)
    assert decodes.calls == 3
    verifier.verify(b)
    assert decodes.calls == 4


def test_cache_can_be_disabled(issuer: TokenIssuer, decodes: DecodeCounter) -> None:
    verifier = TokenVerifier(issuer, cache_size=0)
    token = issuer.issue(tenant="westminster", subject="alice")
    verifier.verify(token)
    verifier.verify(token)
    assert decodes.calls == 2 and verifier.cache_len == 0


# --------------------------------------------------------------------------- partners


@dataclass
class FakeClock:
    """The verifier's monotonic clock, moved by the test: JWKS freshness and the refetch
    interval are specified without sleeping past them (a loaded machine can take longer than
    an interval between two lines of a test)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class JwksServer:
    """A partner's identity provider: serves ``doc`` at ``url``, counting requests."""

    url: str = ""
    doc: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    hits: int = 0
    delay: float = 0.0
    status: int = 200


@dataclass
class Partner:
    private: ec.EllipticCurvePrivateKey
    jwk: dict[str, Any]
    cfg: PartnerIssuer

    def token(self, *, kid: str = PARTNER_KID, alg: str = "ES256", **over: Any) -> str:
        claims = own_claims(iss=PARTNER_ISS, tnt=None, jti=None, sub="pc-1234@met")
        claims.update({k: v for k, v in over.items() if v is not None})
        for k in [k for k, v in over.items() if v is None]:
            claims.pop(k, None)
        return jwt.encode(claims, self.private, algorithm=alg, headers={"kid": kid})


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer()

    async def handler(request: web.Request) -> web.StreamResponse:
        server.hits += 1
        if server.delay:
            await asyncio.sleep(server.delay)
        return web.json_response(server.doc, status=server.status)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    try:
        yield server
    finally:
        await runner.cleanup()


def ec_jwk(private: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}


@pytest.fixture
def partner(jwks_server: JwksServer) -> Partner:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ec_jwk(private, PARTNER_KID)
    jwks_server.doc = {"keys": [jwk]}
    cfg = PartnerIssuer(PARTNER_ISS, PARTNER_TENANT, jwks_server.url, ("ES256",))
    return Partner(private, jwk, cfg)


@pytest.fixture
async def pverifier(issuer: TokenIssuer, partner: Partner) -> AsyncIterator[TokenVerifier]:
    verifier = TokenVerifier(issuer, partners=[partner.cfg], http_timeout=1.0)
    try:
        yield verifier
    finally:
        await verifier.aclose()


async def areason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as info:
        await verifier.verify_async(token)
    assert token not in str(info.value)
    return info.value.reason


async def test_partner_es256_token_is_accepted_via_its_jwks(
    pverifier: TokenVerifier, partner: Partner, jwks_server: JwksServer
) -> None:
    claims = await pverifier.verify_async(partner.token(roles=["investigator"]))
    assert claims.issuer == PARTNER_ISS and claims.tenant == PARTNER_TENANT
    assert claims.subject == "pc-1234@met" and claims.roles == frozenset({"investigator"})
    assert claims.token_id.startswith("sha256:")  # the partner sent no jti
    # A second token from the same partner: the JWKS is cached, sync verify works too.
    other = partner.token(jti="abc", tnt=PARTNER_TENANT)
    assert pverifier.verify(other).token_id == "abc"
    assert jwks_server.hits == 1


async def test_partner_token_with_alg_switched_is_refused(
    pverifier: TokenVerifier, partner: Partner
) -> None:
    good = partner.token()
    await pverifier.verify_async(good)
    _, payload, sig = good.split(".")
    rs256 = f"{b64json({'alg': 'RS256', 'kid': PARTNER_KID, 'typ': 'JWT'})}.{payload}.{sig}"
    assert await areason(pverifier, rs256) == "alg_not_allowed"
    pem = partner.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs256 = forge(
        {"alg": "HS256", "kid": PARTNER_KID},
        json.loads(unb64(payload)),
        lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
    )
    assert await areason(pverifier, hs256) == "alg_not_allowed"
    eddsa_token = forge(
        {"alg": "EdDSA", "kid": PARTNER_KID},
        json.loads(unb64(payload)),
        Ed25519PrivateKey.generate().sign,
    )
    assert await areason(pverifier, eddsa_token) == "alg_not_allowed"


async def test_partner_key_is_bound_to_its_own_algorithm(
    issuer: TokenIssuer, partner: Partner, jwks_server: JwksServer
) -> None:
    # Even with two algorithms pinned, an EC key never verifies an RS256 token.
    cfg = PartnerIssuer(PARTNER_ISS, PARTNER_TENANT, jwks_server.url, ("ES256", "RS256"))
    verifier = TokenVerifier(issuer, partners=[cfg])
    try:
        payload = partner.token().split(".")[1]
        token = forge(
            {"alg": "RS256", "kid": PARTNER_KID}, json.loads(unb64(payload)), lambda d: b"s" * 256
        )
        assert await areason(verifier, token) == "alg_not_allowed"
    finally:
        await verifier.aclose()


async def test_partner_token_naming_another_tenant_is_refused(
    pverifier: TokenVerifier, partner: Partner
) -> None:
    assert await areason(pverifier, partner.token(tnt="westminster")) == "wrong_tenant"
    assert (await pverifier.verify_async(partner.token(tnt=PARTNER_TENANT))).tenant == "met"


async def test_partner_token_claims_are_checked_like_ours(
    pverifier: TokenVerifier, partner: Partner
) -> None:
    now = int(time.time())
    assert await areason(pverifier, partner.token(aud="other")) == "wrong_audience"
    assert await areason(pverifier, partner.token(exp=None)) == "missing_claim"
    assert await areason(pverifier, partner.token(iat=now - 999, exp=now - 900)) == "expired"
    assert await areason(pverifier, partner.token(iat=now + 900)) == "iat_in_future"
    assert await areason(pverifier, partner.token(exp=now + 86400 * 2)) == "lifetime_too_long"


async def test_our_key_cannot_sign_for_a_partner(
    pverifier: TokenVerifier, key: SigningKey, partner: Partner
) -> None:
    token = forge({"alg": "EdDSA", "kid": key.kid}, own_claims(iss=PARTNER_ISS), eddsa(key))
    # Our kid routes it to our keys, which sign only for iss "feedgate".
    assert await areason(pverifier, token) == "wrong_issuer"
    es = partner.token(iss="feedgate", tnt="westminster")  # partner key claiming to be us
    assert await areason(pverifier, es) == "alg_not_allowed"


async def test_flood_of_random_kids_costs_one_fetch_and_never_stalls_the_loop(
    pverifier: TokenVerifier, partner: Partner, jwks_server: JwksServer
) -> None:
    flood = [partner.token(kid=secrets.token_urlsafe(12)) for _ in range(1000)]
    good = partner.token()
    async with StallMonitor() as beat:
        reasons: list[str] = []
        for wave in range(20):  # connections arrive over time, 50 at once
            results = await asyncio.gather(
                *(pverifier.verify_async(t) for t in flood[wave * 50 : (wave + 1) * 50]),
                return_exceptions=True,
            )
            reasons += [r.reason for r in results if isinstance(r, TokenError)]
            await asyncio.sleep(0)
        claims = await pverifier.verify_async(good)
    assert reasons == ["unknown_kid"] * 1000
    assert claims.tenant == PARTNER_TENANT
    assert 1 <= jwks_server.hits <= 2
    assert beat.worst < 0.05, beat


async def test_concurrent_first_fetches_are_coalesced(
    pverifier: TokenVerifier, partner: Partner, jwks_server: JwksServer
) -> None:
    jwks_server.delay = 0.1
    tokens = [partner.token(jti=str(i)) for i in range(50)]
    results = await asyncio.gather(*(pverifier.verify_async(t) for t in tokens))
    assert {c.token_id for c in results} == {str(i) for i in range(50)}
    assert jwks_server.hits == 1


async def test_new_partner_kid_is_picked_up_by_a_refetch(
    issuer: TokenIssuer, partner: Partner, jwks_server: JwksServer
) -> None:
    clock = FakeClock()
    verifier = TokenVerifier(issuer, partners=[partner.cfg], refetch_min_interval=0.2, clock=clock)
    try:
        await verifier.verify_async(partner.token())
        rotated = ec.generate_private_key(ec.SECP256R1())
        jwks_server.doc = {"keys": [partner.jwk, ec_jwk(rotated, "met-2025")]}
        claims = own_claims(iss=PARTNER_ISS, tnt=None)
        token = jwt.encode(claims, rotated, algorithm="ES256", headers={"kid": "met-2025"})
        # Within refetch_min_interval of the last fetch an unknown kid is just unknown.
        clock.now += 0.19
        assert await areason(verifier, token) == "unknown_kid"
        assert jwks_server.hits == 1
        clock.now += 0.02
        assert (await verifier.verify_async(token)).tenant == PARTNER_TENANT
        assert jwks_server.hits == 2
    finally:
        await verifier.aclose()


async def test_removed_partner_key_stops_cached_tokens_after_jwks_ttl(
    issuer: TokenIssuer, partner: Partner, jwks_server: JwksServer, decodes: DecodeCounter
) -> None:
    clock = FakeClock()
    verifier = TokenVerifier(issuer, partners=[partner.cfg], jwks_ttl=0.2, clock=clock)
    try:
        token = partner.token()
        await verifier.verify_async(token)
        clock.now += 0.19
        await verifier.verify_async(token)
        assert decodes.calls == 1
        assert jwks_server.hits == 1
        jwks_server.doc = {"keys": []}  # the partner withdraws its key
        clock.now += 0.02
        assert await areason(verifier, token) == "unknown_kid"
        assert jwks_server.hits == 2
    finally:
        await verifier.aclose()


async def test_sync_verify_needs_a_cached_partner_jwks(
    pverifier: TokenVerifier, partner: Partner, jwks_server: JwksServer
) -> None:
    token = partner.token()
    assert reason_of(pverifier, token) == "jwks_unavailable"
    assert jwks_server.hits == 0  # sync verify never does I/O
    await pverifier.verify_async(partner.token(jti="warm-up"))
    assert pverifier.verify(token).tenant == PARTNER_TENANT


async def test_partner_jwks_server_down_is_a_clear_fast_error(
    issuer: TokenIssuer, partner: Partner
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg = PartnerIssuer(
        PARTNER_ISS, PARTNER_TENANT, f"http://127.0.0.1:{port}/jwks.json", ("ES256",)
    )
    # Fast: a refused connection fails as such, it does not wait out the HTTP timeout (an hour
    # here, so the bound below holds however loaded the machine is, and fails if it waits).
    verifier = TokenVerifier(issuer, partners=[cfg], http_timeout=3600.0, clock=FakeClock())
    fetches = 0
    fetch = verifier._do_fetch

    async def counted(p: Any) -> None:
        nonlocal fetches
        fetches += 1
        await fetch(p)

    verifier._do_fetch = counted  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(60):
            assert await areason(verifier, partner.token()) == "jwks_unavailable"
            # Right after a failed fetch, further tokens fail at once without another attempt.
            assert await areason(verifier, partner.token(jti="2")) == "jwks_unavailable"
        assert fetches == 1
    finally:
        await verifier.aclose()


async def test_hanging_jwks_server_times_out_and_known_kids_verify_meanwhile(
    issuer: TokenIssuer, partner: Partner, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = TokenVerifier(
        issuer, partners=[partner.cfg], http_timeout=0.3, refetch_min_interval=0.0
    )
    try:
        known = partner.token()
        await verifier.verify_async(known)  # the partner's JWKS is cached
        # Now its identity provider hangs (for an hour: only the HTTP timeout can end the wait).
        jwks_server.delay = 3600.0
        unknown = partner.token(kid="met-rotated")
        async with StallMonitor() as beat:
            refetch = asyncio.create_task(areason(verifier, unknown))
            await wait_for(lambda: jwks_server.hits == 2, 30, what="the refetch to hang")
            # While that refetch hangs, a token with a known kid verifies from the cache.
            assert not refetch.done()
            assert verifier.verify(known).tenant == PARTNER_TENANT
            assert (await verifier.verify_async(partner.token(jti="2"))).tenant == PARTNER_TENANT
            assert not refetch.done()
            # The hung refetch ends by the HTTP timeout (waiting the hour out fails here).
            async with asyncio.timeout(60):
                assert await refetch == "jwks_unavailable"
        assert beat.worst < 0.05, beat
        assert "JWKS fetch" in caplog.text and "Timeout" in caplog.text
        assert unknown not in caplog.text
    finally:
        await verifier.aclose()


async def test_a_hanging_first_jwks_fetch_times_out(
    issuer: TokenIssuer, partner: Partner, jwks_server: JwksServer
) -> None:
    jwks_server.delay = 3600.0  # only the HTTP timeout can end the wait
    verifier = TokenVerifier(issuer, partners=[partner.cfg], http_timeout=0.3)
    try:
        async with StallMonitor() as beat, asyncio.timeout(60):
            assert await areason(verifier, partner.token()) == "jwks_unavailable"
        assert beat.worst < 0.05, beat
    finally:
        await verifier.aclose()


async def test_bad_jwks_responses_are_unavailable(
    pverifier: TokenVerifier, partner: Partner, jwks_server: JwksServer
) -> None:
    jwks_server.status = 500
    assert await areason(pverifier, partner.token()) == "jwks_unavailable"


async def test_private_and_symmetric_keys_in_a_jwks_are_ignored(
    issuer: TokenIssuer, partner: Partner, jwks_server: JwksServer
) -> None:
    private_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(partner.private))
    assert "d" in private_jwk
    jwks_server.doc = {
        "keys": [
            {**private_jwk, "kid": PARTNER_KID, "alg": "ES256"},
            {"kty": "oct", "k": b64(b"secret"), "kid": "hmac", "alg": "HS256"},
        ]
    }
    verifier = TokenVerifier(issuer, partners=[partner.cfg])
    try:
        assert await areason(verifier, partner.token()) == "unknown_kid"
    finally:
        await verifier.aclose()


async def test_removed_partner_is_no_longer_trusted(
    pverifier: TokenVerifier, partner: Partner
) -> None:
    token = partner.token()
    await pverifier.verify_async(token)
    pverifier.set_partners([])
    assert await areason(pverifier, token) == "unknown_issuer"


def test_partner_issuer_accepts_only_asymmetric_algorithms_and_https() -> None:
    url = "https://idp.example/jwks.json"
    for algs in [("HS256",), ("none",), ("ES256", "HS512"), ()]:
        with pytest.raises(ValueError):
            PartnerIssuer("https://idp.example", "met", url, algs)
    for bad_url in ["http://idp.example/jwks.json", "file:///etc/passwd", "jwks.json"]:
        with pytest.raises(ValueError):
            PartnerIssuer("https://idp.example", "met", bad_url, ("ES256",))
    ok = PartnerIssuer(
        "https://idp.example", "met", url, ("EdDSA", "ES256", "ES384", "RS256", "PS256")
    )
    assert ok.algorithms[0] == "EdDSA"


def test_partner_issuer_from_tenant() -> None:
    plain = Tenant("westminster", "Westminster", TenantKind.COUNCIL)
    assert PartnerIssuer.from_tenant(plain) is None
    met = Tenant(
        "met",
        "Met Police",
        TenantKind.POLICE,
        jwks_url="https://idp.met.example/jwks",
        issuer="https://idp.met.example",
        algorithms=("ES256",),
    )
    assert PartnerIssuer.from_tenant(met) == PartnerIssuer(
        "https://idp.met.example", "met", "https://idp.met.example/jwks", ("ES256",)
    )


def test_a_partner_cannot_claim_our_issuer(issuer: TokenIssuer) -> None:
    cfg = PartnerIssuer("feedgate", "met", "https://idp.example/jwks", ("ES256",))
    with pytest.raises(ValueError):
        TokenVerifier(issuer, partners=[cfg])


def test_claims_are_values(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    claims = verifier.verify(issuer.issue(tenant="westminster", subject="alice"))
    assert isinstance(claims, Claims)
    assert hash(claims) == hash(claims) and claims == claims
