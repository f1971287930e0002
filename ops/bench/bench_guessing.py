#!/usr/bin/env python3
"""Password guessing against one principal, without and with the guessing limits (issue #10.7).

    python ops/bench/bench_guessing.py [--attackers 50] [--sources 20] [--duration 60]

The entry point is the MediaMTX hook (``POST /mediamtx/auth`` with a user and password, served
by the gateway's own handler on a loopback port, with the tenancy's real policy, audit log and
refusal log). RTSP Basic and Digest check passwords through the same ``Policy._password`` and
so within the same limits.

Two phases, ``--before`` seconds (10) and ``--duration`` seconds (60: the limits' window is a
minute):

- **without limits**: the policy's ``GuessLimiter`` replaced by one that never throttles and
  never waits (what the code did before the fix): guesses checked per second for one principal;
- **with the limits** (the defaults: 10 failures a minute per principal and per source, a delay
  doubling from 0.5 s to 4 s): the same attack, ``--attackers`` concurrent guessers spread over
  ``--sources`` claimed client addresses (MediaMTX passes on the viewer's address, ``ip``),
  and the number of guesses whose password was checked at all.

Meanwhile a legitimate client signs in with the right password once a second, from the address
it has signed in from before, and once every 5 s from an address it never used; each phase
prints the p50/p95/max time of those correct sign-ins and how many were refused. The target:
at most 10 guesses checked per minute per principal and per source, and no delay for a correct
sign-in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(HERE), str(REPO)]

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from benchkit.reader import pct  # noqa: E402

from gateway.config import Config, TenancyConfig  # noqa: E402
from gateway.http.mediamtx import mediamtx_handler  # noqa: E402
from gateway.tenancy import Tenancy  # noqa: E402
from tenants.guessing import Verdict  # noqa: E402


class Unlimited:
    """The guessing limiter as it was before the fix: every password checked, no delay."""

    def __init__(self) -> None:
        self.checked_failures = 0
        self.throttled = 0

    def before(self, user: str, source: str, now: float) -> Verdict:
        return Verdict(True)

    def failed(self, user: str, source: str, now: float) -> float:
        self.checked_failures += 1
        return 0.0

    def succeeded(self, user: str, source: str, now: float) -> None:
        pass


SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[tenants]]
id = "police"
name = "Police"
kind = "police"
[[principals]]
id = "vms"
tenant = "police"
name = "Police VMS"
kind = "service"
roles = ["viewer"]
digest_password = "the-right-password"
[[cameras]]
id = "street"
owner = "council"
[[grants]]
id = "police-street"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live"]
"""

HOME = "10.20.0.5"  # the VMS's own address, where it signed in before
NEW = "10.20.0.99"  # an address it never signed in from


async def phase(
    name: str, tenancy: Tenancy, url: str, args: argparse.Namespace, seconds: float
) -> dict[str, Any]:
    limiter = tenancy.policy.guesses
    checked0, throttled0 = limiter.checked_failures, limiter.throttled
    stop = time.monotonic() + seconds
    sent = 0
    legit: dict[str, list[float]] = {HOME: [], NEW: []}
    refused: dict[str, int] = {HOME: 0, NEW: 0}

    async def ask(http: aiohttp.ClientSession, ip: str, password: str) -> bool:
        body = {"ip": ip, "user": "vms", "password": password, "action": "read",
                "path": "street", "protocol": "rtsp"}  # fmt: skip
        async with http.post(url, json=body) as r:
            await r.read()
            return r.status == 200

    async def attacker(http: aiohttp.ClientSession, i: int) -> None:
        nonlocal sent
        n = 0
        while time.monotonic() < stop:
            await ask(http, f"198.51.100.{i % args.sources + 1}", f"guess-{i}-{n}")
            n += 1
            sent += 1

    async def legitimate(http: aiohttp.ClientSession, ip: str, every: float) -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            ok = await ask(http, ip, "the-right-password")
            legit[ip].append(time.perf_counter() - t0)
            refused[ip] += not ok
            await asyncio.sleep(max(0.0, every - (time.perf_counter() - t0)))

    conn = aiohttp.TCPConnector(limit=args.attackers + 4)
    async with aiohttp.ClientSession(connector=conn) as http:
        assert await ask(http, HOME, "the-right-password")  # the VMS signed in here before
        t0 = time.monotonic()
        await asyncio.gather(
            *(attacker(http, i) for i in range(args.attackers)),
            legitimate(http, HOME, 1.0),
            legitimate(http, NEW, 5.0),
        )
        win = time.monotonic() - t0
    checked = limiter.checked_failures - checked0
    print(f"\n{name} ({args.attackers} guessers over {args.sources} addresses, {win:.0f} s):")
    print(f"  guesses sent            {sent:>9,}  ({sent / win:,.1f}/s)")
    print(f"  guesses checked         {checked:>9,}  ({checked / win:,.2f}/s)")
    print(f"  refused unchecked       {limiter.throttled - throttled0:>9,}")
    for ip, what in ((HOME, "from its own address"), (NEW, "from a new address")):
        t = [v * 1000 for v in legit[ip]]
        times = f"p50 {pct(t, 50):6.1f} ms  p95 {pct(t, 95):6.1f} ms  max {max(t):6.1f} ms"
        print(f"  right password {what:<22} n={len(t):<3} refused {refused[ip]:<3} {times}")
    return {"sent": sent, "checked": checked, "window": win}


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-guessing-") as tmp:
        d = Path(tmp)
        (d / "seed.toml").write_text(SEED)
        config = Config(
            data_dir=str(d / "var"),
            tenancy=TenancyConfig(enabled=True, seed=str(d / "seed.toml")),
        )
        tenancy = Tenancy.open(config)
        app = web.Application()
        app.router.add_post("/mediamtx/auth", mediamtx_handler(tenancy))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/mediamtx/auth"
        try:
            limits = tenancy.policy.guesses
            tenancy.policy.guesses = Unlimited()  # type: ignore[assignment]
            before = await phase("without limits", tenancy, url, args, args.before)
            tenancy.policy.guesses = limits
            after = await phase("with the limits", tenancy, url, args, args.duration)
            # Per minute: over the window, or over one minute if the window was shorter (the
            # limits' window is a minute: a shorter run must not be scaled up to one).
            rate = [
                before["checked"] / before["window"] * 60,
                after["checked"] * 60 / max(after["window"], 60.0),
            ]
            print(f"\nguesses checked per minute: {rate[0]:,.0f} -> {rate[1]:,.1f}"
                  f" (target <= 10 per principal and per source)")  # fmt: skip
        finally:
            await runner.cleanup()
            await tenancy.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--attackers", type=int, default=50, help="concurrent guessers")
    ap.add_argument("--sources", type=int, default=20, help="addresses they claim")
    ap.add_argument("--before", type=float, default=10.0, help="seconds without the limits")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds with the limits")
    args = ap.parse_args()
    print("command:", " ".join(["ops/bench/bench_guessing.py", *sys.argv[1:]]))
    print(
        f"cpus: {os.cpu_count()}, started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
    )
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
