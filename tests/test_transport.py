"""Usage transport: codec, disk spool, DirectSink, RedisStreamSink -> LedgerConsumer -> ledger.

Real peers: a redis-server per test (tests/fixtures_redis.py) and the session's PostgreSQL
cluster (tests/fixtures_db.py); faults are real ones (server killed, database refusing
connections, consumer task cancelled between commit and XACK)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from fixtures_db import PostgresServer
from fixtures_redis import RedisServer

from billing.ledger import Ledger
from billing.model import UsageEvent, UsageKind
from billing.transport import (
    DecodeError,
    DirectSink,
    LedgerConsumer,
    RedisStreamSink,
    Spool,
    SpoolError,
    SpoolFull,
    decode_event,
    decode_events,
    encode_event,
    encode_events,
)
from billing.usagerow import encode_rows
from tenants.db import Database, DatabaseError

T = TypeVar("T")

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def make_events(n: int, session: str | None = None, start_seq: int = 0) -> list[UsageEvent]:
    session = session or uuid.uuid4().hex
    out = []
    for seq in range(start_seq, start_seq + n):
        start = T0 + timedelta(seconds=10 * seq)
        out.append(
            UsageEvent(
                event_id=UsageEvent.make_id(session, seq),
                session_id=session,
                seq=seq,
                tenant=f"tenant-{seq % 7}",
                principal=None if seq % 5 == 0 else f"user-{seq % 11}",
                camera=f"cam-{seq % 13}",
                camera_owner="council",
                kind=list(UsageKind)[seq % len(UsageKind)],
                protocol="rtsp",
                variant="masked",
                start=start,
                end=start + timedelta(seconds=10),
                duration_ms=10_000,
                bytes_sent=1000 + seq,
                final=False,
            )
        )
    return out


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class FlakyLedger:
    """The real ledger behind a switch: ``down`` makes record() fail like a lost database;
    ``after_commit`` runs after a successful commit (to crash between commit and XACK)."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.down = False
        self.failures = 0
        self.after_commit: Callable[[], None] | None = None

    def record(self, events: Sequence[UsageEvent]) -> int:
        return self._through(self.inner.record, events)

    def record_rows(self, rows: Sequence[str]) -> int:
        return self._through(self.inner.record_rows, rows)

    def _through(self, record: Callable[[T], int], batch: T) -> int:
        if self.down:
            self.failures += 1
            raise DatabaseError("store unreachable (test)")
        new = record(batch)
        if self.after_commit is not None:
            self.after_commit()
        return new


@pytest.fixture
def pg_ledger(pg_url: str) -> Iterator[Ledger]:
    db = Database.open(pg_url)
    try:
        yield Ledger(db)
    finally:
        db.close()


@contextlib.asynccontextmanager
async def consuming(consumer: LedgerConsumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        if not task.done():
            await asyncio.wait_for(consumer.stop(), 15)
            await task


# ------------------------------------------------------------------------------------ codec


def test_codec_round_trip_exact() -> None:
    events = make_events(20)
    odd = UsageEvent(
        event_id="e-\u00e9\u2603",
        session_id='s\n"quoted"',
        seq=0,
        tenant="t",
        principal=None,
        camera="c",
        camera_owner="o",
        kind=UsageKind.PTZ,
        protocol="webrtc",
        variant="unmasked",
        start=datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=1))),
        end=datetime(2026, 3, 29, 1, 0, 0, tzinfo=UTC),
        duration_ms=1,
        bytes_sent=2**53 + 1,
        final=True,
    )
    events.append(odd)
    for e in events:
        back = decode_event(encode_event(e))
        assert back == e
        assert back.start.utcoffset() == e.start.utcoffset()
        assert type(back.kind) is UsageKind
    assert decode_events(encode_events(events)) == events
    assert b" " not in encode_events(events[:3])  # compact


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"event_id": "x"}',
        encode_event(make_events(1)[0]).replace('"seq":0', '"seq":"0"').encode(),
        encode_event(make_events(1)[0]).replace('"kind":"live"', '"kind":"teleport"').encode(),
        encode_event(make_events(1)[0]).replace("+00:00", "").encode(),  # naive times
        encode_event(make_events(1)[0]).replace("}", ',"extra":1}').encode(),
    ],
    # The events' ids are random, so the ids name the case (pytest-xdist workers must agree).
    ids=[
        "not-json",
        "array",
        "missing-fields",
        "seq-as-text",
        "unknown-kind",
        "naive-times",
        "extra-field",
    ],
)
def test_codec_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_event(raw)


# ------------------------------------------------------------------------------------ spool


def test_spool_append_drain_and_bounds(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=200_000, segment_bytes=20_000)
    events = make_events(300)
    for i in range(0, 300, 50):
        spool.append(events[i : i + 50])
    assert len(spool.segments()) > 1 and spool.pending_bytes > 0
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path / "spool")  # locked by the first
    with pytest.raises(SpoolFull):
        spool.append(make_events(2000))
    assert spool.stats.full_rejections == 1

    # A failing callback leaves everything in place; a good one replays in order and deletes.
    def boom(batch: list[UsageEvent]) -> None:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        spool.drain(boom)
    got: list[UsageEvent] = []
    assert spool.drain(got.extend, chunk=64) == 300
    assert got == events
    assert spool.is_empty and spool.segments() == []
    spool.close()
    # Empty after a reopen too.
    again = Spool(tmp_path / "spool")
    assert again.is_empty
    again.close()


def test_spool_survives_a_crash_mid_append(tmp_path: Path) -> None:
    """A child process appends and is SIGKILLed; a torn tail is then written by hand the way a
    crash mid-write leaves it. The survivor replays every fsync'd event and counts the tear."""
    directory = tmp_path / "spool"
    code = (
        "import os, sys, signal\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from billing.transport import Spool\n"
        "from test_transport import make_events\n"
        "s = Spool(sys.argv[1])\n"
        "ev = make_events(500, session='crash')\n"
        "for i in range(0, 500, 100):\n"
        "    s.append(ev[i:i+100])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests_dir, os.getcwd()])}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(directory), tests_dir], env=env, timeout=60, check=False
    )
    assert proc.returncode == -9
    segs = sorted(directory.glob("seg-*.jsonl"))
    assert segs
    with open(segs[-1], "ab") as f:
        f.write(encode_event(make_events(1, session="torn")[0]).encode()[:57])  # no newline
    spool = Spool(directory)  # the dead process's lock is gone with it
    got: list[UsageEvent] = []
    assert spool.drain(got.extend) == 500
    assert got == make_events(500, session="crash")
    assert spool.stats.torn_lines == 1
    assert spool.is_empty
    # New appends go to a fresh segment, never after a torn tail.
    spool.append(make_events(3))
    assert spool.drain(lambda b: None) == 3
    spool.close()


def test_spool_quarantines_a_corrupt_middle_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.append(make_events(3, session="a"))
    spool.seal()
    seg = spool.segments()[0]
    lines = seg.read_bytes().split(b"\n")
    lines[1] = b"{garbage"
    seg.write_bytes(b"\n".join(lines))
    got: list[UsageEvent] = []
    spool.drain(got.extend)
    assert [e.seq for e in got] == [0, 2]
    assert spool.stats.corrupt_lines == 1
    assert (tmp_path / "s" / "quarantine.jsonl").read_bytes() == b"{garbage\n"
    spool.close()


# ------------------------------------------------------------------------------ DirectSink


async def test_direct_sink_sqlite_store_fails_then_recovers(tmp_path: Path) -> None:
    db = Database.open(f"sqlite://{tmp_path / 'ledger.db'}")
    ledger = FlakyLedger(Ledger(db))
    spool = Spool(tmp_path / "spool")
    sink = DirectSink(ledger, spool, batch_size=200, flush_interval=0.02, backoff_max=0.1)
    sink.start()
    events = make_events(3000)
    for e in events[:1000]:
        sink.emit(e)
    await until(lambda: ledger.inner.count() == 1000, 10, "first 1000 in the ledger")

    ledger.down = True
    for e in events[1000:2000]:
        sink.emit(e)
        sink.emit(e)  # a duplicate report
    await until(lambda: sink.stats.spooled >= 2000, 10, "the outage's events spooled")
    assert not sink.healthy and ledger.inner.count() == 1000
    assert not spool.is_empty

    ledger.down = False
    for e in events[2000:]:
        sink.emit(e)
    await until(lambda: ledger.inner.count() == 3000, 15, "all 3000 after recovery")
    await until(lambda: spool.is_empty and sink.healthy, 10, "spool drained")
    await sink.stop()
    assert ledger.failures >= 1 and sink.stats.replayed >= 2000
    assert sink.new_events == 3000
    # Late emits after stop are spooled, not lost.
    sink.emit(make_events(1)[0])
    assert sink.stats.late == 1 and not spool.is_empty
    spool.close()
    db.close()


async def test_direct_sink_spool_left_by_a_crash_is_drained_on_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(make_events(250, session="before-crash"))
    db = Database.open(f"sqlite://{tmp_path / 'ledger.db'}")
    ledger = Ledger(db)
    sink = DirectSink(ledger, spool, flush_interval=0.02)
    sink.start()
    await until(lambda: ledger.count() == 250, 10, "the old spool replayed")
    await sink.stop()
    assert spool.is_empty
    spool.close()
    db.close()


# ----------------------------------------------------------------- Redis -> consumer -> PG


async def test_redis_to_postgres_exactly_once(
    redis_server: RedisServer, pg_ledger: Ledger, tmp_path: Path
) -> None:
    events = make_events(10_000)
    sink = RedisStreamSink(redis_server.url, spool=Spool(tmp_path / "spool"))
    consumer = LedgerConsumer(redis_server.url, pg_ledger, consumer="c1", claim_idle_ms=5000)
    sink.start()
    async with consuming(consumer):
        for i, e in enumerate(events):
            sink.emit(e)
            if i % 10 == 0:
                sink.emit(e)  # duplicate reports: the ledger must count them once
        await sink.stop()
        await until(lambda: consumer.stats.events >= 11_000, 30, "all entries consumed")
    assert pg_ledger.count() == 10_000
    assert consumer.stats.new == 10_000 and consumer.stats.duplicates == 1000
    assert sink.stats.spooled == 0 and sink.entries_written >= 110
    got = {r[0] for r in pg_ledger.db.query("SELECT event_id FROM usage_events")}
    assert got == {e.event_id for e in events}
    r = redis_server.client()
    assert r.xpending("feedgate:usage", "ledger")["pending"] == 0
    assert r.xlen("feedgate:usage") == 0  # acknowledged entries are deleted
    r.close()


async def test_redis_down_during_emits_spools_then_drains(
    redis_server: RedisServer, pg_ledger: Ledger, tmp_path: Path
) -> None:
    events = make_events(6000)
    spool = Spool(tmp_path / "spool")
    sink = RedisStreamSink(
        redis_server.url, spool=spool, batch_size=500, flush_interval=0.02, backoff_max=0.2
    )
    sink.start()
    for e in events[:2000]:
        sink.emit(e)
    await until(lambda: sink.stats.written >= 2000, 10, "first part in Redis")

    redis_server.kill()  # a crash; appendfsync always keeps every acknowledged XADD
    for i in range(2000, 4000, 100):
        for e in events[i : i + 100]:
            sink.emit(e)
        await asyncio.sleep(0.01)  # emits spread over the outage
    await until(lambda: sink.stats.spooled >= 2000, 10, "outage spooled")
    assert not sink.healthy and not spool.is_empty

    redis_server.start()
    for e in events[4000:]:
        sink.emit(e)
    await until(lambda: sink.healthy and spool.is_empty, 20, "spool drained into Redis")
    await sink.stop()
    assert sink.stats.replayed >= 2000 and sink.stats.failures >= 1

    consumer = LedgerConsumer(redis_server.url, pg_ledger, consumer="c1")
    async with consuming(consumer):
        await until(lambda: pg_ledger.count() == 6000, 30, "all 6000 in the ledger")
    assert {r[0] for r in pg_ledger.db.query("SELECT event_id FROM usage_events")} == {
        e.event_id for e in events
    }
    spool.close()


async def test_consumer_killed_between_commit_and_ack_is_claimed(
    redis_server: RedisServer, pg_url: str, tmp_path: Path
) -> None:
    events = make_events(3000)
    sink = RedisStreamSink(redis_server.url, spool=Spool(tmp_path / "spool"))
    sink.start()
    for e in events:
        sink.emit(e)
    await sink.stop()

    db_a, db_b = Database.open(pg_url), Database.open(pg_url)
    ledger_a = FlakyLedger(Ledger(db_a))
    ledger_b = Ledger(db_b)
    committed, release = threading.Event(), threading.Event()

    def hang_after_commit() -> None:  # the process "dies" here: committed, never acked
        committed.set()
        release.wait(30)

    ledger_a.after_commit = hang_after_commit
    a = LedgerConsumer(redis_server.url, ledger_a, consumer="a", claim_idle_ms=60_000, count=10)
    task_a = asyncio.create_task(a.run())
    try:
        await until(committed.is_set, 10, "consumer a to commit its first read")
        task_a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task_a
        assert a.stats.entries == 0  # nothing acknowledged
        r = redis_server.client()
        pending = r.xpending("feedgate:usage", "ledger")
        assert pending["pending"] == 10 and pending["consumers"][0]["name"] == b"a"
        assert ledger_b.count() == 1000

        b = LedgerConsumer(
            redis_server.url, ledger_b, consumer="b", claim_idle_ms=300, claim_interval=0.1
        )
        async with consuming(b):
            await until(lambda: ledger_b.count() == 3000, 20, "b to finish")
            await until(lambda: b.stats.claimed == 10, 10, "b to claim a's entries")
        assert b.stats.duplicates == 1000  # a's committed events, skipped by the ledger
        assert b.stats.new == 2000
        assert r.xpending("feedgate:usage", "ledger")["pending"] == 0
        r.close()
    finally:
        release.set()
        db_a.close()
        db_b.close()


async def test_restarted_consumer_rereads_its_own_pending(
    redis_server: RedisServer, pg_ledger: Ledger, tmp_path: Path
) -> None:
    sink = RedisStreamSink(redis_server.url, spool=Spool(tmp_path / "spool"))
    sink.start()
    for e in make_events(1000):
        sink.emit(e)
    await sink.stop()
    flaky = FlakyLedger(pg_ledger)
    flaky.down = True  # reads entries, cannot commit, so never acks
    first = LedgerConsumer(redis_server.url, flaky, consumer="w1", claim_idle_ms=600_000)
    async with consuming(first):
        await until(lambda: flaky.failures >= 2, 10, "failed commits")
    assert first.stats.entries == 0
    r = redis_server.client()
    assert r.xpending("feedgate:usage", "ledger")["pending"] > 0
    flaky.down = False
    second = LedgerConsumer(redis_server.url, flaky, consumer="w1", claim_idle_ms=600_000)
    async with consuming(second):
        await until(lambda: pg_ledger.count() == 1000, 10, "pending re-read after restart")
    assert second.stats.pending_reread > 0 and second.stats.claimed == 0
    assert r.xpending("feedgate:usage", "ledger")["pending"] == 0
    r.close()


async def test_postgres_unreachable_then_back(
    redis_server: RedisServer, postgres_server: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    opened: list[Database] = []

    def open_ledger() -> Ledger:
        db = Database.open(pg_url)
        opened.append(db)
        return Ledger(db)

    consumer = LedgerConsumer(
        redis_server.url,
        open_ledger(),
        consumer="c1",
        ledger_factory=open_ledger,
        backoff_max=0.2,
    )
    sink = RedisStreamSink(redis_server.url, spool=Spool(tmp_path / "spool"))
    sink.start()
    events = make_events(4000)
    r = redis_server.client()
    try:
        async with consuming(consumer):
            for e in events[:1000]:
                sink.emit(e)
            await until(lambda: consumer.stats.new == 1000, 10, "first 1000 recorded")
            # The database goes away: open connections are cut and new ones refused.
            postgres_server.admin(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
            postgres_server.admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'"
            )
            for e in events[1000:]:
                sink.emit(e)
            await until(lambda: consumer.stats.ledger_failures >= 3, 10, "failed commits")
            assert r.xpending("feedgate:usage", "ledger")["pending"] > 0  # nothing acked
            assert consumer.stats.new == 1000
            postgres_server.admin(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
            await until(lambda: consumer.stats.new == 4000, 20, "recovery")
        await sink.stop()
        check = Database.open(pg_url)
        assert Ledger(check).count() == 4000
        check.close()
        assert r.xpending("feedgate:usage", "ledger")["pending"] == 0
    finally:
        postgres_server.admin(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
        r.close()
        for db in opened:
            with contextlib.suppress(Exception):
                db.close()


async def test_poison_entries_are_dead_lettered(
    redis_server: RedisServer, pg_ledger: Ledger
) -> None:
    r = redis_server.client()
    good = make_events(5)
    rows = encode_rows(good)
    r.xadd("feedgate:usage", {"v": "2", "n": "5", "rows": rows})
    forged = rows.replace("\t0\t", "\t-1\t", 1)  # a negative quantity
    r.xadd("feedgate:usage", {"v": "2", "n": "5", "rows": forged})
    r.xadd("feedgate:usage", {"v": "2", "n": "1", "rows": b"\xff\xfe not utf-8"})
    r.xadd("feedgate:usage", {"v": "2", "n": "4", "rows": rows})  # n lies
    r.xadd("feedgate:usage", {"v": "2", "n": "5"})  # no rows
    r.xadd("feedgate:usage", {"v": "2", "n": "5", "rows": rows + "x" * (1 << 20)})  # too big
    r.xadd("feedgate:usage", {"v": "1", "n": "1", "events": b"{not json"})
    r.xadd("feedgate:usage", {"v": "9", "events": encode_events(good)})
    # Format 1 (JSON), as an older gateway wrote it, is still read: no usage lost in an upgrade.
    older = make_events(3, session="older")
    r.xadd("feedgate:usage", {"v": "1", "n": "3", "events": encode_events(older)})
    consumer = LedgerConsumer(redis_server.url, pg_ledger, consumer="c1")
    async with consuming(consumer):
        await until(lambda: consumer.stats.dead_lettered == 7, 10, "dead letters")
        await until(lambda: consumer.stats.entries == 2, 10, "the good entries")
    assert pg_ledger.count() == 8
    dead = r.xrange("feedgate:usage:dead")
    assert len(dead) == 7
    assert all(b"dl:error" in fields and b"dl:id" in fields for _, fields in dead)
    assert b"RowError: row 1" in dead[0][1][b"dl:error"]  # names the bad row
    assert dead[0][1][b"orig:rows"] == forged.encode()  # kept whole, for inspection
    big = dead[4][1]
    assert b"over the 1048576 limit" in big[b"dl:error"]
    assert len(big[b"orig:rows"]) == 64 * 1024  # kept in part, not copied whole
    assert int(big[b"dl:truncated:rows"]) > 1 << 20
    assert dead[5][1][b"orig:events"] == b"{not json"
    assert r.xpending("feedgate:usage", "ledger")["pending"] == 0
    r.close()


def test_redis_fixture_restart_keeps_data(redis_server: RedisServer) -> None:
    r = redis_server.client()
    r.xadd("s", {"k": "v"})
    r.close()
    redis_server.kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        redis_server.client().ping()
    redis_server.start()
    r = redis_server.client()
    assert r.xlen("s") == 1
    r.close()


def test_a_sink_cannot_write_entries_the_consumer_would_refuse(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    try:
        for bad in (0, 1001):
            with pytest.raises(ValueError, match="entry_events"):
                RedisStreamSink("redis://127.0.0.1:1/0", spool=spool, entry_events=bad)
    finally:
        spool.close()
