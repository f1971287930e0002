"""The cluster's nodes through the one control service (issue #15.3): ``GET /v1/nodes`` (in the
REST route table and the OpenAPI document), gRPC ``NodeService/ListNodes``, and
``feedgate nodes`` as a thin adapter over the gRPC call. The platform's admins and operators
only; who is asking is answered before whether there is a cluster to show.

Before: only ``feedgate nodes --config FILE`` existed, reading the cluster's Redis itself with
no identity at all; there was no /v1/nodes (404) and no gRPC method."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cluster_fixtures import Cluster
from rest_fixtures import rest_gateway
from test_cluster_media_acceptance import cluster_settings


async def test_one_node_answers_who_are_you_then_that_it_has_no_cluster(tmp_path: Path) -> None:
    async with rest_gateway(tmp_path) as rest:
        status, problem = await rest.call(None, "GET", "/v1/nodes")
        assert status == 401, problem
        async with rest.session.get(
            rest.base + "/v1/nodes", headers={"Authorization": "Bearer not-a-jwt"}
        ) as r:
            assert r.status == 401
        for who in ("farside-admin", "padmin", "pop", "cview", "caud"):
            status, problem = await rest.call(who, "GET", "/v1/nodes")
            assert status == 403, (who, problem)
        # Only now: the platform's admin and operator learn there is no cluster here.
        for who in ("root", "cop"):
            status, problem = await rest.call(who, "GET", "/v1/nodes")
            assert status == 503 and problem["code"] == "unavailable", (who, problem)
            assert "one node" in problem["detail"]
        status, doc = await rest.call(None, "GET", "/v1/openapi.json")
        assert status == 200
        op = doc["paths"]["/v1/nodes"]["get"]
        assert op["operationId"] == "ListNodes"
        item = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert item["$ref"].endswith("NodeViewPage")
        assert {"node", "alive", "last_seen", "relay", "owned", "relayed"} <= set(
            doc["components"]["schemas"]["NodeView"]["properties"]
        )
        # The refusals were audited, as every refusal of the control API is.
        assert any(e.detail.get("method") == "ListNodes" for e in rest.denials())


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


def _nodes_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "nodes", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_every_node_lists_the_cluster_over_rest_grpc_and_the_cli(
    cluster_factory, redis_server
) -> None:
    redis_cluster = cluster_settings(redis_server.url)
    cluster: Cluster = await cluster_factory(
        config=lambda i: {**redis_cluster(i), "billing": {"enabled": False}}
    )
    admin = cluster.token("council", "council-admin", roles=["admin"])
    operator = cluster.token("council", "encoder", roles=["operator"])  # an operator
    officer = cluster.token("police", "officer")
    ids = [n.node_id for n in cluster.nodes]

    async def listed(node_index: int, token: str) -> list[dict[str, object]]:
        r = await cluster.nodes[node_index].get("v1/nodes", token)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def all_up() -> bool:
        rows = await listed(1, admin)
        # Each heartbeat names the node's HTTP port once its listener is up (before: always 0).
        ports = [(n.node_id, True, n.http_port) for n in cluster.nodes]
        return [(r["node"], r["alive"], r["http_port"]) for r in rows] == ports

    await _until(all_up, 20, what="three nodes up in /v1/nodes")
    rows = await listed(1, operator)
    by_id = {str(r["node"]): r for r in rows}
    for node in cluster.nodes:
        row = by_id[node.node_id]
        assert row["http_port"] == node.http_port and row["rtsp_port"] == node.rtsp_port
        assert str(row["relay"]).startswith("127.0.0.1:") and row["started"]

    # Who are you (401), then may you (403): a partner's viewer never sees the layout.
    assert (await cluster.nodes[0].get("v1/nodes")).status_code == 401
    assert (await cluster.nodes[0].get("v1/nodes", officer)).status_code == 403

    # gRPC through the CLI: the same operation, the same answer.
    grpc = f"127.0.0.1:{cluster.nodes[2].grpc_port}"
    out = await asyncio.to_thread(_nodes_cli, "--server", grpc, "--token", admin, "--json")
    assert out.returncode == 0, out.stderr
    cli_rows = json.loads(out.stdout)
    assert [(r["node"], r["alive"]) for r in cli_rows] == [(i, True) for i in ids]
    assert {r["node"]: r["relay"] for r in cli_rows} == {i: by_id[i]["relay"] for i in ids}
    out = await asyncio.to_thread(_nodes_cli, "--server", grpc)
    assert out.returncode == 1 and "UNAUTHENTICATED" in out.stderr
    out = await asyncio.to_thread(_nodes_cli, "--server", grpc, "--token", officer)
    assert out.returncode == 1 and "PERMISSION_DENIED" in out.stderr

    # A node that leaves is listed down by the others at once (it said goodbye).
    await cluster.nodes[2].stop()

    async def third_down() -> bool:
        rows = await listed(0, admin)
        return [(r["node"], r["alive"]) for r in rows][-1] == (ids[2], False)

    await _until(third_down, 10, what="node 3 listed down")
    table = await asyncio.to_thread(
        _nodes_cli, "--server", f"127.0.0.1:{cluster.nodes[0].grpc_port}", "--token", admin
    )
    assert table.returncode == 0, table.stderr
    assert ids[2] in table.stdout and "down" in table.stdout
