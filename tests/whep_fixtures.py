"""The WHEP test bench: a tenancy gateway with a real ffmpeg camera, its HTTP app on a loopback
port, and aiortc WHEP clients (``whep_client.py``) that count packets without decoding."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import RunningGateway, make_config, publish_argv, publishing, running_gateway
from whep_client import WhepClient, gather_on_loopback, offer_main_and_high, wait_until

from gateway.config import BillingConfig, CameraConfig, TenancyConfig, WebRtcConfig
from gateway.http.app import make_http_app
from tenants.audit import AuditAction

SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[tenants]]
id = "police"
name = "Police"
kind = "police"
[[tenants]]
id = "shop"
name = "Shop"
kind = "retail"

[[principals]]
id = "encoder"
tenant = "council"
name = "Encoder"
kind = "service"
roles = ["operator"]
digest_password = "enc"
[[principals]]
id = "operator"
tenant = "council"
name = "Control room operator"
roles = ["viewer", "operator"]
[[principals]]
id = "officer"
tenant = "police"
name = "Officer"
roles = ["viewer"]
[[principals]]
id = "guard"
tenant = "shop"
name = "Guard"
roles = ["viewer"]

[[cameras]]
id = "street"
owner = "council"
[[cameras]]
id = "yard"
owner = "council"

[[grants]]
id = "police-street"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live"]
[[grants]]
id = "shop-street"
owner = "council"
grantee = "shop"
cameras = ["street"]
rights = ["live"]
max_concurrent_streams = 1
"""


@dataclass
class Whep:
    gw: RunningGateway
    base: str
    http: aiohttp.ClientSession

    def token(self, tenant: str, subject: str, ttl: float = 600.0) -> str:
        tenancy = self.gw.gateway.tenancy
        assert tenancy is not None
        return tenancy.issuer.issue(
            tenant=tenant, subject=subject, roles=["viewer"], ttl=timedelta(seconds=ttl)
        )

    def client(self, camera: str = "street", token: str | None = None) -> WhepClient:
        return WhepClient(f"{self.base}/whep/{camera}", token=token)

    def audit(self, action: AuditAction) -> list:
        tenancy = self.gw.gateway.tenancy
        assert tenancy is not None
        tenancy.drain()  # session ends are stored on the database thread, after the event
        return [e for e in tenancy.audit.entries() if e.action == action]

    @property
    def webrtc(self):
        return self.gw.gateway.webrtc


def camera_argv(url: str, profile: str, pattern: str = "testsrc2") -> list[str]:
    """ffmpeg as a camera with a chosen H.264 profile ('baseline', 'main' or 'high'), showing a
    lavfi source by name ("testsrc2") or as a whole graph with its options ("color=c=white:...")."""
    argv = publish_argv(url, pattern=pattern)
    if "=" in pattern:
        argv[argv.index("lavfi") + 2] = pattern
    argv[argv.index("ultrafast")] = "veryfast" if profile != "baseline" else "ultrafast"
    i = argv.index("libx264") + 1
    return [*argv[:i], "-profile:v", profile, *argv[i:]]


@contextlib.asynccontextmanager
async def whep_bench(
    tmp_path: Path,
    procs: Any,
    *,
    profile: str = "high",
    seed: str = SEED,
    pattern: str = "testsrc2",
    routes: Callable[[web.Application], None] | None = None,
    webrtc: WebRtcConfig | None = None,
) -> AsyncIterator[Whep]:
    """A gateway whose camera "street" is a real ffmpeg (H.264 ``profile``, lavfi ``pattern``),
    with tenancy (``seed``), billing and WebRTC, and its HTTP app (plus ``routes``) served."""
    offer_main_and_high()
    gather_on_loopback()
    seed_file = tmp_path / "seed.toml"
    seed_file.write_text(seed)
    config = make_config((CameraConfig(id="street"), CameraConfig(id="yard")))
    config = replace(
        config,
        rtsp=replace(config.rtsp, report_interval=0.5),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed_file), recheck_interval=0.1),
        billing=BillingConfig(enabled=True),
        webrtc=webrtc
        or WebRtcConfig(
            host_addresses=("127.0.0.1",),
            udp_port_min=0,
            udp_port_max=0,
            handshake_timeout=3.0,
            ice_servers=("stun:stun.council.example:3478", "turn:turn.council.example:3478"),
            turn_secret="coturn-secret",
        ),
    )
    async with running_gateway(config) as gw:
        url = f"rtsp://encoder:enc@127.0.0.1:{gw.port}/street"
        await procs(camera_argv(url, profile, pattern))
        await publishing(gw, "street")
        app = make_http_app(gw.gateway)
        app.cleanup_ctx.clear()  # running_gateway runs it already
        if routes is not None:
            routes(app)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as http:
                yield Whep(gw, f"http://127.0.0.1:{port}", http)
        finally:
            await runner.cleanup()


@pytest.fixture
async def whep(tmp_path: Path, procs: Any, request: pytest.FixtureRequest) -> AsyncIterator[Whep]:
    async with whep_bench(tmp_path, procs, profile=getattr(request, "param", "high")) as bench:
        yield bench


async def playing(client: WhepClient, frames: int = 30, timeout: float = 15.0) -> None:
    await wait_until(lambda: client.received.frames >= frames, timeout, f"{frames} frames")
