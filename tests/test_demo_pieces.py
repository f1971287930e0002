"""The demo's pieces (issue #9 finding 10): its encoder does not fight a partner's publisher for a
path, its camera simulator asks for credentials like a real camera (and listens on loopback
only), and its output tells a newcomer what the trial had to find out (grant windows in local
time, st-marys' purpose, the token /metrics needs). Real peers: ffmpeg publishes and reads."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from conftest import (
    frames_of,
    make_config,
    publish_argv,
    publishing,
    read_argv,
    running_gateway,
    wait_for,
)

from gateway.cli.demo import demo_access_lines, service_lines, supervise_publisher
from gateway.cli.simulator import SIMULATOR_HOST, digest_guard, simulator_config
from gateway.config import TenancyConfig
from gateway.core import Gateway

DEMO = Path(__file__).resolve().parent.parent / "ops" / "config"


async def test_the_demo_encoder_waits_while_a_partner_publishes_its_camera(procs) -> None:
    async with running_gateway(make_config()) as gw:
        url = gw.url("cam1")
        partner_camera = await procs(publish_argv(url, pattern="smptebars"))
        await publishing(gw, "cam1")
        stream = gw.hub.get("cam1")
        partner = stream.source_id
        stop = asyncio.Event()
        demo = asyncio.create_task(
            supervise_publisher(url, "testsrc2", stop, taken=lambda: stream.has_source, backoff=0.5)
        )
        try:
            # For 6 s (several of the demo's looks) the partner keeps the path: no flapping.
            until = time.monotonic() + 6
            while time.monotonic() < until:
                assert stream.source_id == partner, "the demo's encoder took the path back"
                await asyncio.sleep(0.1)
            # Once the partner stops, the demo's encoder publishes again.
            partner_camera.kill()
            await wait_for(
                lambda: stream.source_id not in (None, partner), 30, what="the demo's encoder"
            )
        finally:
            stop.set()
            await demo


async def test_the_simulator_serves_only_viewers_with_the_cameras_credentials(procs) -> None:
    base = make_config()
    config = replace(simulator_config(["cam1"], "INFO"), rtsp=replace(base.rtsp, port=0))
    assert config.rtsp.host == SIMULATOR_HOST == "127.0.0.1"  # loopback, like a LAN camera
    sim = Gateway(config, authorizer=digest_guard("camera", "cam-secret"))
    await sim.start()
    try:
        port = sim.rtsp.port
        await procs(publish_argv(f"rtsp://camera:cam-secret@127.0.0.1:{port}/cam1"))
        await wait_for(lambda: (s := sim.hub.get("cam1")) is not None and s.has_source, 20)
        anonymous = await procs(read_argv(f"rtsp://127.0.0.1:{port}/cam1", seconds=1))
        assert await anonymous.wait(30) != 0 and "401" in anonymous.text
        wrong = await procs(read_argv(f"rtsp://camera:guess@127.0.0.1:{port}/cam1", seconds=1))
        assert await wrong.wait(30) != 0
        right = await procs(read_argv(f"rtsp://camera:cam-secret@127.0.0.1:{port}/cam1"))
        assert await right.wait(30) == 0, right.text
        assert frames_of(right.text) >= 25
    finally:
        await sim.stop()


async def test_the_demo_says_what_a_newcomer_needs(tmp_path: Path) -> None:
    base = make_config()
    config = replace(
        base,
        data_dir=str(tmp_path),
        tenancy=TenancyConfig(enabled=True, seed=str(DEMO / "demo-tenants.toml")),
    )
    gateway = Gateway(config)
    try:
        text = "\n".join(demo_access_lines(gateway, "127.0.0.1", 8554) + service_lines("h", 80))
    finally:
        assert gateway.tenancy is not None
        await gateway.tenancy.close()
    assert "local time, Europe/London" in text
    assert "st-marys" in text and "&purpose=" in text
    assert "/metrics needs an operator's token" in text
