"""Recording in a cluster (issues #13 and #15): on three real ``feedgate serve`` nodes with one
PostgreSQL and one Redis (tests/cluster_fixtures.py), a recorded camera is recorded by the node
holding its ingest lease only, however many nodes carry its stream; after kill -9 of that node
the new owner records, after a ``node_failover`` gap, and the old node, restarted, leaves it
there; the index is one (PostgreSQL) and the
files are on storage the nodes share, so /list, /get and exports answer the same on any node,
and a file a node cannot reach is a 503 that says why.

The camera is a gateway of the test's own publishing ffmpeg's test pattern
(test_cluster_media.camera_gateway): its hub counts the cluster's connections to it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cluster_fixtures import CLUSTER_SEED, Cluster, Node
from conftest import frames_of, publish_argv, read_argv, wait_for
from export_fixtures import ffprobe
from test_cluster_media import camera_gateway, camera_readers
from test_cluster_media_acceptance import cluster_settings, node, owner_of

from gateway.recording.index import GapReason, RecordingIndex
from tenants.db import Database

# The police may play back and export the street camera; the officer investigates.
SEED = CLUSTER_SEED.replace(
    'grantee = "police"\ncameras = ["street"]\nrights = ["live", "playback"]',
    'grantee = "police"\ncameras = ["street"]\nrights = ["live", "playback", "export"]',
).replace(
    'name = "Officer"\nroles = ["viewer"]', 'name = "Officer"\nroles = ["viewer", "investigator"]'
)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Index:
    """The cluster's recording index, read from the test (blocking calls in a thread)."""

    def __init__(self, cluster: Cluster, root: Path) -> None:
        self.index = RecordingIndex(Database.open(cluster.database_url), root)

    async def __call__(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def nodes(self) -> set[str]:
        return {s.node for s in await self(self.index.segments, "street")}

    async def recorded_by(self, node_id: str, after: datetime) -> float:
        """Seconds of fragments ``node_id`` indexed that start after ``after``."""
        segs = [s for s in await self(self.index.segments, "street") if s.node == node_id]
        total = 0.0
        for seg in segs:
            for f in await self(self.index.fragments, seg.id):
                if f.start >= after:
                    total += (f.end - f.start).total_seconds()
        return total


async def test_recording_follows_ingest_ownership_and_plays_from_any_node(
    cluster_factory, redis_server, procs, tmp_path
):
    shared = tmp_path / "shared"  # the storage every node mounts (NFS, SMB, a SAN volume)
    per_node = relay_on_any_port(cluster_settings(redis_server.url))

    def settings(i: int) -> dict[str, Any]:
        return {
            **per_node(i),
            "recording": {"dir": str(shared / "recordings"), "check_interval": 1.0},
            "export": {"dir": str(shared / "exports")},
        }

    async with camera_gateway(procs) as camera:
        started = datetime.now(UTC)
        cluster = await cluster_factory(
            seed=SEED,
            cameras=[
                {
                    "id": "street",
                    "source": camera.url("cam1"),
                    "record": True,
                    "segment_seconds": 4.0,
                }
            ],
            config=settings,
        )
        index = Index(cluster, shared / "recordings")
        police = cluster.token("police", "officer", roles=("viewer", "investigator"))
        await wait_for(lambda: len(owner_of(cluster, "street")) == 1, 30, what="one owner")
        (owner_id,) = owner_of(cluster, "street")
        owner = node(cluster, owner_id)
        survivors = [n for n in cluster.nodes if n is not owner]

        # Viewers on all three nodes: the edges relay the stream, and only the owner records.
        watching = [
            await procs(read_argv(n.url(f"street?token={police}"), seconds=5))
            for n in cluster.nodes
        ]
        await wait_for(
            lambda: all("street" in rec_edges(n) for n in survivors), 15, what="two edges"
        )
        for v in watching:
            assert await v.wait(60) == 0, v.text
            assert frames_of(v.text) >= 100, v.text
        assert camera_readers(camera) == 1
        await wait_for_recorded(index, owner_id, started, 8.0)
        assert await index.nodes() == {owner_id}
        segments = await index(index.index.segments, "street")
        # One file per segment (and perhaps the newest, not indexed until its first fragment).
        root = shared / "recordings"
        files = {p.relative_to(root).as_posix() for p in root.rglob("*.mp4")}
        indexed = {s.path for s in segments}
        assert indexed <= files and len(files - indexed) <= 1, (files, indexed)
        assert all(f > max(indexed) for f in files - indexed), (files, indexed)

        # kill -9 of the owner: another node takes the camera, repairs the dead writer's open
        # segment (shared storage) and records on, after a node_failover gap.
        await owner.kill()
        killed = datetime.now(UTC)
        seen: list[str] = []

        def new_owner() -> bool:
            seen[:] = owner_of(cluster, "street")  # one read: heartbeats move under load
            return len(seen) == 1 and seen != [owner_id]

        await wait_for(new_owner, 10, what="a new owner")
        (new_id,) = seen
        await wait_for_recorded(index, new_id, killed, 6.0)
        assert await index.nodes() == {owner_id, new_id}
        assert await index(index.index.open_segments, owner_id) == []
        gaps = await index(index.index.gaps, "street", started, datetime.now(UTC))
        failover = [g for g in gaps if g.reason is GapReason.NODE_FAILOVER]
        assert len(failover) == 1, gaps
        gap = failover[0]
        assert gap.start <= killed + timedelta(seconds=1) and gap.end > killed - timedelta(
            seconds=1
        ), (gap, killed)
        assert (gap.end - gap.start).total_seconds() < 12, gap
        print(f"failover gap {(gap.end - gap.start).total_seconds():.2f}s")

        # The old owner comes back: it leaves the camera (and its recording) where it is now
        # and repairs nothing of another node's at its start.
        await owner.start()
        back = datetime.now(UTC)
        await wait_for_recorded(index, new_id, back, 3.0)
        assert await index.recorded_by(owner_id, back) == 0
        assert owner_of(cluster, "street") == [new_id]

        # /list on every node: the same spans, broken at the failover.
        lists = []
        for n in cluster.nodes:
            r = await n.get(f"list?path=street&start={iso(started)}", police)
            assert r.status_code == 200, r.text
            lists.append(r.json())
        # (The last span grows as the new owner records; the URLs name the node asked.)
        for other in lists[1:]:
            assert [s["start"] for s in lists[0]] == [s["start"] for s in other]
            assert [s["duration"] for s in lists[0][:-1]] == [s["duration"] for s in other[:-1]]
        assert len(lists[0]) >= 2, lists[0]
        ends = [parse(s["start"]) + timedelta(seconds=s["duration"]) for s in lists[0]]
        assert any(abs((e - gap.start).total_seconds()) < 1.5 for e in ends), (lists[0], gap)

        # /get across the gap from every node: one file, the recording either side.
        start, duration = gap.start - timedelta(seconds=3), (gap.end - gap.start).total_seconds()
        query = f"get?path=street&start={iso(start)}&duration={duration + 6:.3f}&format=mp4"
        for n in cluster.nodes:
            r = await n.get(query, police)
            assert r.status_code == 200, r.text
            out = tmp_path / f"across-{n.node_id}.mp4"
            out.write_bytes(r.content)
            probe = await asyncio.to_thread(ffprobe, out)
            assert probe.errors == "", probe
            assert probe.frames >= 5 * 25 - 25, probe  # 3 s before the gap and 3 s after it
            assert probe.duration >= duration + 4, probe

        # An export made on one node is served by another, from the shared export.dir.
        maker, server = survivors
        body = {
            "camera": "street",
            "start": iso(segments[0].start + timedelta(seconds=1)),
            "end": iso(segments[0].start + timedelta(seconds=4)),
            "purpose": "incident CAD 17",
        }
        auth = {"Authorization": f"Bearer {police}"}
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(maker.http("v1/exports"), json=body, headers=auth)
            assert r.status_code == 202, r.text
            where = r.headers["Location"]
            job: dict[str, Any] = {}

            async def done() -> bool:
                nonlocal job
                job = (await client.get(server.http(where), headers=auth)).json()
                assert job["state"] in ("queued", "running", "done"), job
                return bool(job["state"] == "done")

            await wait_for_async(done, 60, "the export to be done, seen from the other node")
            media = await client.get(server.http(f"{where}/file"), headers=auth)
            assert media.status_code == 200, media.text
            assert sha256(media.content) == job["sha256"]
            manifest = await client.get(server.http(f"{where}/manifest"), headers=auth)
            assert manifest.status_code == 200 and job["sha256"] in manifest.text

            # Storage a node cannot reach (not shared, not mounted): a 503 that says why.
            export_file = shared / "exports" / f"{job['id']}.mp4"
            export_file.rename(export_file.with_suffix(".away"))
            r = await client.get(server.http(f"{where}/file"), headers=auth)
            assert r.status_code == 503, r.text
            assert f"made on node {maker.node_id}" in r.text and "export.dir" in r.text
        first = segments[0]
        seg_file = shared / "recordings" / first.path
        seg_file.rename(seg_file.with_suffix(".away"))
        for n in survivors:
            r = await n.get(f"get?path=street&start={iso(first.start)}&duration=2", police)
            assert r.status_code == 503, r.text
            assert f"written by node {owner_id}" in r.text and "recording.dir" in r.text
            r = await n.get(f"list?path=street&start={iso(started)}", police)
            assert r.status_code == 200  # the index still answers


async def wait_for_async(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def relay_on_any_port(per_node: Any) -> Any:
    """The acceptance tests' node settings with the relay on a port the node binds itself (and
    advertises in its heartbeat): a port picked in advance may be handed to another listener
    of the cluster before the node binds it (seen: a node exiting 'address already in use')."""

    def settings(i: int) -> dict[str, Any]:
        out = per_node(i)
        return {**out, "cluster": {**out["cluster"], "relay_port": 0}}

    return settings


def rec_edges(n: Node) -> set[str]:
    from test_cluster_media_acceptance import node_records

    rec = node_records(n.cluster).get(n.node_id, {})
    return set(rec.get("relayed", ()))


async def wait_for_recorded(index: Index, node_id: str, after: datetime, seconds: float) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await index.recorded_by(node_id, after) >= seconds:
            return
        await asyncio.sleep(0.5)
    got = await index.recorded_by(node_id, after)
    raise AssertionError(f"{node_id} recorded {got:.1f}s after {after}, wanted {seconds}s")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_pushed_cameras_recording_moves_with_its_publisher(
    cluster_factory, redis_server, procs, tmp_path
):
    shared = tmp_path / "shared"
    per_node = relay_on_any_port(cluster_settings(redis_server.url))
    cluster = await cluster_factory(
        n=2,
        seed=SEED,
        cameras=[{"id": "street", "source": "push", "record": True, "segment_seconds": 4.0}],
        config=lambda i: {
            **per_node(i),
            "recording": {"dir": str(shared / "recordings")},
            "export": {"dir": str(shared / "exports")},
        },
    )
    index = Index(cluster, shared / "recordings")
    first, second = cluster.nodes
    began = datetime.now(UTC)
    await procs(publish_argv(f"rtsp://encoder:enc@127.0.0.1:{first.rtsp_port}/street"))
    await wait_for_recorded(index, first.node_id, began, 4.0)
    assert await index.nodes() == {first.node_id}

    # The encoder reconnects to the other node: the camera, and its recording, move with it.
    moved = datetime.now(UTC)
    await procs(publish_argv(f"rtsp://encoder:enc@127.0.0.1:{second.rtsp_port}/street"))
    await wait_for_recorded(index, second.node_id, moved, 4.0)
    await wait_for_async(
        lambda: asyncio.to_thread(lambda: not index.index.open_segments(first.node_id)),
        15,
        "the first node to seal its segment",
    )
    segments = await index(index.index.segments, "street")
    assert {s.node for s in segments} == {first.node_id, second.node_id}
    last_first = max(s.end for s in segments if s.node == first.node_id)
    first_second = min(s.start for s in segments if s.node == second.node_id)
    # Both encoders publish at once here (a real one moving leaves nothing on the old node): the
    # old node sees the takeover within an ownership tick (0.25 s), not at its next renewal
    # (lease_ttl / 3 = 2 s), and stops. The new owner starts with the GOP its hub had cached
    # (1 s here, dated back to its capture), so the two overlap by at most about that.
    assert last_first <= first_second + timedelta(seconds=1.5), segments
    print(f"recordings meet at {(last_first - first_second).total_seconds():+.2f}s overlap")
    gaps = await index(index.index.gaps, "street", began, datetime.now(UTC))
    # The new owner's recording follows a node_failover gap, unless the old one was still
    # recording when it started (then there is nothing between them to call a gap).
    if first_second > last_first:
        assert [g.reason for g in gaps if g.end > last_first] == [GapReason.NODE_FAILOVER], gaps
