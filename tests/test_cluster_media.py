"""One ingest per camera per cluster (issue #15.2): nodes sharing a real Redis pull each camera
once, relay it to each other over authenticated internal RTSP, and move it when its owner
goes. The camera is another gateway publishing ffmpeg's test pattern, so its hub counts the
cluster's connections to it; viewers are real ffmpeg clients."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import (
    RunningGateway,
    frames_of,
    make_config,
    publish_argv,
    publishing,
    read_argv,
    running_gateway,
    wait_for,
)

from gateway.cluster.relay import RELAY_USER
from gateway.cluster.settings import ClusterConfig
from gateway.config import CameraConfig, Config
from gateway.sources.rtsp_client import RtspClient, RtspClientError

SECRET = "test-cluster-secret-0123456789"


def node_config(
    redis_url: str, node: str, cameras: tuple[CameraConfig, ...], **cluster: Any
) -> Config:
    cfg = make_config(cameras)
    settings = {
        "redis_url": redis_url,
        "relay_port": 0,
        "secret": SECRET,
        "lease_ttl": 3.0,
        "heartbeat_interval": 0.25,
        "heartbeat_ttl": 1.0,
        "relay_linger": 1.0,
        **cluster,
    }
    return dataclasses.replace(cfg, node_id=node, cluster=ClusterConfig(**settings))


@contextlib.asynccontextmanager
async def camera_gateway(procs: Any) -> AsyncIterator[RunningGateway]:
    async with running_gateway(make_config()) as camera:
        await procs(publish_argv(camera.url("cam1")))
        await publishing(camera, "cam1")
        yield camera


def owners(nodes: list[RunningGateway], path: str) -> list[str]:
    return [n.config.node for n in nodes if path in n.gateway.cluster.ownership.held]


def camera_readers(camera: RunningGateway) -> int:
    s = camera.hub.get("cam1")
    return len(s.readers) if s is not None else 0


@pytest.fixture
async def cluster_of_three(
    redis_server, procs
) -> AsyncIterator[tuple[RunningGateway, list[RunningGateway]]]:
    async with camera_gateway(procs) as camera:
        cams = (CameraConfig(id="yard", name="Yard", source=camera.url("cam1")),)
        async with contextlib.AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    running_gateway(node_config(redis_server.url, f"n{i}", cams))
                )
                for i in (1, 2, 3)
            ]
            yield camera, nodes


async def test_a_camera_is_pulled_once_however_many_nodes_serve_it(cluster_of_three, procs):
    camera, nodes = cluster_of_three
    await wait_for(lambda: len(owners(nodes, "yard")) == 1, 15, what="one owner of yard")
    viewers = [await procs(read_argv(n.url("yard"), seconds=4)) for n in nodes]
    for v in viewers:
        assert await v.wait(60) == 0, v.text
        assert frames_of(v.text) >= 80, v.text
    # Three nodes, three viewers: the camera saw one connection, the owner's.
    assert camera_readers(camera) == 1
    assert len(owners(nodes, "yard")) == 1
    edges = [n for n in nodes if "yard" in n.gateway.cluster.ownership.edges]
    assert len(edges) >= 1 and all(n.config.node not in owners(nodes, "yard") for n in edges)


async def test_when_the_owner_goes_another_node_pulls_and_viewers_carry_on(cluster_of_three, procs):
    camera, nodes = cluster_of_three
    await wait_for(lambda: len(owners(nodes, "yard")) == 1, 15, what="one owner of yard")
    (owner_id,) = owners(nodes, "yard")
    owner = next(n for n in nodes if n.config.node == owner_id)
    survivors = [n for n in nodes if n is not owner]
    viewers = [await procs(read_argv(n.url("yard"), seconds=10)) for n in survivors]
    await wait_for(
        lambda: all(n.hub.get("yard") is not None and n.hub.get("yard").readers for n in survivors),
        15,
        what="viewers on the survivors",
    )
    # Bounded: a stop that waited forever on a lost cancellation once hung this test, and
    # looked like a failover that never came back (tests/test_cluster_stop.py).
    async with asyncio.timeout(30):
        await owner.gateway.stop()
    nodes.remove(owner)  # the fixture must not stop it twice
    await wait_for(lambda: len(owners(survivors, "yard")) == 1, 6, what="a new owner")
    await wait_for(lambda: camera_readers(camera) == 1, 6, what="the camera pulled once again")
    for v in viewers:
        assert await v.wait(60) == 0, v.text
        # 10 s at 25 fps with a gap of a few seconds: the viewer kept its connection.
        assert frames_of(v.text) >= 120, v.text


async def test_the_relay_listener_wants_the_cluster_secret_and_a_current_lease(cluster_of_three):
    _camera, nodes = cluster_of_three
    await wait_for(lambda: len(owners(nodes, "yard")) == 1, 15, what="one owner of yard")
    (owner_id,) = owners(nodes, "yard")
    owner = next(n for n in nodes if n.config.node == owner_id)
    cluster = owner.gateway.cluster
    token = cluster.ownership.held["yard"].owner.token
    base = f"rtsp://{cluster.relay_address}/yard"

    async def describe(url: str, user: str | None, password: str | None) -> int:
        client = RtspClient(url, on_packet=lambda c, p: None, username=user, password=password)
        try:
            await client.connect()
            await client.describe()
            return 200
        except RtspClientError as exc:
            return exc.status or 0
        finally:
            await client.close()

    assert await describe(f"{base}?fence={token}", None, None) == 401
    assert await describe(f"{base}?fence={token}", RELAY_USER, "wrong") == 401
    assert await describe(f"{base}?fence={token}", "someone", SECRET) == 401
    assert await describe(base, RELAY_USER, SECRET) == 503  # no lease named
    assert await describe(f"{base}?fence={token - 1}", RELAY_USER, SECRET) == 503  # stale
    assert await describe(f"{base}?fence={token}", RELAY_USER, SECRET) == 200
    assert cluster.gate.refused >= 3


async def test_a_push_cameras_ownership_follows_its_publisher(redis_server, procs):
    cams = (CameraConfig(id="van", name="Mobile camera"),)  # source = push
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                running_gateway(node_config(redis_server.url, f"p{i}", cams))
            )
            for i in (1, 2)
        ]
        a, b = nodes
        await procs(publish_argv(a.url("van")))
        await wait_for(lambda: owners(nodes, "van") == ["p1"], 15, what="p1 to own van")
        viewer = await procs(read_argv(b.url("van"), seconds=3))
        assert await viewer.wait(60) == 0, viewer.text
        assert frames_of(viewer.text) >= 60, viewer.text
        # The encoder reconnects to the other node: the path moves with it, and the first
        # node drops its old publisher rather than keep a second ingest.
        await procs(publish_argv(b.url("van")))
        await wait_for(lambda: owners(nodes, "van") == ["p2"], 15, what="p2 to own van")
        await wait_for(
            lambda: not (a.hub.get("van").source_id or "").startswith("push:"),
            10,
            what="p1 to drop its publisher",
        )
        # At once: p1's relay from p2 may be restarting while this viewer arrives, and the
        # stopping one must not feed the path alongside its successor.
        viewer = await procs(read_argv(a.url("van"), seconds=3))
        assert await viewer.wait(60) == 0, viewer.text
        assert frames_of(viewer.text) >= 60, viewer.text
