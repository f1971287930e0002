"""WHEP viewers end to end: aiortc as the WHEP client (counting packets, never decoding) against
a gateway fed by a real ffmpeg camera, under the same tenant policy as RTSP."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import read_argv
from rechecks import RecheckRounds
from whep_client import WhepClient, wait_until
from whep_fixtures import playing

from tenants.audit import AuditAction
from tenants.model import TenantStatus


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
    # Synchronous: by the time DELETE answers, the viewer is off the hub and its session gone.
    assert not stream.readers and not whep.webrtc.sessions

    # Its end is written by the tenancy's database thread, moments later.
    def ends() -> list:
        return [e for e in whep.audit(AuditAction.SESSION_END) if e.tenant == "police"]

    await wait_until(lambda: bool(ends()), 2, "the session end to be audited")
    assert "DELETE" in ends()[-1].detail["reason"]
    await viewer.close()


async def test_the_session_ends_within_a_second_of_token_expiry(whep):
    token = whep.token("police", "officer", ttl=3)
    viewer = whep.client(token=token)
    assert await viewer.connect(whep.http) == 201
    rounds = RecheckRounds(whep.gw.gateway, "police")
    expires = rounds.expires_at()
    await playing(viewer, frames=5)
    await wait_until(lambda: not whep.webrtc.sessions, 30, "the expired session to end")
    # It plays until its token's exp and ends at the first re-check from then (0.1 s apart),
    # however late a loaded machine runs that re-check.
    rounds.assert_ended_by_first_round_at(expires)
    await wait_until(
        lambda: bool(whep.audit(AuditAction.SESSION_END)), 2, "the session end to be audited"
    )
    assert whep.audit(AuditAction.SESSION_END)[-1].detail["reason"] == "credential expired"
    await viewer.close()


async def test_suspending_the_tenant_ends_its_webrtc_session(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=5)
    tenancy = whep.gw.gateway.tenancy
    rounds = RecheckRounds(whep.gw.gateway, "police")
    before = rounds.version
    await asyncio.to_thread(tenancy.store.set_tenant_status, "police", TenantStatus.SUSPENDED)
    await wait_until(lambda: not whep.webrtc.sessions, 30, "the suspended tenant's session to end")
    rounds.assert_ended_by_first_round_after(before)  # at once: the next re-check
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


async def test_revoking_the_grant_ends_its_webrtc_session_within_a_second(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=5)
    tenancy = whep.gw.gateway.tenancy
    rounds = RecheckRounds(whep.gw.gateway, "police")
    before = rounds.version
    await asyncio.to_thread(tenancy.store.revoke_grant, "police-street", datetime.now(UTC))
    await wait_until(lambda: not whep.webrtc.sessions, 30, "the revoked grant's session to end")
    rounds.assert_ended_by_first_round_after(before)  # at once: the next re-check
    assert not whep.gw.hub.get("street").readers
    # And the grant is gone for new offers too: no grant, no such camera.
    again = whep.client(token=whep.token("police", "officer"))
    assert await again.connect(whep.http) == 404
    await viewer.close()


def console_headers(whep, token: str, *, csrf: bool = True, site: str = "same-origin") -> dict:
    """What Chromium sends from the console's page: both cookies, and the CSRF value the page
    read from its own HTML."""
    value = "c" * 43
    headers = {
        "Cookie": f"feedgate_token={token}; feedgate_csrf={value}",
        "Origin": whep.base,
        "Sec-Fetch-Site": site,
    }
    if csrf:
        headers["X-CSRF-Token"] = value
    return headers


async def test_the_consoles_session_cookie_plays_only_from_its_own_pages(whep):
    token = whep.token("police", "officer")
    page = WhepClient(f"{whep.base}/whep/street", headers=console_headers(whep, token))
    assert await page.connect(whep.http) == 201, page.reason
    await playing(page, frames=5)
    # Without the page's CSRF value, or from another site, the cookie is no credential.
    for headers in (
        console_headers(whep, token, csrf=False),
        console_headers(whep, token, site="cross-site"),
    ):
        forged = WhepClient(f"{whep.base}/whep/street", headers=headers)
        assert await forged.connect(whep.http) == 401
    denied = [e for e in whep.audit(AuditAction.DENIED) if e.detail.get("protocol") == "webrtc"]
    assert len([e for e in denied if e.detail["status"] == 401]) == 2
    # The session is the page's to end, with the same cookie.
    async with whep.http.delete(
        whep.base + page.location, headers=console_headers(whep, token)
    ) as r:
        assert r.status == 200
    assert not whep.webrtc.sessions
    await page.close()


async def test_metrics_show_webrtc_sessions_refusals_and_injected_parameter_sets(whep):
    viewer = whep.client(token=whep.token("police", "officer"))
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=30)  # past the camera's next IDR (its GOP is 1 s)
    assert await whep.client().connect(whep.http) == 401
    tenancy = whep.gw.gateway.tenancy
    scraper = tenancy.issuer.issue(
        tenant="council", subject="operator", roles=["operator"], ttl=timedelta(minutes=5)
    )
    async with whep.http.get(
        f"{whep.base}/metrics", headers={"Authorization": f"Bearer {scraper}"}
    ) as r:
        assert r.status == 200
        text = await r.text()
    assert 'feedgate_webrtc_sessions{state="connected"} 1.0' in text
    assert 'feedgate_webrtc_events_total{event="refused_401"} 1.0' in text
    assert 'feedgate_webrtc_events_total{event="connected"} 1.0' in text
    # ffmpeg's camera repeats no SPS/PPS in band: the gateway put them before each IDR.
    injected = next(
        line for line in text.splitlines()
        if line.startswith('feedgate_webrtc_parameter_sets_injected_total{path="street"}')
    )  # fmt: skip
    assert float(injected.split()[-1]) >= 1
    await viewer.close()
