"""Database outages survived (issue #15.4): PostgreSQL is killed -9 under three real nodes while
viewers watch, and started again. Live viewers keep playing; new viewers get 503 with
Retry-After, never 500; after the restart new viewers get in within 5 s without restarting any
node; /healthz says degraded, with a reason, while it is down."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime

import aiohttp
import psycopg
from cluster_fixtures import Cluster
from conftest import wait_for
from rtsp_probe import Probe
from test_cluster_identity import _published, encoder_url, tee_publish_argv
from whep_client import WhepClient, gather_on_loopback

# Seconds PostgreSQL stays down: the 20. Measured at load 13-16 on the 2 shared cores,
# the test takes 38 s with it against 25 s at 8 s (FEEDGATE_TEST_PG_OUTAGE=8 for a quick run).
OUTAGE = float(os.environ.get("FEEDGATE_TEST_PG_OUTAGE", "20"))


async def _try_play(cluster: Cluster, i: int, token: str) -> tuple[int, dict[str, str]]:
    node = cluster.nodes[i % 3]
    probe = await Probe.connect("127.0.0.1", node.rtsp_port)
    try:
        base = f"rtsp://127.0.0.1:{node.rtsp_port}/street?token={token}"
        r = await probe.request("DESCRIBE", base, (("Accept", "application/sdp"),), 15)
        if r.status != 200:
            return r.status, dict(r.headers)
        setup = f"rtsp://127.0.0.1:{node.rtsp_port}/street/trackID=0?token={token}"
        transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
        r = await probe.request("SETUP", setup, (transport,), 15)
        if r.status != 200:
            return r.status, dict(r.headers)
        r = await probe.request("PLAY", base, (), 15)
        return r.status, dict(r.headers)
    finally:
        await probe.close()


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(sql).fetchall())


async def test_postgres_kill_9_live_viewers_play_on_new_ones_get_503_then_back_within_5_s(
    cluster_factory, procs
) -> None:
    gather_on_loopback()
    cluster = await cluster_factory()
    await procs(tee_publish_argv([encoder_url(n) for n in cluster.nodes]))
    admin = cluster.token("council", "council-admin", roles=["admin", "auditor"])
    await _published(cluster, admin)
    token = cluster.token("police", "officer")
    live = []
    for node in [*cluster.nodes, cluster.nodes[0]]:
        probe = await Probe.connect("127.0.0.1", node.rtsp_port)
        assert await probe.play(f"street?token={token}") == 200
        live.append(probe)
    leaver = live.pop()  # ends during the outage: its end must not be lost

    await cluster.kill_postgres()
    down_at = time.monotonic()
    statuses: list[int] = []
    i = 0
    while time.monotonic() - down_at < OUTAGE:
        status, headers = await _try_play(cluster, i, cluster.token("police", "officer"))
        statuses.append(status)
        if status == 503:
            assert "Retry-After" in headers, headers
        if i == 3:
            await leaver.close()
        i += 1
        await asyncio.sleep(0.3)
    # WHEP on another node: a 503 problem with Retry-After, not a 500.
    whep = WhepClient(
        cluster.nodes[1].http("whep/street"), token=cluster.token("police", "officer")
    )
    async with aiohttp.ClientSession() as http:
        try:
            whep_status = await whep.connect(http)
        finally:
            await whep.close()
    health = [(await n.get("healthz")).json() for n in cluster.nodes]
    marks = [p.media_bytes for p in live]
    await asyncio.sleep(1.0)
    assert all(p.media_bytes > m for p, m in zip(live, marks, strict=True)), "live viewers stopped"
    assert 500 not in statuses and 200 not in statuses, statuses
    assert set(statuses) == {503}, statuses
    assert all(h["status"] == "degraded" and h.get("reason") for h in health), health
    assert whep_status == 503, (whep_status, whep.reason)
    for node in cluster.nodes:  # one warning with a count, not a traceback 4 times a second
        reloads = [ln for ln in node.text.splitlines() if "policy reload" in ln]
        assert len(reloads) <= 2, reloads
        at = node.text.find("Traceback")
        assert at < 0, node.text[max(0, at - 300) : at + 2500]
    outage_end = datetime.now(UTC)

    await cluster.start_postgres()
    back_at = time.monotonic()
    after = []
    for i in range(3):  # every node, none restarted
        while True:
            probe = await Probe.connect("127.0.0.1", cluster.nodes[i].rtsp_port)
            status = await probe.play(f"street?token={cluster.token('police', 'officer')}")
            if status == 200:
                after.append(probe)
                break
            await probe.close()
            assert time.monotonic() - back_at < 5.0, (cluster.nodes[i].node_id, status)
            await asyncio.sleep(0.1)
    took = time.monotonic() - back_at
    recovered = datetime.now(UTC)  # refusals until a node reconnected are the outage's too
    print(f"\nnew viewers on all three nodes {took:.2f} s after PostgreSQL restarted")

    # The outage's entries, kept on each node's disk, reach the log in order.
    def outage_entries() -> list[tuple]:
        return _rows(
            cluster.database_url,
            "SELECT action, detail FROM audit_entries WHERE detail LIKE '%occurred_at%'",
        )

    await wait_for(
        lambda: any(a == "session_end" for a, _ in outage_entries()), 15, what="the spooled end"
    )
    entries = [(a, json.loads(d)) for a, d in outage_entries()]
    ends = [d for a, d in entries if a == "session_end"]
    denials = [d for a, d in entries if a == "denied"]
    assert len(ends) == 1 and denials, entries
    occurred = [datetime.fromisoformat(d["occurred_at"].replace("Z", "+00:00")) for _, d in entries]
    assert all(t < recovered for t in occurred) and min(occurred) < outage_end, entries
    assert len({d["spool_id"] for _, d in entries}) == len(entries)  # none twice
    for node in cluster.nodes:
        assert (await node.get("healthz")).json()["status"] == "ok"
        r = (await node.get("v1/audit/verify", admin)).json()
        assert r["ok"] is True, r["problem"]

    # No refused session shows usage: every metered session was admitted (audited start).
    for probe in live + after:
        await probe.close()
    started = {
        json.loads(d)["session"]
        for (d,) in _rows(
            cluster.database_url, "SELECT detail FROM audit_entries WHERE action = 'session_start'"
        )
    }

    # Until the ledger stops growing: every closed session's last interval is in.
    counts: list[int] = []

    def settled() -> bool:
        counts.append(_rows(cluster.database_url, "SELECT count(*) FROM usage_events")[0][0])
        return len(counts) > 20 and counts[-1] == counts[-21] > 0

    await wait_for(settled, 40, 0.1, what="the usage ledger to settle")
    metered = {sid for (sid,) in _rows(cluster.database_url, "SELECT session_id FROM usage_events")}
    assert metered <= started, metered - started


async def test_a_database_connection_comes_back_after_postgres_is_killed_and_restarted(
    private_postgres,
) -> None:
    """Before: a dropped psycopg connection was never made again; every query failed until the
    process restarted."""
    from tenants.db import Database, DatabaseError

    db = Database.open(private_postgres.url())
    try:
        assert db.query_one("SELECT 1") == (1,) and db.available
        private_postgres.kill()
        for _ in range(3):  # refused quickly, with backoff, and said so
            try:
                db.query_one("SELECT 1")
            except DatabaseError as exc:
                assert type(exc).__name__ == "DatabaseUnavailable", exc
            else:
                raise AssertionError("a query answered with PostgreSQL down")
        assert not db.available
        private_postgres.start()
        started = time.monotonic()
        while True:
            try:
                assert db.query_one("SELECT 1") == (1,)
                break
            except DatabaseError:
                assert time.monotonic() - started < 5.0, "never reconnected"
                await asyncio.sleep(0.05)
        assert db.available
    finally:
        db.close()


def test_entries_of_an_outage_wait_in_the_spool_and_go_in_after_what_others_wrote(
    tmp_path, monkeypatch, pg_url
) -> None:
    """Two nodes' writers on one PostgreSQL log; one loses its database: a session end and a
    refusal wait on its disk (fsynced) and are appended in order when it is back, after what
    the other node wrote meanwhile, each with when it happened; the log verifies."""
    from tenants.audit import AuditLog, verify_log
    from tenants.audit.spool import AuditSpool
    from tenants.db import Database, DatabaseUnavailable
    from tenants.tokens import SigningKey

    key = SigningKey.generate()
    db_a, db_b = Database.open(pg_url), Database.open(pg_url)
    a = AuditLog(db_a, key.private_key, spool=AuditSpool(tmp_path / "a"))
    b = AuditLog(db_b, key.private_key, spool=AuditSpool(tmp_path / "b"))
    a.append("session_start", tenant="police", detail={"session": "s1"})
    real = db_a._run

    def down(sql: str, params: object) -> None:
        raise DatabaseUnavailable("down")

    monkeypatch.setattr(db_a, "_run", down)
    a.append_or_spool("denied", tenant="police", outcome="denied", detail={"status": 503})
    a.append_or_spool("session_end", tenant="police", detail={"session": "s1"})
    assert a.spool_pending and (tmp_path / "a" / "entries.jsonl").read_text().count("\n") == 2
    b.append("session_start", tenant="police", detail={"session": "s2"})
    monkeypatch.setattr(db_a, "_run", real)
    assert a.flush() == 2 and not a.spool_pending
    b.append("session_end", tenant="police", detail={"session": "s2"})
    got = [
        (e.action.value, e.detail.get("session"), "occurred_at" in e.detail) for e in a.entries()
    ]
    assert got == [
        ("session_start", "s1", False),
        ("session_start", "s2", False),
        ("denied", None, True),
        ("session_end", "s1", True),
        ("session_end", "s2", False),
    ]
    assert verify_log(db_a, key.private_key.public_key()).ok
    db_a.close()
    db_b.close()


def test_a_writer_whose_last_entry_the_database_lost_appends_after_the_real_head(
    tmp_path,
) -> None:
    """A commit the server lost (or a transaction the writer joined that rolled back) while
    another node took its seq: the writer must chain from the table, not from its memory.
    Before: it chained from its lost entry and `audit verify` failed ("entry N was edited")."""
    from tenants.audit import AuditLog, verify_log
    from tenants.db import Database
    from tenants.tokens import SigningKey

    key = SigningKey.generate()
    url = f"sqlite://{tmp_path / 'audit.db'}"
    db_a, db_b = Database.open(url), Database.open(url)
    a = AuditLog(db_a, key.private_key)
    a.append("session_start", tenant="police", detail={"session": "s1"})
    a.append("session_start", tenant="police", detail={"session": "lost"})
    db_b.execute("DELETE FROM audit_entries WHERE seq = 1")  # the server lost it
    b = AuditLog(db_b, key.private_key)
    b.append("session_start", tenant="police", detail={"session": "s2"})  # takes seq 1
    a.append("session_end", tenant="police", detail={"session": "s1"})
    r = verify_log(db_a, key.private_key.public_key())
    assert r.ok, r.problem
    db_a.close()
    db_b.close()
