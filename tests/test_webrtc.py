"""WHEP viewers end to end: aiortc as the WHEP client (counting packets, never decoding) against
a gateway fed by a real ffmpeg camera, under the same tenant policy as RTSP."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import RunningGateway, make_config, publish_argv, publishing, running_gateway
from whep_client import WhepClient, gather_on_loopback, offer_main_and_high, wait_until

from gateway.config import BillingConfig, CameraConfig, TenancyConfig, WebRtcConfig
from gateway.http.app import make_http_app
from tenants.audit import AuditAction
from tenants.model import TenantStatus

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
        return [e for e in tenancy.audit.entries() if e.action == action]

    @property
    def webrtc(self):
        return self.gw.gateway.webrtc


def camera_argv(url: str, profile: str) -> list[str]:
    """ffmpeg as a camera with a chosen H.264 profile ('baseline', 'main' or 'high')."""
    argv = publish_argv(url)
    argv[argv.index("ultrafast")] = "veryfast" if profile != "baseline" else "ultrafast"
    i = argv.index("libx264") + 1
    return [*argv[:i], "-profile:v", profile, *argv[i:]]


@pytest.fixture
async def whep(tmp_path: Path, procs, request) -> AsyncIterator[Whep]:
    offer_main_and_high()
    gather_on_loopback()
    profile = getattr(request, "param", "high")
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    config = make_config((CameraConfig(id="street"), CameraConfig(id="yard")))
    config = replace(
        config,
        rtsp=replace(config.rtsp, report_interval=0.5),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed), recheck_interval=0.1),
        billing=BillingConfig(enabled=True),
        webrtc=WebRtcConfig(
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
        await procs(camera_argv(url, profile))
        await publishing(gw, "street")
        app = make_http_app(gw.gateway)
        app.cleanup_ctx.clear()  # running_gateway runs it already
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            yield Whep(gw, f"http://127.0.0.1:{port}", http)
        await runner.cleanup()


async def playing(client: WhepClient, frames: int = 30, timeout: float = 15.0) -> None:
    await wait_until(lambda: client.received.frames >= frames, timeout, f"{frames} frames")


@pytest.mark.parametrize("whep", ["high", "main", "baseline"], indirect=True)
async def test_a_viewer_receives_the_cameras_own_h264_profile(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201, viewer.reason
    await playing(viewer)
    camera_sps = whep.webrtc._passthroughs["street"][0].sps
    # What arrives is the camera's own stream: its SPS (profile, constraints, level), in band.
    assert viewer.received.sps == [camera_sps]
    assert viewer.received.keyframes >= 1
    assert len(viewer.received.payload_types) == 1
    fmtp = next(line for line in viewer.answer.splitlines() if line.startswith("a=fmtp:"))
    answered = fmtp.split("profile-level-id=")[1][:6]
    # The answer names the camera's real profile (aiortc would have said 42e01f).
    assert answered == camera_sps[1:4].hex()
    await viewer.close()


async def test_a_new_viewer_starts_from_the_cached_keyframe(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=1)
    # The first frame is the GOP cache's keyframe, well inside one GOP (1 s here).
    assert viewer.received.keyframes == 1
    assert viewer.received.first_frame_at - viewer.started < 0.5
    await viewer.close()


async def test_the_answer_announces_ice_servers_with_per_viewer_turn_credentials(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201
    assert viewer.location.startswith("/whep/sessions/")
    assert viewer.etag and viewer.etag.startswith('"')
    stun, turn = viewer.links
    assert stun == '<stun:stun.council.example:3478>; rel="ice-server"'
    assert turn.startswith('<turn:turn.council.example:3478>; rel="ice-server"; username="')
    assert ':police"' in turn and 'credential-type="password"' in turn
    assert "coturn-secret" not in turn
    await viewer.close()


async def test_without_credentials_401_and_without_a_grant_404_both_audited(whep):
    anonymous = whep.client()
    assert await anonymous.connect(whep.http) == 401
    # A camera not granted looks like no camera at all (issue #10.9).
    no_grant = whep.client("yard", token=whep.token("police", "officer"))
    assert await no_grant.connect(whep.http) == 404
    denied = whep.audit(AuditAction.DENIED)
    webrtc = [e for e in denied if e.detail.get("protocol") == "webrtc"]
    assert any(e.detail["status"] == 401 and e.camera == "street" for e in webrtc)
    assert any(
        e.detail["status"] == 404 and e.camera == "yard" and e.tenant == "police" for e in webrtc
    )
    assert not whep.webrtc.sessions


async def test_delete_ends_the_session_at_once(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=5)
    stream = whep.gw.hub.get("street")
    assert len(stream.readers) == 1
    assert await viewer.delete(whep.http, whep.base) == 200
    # Synchronous: by the time DELETE answers, the viewer is off the hub and audited.
    assert not stream.readers and not whep.webrtc.sessions
    ends = [e for e in whep.audit(AuditAction.SESSION_END) if e.tenant == "police"]
    assert ends and "DELETE" in ends[-1].detail["reason"]
    await viewer.close()


async def test_the_session_ends_within_a_second_of_token_expiry(whep):
    token = whep.token("police", "officer", ttl=3)
    expires = time.time() + 3
    viewer = whep.client(token=token)
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=5)
    await wait_until(lambda: not whep.webrtc.sessions, 10, "the expired session to end")
    # Token exp has one-second resolution.
    assert time.time() - expires < 1.0 + 1.0
    end = whep.audit(AuditAction.SESSION_END)[-1]
    assert end.detail["reason"] == "credential expired"
    await viewer.close()


async def test_suspending_the_tenant_ends_its_webrtc_session(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=5)
    tenancy = whep.gw.gateway.tenancy
    await asyncio.to_thread(tenancy.store.set_tenant_status, "police", TenantStatus.SUSPENDED)
    suspended = time.monotonic()
    await wait_until(lambda: not whep.webrtc.sessions, 5, "the suspended tenant's session to end")
    assert time.monotonic() - suspended < 1.0
    await viewer.close()


async def test_rtsp_and_webrtc_sessions_share_the_tenants_cap(whep, procs):
    guard = whep.token("shop", "guard")
    first = whep.client(token=guard)
    assert await first.connect(whep.http) == 201
    second = whep.client(token=guard)
    assert await second.connect(whep.http) == 429
    assert "limit of 1" in second.reason
    await first.delete(whep.http, whep.base)
    third = whep.client(token=guard)
    assert await third.connect(whep.http) == 201
    await playing(third, frames=5)
    # An RTSP reader of the same tenant is refused while the WebRTC one plays.
    from conftest import read_argv

    rtsp = await procs(read_argv(whep.gw.url(f"street?token={guard}"), seconds=1))
    assert await rtsp.wait() != 0 and "453" in rtsp.text
    for c in (first, second, third):
        await c.close()


async def test_usage_is_metered_as_webrtc_and_matches_the_bytes_sent(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=60)
    assert await viewer.delete(whep.http, whep.base) == 200
    metering = whep.gw.gateway.metering
    await metering.sink.stop()  # flush what the meter emitted into the ledger
    rows = metering.db.query(
        "SELECT protocol, SUM(bytes_sent), SUM(duration_ms) FROM usage_events "
        "WHERE tenant = 'police' GROUP BY protocol"
    )
    assert [r[0] for r in rows] == ["webrtc"]
    ledger_bytes = rows[0][1]
    received = viewer.received.rtp_bytes
    assert received > 100_000
    assert abs(ledger_bytes - received) <= received * 0.001, (ledger_bytes, received)
    await viewer.close()


async def test_a_pli_is_answered_from_the_gop_cache(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=10)
    before = viewer.received.keyframes
    asked = time.monotonic()
    await viewer.send_pli()
    await wait_until(lambda: viewer.received.keyframes > before, 2, "a keyframe after the PLI")
    # At once, not at the camera's next keyframe (its GOP is 1 s).
    assert viewer.received.idr_at[-1] - asked < 0.3
    ts = viewer.received.timestamps
    assert all((b - a) % (1 << 32) < (1 << 31) for a, b in itertools.pairwise(ts)), (
        "RTP timestamps went backwards"
    )
    await viewer.close()
