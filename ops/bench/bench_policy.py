"""Token verification + policy decision: decisions per second on one core, and latency.

    python ops/bench/bench_policy.py [--seconds 3]

Three cases, each the whole `Policy.authorize(AccessRequest)` an RTSP DESCRIBE/SETUP/PLAY makes:
- repeat token: the same token again (RTSP presents it on DESCRIBE, SETUP, PLAY, reconnects),
  served from the verified-token cache;
- fresh token: every decision verifies a new EdDSA signature;
- denied: a token for a camera the tenant has no grant on.
The peer figure in the same run is bare `jwt.decode` of one EdDSA token with the same checks.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tenants.db import Database
from tenants.model import Camera, Grant, Principal, Right, Role, Tenant, TenantKind
from tenants.policy import AccessRequest, Action, Policy
from tenants.store import TenantStore
from tenants.tokens import SigningKey, TokenIssuer, TokenVerifier


def build(tmp: Path) -> tuple[Policy, TokenIssuer]:
    store = TenantStore(Database.open(f"sqlite:///{tmp}/bench.db"))
    store.put_tenant(Tenant("council", "Council", TenantKind.COUNCIL))
    for i in range(50):
        store.put_tenant(Tenant(f"partner{i}", f"Partner {i}", TenantKind.RETAIL))
        store.put_principal(
            Principal(f"user{i}", f"partner{i}", "User", roles=frozenset({Role.VIEWER}))
        )
    for c in range(1000):
        store.put_camera(Camera(f"cam{c}", "council", tags=frozenset({f"zone{c % 20}"})))
    for i in range(50):
        store.put_grant(
            Grant(
                f"g{i}",
                "council",
                f"partner{i}",
                camera_tags=frozenset({f"zone{i % 20}"}),
                rights=frozenset({Right.LIVE}),
            )
        )
    issuer = TokenIssuer([SigningKey.generate()])
    verifier = TokenVerifier(issuer)
    policy = Policy(store, verifier)
    policy.reload(force=True)
    return policy, issuer


def pct(samples: list[float], p: float) -> float:
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * p))]


async def run_case(policy: Policy, make_req, seconds: float) -> tuple[float, list[float]]:
    lat: list[float] = []
    start = time.process_time()
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        req = make_req(n)
        t0 = time.perf_counter()
        await policy.authorize(req)
        lat.append(time.perf_counter() - t0)
        n += 1
    cpu = time.process_time() - start
    return n / cpu, lat


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy, issuer = build(Path(tmp))
        ok_token = issuer.issue(
            tenant="partner3", subject="user3", roles=["viewer"], ttl=timedelta(hours=1)
        )
        fresh = [
            issuer.issue(
                tenant="partner3", subject="user3", roles=["viewer"], ttl=timedelta(hours=1)
            )
            for _ in range(20000)
        ]
        cases = {
            "repeat token (cached verify)": lambda n: AccessRequest(
                Action.LIVE, "rtsp", camera="cam3", token=ok_token
            ),
            "fresh token (EdDSA verify)": lambda n: AccessRequest(
                Action.LIVE, "rtsp", camera="cam3", token=fresh[n % len(fresh)]
            ),
            "denied (no grant), cached": lambda n: AccessRequest(
                Action.LIVE, "rtsp", camera="cam4", token=ok_token
            ),
        }
        rows = []
        for name, make in cases.items():
            if "fresh" in name:
                policy.verifier.cache_clear()
            rate, lat = await run_case(policy, make, args.seconds)
            rows.append((name, rate, pct(lat, 0.5) * 1e6, pct(lat, 0.99) * 1e6))
        # Peer: bare PyJWT decode of one token, same algorithm and required claims.
        key = issuer.keys[0].private_key.public_key()
        n, lat = 0, []
        start = time.process_time()
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            jwt.decode(
                ok_token,
                key,
                algorithms=["EdDSA"],
                audience="feedgate",
                issuer="feedgate",
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
            )
            lat.append(time.perf_counter() - t0)
            n += 1
        rows.append(
            (
                "peer: bare jwt.decode",
                n / (time.process_time() - start),
                pct(lat, 0.5) * 1e6,
                pct(lat, 0.99) * 1e6,
            )
        )
    print(f"{'case':<32} {'decisions/s/core':>17} {'p50 µs':>9} {'p99 µs':>9}")
    for name, rate, p50, p99 in rows:
        print(f"{name:<32} {rate:>17,.0f} {p50:>9.1f} {p99:>9.1f}")
    _ = statistics


if __name__ == "__main__":
    asyncio.run(main())
