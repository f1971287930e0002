"""The three-node fixture itself (tests/cluster_fixtures.py): real `feedgate serve` nodes on one
PostgreSQL and one Redis, each with its own node_id and data_dir, that survive kill -9 of a
node, of PostgreSQL and of Redis and come back on the same ports."""

from __future__ import annotations

import socket

import psycopg
from cluster_fixtures import to_toml

from gateway.config import load_config


def test_to_toml_writes_what_the_config_loader_reads(tmp_path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(
        to_toml(
            {
                "node_id": "n1",
                "rtsp": {"port": 9554, "basic_over_plain": True, "report_interval": 0.5},
                "webrtc": {"ice_servers": ["stun:x:3478"]},
                "cameras": [{"id": "a", "source": "push"}, {"id": "b", "name": 'q"uote'}],
            }
        )
    )
    cfg = load_config(path, env={})
    assert cfg.node_id == "n1" and cfg.rtsp.port == 9554 and cfg.rtsp.basic_over_plain
    assert cfg.webrtc.ice_servers == ("stun:x:3478",)
    assert [c.id for c in cfg.cameras] == ["a", "b"] and cfg.cameras[1].name == 'q"uote'


async def test_three_nodes_start_and_survive_kill_9_of_a_node_postgres_and_redis(
    cluster_factory,
) -> None:
    cluster = await cluster_factory()
    assert [n.node_id for n in cluster.nodes] == ["node1", "node2", "node3"]
    assert len({n.rtsp_port for n in cluster.nodes}) == 3
    assert len({n.data_dir for n in cluster.nodes}) == 3
    for node in cluster.nodes:
        assert (await node.get("healthz")).status_code == 200

    node = cluster.nodes[1]
    port = node.rtsp_port
    await node.kill()
    assert not node.running
    await node.start()
    assert node.rtsp_port == port and (await node.get("healthz")).status_code == 200
    assert "feedgate listening" in node.logs[0]  # the first incarnation's output is kept

    await cluster.kill_postgres()
    assert not cluster.postgres.running
    await cluster.start_postgres()
    with psycopg.connect(cluster.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (3,)

    await cluster.kill_redis()
    assert not cluster.redis.running
    await cluster.start_redis()
    assert cluster.redis.client().ping()


async def test_a_node_whose_picked_port_was_taken_before_it_bound_starts_on_new_ports(
    cluster_factory,
) -> None:
    """A port picked free can be taken before the node binds it (another worker's connection
    from the same ephemeral range did, in a full run): a node that never listened gets new ports
    and starts again, rather than failing the test that asked for a cluster."""
    cluster = await cluster_factory(1, start=False)
    node = cluster.nodes[0]
    taken = node.grpc_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        await cluster.start()
        assert node.running and node.listened
        assert node.grpc_port != taken
        assert "address already in use" in "".join(node.logs).lower()
        assert (await node.get("healthz")).status_code == 200
