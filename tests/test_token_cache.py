"""The verifier's cache of checked tokens holds the tokens in use, not every token it has seen:
a soak of reconnecting viewers, each with a fresh token, grew the gateway's memory by ~2.3 KB per
token until the cache was full (10,000 tokens)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tenants.tokens import SigningKey, TokenIssuer, TokenVerifier


def test_expired_tokens_leave_the_cache_as_new_ones_arrive() -> None:
    issuer = TokenIssuer([SigningKey.generate()])
    verifier = TokenVerifier(issuer, leeway=timedelta(seconds=5))
    t0 = datetime.now(UTC)
    for i in range(50):  # 50 viewers an hour ago, each token good for a minute
        token = issuer.issue(tenant="t", subject=f"p{i}", ttl=timedelta(minutes=1), now=t0)
        verifier.verify(token, now=t0)
    assert verifier.cache_len == 50
    later = t0 + timedelta(hours=1)
    for i in range(10):  # ten reconnect with fresh tokens
        token = issuer.issue(tenant="t", subject=f"q{i}", ttl=timedelta(minutes=1), now=later)
        verifier.verify(token, now=later)
    assert verifier.cache_len == 10  # the 50 expired ones are gone, 8 per new token at most


def test_a_long_lived_token_does_not_keep_expired_ones_behind_it() -> None:
    # A partner's token good for two hours is checked first, then 50 viewers' one-minute
    # tokens: half an hour later the 50 must be leaving as fresh tokens arrive, although the
    # oldest entry (the partner's) is still valid.
    issuer = TokenIssuer([SigningKey.generate()])
    verifier = TokenVerifier(issuer, leeway=timedelta(seconds=5))
    t0 = datetime.now(UTC)
    verifier.verify(issuer.issue(tenant="t", subject="partner", ttl=timedelta(hours=2), now=t0))
    for i in range(50):
        token = issuer.issue(tenant="t", subject=f"p{i}", ttl=timedelta(minutes=1), now=t0)
        verifier.verify(token, now=t0)
    later = t0 + timedelta(minutes=30)
    for i in range(10):
        token = issuer.issue(tenant="t", subject=f"q{i}", ttl=timedelta(minutes=1), now=later)
        verifier.verify(token, now=later)
    assert verifier.cache_len == 11  # the partner's and the 10 fresh ones
