"""Database outages survived (issue #15.4): PostgreSQL is killed -9 under three real nodes while
viewers watch, and started again. Live viewers keep playing; new viewers get 503 with
Retry-After, never 500; after the restart new viewers get in within 5 s without restarting any
node; /healthz says degraded, with a reason, while it is down."""

from __future__ import annotations

import asyncio
import time

from cluster_fixtures import Cluster
from conftest import wait_for
from rtsp_probe import Probe
from test_cluster_identity import _published, encoder_url, tee_publish_argv

OUTAGE = 8.0  # seconds (the issue asks 20; shortened for the suite's 2 shared cores)


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


async def test_postgres_kill_9_live_viewers_play_on_new_ones_get_503_then_back_within_5_s(
    cluster_factory, procs
) -> None:
    cluster = await cluster_factory(config={"billing": {"enabled": False}})
    await procs(tee_publish_argv([encoder_url(n) for n in cluster.nodes]))
    admin = cluster.token("council", "council-admin", roles=["admin", "auditor"])
    await _published(cluster, admin)
    token = cluster.token("police", "officer")
    live = []
    for node in cluster.nodes:
        probe = await Probe.connect("127.0.0.1", node.rtsp_port)
        assert await probe.play(f"street?token={token}") == 200
        live.append(probe)

    await cluster.kill_postgres()
    down_at = time.monotonic()
    statuses: list[int] = []
    i = 0
    while time.monotonic() - down_at < OUTAGE:
        status, headers = await _try_play(cluster, i, cluster.token("police", "officer"))
        statuses.append(status)
        if status == 503:
            assert "Retry-After" in headers, headers
        i += 1
        await asyncio.sleep(0.3)
    health = [(await n.get("healthz")).json() for n in cluster.nodes]
    marks = [p.media_bytes for p in live]
    await asyncio.sleep(1.0)
    assert all(p.media_bytes > m for p, m in zip(live, marks, strict=True)), "live viewers stopped"
    assert 500 not in statuses and 200 not in statuses, statuses
    assert set(statuses) == {503}, statuses
    assert all(h["status"] == "degraded" and h.get("reason") for h in health), health

    await cluster.start_postgres()
    back_at = time.monotonic()
    for i in range(3):  # every node, none restarted
        while True:
            status, _ = await _try_play(cluster, i, cluster.token("police", "officer"))
            if status == 200:
                break
            assert time.monotonic() - back_at < 5.0, (cluster.nodes[i].node_id, status)
            await asyncio.sleep(0.1)
    took = time.monotonic() - back_at
    print(f"\nnew viewers on all three nodes {took:.2f} s after PostgreSQL restarted")
    await wait_for(
        lambda: all("degraded" not in n.text[-200:] for n in cluster.nodes), 5, what="healthy"
    )
    for node in cluster.nodes:
        assert (await node.get("healthz")).json()["status"] == "ok"
    for probe in live:
        await probe.close()


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
