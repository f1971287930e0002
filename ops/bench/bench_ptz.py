#!/usr/bin/env python3
"""PTZ through the gateway: what the gateway adds to a move, and how fast locks are decided.

    flock /work/tools/bench.lock python ops/bench/bench_ptz.py [--moves 400]

Three processes on loopback: the FAKE ONVIF camera (``python -m ops.fakes.onvif_camera``), one
``feedgate serve`` (tenancy on, the camera steered through that fake, every move decided by the
policy, the lock arbiter and audited), and this script as the client. Moves alternate, one at a
time, between

- **direct**: an AbsoluteMove sent straight to the fake by the gateway's own ONVIF client
  (``gateway.ptz.client.OnvifClient``, i.e. onvif-zeep-async with one kept connection), and
- **through**: ``POST /v1/cameras/cam/ptz/move`` to the gateway with a bearer token (one kept
  HTTP connection), which verifies the token, asks the policy, claims the lock, sends the same
  AbsoluteMove with the same client and appends the audit entry,

so drift on a shared machine hits both alike. It prints p50/p95/max of each and of the added
latency (through - direct, from the two percentiles), against the target of < 5 ms added.

Then the lock decisions per second of the arbiter (``gateway.ptz.arbiter.CameraArbiter``, the
sans-I/O state machine behind every move) and of the in-process lock store around it: the
holder's repeated moves (a joystick), a lower priority refused, and two claimants alternately
preempting each other. The per-principal move rate limit is raised in the benchmark's config
(``ptz.move_rate``) so that it does not refuse the benchmark's own moves.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(HERE), str(REPO)]

import aiohttp  # noqa: E402
from benchkit.procs import Procs, pick_port, wait_log_line, wait_tcp  # noqa: E402
from benchkit.reader import pct  # noqa: E402

from gateway.ptz.arbiter import ArbiterSettings, CameraArbiter, Claimant  # noqa: E402
from gateway.ptz.client import OnvifClient, OnvifEndpoint, load_wsdls  # noqa: E402
from gateway.ptz.locks import LocalLockStore  # noqa: E402
from gateway.ptz.model import check_move  # noqa: E402

SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[principals]]
id = "operator"
tenant = "council"
name = "Operator"
roles = ["operator", "viewer"]
[[cameras]]
id = "cam"
owner = "council"
"""


def config(d: Path, rtsp: int, http: int, onvif: int) -> Path:
    (d / "seed.toml").write_text(SEED)
    cfg = d / "feedgate.toml"
    cfg.write_text(
        f'data_dir = "{d / "var"}"\n'
        f'[rtsp]\nhost = "127.0.0.1"\nport = {rtsp}\nrtp_port = 0\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n'
        "[grpc]\nport = 0\n"
        f'[tenancy]\nenabled = true\nseed = "{d / "seed.toml"}"\n'
        "[ptz]\nmove_rate = 100000.0\nmove_burst = 10000\nreturn_after = 0\n"
        f'[[cameras]]\nid = "cam"\nsource = "push"\nonvif = "http://127.0.0.1:{onvif}"\n'
        'onvif_username = "admin"\nonvif_password = "fake-camera"\n'
    )
    return cfg


def issue_token(cfg: Path) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", "token", "issue", "--local", "--config",
           str(cfg), "--tenant", "council", "--subject", "operator", "--role", "operator",
           "--ttl", "3600"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
    return r.stdout.strip().splitlines()[-1]


def summary(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name:<24} p50 {pct(ms, 50):7.2f} ms  p95 {pct(ms, 95):7.2f} ms"
        f"  max {max(ms):7.2f} ms  (n={len(ms)})"
    )


async def latency(args: argparse.Namespace, http_port: int, onvif_port: int, token: str) -> None:
    await load_wsdls()
    direct = OnvifClient(
        OnvifEndpoint.parse(f"http://127.0.0.1:{onvif_port}", "admin", "fake-camera"), timeout=5
    )
    url = f"http://127.0.0.1:{http_port}/v1/cameras/cam/ptz/move"
    headers = {"Authorization": f"Bearer {token}"}
    d_times: list[float] = []
    g_times: list[float] = []
    async with aiohttp.ClientSession() as http:
        for i in range(args.warmup + args.moves):
            pan = 0.5 if i % 2 else -0.5
            t0 = time.perf_counter()
            await direct.move(check_move("absolute", pan, 0.1, 0.2))
            t1 = time.perf_counter()
            body = {"kind": "absolute", "pan": -pan, "tilt": 0.1, "zoom": 0.2}
            async with http.post(url, json=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    sys.exit(f"move through the gateway: {r.status} {await r.text()}")
            t2 = time.perf_counter()
            if i >= args.warmup:
                d_times.append(t1 - t0)
                g_times.append(t2 - t1)
    await direct.close()
    print(summary("direct to the fake", d_times))
    print(summary("through the gateway", g_times))
    added50 = (pct(g_times, 50) - pct(d_times, 50)) * 1000  # type: ignore[operator]
    added95 = (pct(g_times, 95) - pct(d_times, 95)) * 1000  # type: ignore[operator]
    print(
        f"added by the gateway      p50 {added50:7.2f} ms  p95 {added95:7.2f} ms  (target < 5 ms)"
    )
    ratio = pct(g_times, 50) / pct(d_times, 50)  # type: ignore[operator]
    print(f"through / direct, p50     x{ratio:.2f}")


def decisions(n: int) -> None:
    police = Claimant("police", "police", "officer", 30000)
    council = Claimant("council", "council", "operator", 20000)
    guard = Claimant("shop", "retail", "guard", 1000)
    settings = ArbiterSettings(move_rate=1e9, move_burst=10**9, return_after=0)

    def run(name: str, step: object) -> None:
        t0 = time.perf_counter()
        step()  # type: ignore[operator]
        dt = time.perf_counter() - t0
        print(f"{name:<44} {n / dt:>10,.0f} decisions/s  ({dt / n * 1e6:.2f} us each)")

    a = CameraArbiter("cam", settings)
    now = 1_000_000.0

    def holder() -> None:
        for i in range(n):
            assert a.claim(council, now + i * 1e-3).allowed

    run("arbiter: the holder moves again", holder)
    b = CameraArbiter("cam", settings)
    b.claim(council, now)

    def refused() -> None:
        for i in range(n):
            assert not b.claim(guard, now + i * 1e-6).allowed

    run("arbiter: a lower priority is refused", refused)
    c = CameraArbiter("cam", settings)
    lo = [Claimant("council", "council", f"op{i % 2}", 20000 + i % 2) for i in range(2)]

    def preempt() -> None:
        # police and the council alternate: every second claim preempts the holder
        for i in range(n):
            c.claim(police if i % 2 else lo[0], now + i * 1e-6)

    run("arbiter: higher and lower alternate", preempt)
    store = LocalLockStore(lambda camera: settings)

    async def via_store() -> None:
        for i in range(n):
            await store.claim(f"cam{i % 100}", council, now + i * 1e-3)

    run("lock store (async, 100 cameras): holder", lambda: asyncio.run(via_store()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--moves", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--decisions", type=int, default=200_000)
    args = ap.parse_args()
    print("command:", " ".join(["ops/bench/bench_ptz.py", *sys.argv[1:]]))
    print(
        f"cpus: {os.cpu_count()}, started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-ptz-") as tmp:
        d = Path(tmp)
        (d / "logs").mkdir()
        procs = Procs(d / "logs")
        try:
            onvif, rtsp, http = pick_port(18899), pick_port(18554), pick_port(18080)
            cam = procs.start("fake-camera", [sys.executable, "-m", "ops.fakes.onvif_camera",
                                              "--port", str(onvif)], cwd=REPO)  # fmt: skip
            cfg = config(d, rtsp, http, onvif)
            gw = procs.start(
                "feedgate",
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
                cwd=REPO,
            )
            if not wait_tcp(onvif, 60, cam):
                sys.exit(procs.logfile("fake-camera").read_text()[-2000:])
            if not wait_log_line(procs.logfile("feedgate"), "feedgate listening", 60, gw):
                sys.exit(procs.logfile("feedgate").read_text()[-3000:])
            token = issue_token(cfg)
            asyncio.run(latency(args, http, onvif, token))
        finally:
            procs.stop_all()
    decisions(args.decisions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
