"""One audit log across nodes (issue #15.1): three real nodes append to one PostgreSQL audit log,
serialised by an advisory lock on the log head taken in the append's own transaction, so the
Merkle tree and the hash chain stay linear, and `audit verify` passes on every node."""

from __future__ import annotations

import asyncio

import psycopg
from cluster_fixtures import Cluster
from rtsp_probe import Probe
from test_cluster_identity import _published, encoder_url, tee_publish_argv

SESSIONS = 500


async def _start(cluster: Cluster, i: int, token: str) -> tuple[Probe | None, int]:
    node = cluster.nodes[i % len(cluster.nodes)]
    try:
        probe = await Probe.connect("127.0.0.1", node.rtsp_port)
    except OSError:
        return None, 0
    try:
        return probe, await probe.play(f"street?token={token}", timeout=60)
    except (TimeoutError, ConnectionError):
        return probe, 0


async def test_audit_verifies_on_every_node_after_500_concurrent_session_starts(
    cluster_factory, procs
) -> None:
    cluster = await cluster_factory(config={"billing": {"enabled": False}})
    await procs(tee_publish_argv([encoder_url(n) for n in cluster.nodes]))
    admin = cluster.token("council", "council-admin", roles=["admin", "auditor"])
    await _published(cluster, admin)
    with psycopg.connect(cluster.database_url) as conn:
        (before,) = conn.execute(
            "SELECT count(*) FROM audit_entries WHERE action = 'session_start'"
        ).fetchone()

    token = cluster.token("police", "officer")
    started = await asyncio.gather(*(_start(cluster, i, token) for i in range(SESSIONS)))
    statuses = [status for _, status in started]
    for probe, _ in started:
        if probe is not None:
            await probe.close()
    assert statuses.count(200) == SESSIONS, {s: statuses.count(s) for s in set(statuses)}

    with psycopg.connect(cluster.database_url) as conn:
        (after,) = conn.execute(
            "SELECT count(*) FROM audit_entries WHERE action = 'session_start'"
        ).fetchone()
        (size, top) = conn.execute("SELECT count(*), max(seq) FROM audit_entries").fetchone()
    assert after - before == SESSIONS
    assert top == size - 1  # dense: no seq skipped, none twice
    for node in cluster.nodes:
        r = await node.get("v1/audit/verify", admin)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True, (node.node_id, r.json())
