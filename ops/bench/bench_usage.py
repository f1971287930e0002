"""Usage events per second, end to end, through billing.transport.

(a) DirectSink -> SQLite ledger (embedded mode), one process.
(b) RedisStreamSink -> Redis stream -> LedgerConsumer -> PostgreSQL ledger (shared mode): the
    emitting "gateway" in this process, the consumer(s) in worker processes, as deployed. Timed
    from the first emit until the ledger holds every event.
peer: raw pipelined XADD with redis-py, one event per stream entry (what batching replaces).

Starts its own redis-server and PostgreSQL cluster (Debian binaries, temp dirs, free ports)
unless given --redis-url / --pg-url.

    python ops/bench/bench_usage.py [--events 200000] [--consumers 1] [--tasks 2]
                                    [--only a|b|peer]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from billing.ledger import Ledger  # noqa: E402
from billing.model import UsageEvent, UsageKind  # noqa: E402
from billing.transport import (  # noqa: E402
    DirectSink,
    LedgerConsumer,
    RedisStreamSink,
    Spool,
    encode_event,
)
from billing.usagerow import check_rows, encode_row, encode_rows, row_event_id  # noqa: E402
from tenants.db import Database  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=UTC)
KINDS = list(UsageKind)


def make_events(n: int, tag: str) -> list[UsageEvent]:
    out = []
    for i in range(n):
        session = f"{tag}-{i // 60}"
        seq = i % 60
        start = T0 + timedelta(seconds=10 * i)
        out.append(
            UsageEvent(
                event_id=UsageEvent.make_id(session, seq),
                session_id=session,
                seq=seq,
                tenant=f"tenant-{i % 40}",
                principal=f"officer-{i % 500}",
                camera=f"cam-{i % 900}",
                camera_owner="council",
                kind=KINDS[i % len(KINDS)],
                protocol="rtsp",
                variant="masked",
                start=start,
                end=start + timedelta(seconds=10),
                duration_ms=10_000,
                bytes_sent=5_000_000 + i,
            )
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------ servers


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: run ops/install.sh or pass --redis-url")
    d = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(d)]
    argv += ["--logfile", str(d / "redis.log")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            try:
                proc.wait(0.01)
                raise SystemExit(f"redis-server exited: {(d / 'redis.log').read_text()}")
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("redis-server not ready")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bindirs:
        raise SystemExit("PostgreSQL binaries not found: run ops/install.sh or pass --pg-url")
    bindir = Path(bindirs[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", free_port()
    subprocess.run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base}"
    subprocess.run(
        _as_owner(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-D",
                str(data),
                "-l",
                str(base / "log"),
                "-o",
                opts,
                "-w",
                "-t",
                "30",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------------ (a)


async def bench_direct(n: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-direct-") as d:
        db = Database.open(f"sqlite://{d}/ledger.db")
        ledger = Ledger(db)
        events = make_events(n, "direct")
        sink = DirectSink(ledger, Spool(Path(d) / "spool"), batch_size=5000, flush_interval=0.05)
        t0 = time.perf_counter()
        sink.start()
        for i, e in enumerate(events):
            sink.emit(e)
            if i % 5000 == 4999:
                await asyncio.sleep(0)  # the gateway's loop does other work between emits
        await sink.stop()
        elapsed = time.perf_counter() - t0
        assert ledger.count() == n, (ledger.count(), n)
        db.close()
    return n / elapsed


# ------------------------------------------------------------------------------ (b)


class _NullLedger:
    """Counts events instead of storing them: measures the transport alone."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    def record_rows(self, rows: Sequence[str]) -> int:
        n = len({row_event_id(r) for r in rows})
        with self.counter.get_lock():
            self.counter.value += n
        return n


def _consumer_main(
    redis_url: str, pg_url: str | None, name: str, tasks: int, stop: Any, counter: Any
) -> None:
    """One consumer process running ``tasks`` LedgerConsumers, each with its own connection
    (as a gateway's worker 0 does with ``billing.consumers``)."""

    async def main() -> None:
        dbs = [Database.open(pg_url) for _ in range(tasks)] if pg_url else []
        ledgers: list[Any] = [Ledger(db) for db in dbs] or [_NullLedger(counter)] * tasks
        consumers = [
            LedgerConsumer(redis_url, ledger, consumer=f"{name}-{j}", count=50)
            for j, ledger in enumerate(ledgers)
        ]
        running = [asyncio.create_task(c.run()) for c in consumers]
        await asyncio.to_thread(stop.wait)
        for c in consumers:
            await c.stop()
        await asyncio.gather(*running)
        for db in dbs:
            db.close()

    asyncio.run(main())


async def bench_redis(
    n: int, redis_url: str, pg_url: str | None, consumers: int, tasks: int = 1
) -> tuple[float, float]:
    """pg_url None: the consumers use a null ledger (transport capacity alone)."""
    db = Database.open(pg_url) if pg_url else None
    if db is not None:
        Ledger(db)
        db.execute("DELETE FROM usage_events")
    redis.Redis.from_url(redis_url).delete("feedgate:usage")
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    counter = ctx.Value("q", 0)
    procs = [
        ctx.Process(
            target=_consumer_main,
            args=(redis_url, pg_url, f"bench-{i}", tasks, stop, counter),
        )
        for i in range(consumers)
    ]
    for p in procs:
        p.start()

    def done() -> int:
        if db is not None:
            row = db.query_one("SELECT COUNT(*) FROM usage_events")
            return int(row[0]) if row else 0
        return int(counter.value)

    events = make_events(n, f"redis-{uuid.uuid4().hex[:6]}")
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as d:
        sink = RedisStreamSink(redis_url, spool=Spool(d), batch_size=5000, flush_interval=0.02)
        await asyncio.sleep(1.5)  # let the consumers import and connect
        t0 = time.perf_counter()
        sink.start()
        for i, e in enumerate(events):
            sink.emit(e)
            if i % 5000 == 4999:
                await asyncio.sleep(0)
        await sink.stop()
        t_emit = time.perf_counter() - t0
        deadline = time.monotonic() + 600
        while done() < n and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the ledger
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - t0
        count = done()
    stop.set()
    for p in procs:
        p.join(30)
    if db is not None:
        db.close()
    assert count == n, (count, n)
    return n / elapsed, n / t_emit


def bench_ledger_alone(n: int, pg_url: str) -> tuple[float, float, float]:
    """Ledger on PostgreSQL, 5,000 per call: record(events), record_rows(checked rows) as the
    consumer calls it, and the same rows again (every id already there: the slow path)."""
    db = Database.open(pg_url)
    ledger = Ledger(db)
    events = make_events(n, f"alone-{uuid.uuid4().hex[:6]}")
    t0 = time.perf_counter()
    for i in range(0, n, 5000):
        ledger.record(events[i : i + 5000])
    events_rate = n / (time.perf_counter() - t0)
    rows = [encode_row(e) for e in make_events(n, f"rows-{uuid.uuid4().hex[:6]}")]
    t0 = time.perf_counter()
    for i in range(0, n, 5000):
        ledger.record_rows(rows[i : i + 5000])
    rows_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, n, 5000):
        assert ledger.record_rows(rows[i : i + 5000]) == 0
    replay_rate = n / (time.perf_counter() - t0)
    db.close()
    return events_rate, rows_rate, replay_rate


def bench_stages(n: int) -> tuple[float, float]:
    """Microseconds per event to encode (the gateway's side) and to check (the consumer's)."""
    events = make_events(n, "stages")
    t0 = time.perf_counter()
    blocks = [encode_rows(events[i : i + 100]) for i in range(0, n, 100)]
    encode_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    checked = sum(len(check_rows(b)) for b in blocks)
    check_us = (time.perf_counter() - t0) / n * 1e6
    assert checked == n
    return encode_us, check_us


def bench_peer_xadd(n: int, redis_url: str) -> float:
    r = redis.Redis.from_url(redis_url)
    r.delete("bench:peer")
    events = make_events(n, "peer")
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, e in enumerate(events):
        pipe.xadd("bench:peer", {"event": encode_event(e)})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    elapsed = time.perf_counter() - t0
    assert r.xlen("bench:peer") == n
    r.delete("bench:peer")
    r.close()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--consumers", type=int, default=1, help="consumer processes")
    ap.add_argument(
        "--tasks", type=int, default=2, help="LedgerConsumers per process (billing.consumers)"
    )
    ap.add_argument("--redis-url")
    ap.add_argument("--pg-url")
    ap.add_argument("--only", choices=["a", "b", "peer"])
    args = ap.parse_args()
    print("command:", " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]))
    print(f"cpus: {os.cpu_count()}  events: {args.events:,}")
    with contextlib.ExitStack() as stack:
        if args.only in (None, "a"):
            rate = asyncio.run(bench_direct(args.events))
            print(f"(a) DirectSink -> SQLite ledger:                         {rate:>9,.0f} ev/s")
        if args.only in (None, "b", "peer"):
            redis_url = args.redis_url or stack.enter_context(redis_server())
        if args.only in (None, "b"):
            pg_url = args.pg_url or stack.enter_context(postgres_server())
            e2e, emit = asyncio.run(
                bench_redis(args.events, redis_url, pg_url, args.consumers, args.tasks)
            )
            print(
                f"(b) RedisStreamSink -> Redis -> LedgerConsumer {args.consumers} process(es)"
                f" x {args.tasks} -> PostgreSQL:"
                f" {e2e:,.0f} ev/s end to end (emit side {emit:,.0f} ev/s)"
            )
            events_rate, rows_rate, replay = bench_ledger_alone(min(args.events, 50_000), pg_url)
            print(
                f"    Ledger alone on PostgreSQL, 5,000 per call: record(events) {events_rate:,.0f}"
                f" ev/s, record_rows {rows_rate:,.0f} ev/s, a replay of them {replay:,.0f} ev/s"
            )
            encode_us, check_us = bench_stages(min(args.events, 50_000))
            print(
                f"    per event: encode_row {encode_us:.1f} us (gateway), check_rows"
                f" {check_us:.1f} us (consumer)"
            )
            cap, emit = asyncio.run(
                bench_redis(args.events, redis_url, None, args.consumers, args.tasks)
            )
            print(
                f"    transport alone (same path, null ledger):         {cap:>9,.0f} ev/s"
                f" (emit side {emit:,.0f} ev/s)"
            )
        if args.only in (None, "peer"):
            peer = bench_peer_xadd(min(args.events, 100_000), redis_url)
            print(f"peer: pipelined XADD, one event per entry (redis-py):   {peer:>9,.0f} ev/s")
            if args.only is None:
                print(f"batching: transport alone x{cap / peer:.1f} the peer's raw XADD rate")


if __name__ == "__main__":
    main()
