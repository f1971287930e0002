"""Token verification benchmark: feedgate's TokenVerifier against raw PyJWT, on one core.

    python ops/bench/bench_tokens.py [--seconds 2.5] [--json out.json]

Cases, all on the same EdDSA token issued by ``TokenIssuer``:

* ``pyjwt.decode (peer)``: ``jwt.decode`` with the key, the pinned algorithm, audience, issuer
  and the required claims, as the reference figure;
* ``verify, cold``: ``TokenVerifier.verify`` with the cache off (every call verifies the
  signature and all claims, plus routing, our own checks and building ``Claims``);
* ``verify, cached``: the RTSP case (DESCRIBE, SETUP, PLAY, reconnects): an LRU hit still checks
  ``exp`` and that the key is still published.

Each case runs for ``--seconds`` in total, in ``--rounds`` interleaved slices after a warm-up,
so load from elsewhere on the machine hits every case alike; latency is measured per call.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cryptography
import jwt

from tenants.tokens import SigningKey, TokenIssuer, TokenVerifier


def measure(
    cases: dict[str, Callable[[], object]], seconds: float, rounds: int
) -> list[dict[str, Any]]:
    """Interleaved rounds (so drift from other load hits every case alike), then pooled."""
    samples: dict[str, list[int]] = {name: [] for name in cases}
    busy: dict[str, int] = dict.fromkeys(cases, 0)
    clock = time.perf_counter_ns
    for fn in cases.values():
        for _ in range(200):  # warm-up
            fn()
    for _ in range(rounds):
        for name, fn in cases.items():
            out = samples[name]
            deadline = clock() + int(seconds / rounds * 1e9)
            gc.disable()
            try:
                start = clock()
                while True:
                    t0 = clock()
                    fn()
                    t1 = clock()
                    out.append(t1 - t0)
                    if t1 >= deadline:
                        break
                busy[name] += clock() - start
            finally:
                gc.enable()
    results = []
    for name, xs in samples.items():
        xs.sort()
        n = len(xs)
        results.append(
            {
                "case": name,
                "calls": n,
                "per_s": n / (busy[name] / 1e9),
                "p50_us": xs[n // 2] / 1e3,
                "p99_us": xs[min(n - 1, int(n * 0.99))] / 1e3,
                "mean_us": statistics.fmean(xs) / 1e3,
            }
        )
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.5, help="measuring time per case")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds per case")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(0, {cpu})  # one core

    key = SigningKey.generate()
    issuer = TokenIssuer([key])
    token = issuer.issue(
        tenant="westminster", subject="vms-1", cameras=["cam-1", "cam-2"], roles=["viewer"]
    )
    cold = TokenVerifier(issuer, cache_size=0)
    cached = TokenVerifier(issuer)
    pyjwk = jwt.PyJWK(key.public_jwk())
    options: Any = {"require": ["exp", "iat", "aud", "iss", "sub"]}

    def raw() -> dict[str, Any]:
        return jwt.decode(
            token,
            key=pyjwk,
            algorithms=["EdDSA"],
            audience="feedgate",
            issuer="feedgate",
            leeway=30,
            options=options,
        )

    assert raw()["tnt"] == cold.verify(token).tenant == cached.verify(token).tenant

    results = measure(
        {
            "pyjwt.decode (peer)": raw,
            "verify, cold (no cache)": lambda: cold.verify(token),
            "verify, cached": lambda: cached.verify(token),
        },
        args.seconds,
        args.rounds,
    )
    peer = results[0]

    print(
        f"EdDSA token of {len(token)} bytes; Python {platform.python_version()}, "
        f"PyJWT {jwt.__version__}, cryptography {cryptography.__version__}; "
        f"one core, {args.seconds:g} s per case"
    )
    print()
    head = f"{'case':<26}{'verif/s':>11}{'p50 µs':>10}{'p99 µs':>10}{'p50 vs peer':>13}"
    print(head)
    print("-" * len(head))
    for r in results:
        ratio = r["p50_us"] / peer["p50_us"]
        print(
            f"{r['case']:<26}{r['per_s']:>11,.0f}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}"
            f"{ratio:>12.2f}x"
        )
    overhead = results[1]["p50_us"] - peer["p50_us"]
    print()
    print(
        f"cold verify overhead over pyjwt.decode (p50): {overhead:+.1f} µs per call "
        f"({overhead / peer['p50_us'] * 100:+.0f}%); "
        f"cached is {results[1]['p50_us'] / results[2]['p50_us']:.0f}x faster than cold (p50)"
    )
    if args.json:
        args.json.write_text(json.dumps({"token_bytes": len(token), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
