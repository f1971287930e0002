"""One audit log across nodes (issue #15.1): three real nodes append to one PostgreSQL audit log,
serialised by an advisory lock on the log head taken in the append's own transaction, so the
Merkle tree and the hash chain stay linear, and `audit verify` passes on every node."""

from __future__ import annotations

import asyncio

import psycopg
from cluster_fixtures import Cluster, Node
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


async def test_an_audit_key_rotated_mid_log_is_published_signs_and_verifies_on_every_node(
    cluster_factory,
) -> None:
    """Issue #15.1 (rotation): `feedgate keys rotate --audit` on the shared key directory while
    three nodes append. Every node publishes the new key (JWKS, with the kid checkpoints name)
    and signs with it once its time comes, the old key keeps vouching for what it signed, and
    `audit verify` passes on every node. Before, there was one audit key and no rotation."""
    from test_cluster_identity import _cli, _issue

    cluster = await cluster_factory(config={"billing": {"enabled": False}})
    admin = cluster.token("council", "council-admin", roles=["admin", "auditor"])

    def checkpoints() -> list[tuple[int, str, str]]:
        with psycopg.connect(cluster.database_url) as conn:
            rows = conn.execute("SELECT size, key_id, time FROM audit_checkpoints ORDER BY size")
            return [(int(s), str(k), str(t)) for s, k, t in rows.fetchall()]

    def entries() -> int:
        with psycopg.connect(cluster.database_url) as conn:
            (n,) = conn.execute("SELECT count(*) FROM audit_entries").fetchone()
            return int(n)

    async def all_signed() -> list[tuple[int, str, str]]:
        for _ in range(300):  # the nodes' checkpoint timers run every 5 s
            cps = await asyncio.to_thread(checkpoints)
            if cps and cps[-1][0] == await asyncio.to_thread(entries):
                return cps
            await asyncio.sleep(0.1)
        raise AssertionError(f"the log's tail was never checkpointed: {cps[-3:]}")

    for node in cluster.nodes:
        await _issue(node, admin, "officer", "police")
    before = await all_signed()
    old_kids = {kid for _, kid, _ in before}
    assert len(old_kids) == 1

    r = await asyncio.to_thread(
        _cli,
        "keys", "rotate", "--audit", "--config", str(cluster.nodes[0].config_path),
        "--start-in", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    new_kid = r.stdout.split()[0]
    assert new_kid not in old_kids

    async def audit_kids(node: Node) -> set[str]:
        doc = (await node.get(".well-known/jwks.json")).json()
        return {k["feedgate_audit_kid"] for k in doc["keys"] if "feedgate_audit_kid" in k}

    for node in cluster.nodes:  # reload_interval 0.5 s
        for _ in range(100):
            if new_kid in await audit_kids(node):
                break
            await asyncio.sleep(0.1)
        assert await audit_kids(node) == old_kids | {new_kid}, node.node_id
    # Once its time comes (1 s), each node signs with it after its next re-read: a round of
    # entries on every node whose checkpoints all name the new key (a slow reload on a loaded
    # machine may take a round or two).
    last = before[-1][0]
    for _ in range(20):
        for node in cluster.nodes:
            await _issue(node, admin, "officer", "police")
        after = await all_signed()
        later = [kid for size, kid, _ in after if size > last]
        if later and set(later) == {new_kid}:
            break
        last = after[-1][0]
    assert later and set(later) == {new_kid}, later
    assert {kid for _, kid, _ in after} == old_kids | {new_kid}
    for node in cluster.nodes:
        r2 = await node.get("v1/audit/verify", admin)
        assert r2.status_code == 200, r2.text
        assert r2.json()["ok"] is True, (node.node_id, r2.json())
