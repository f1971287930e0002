"""The audit spool (issue #15.4, failover scope 3): what happens while the database is down is
kept on disk and appended once, in order, when it is back; a crash in the middle of that drain
appends nothing twice and loses nothing; a full spool refuses no more than it must, counts
what it could not keep, and the log says so."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from cluster_fixtures import cluster_keys
from conftest import (
    RunningGateway,
    make_config,
    publish_argv,
    publishing,
    running_gateway,
    wait_for,
)
from rtsp_probe import play_status
from test_admission import SEED, _token

from gateway.config import CameraConfig, TenancyConfig
from tenants.audit import AuditAction, AuditLog, verify_log
from tenants.audit.spool import AuditSpool
from tenants.db import Database
from tenants.tokens import SigningKey

# A drain killed -9 right after its Nth append committed, before the spool's progress is
# written: the window in which an entry used to go into the log twice.
_CRASHING_DRAIN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tenants.audit import AuditLog
    from tenants.audit.spool import AuditSpool
    from tenants.db import Database
    from tenants.tokens import SigningKey

    url, key, spool, crash_at = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    real, calls = AuditSpool.done, 0

    def done(self, offset):
        global calls
        calls += 1
        if calls == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        real(self, offset)

    AuditSpool.done = done
    log = AuditLog(Database.open(url), SigningKey.load_or_create(key).private_key,
                   spool=AuditSpool(spool))
    log.flush()
    """
)


def _spool_entries(spool: AuditSpool, n: int) -> list[str]:
    return [
        spool.put(
            {
                "action": "session_end",
                "occurred_at": f"2026-12-02T10:00:0{i}.000000Z",
                "tenant": "police",
                "principal": "officer",
                "camera": "street",
                "purpose": None,
                "outcome": "ok",
                "detail": {"session": f"s{i}"},
            }
        )
        for i in range(n)
    ]


@pytest.fixture
def opened(db_url: str) -> Iterator[Database]:
    db = Database.open(db_url)
    yield db
    db.close()


def test_a_drain_killed_mid_way_appends_no_entry_twice_and_loses_none(opened, db_url, tmp_path):
    key_file = tmp_path / "audit.pem"
    key = SigningKey.load_or_create(key_file)
    AuditLog(opened, key.private_key).append("session_start", tenant="police")
    spool_dir = tmp_path / "spool"
    ids = _spool_entries(AuditSpool(spool_dir), 5)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", _CRASHING_DRAIN, db_url, str(key_file), str(spool_dir), "3"]
    crashed = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    # The restarted process drains again from the progress it had recorded (after entry 2).
    log = AuditLog(opened, key.private_key, spool=AuditSpool(spool_dir))
    log.flush()
    drained = [e.detail.get("spool_id") for e in log.entries() if e.detail.get("spool_id")]
    assert drained == ids  # each once, in order
    assert not log.spool_pending
    assert verify_log(opened, key.private_key.public_key()).ok


def test_a_full_spool_counts_what_it_cannot_keep_and_the_log_records_the_gap(
    opened, tmp_path, monkeypatch
):
    key = SigningKey.generate()
    spool = AuditSpool(tmp_path / "spool")
    log = AuditLog(opened, key.private_key, spool=spool)
    log.append("session_start", tenant="police", detail={"session": "s0"})
    real = opened._run

    def down(sql: str, params: object) -> None:
        raise opened._lost(OSError("down"))

    monkeypatch.setattr(opened, "_run", down)
    for i in range(5):  # never raises: a refusal still refuses, a session's end still ends
        log.append_or_spool(
            "denied", tenant="police", outcome="denied", detail={"status": 503, "i": i}
        )
        if i == 0:  # room for two such entries, not three
            spool.max_bytes = (tmp_path / "spool" / "entries.jsonl").stat().st_size * 5 // 2
    kept = (tmp_path / "spool" / "entries.jsonl").read_text().count("\n")
    assert kept == 2 and spool.dropped == 3 and log.spool_lost() == 3
    monkeypatch.setattr(opened, "_run", real)
    opened.unavailable_since = None  # as a reconnect does
    log.append("session_start", tenant="police", detail={"session": "s1"})  # drains first
    got = [(e.action, e.detail.get("i"), e.detail.get("not_kept")) for e in log.entries()]
    assert got == [
        (AuditAction.SESSION_START, None, None),
        (AuditAction.DENIED, 0, None),
        (AuditAction.DENIED, 1, None),
        (AuditAction.AUDIT_GAP, None, 3),
        (AuditAction.SESSION_START, None, None),
    ]
    assert log.spool_lost() == 0 and not log.spool_pending
    # Recorded once, even by a process that restarts before it learnt it had been.
    assert AuditLog(opened, key.private_key, spool=AuditSpool(tmp_path / "spool")).flush() == 0
    assert len(list(log.entries())) == 5
    assert verify_log(opened, key.private_key.public_key()).ok


@pytest.fixture
async def pg_gw(tmp_path, private_postgres, procs) -> AsyncIterator[RunningGateway]:
    """One node on its own PostgreSQL (which the test may kill -9), with a publisher."""
    (tmp_path / "seed.toml").write_text(SEED)
    config = replace(
        make_config((CameraConfig(id="street"),)),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(
            enabled=True, database=private_postgres.url(), seed=str(tmp_path / "seed.toml")
        ),
        keys=cluster_keys(tmp_path / "keys"),
    )
    async with running_gateway(config) as gw:
        await procs(publish_argv(f"rtsp://encoder:enc@127.0.0.1:{gw.port}/street"))
        await publishing(gw, "street")
        yield gw


async def test_with_a_full_spool_new_sessions_get_503_and_the_node_says_why(
    pg_gw, private_postgres, monkeypatch
):
    gw = pg_gw
    tenancy = gw.gateway.tenancy
    spool = tenancy.audit._spool
    monkeypatch.setattr(spool, "max_bytes", 1)  # nothing more fits
    url = gw.url(f"street?token={_token(gw, 'police', 'officer')}")
    assert await play_status(url) == 200
    await asyncio.to_thread(private_postgres.kill)
    statuses = [await play_status(url) for _ in range(3)]
    await asyncio.to_thread(tenancy.drain)  # the refusals' audit has run
    reason = tenancy.degraded()
    # Refused as in any outage (admission needs its start in the database, not the spool),
    # never 500; what the spool could not keep is counted and named by /healthz.
    assert statuses == [503] * 3
    assert spool.dropped >= 1 and reason is not None and "audit spool full" in reason, reason
    lost = tenancy.audit.spool_lost()
    assert lost == spool.dropped
    # Back: the same viewer is admitted, and the log says how many entries were not kept.
    await asyncio.to_thread(private_postgres.start)

    async def plays() -> bool:
        return await play_status(url) == 200

    deadline = asyncio.get_running_loop().time() + 15
    while not await plays():
        assert asyncio.get_running_loop().time() < deadline, "never admitted again"
        await asyncio.sleep(0.2)
    await asyncio.to_thread(tenancy.drain)
    gaps = [e for e in tenancy.audit.entries() if e.action is AuditAction.AUDIT_GAP]
    # Every entry it could not keep is counted there (refusals while it reconnected too).
    assert gaps and sum(g.detail["not_kept"] for g in gaps) == spool.dropped >= lost
    await wait_for(lambda: tenancy.degraded() is None, 10, what="the node healthy again")
    assert verify_log(tenancy.db, tenancy.audit_key.private_key.public_key()).ok
