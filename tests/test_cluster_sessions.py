"""Sessions across nodes (issue #15.3): each node's live sessions in the registry, a kick that
reaches the session's node, and ``feedgate nodes``, against a real Redis server.

The nodes here are ClusterNodes of in-process gateways (tenancy off); each node's own media
plane is a small table of sessions standing in for its RTSP/WebRTC sessions, so the test
is about the registry and the kick path, not about admitting viewers (the three-node
acceptance test does that with real viewers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from conftest import RunningGateway, running_gateway, wait_for
from test_cluster_media import node_config

from gateway.cluster.sessions import ClusterMedia, decode_sessions, encode_sessions
from tenants.control.ports import LiveSession


class Sessions:
    """One node's own sessions: what GatewayMedia would list, and its kick."""

    def __init__(self, *ids: str) -> None:
        self.live = {i: session(i) for i in ids}
        self.kicked: list[tuple[str, str, float]] = []

    def configured_cameras(self) -> frozenset[str]:
        return frozenset({"yard"})

    def sessions(self) -> Sequence[LiveSession]:
        return list(self.live.values())

    def kick(self, session_id: str, reason: str) -> bool:
        if self.live.pop(session_id, None) is None:
            return False
        self.kicked.append((session_id, reason, time.monotonic()))
        return True


def session(sid: str) -> LiveSession:
    return LiveSession(
        id=sid,
        protocol="rtsp",
        mode="play",
        state="playing",
        tenant="police",
        principal="officer",
        camera="yard",
        variant="",
        peer="127.0.0.1:5000",
        created=datetime(2026, 12, 2, 17, 0, tzinfo=UTC),
        bytes_sent=1234,
    )


@contextlib.asynccontextmanager
async def nodes_with_sessions(
    redis_url: str,
) -> AsyncIterator[list[tuple[RunningGateway, Sessions]]]:
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for i in (1, 2, 3):
            cfg = node_config(redis_url, f"n{i}", ())
            gw = await stack.enter_async_context(running_gateway(cfg))
            local = Sessions(f"s{i}a", f"s{i}b")
            gw.gateway.cluster.attach_media(local)
            out.append((gw, local))
        yield out


def media(gw: RunningGateway) -> ClusterMedia:
    return gw.gateway.cluster.media


async def test_any_node_lists_every_nodes_sessions_and_a_kick_reaches_the_right_one(redis_server):
    async with nodes_with_sessions(redis_server.url) as nodes:
        everyone = {f"s{i}{x}" for i in (1, 2, 3) for x in "ab"}
        for gw, _ in nodes:
            await wait_for(
                lambda gw=gw: {s.id for s in media(gw).sessions()} == everyone,
                10,
                what=f"{gw.config.node} to list every session",
            )
        listed = {s.id: s.node for s in media(nodes[0][0]).sessions()}
        assert listed == {s: f"n{s[1]}" for s in everyone}
        assert all(s.bytes_sent == 1234 for s in media(nodes[0][0]).sessions())
        await nodes[2][0].gateway.cluster.kicks.subscribed.wait()
        # A kick from node 1 of a session on node 3 ends it there, within a second.
        sent = time.monotonic()
        assert media(nodes[0][0]).kick("s3a", "ended by council-admin")
        await wait_for(lambda: nodes[2][1].kicked != [], 1.0, what="the kick on n3")
        assert nodes[2][1].kicked[0][:2] == ("s3a", "ended by council-admin")
        assert nodes[2][1].kicked[0][2] - sent < 1.0
        assert nodes[1][1].kicked == []  # nobody else's
        # Gone from every node's list by the next heartbeat.
        await wait_for(
            lambda: "s3a" not in {s.id for s in media(nodes[1][0]).sessions()}, 5, what="s3a gone"
        )
        assert not media(nodes[0][0]).kick("nope", "x")


async def test_a_stopped_nodes_sessions_leave_the_registry(redis_server):
    async with nodes_with_sessions(redis_server.url) as nodes:
        first = nodes[0][0]
        await wait_for(lambda: len(media(first).sessions()) == 6, 10, what="six sessions")
        await nodes[2][0].gateway.stop()
        nodes.pop()
        await wait_for(lambda: len(media(first).sessions()) == 4, 5, what="n3's sessions gone")


def test_session_rows_round_trip_and_bad_rows_are_skipped():
    rows = encode_sessions([session("a"), session("b")])
    back = decode_sessions(rows, "n9")
    assert [(s.id, s.node) for s in back] == [("a", "n9"), ("b", "n9")]
    mangled = json.loads(rows)
    mangled[0]["created"] = "yesterday"
    mangled.append({"id": "c"})
    assert [s.id for s in decode_sessions(json.dumps(mangled), "n9")] == ["b"]
    assert decode_sessions(b"not json", "n9") == []


async def test_feedgate_nodes_lists_the_cluster(redis_server, tmp_path: Path):
    async with nodes_with_sessions(redis_server.url) as nodes:
        cfg = tmp_path / "node.toml"
        cfg.write_text(
            f'[cluster]\nredis_url = "{redis_server.url}"\nsecret = "x"\nloopback_only = true\n'
        )
        await nodes[1][0].gateway.stop()
        nodes.pop(1)

        def run(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gateway.cli.main",
                    "nodes",
                    "--local",
                    "--config",
                    str(cfg),
                    *extra,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )

        out = await asyncio.to_thread(run, "--json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert [(r["node"], r["alive"]) for r in rows] == [
            ("n1", True),
            ("n3", True),
            ("n2", False),
        ]
        assert rows[0]["sessions"] == 2 and rows[0]["relay"].startswith("127.0.0.1:")
        table = await asyncio.to_thread(run)
        assert table.returncode == 0 and "n2" in table.stdout and "down" in table.stdout


def test_feedgate_nodes_needs_a_cluster(tmp_path: Path):
    cfg = tmp_path / "one.toml"
    cfg.write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "nodes", "--local", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "redis_url" in out.stderr
