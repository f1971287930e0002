#!/usr/bin/env python3
"""Soak: one feedgate process under an hour of realistic churn, watched for growth and stalls.

    nice -n 10 python ops/bench/soak.py --minutes 60 --json /tmp/soak.json > /tmp/soak.log 2>&1 &

The load (issue #9's acceptance): --readers RTSP readers (TCP interleaved) on one pushed camera,
split over three tenants: the owner (the original) and two partners whose tenant kinds have
their own privacy masks (two masked variants, each one shared transcoder); --churn of the
readers hang up and reconnect every minute; every reader carries an EdDSA token of --token-ttl
seconds, so long-lived readers are cut at expiry by the gateway and reconnect with a renewed
token; billing is on, so every session's usage goes into the SQLite ledger every
rtsp.report_interval; the publisher (ffmpeg, -c copy, Digest credentials) is restarted every
--publisher-restart seconds.

Every minute it prints and records the server's RSS and open descriptors (/proc), its asyncio
tasks and worst event-loop lag in that minute (feedgate_asyncio_tasks and
feedgate_event_loop_lag_seconds from /metrics), the readers playing, bytes delivered,
reconnects by cause and failures. At the end: the growth from minute --baseline-minute to the
end (RSS %, descriptors, tasks), the worst lag and the minute it happened, and the usage the
ledger holds per tenant (``feedgate usage --json``) next to the seconds the readers played.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchkit import smaps
from benchkit.clip import make_clip
from benchkit.env import HERE, REPO, ensure_ffmpeg, feedgate_command, feedgate_env, log
from benchkit.procs import HOST, Procs, pick_port, probe_stream, wait_tcp
from benchkit.reader import LoadGen, Reader

CAMERA = "soak"
ENCODER = ("soak-encoder", "soak-encoder-password")
METRICS_TOKEN = "soak-metrics-scrape-token"
LAG = 'feedgate_event_loop_lag_seconds{over="scrape"}'
READERS = "feedgate_readers{"
DROPPED = "feedgate_dropped_frames"
# (tenant, kind, principal): the owner sees the original, each partner kind its own mask.
VIEWERS = (
    ("council", "council", "council-viewer"),
    ("westfield", "retail", "westfield-viewer"),
    ("tfl", "transport", "tfl-viewer"),
)

SEED = """
[[tenants]]
id = "council"
name = "Soak council"
kind = "council"
[[tenants]]
id = "westfield"
name = "Soak shopping centre"
kind = "retail"
[[tenants]]
id = "tfl"
name = "Soak transport"
kind = "transport"

[[principals]]
id = "{enc}"
tenant = "council"
name = "Soak encoder"
kind = "service"
roles = ["operator"]
digest_password = "{enc_pw}"
{viewers}
[[cameras]]
id = "{cam}"
owner = "council"
name = "Soak camera"
tags = ["soak"]
area_type = "high_street"
retention_days = 1

[[grants]]
id = "soak-westfield"
owner = "council"
grantee = "westfield"
cameras = ["{cam}"]
rights = ["live"]
[[grants]]
id = "soak-tfl"
owner = "council"
grantee = "tfl"
cameras = ["{cam}"]
rights = ["live"]

[[masks]]
id = "soak-retail"
camera = "{cam}"
points = [[0.6, 0.1], [0.95, 0.1], [0.95, 0.6], [0.6, 0.6]]
kind = "permanent"
tenant_kinds = ["retail"]
label = "Rival shop front"
[[masks]]
id = "soak-transport"
camera = "{cam}"
points = [[0.0, 0.5], [0.4, 0.5], [0.4, 1.0], [0.0, 1.0]]
kind = "permanent"
tenant_kinds = ["transport"]
label = "Depot yard"
"""

PRINCIPAL = """
[[principals]]
id = "{id}"
tenant = "{tenant}"
name = "Soak viewer"
roles = ["viewer"]
"""


def write_config(work: Path, rtsp: int, http: int, rtp: int, memory: str = "") -> Path:
    data = work / "data"
    data.mkdir(parents=True)
    viewers = "".join(PRINCIPAL.format(id=p, tenant=t) for t, _, p in VIEWERS)
    seed = SEED.format(enc=ENCODER[0], enc_pw=ENCODER[1], cam=CAMERA, viewers=viewers)
    (work / "tenants.toml").write_text(seed)
    cfg = work / "soak.toml"
    cfg.write_text(
        f'log_level = "WARNING"\ndata_dir = "{data}"\n\n'
        f'[rtsp]\nhost = "{HOST}"\nport = {rtsp}\nrtp_port = {rtp}\nreport_interval = 5.0\n\n'
        f'[http]\nhost = "{HOST}"\nport = {http}\nmetrics_token = "{METRICS_TOKEN}"\n\n'
        "[grpc]\nport = 0\n\n[webrtc]\nenabled = false\n\n"
        '[tenancy]\nenabled = true\nseed = "tenants.toml"\n\n'
        f'[billing]\nenabled = true\nplans = "{REPO / "ops/config/demo-plans.toml"}"\n\n'
        f"{memory}\n"
        f'[[cameras]]\nid = "{CAMERA}"\nname = "Soak camera"\nsource = "push"\n'
    )
    return cfg


def metrics(port: int) -> dict[str, float]:
    """Each sample of /metrics, keyed by name and labels (``name{a="b"}``)."""
    import urllib.request

    req = urllib.request.Request(
        f"http://{HOST}:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    out: dict[str, float] = {}
    with contextlib.suppress(OSError), urllib.request.urlopen(req, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
    return out


def proc_rss_fds(pid: int) -> tuple[int, int]:
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Fleet:
    """The readers: each slot holds one reader at a time and reopens it when it ends."""

    def __init__(self, args: argparse.Namespace, port: int, issuer: Any) -> None:
        self.args = args
        self.port = port
        self.issuer = issuer
        self.gen = LoadGen("", 0, args.sample_every, 0, 65536)
        self.slots: list[Reader | None] = [None] * args.readers
        self.causes: Counter[str] = Counter()  # why readers ended, this minute
        self.token_exp: dict[int, float] = {}  # slot -> monotonic time its token expires
        self.played = Counter[str]()  # tenant -> reader-seconds with bytes flowing
        self.bytes_done = 0  # bytes of readers that ended
        self.n = 0
        self._hung: set[int] = set()  # slots the churn hung up (not counted again as ended)

    def tenant(self, slot: int) -> tuple[str, str]:
        t, _, principal = VIEWERS[slot % len(VIEWERS)]
        return t, principal

    async def open(self, slot: int) -> None:
        tenant, principal = self.tenant(slot)
        ttl = self.args.token_ttl
        if self.args.stagger_tokens and slot not in self.token_exp:
            # Viewers of a real network arrive over time, so their tokens do not all run out in
            # one minute: the first token of slot i lasts between half and all of --token-ttl.
            ttl *= 0.5 + 0.5 * (slot + 1) / self.args.readers
        token = self.issuer.issue(
            tenant=tenant, subject=principal, ttl=timedelta(seconds=ttl), roles=["viewer"]
        )
        self.n += 1
        r = Reader(self.n, self.n % self.args.sample_every == 0, 65536)
        self.slots[slot] = r
        self.token_exp[slot] = time.monotonic() + ttl
        await self.gen.open(r, f"rtsp://{HOST}:{self.port}/{CAMERA}?token={token}")

    def hang_up(self, slot: int, cause: str) -> None:
        r = self.slots[slot]
        if r is not None and not r.closed:
            self.causes[cause] += 1
            LoadGen._close(r)

    def retire(self, slot: int, r: Reader) -> None:
        self.bytes_done += r.nbytes
        self.slots[slot] = None

    def playing(self) -> int:
        return sum(1 for r in self.slots if r is not None and r.playing and not r.closed)

    def total_bytes(self) -> int:
        return self.bytes_done + sum(r.nbytes for r in self.slots if r is not None)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep every slot filled; keep-alives; count time played per tenant."""
        pending: set[asyncio.Task[None]] = set()
        last_bytes: dict[int, int] = {}
        last = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            dt, last = now - last, now
            for slot, r in enumerate(self.slots):
                if r is None:
                    t = asyncio.create_task(self.open(slot))
                    pending.add(t)
                    t.add_done_callback(pending.discard)
                    continue
                if r.closed:
                    if r.playing and slot not in self._hung:
                        cause = "token expired" if now >= self.token_exp[slot] - 2 else "server"
                        self.causes[cause] += 1
                    self._hung.discard(slot)
                    self.retire(slot, r)
                    continue
                if r.playing:
                    if r.nbytes > last_bytes.get(r.idx, -1):
                        self.played[self.tenant(slot)[0]] += dt
                    last_bytes[r.idx] = r.nbytes
                    if now >= r.next_keepalive:
                        r.next_keepalive = now + r.keepalive_every
                        with contextlib.suppress(Exception):
                            r.send("GET_PARAMETER", r.url, {})
            live = {r.idx for r in self.slots if r is not None}
            for idx in [i for i in last_bytes if i not in live]:
                del last_bytes[idx]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def churn(self, stop: asyncio.Event) -> None:
        """Hang up --churn of the playing readers every minute, spread over the minute."""
        rng = random.Random(9)
        while not stop.is_set():
            playing = [i for i, r in enumerate(self.slots) if r is not None and r.playing]
            k = round(self.args.churn * self.args.readers)
            chosen = rng.sample(playing, min(k, len(playing)))
            for slot in chosen:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 60.0 / max(1, k))
                if stop.is_set():
                    return
                self._hung.add(slot)
                self.hang_up(slot, "churn")
            if not chosen:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5.0)

    def close_all(self) -> None:
        for r in self.slots:
            if r is not None and not r.closed:
                LoadGen._close(r)


def publisher_cmd(ffmpeg: str, clip: Path, port: int) -> list[str]:
    url = f"rtsp://{ENCODER[0]}:{ENCODER[1]}@{HOST}:{port}/{CAMERA}"
    return [ffmpeg, "-hide_banner", "-loglevel", "warning", "-nostats", "-re",
            "-stream_loop", "-1", "-i", str(clip), "-c", "copy",
            "-f", "rtsp", "-rtsp_transport", "tcp", url]  # fmt: skip


async def soak(args: argparse.Namespace, procs: Procs, ffmpeg: str, clip: Path) -> dict[str, Any]:
    work: Path = args.workdir
    rtsp, http = pick_port(args.port), pick_port(args.http_port)
    # --no-memory-policy: glibc's own behaviour, to compare with gateway/memory.py's default.
    memory = "[memory]\nmmap_threshold = 0\ntrim_interval = 0\n" if args.no_memory_policy else ""
    rtp = pick_port(args.rtp_port, socket.SOCK_DGRAM, 2)
    cfg = write_config(work, rtsp, http, rtp, memory)
    cmd, why = feedgate_command()
    if cmd is None:
        raise RuntimeError(why)
    serve = ["serve", "--config", str(cfg)]
    if args.tracemalloc or args.heap or args.malloc_trim:
        # The server through a harness wrapper (ops/bench/benchkit/traced.py) that appends
        # glibc's heap figures every minute to <workdir>/heap/traced.txt and, under
        # --tracemalloc, dumps a tracemalloc snapshot beside them (diffed afterwards with
        # `traced.py --diff A B`, outside the server).
        traced = HERE / "benchkit" / "traced.py"
        out = work / "heap"
        every = str(args.heap_every)
        cmd_s = [sys.executable, str(traced), str(out), every, str(args.tracemalloc), "--", *serve]
    else:
        cmd_s = [*cmd, *serve]
    env = feedgate_env()
    if args.malloc_arena_max:
        # glibc gives each thread that allocates its own heap arena, up to 8 per core; freed
        # memory stays in them. A tuning knob a deployment can set too (see BENCHMARKS.md).
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    if args.malloc_trim:
        env["SOAK_MALLOC_TRIM"] = "1"
    server = procs.start("feedgate", cmd_s, env=env)
    if not await asyncio.to_thread(wait_tcp, rtsp, 120, server):
        raise RuntimeError(f"feedgate did not listen; see {procs.logfile('feedgate')}")
    sys.path.insert(0, str(REPO))
    from tenants.tokens import SigningKey, TokenIssuer

    key = SigningKey.load_or_create(work / "data" / "keys" / "token-signing.pem")
    issuer = TokenIssuer([key])
    publisher = procs.start("publisher-0", publisher_cmd(ffmpeg, clip, rtsp))
    ok, info = await asyncio.to_thread(
        probe_stream, ffmpeg, f"rtsp://{HOST}:{rtsp}/{CAMERA}?token="
        + issuer.issue(tenant="council", subject="council-viewer", roles=["viewer"])
    )  # fmt: skip
    log(f"probe {'ok' if ok else 'FAILED'}: {info}")
    if not ok:
        raise RuntimeError(f"the camera does not play: {info}")

    fleet = Fleet(args, rtsp, issuer)
    stop = asyncio.Event()
    lag = {"worst": 0.0}

    async def own_lag() -> None:  # the load generator's own loop, to tell its stalls apart
        while not stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.1)
            lag["worst"] = max(lag["worst"], time.monotonic() - t - 0.1)

    tasks = [asyncio.create_task(c) for c in (fleet.run(stop), fleet.churn(stop), own_lag())]
    minutes: list[dict[str, Any]] = []
    restarts = 0
    t0 = time.monotonic()
    next_restart = t0 + args.publisher_restart
    b_prev = 0
    try:
        for minute in range(1, args.minutes + 1):
            while time.monotonic() < t0 + 60 * minute:
                if time.monotonic() >= next_restart:
                    restarts += 1
                    next_restart += args.publisher_restart
                    await asyncio.to_thread(procs.stop, publisher)
                    publisher = procs.start(
                        f"publisher-{restarts}", publisher_cmd(ffmpeg, clip, rtsp)
                    )
                if server.poll() is not None:
                    raise RuntimeError(f"feedgate exited with {server.returncode}")
                await asyncio.sleep(1.0)
            m = await asyncio.to_thread(metrics, http)
            rss, fds = proc_rss_fds(server.pid)
            b = fleet.total_bytes()
            row = {
                "minute": minute,
                "rss_mib": round(rss / 2**20, 2),
                "fds": fds,
                "tasks": m.get("feedgate_asyncio_tasks"),
                "loop_lag_ms": round(1000 * m.get(LAG, -1), 1),
                "playing": fleet.playing(),
                "readers_by_path": {k[len(READERS) :]: v for k, v in m.items()
                                    if k.startswith(READERS)},
                "sessions": m.get("feedgate_rtsp_sessions"),
                "mbit_s": round((b - b_prev) * 8 / 60 / 1e6, 2),
                "ended": dict(fleet.causes),
                "failures": dict(fleet.gen.failures),
                "publisher_restarts": restarts,
                "dropped_frames": sum(v for k, v in m.items() if k.startswith(DROPPED)),
                "loadgen_lag_ms": round(1000 * lag["worst"], 1),
                "loadavg_1m": os.getloadavg()[0],
            }  # fmt: skip
            if args.heap:  # threads and RSS by kind of mapping (benchkit/smaps.py), from /proc
                with contextlib.suppress(OSError):
                    row.update(smaps.row(server.pid))
            heap = work / "heap" / "traced.txt"
            if heap.exists():  # the server's own heap figures (--heap), a few seconds old
                lines = heap.read_text().splitlines()
                row["heap"] = lines[-1].partition(": ")[2] if lines else None
            b_prev = b
            fleet.causes.clear()
            fleet.gen.failures.clear()
            lag["worst"] = 0.0
            minutes.append(row)
            log(json.dumps(row))
            if args.json:
                args.json.write_text(json.dumps({"minutes": minutes}, indent=1) + "\n")
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        fleet.close_all()
        procs.stop(publisher)
    usage = {}
    period = datetime.now(UTC).strftime("%Y-%m")
    for tenant, _, _ in VIEWERS:
        # Reports are written every report_interval: give the last ones time to land.
        await asyncio.sleep(args.settle if tenant == VIEWERS[0][0] else 0)
        r = await asyncio.to_thread(
            subprocess.run,
            [*cmd, "usage", "--config", str(cfg), "--tenant", tenant, "--period", period, "--json"],
            capture_output=True, text=True, env=feedgate_env(),
        )  # fmt: skip
        try:
            usage[tenant] = json.loads(r.stdout)
        except ValueError:
            usage[tenant] = {"error": (r.stdout + r.stderr)[-400:]}
    server_log = procs.logfile("feedgate").read_text(errors="replace")
    return summarise(args, minutes, dict(fleet.played), usage, server_log)


STALL = re.compile(r"(\S+ \S+) WARNING gateway\.loopwatch: event loop held (\d+) ms.*?; in (.*)$")


def named_stalls(server_log: str) -> dict[str, Any]:
    """The server's own account of its loop stalls (gateway/loopwatch.py names each one over
    100 ms, at most one line a minute unless it is a new worst), and how many writes asyncio
    refused on connections already lost."""
    stalls = []
    for line in server_log.splitlines():
        if (m := STALL.search(line)) is not None:
            stalls.append({"at": m[1], "ms": int(m[2]), "where": m[3]})
    stalls.sort(key=lambda x: -x["ms"])
    return {
        "stalls_logged": len(stalls),
        "worst_stalls": stalls[:5],
        "writes_to_lost_connections_logged": server_log.count("socket.send() raised exception"),
    }


def summarise(
    args: argparse.Namespace,
    minutes: list[dict[str, Any]],
    played: dict[str, float],
    usage: dict[str, Any],
    server_log: str = "",
) -> dict[str, Any]:
    base = next((m for m in minutes if m["minute"] == args.baseline_minute), minutes[0])
    end = minutes[-1]
    worst = max(minutes, key=lambda m: m["loop_lag_ms"])

    def full(m: dict[str, Any]) -> bool:
        # Descriptors and tasks follow the readers connected: compare minutes where (nearly)
        # all play and the scrape answered. With the default --token-ttl the baseline minute
        # is the one the first tokens, all issued at the start, expire together.
        return m["playing"] >= 0.95 * args.readers and m["tasks"] is not None

    loads = [m["loadavg_1m"] for m in minutes if "loadavg_1m" in m]
    fd_base = next((m for m in minutes if m["minute"] >= base["minute"] and full(m)), base)
    fd_end = next((m for m in reversed(minutes) if full(m)), end)
    return {
        "args": {k: str(v) for k, v in vars(args).items()},
        "minutes": minutes,
        "baseline_minute": base["minute"],
        "rss_growth_pct": round(100 * (end["rss_mib"] - base["rss_mib"]) / base["rss_mib"], 2),
        "rss_mib_baseline_end_max": [
            base["rss_mib"],
            end["rss_mib"],
            max(m["rss_mib"] for m in minutes),
        ],
        "fd_task_minutes_compared": [fd_base["minute"], fd_end["minute"]],
        "fd_growth": fd_end["fds"] - fd_base["fds"],
        "fds_baseline_end_max": [fd_base["fds"], fd_end["fds"], max(m["fds"] for m in minutes)],
        "task_growth": (fd_end["tasks"] or 0) - (fd_base["tasks"] or 0),
        "tasks_baseline_end_max": [
            fd_base["tasks"],
            fd_end["tasks"],
            max(m["tasks"] or 0 for m in minutes),
        ],
        "worst_loop_lag_ms": worst["loop_lag_ms"],
        "worst_loop_lag_minute": worst["minute"],
        "ended_total": sum((Counter(m["ended"]) for m in minutes), Counter()),
        "failures_total": sum((Counter(m["failures"]) for m in minutes), Counter()),
        "reader_seconds_played": {k: round(v) for k, v in played.items()},
        "ledger_usage": usage,
        "loadavg_1m_min_median_max": [
            min(loads), sorted(loads)[len(loads) // 2], max(loads)
        ] if loads else None,
        **named_stalls(server_log),
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--readers", type=int, default=200)
    ap.add_argument("--churn", type=float, default=0.10, help="share reconnecting per minute")
    ap.add_argument("--token-ttl", type=float, default=600.0, help="seconds")
    ap.add_argument(
        "--stagger-tokens",
        action="store_true",
        help="spread the first tokens' lifetimes over half to all of --token-ttl, so they do "
        "not all expire in one minute (by default they expire together at --token-ttl)",
    )
    ap.add_argument("--publisher-restart", type=float, default=300.0, help="seconds")
    ap.add_argument("--baseline-minute", type=int, default=10)
    ap.add_argument("--sample-every", type=int, default=10)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--bitrate", default="1M")
    ap.add_argument("--gop-seconds", type=float, default=2.0)
    ap.add_argument("--clip-seconds", type=int, default=60)
    ap.add_argument("--settle", type=float, default=8.0, help="wait for the last usage reports")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/feedgate-soak"))
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="NFRAMES",
        help="run the server under tracemalloc with NFRAMES frames per trace and "
        "dump a snapshot every minute to <workdir>/heap/ (slows the server: hunting only)",
    )
    ap.add_argument(
        "--malloc-arena-max", type=int, default=0, help="MALLOC_ARENA_MAX for the server"
    )
    ap.add_argument(
        "--malloc-trim",
        action="store_true",
        help="with --heap: the server calls malloc_trim(0) after each minute's heap figures "
        "(a diagnostic of how much RSS is free memory malloc keeps; never for the measured soak)",
    )
    ap.add_argument(
        "--heap",
        action="store_true",
        help="record glibc's heap figures (mallinfo2) and pymalloc's arenas every minute to "
        "<workdir>/heap/traced.txt (cheap: one thread waking once a minute), and the server's "
        "threads and RSS by kind of mapping (/proc/PID/smaps, read from outside)",
    )
    ap.add_argument("--heap-every", type=float, default=60.0, help="seconds between --heap samples")
    ap.add_argument(
        "--no-memory-policy",
        action="store_true",
        help="turn gateway/memory.py off ([memory] mmap_threshold = trim_interval = 0)",
    )
    ap.add_argument("--port", type=int, default=28554)
    ap.add_argument("--http-port", type=int, default=28080)
    ap.add_argument("--rtp-port", type=int, default=28000)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def _term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)
    ffmpeg = ensure_ffmpeg()
    if args.workdir.exists():
        subprocess.run(["rm", "-rf", str(args.workdir)], check=True)
    args.workdir.mkdir(parents=True)
    (args.workdir / "logs").mkdir()
    clip = make_clip(ffmpeg, Path("/tmp/feedgate-bench"), args)
    procs = Procs(args.workdir / "logs")
    try:
        result = asyncio.run(soak(args, procs, ffmpeg, clip.path))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        procs.stop_all()
    for key in ("rss_growth_pct", "rss_mib_baseline_end_max", "fd_task_minutes_compared",
                "fd_growth", "fds_baseline_end_max",
                "task_growth", "tasks_baseline_end_max", "worst_loop_lag_ms",
                "worst_loop_lag_minute", "ended_total", "failures_total",
                "reader_seconds_played", "ledger_usage", "loadavg_1m_min_median_max",
                "stalls_logged", "worst_stalls",
                "writes_to_lost_connections_logged"):  # fmt: skip
        print(f"{key}: {json.dumps(result[key])}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
