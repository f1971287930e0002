"""Tenancy at the gateway's doors, end to end with real ffmpeg readers: who may watch what."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
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
from rechecks import RecheckRounds
from rtsp_probe import Probe, play_status

from gateway.config import CameraConfig, TenancyConfig
from gateway.http.app import make_http_app
from tenants.audit import AuditAction
from tenants.model import Role, TenantStatus

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
name = "Shopping centre"
kind = "retail"

[[principals]]
id = "encoder"
tenant = "council"
name = "Encoder"
kind = "service"
roles = ["operator"]
digest_password = "enc-pass"

[[principals]]
id = "vms"
tenant = "police"
name = "Police VMS"
kind = "service"
roles = ["viewer", "operator"]
digest_password = "vms-pass"

[[principals]]
id = "officer-1"
tenant = "police"
name = "Officer"
roles = ["viewer"]

[[principals]]
id = "shop-guard"
tenant = "shop"
name = "Guard"
roles = ["viewer"]

[[cameras]]
id = "street"
owner = "council"
tags = ["town"]

[[cameras]]
id = "yard"
owner = "council"
tags = ["depot"]

[[grants]]
id = "police-town"
owner = "council"
grantee = "police"
tags = ["town"]
rights = ["live", "playback", "ptz"]

[[grants]]
id = "shop-street"
owner = "council"
grantee = "shop"
cameras = ["street"]
rights = ["live"]
max_concurrent_streams = 2
"""


@pytest.fixture
async def tenancy_gw(tmp_path: Path, procs) -> AsyncIterator[RunningGateway]:
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    cams = (CameraConfig(id="street"), CameraConfig(id="yard"))
    config = make_config(cams)
    config = replace(
        config,
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed), recheck_interval=0.1),
    )
    async with running_gateway(config) as gw:
        # The council's encoder publishes with Digest credentials, as a camera encoder would.
        url = f"rtsp://encoder:enc-pass@127.0.0.1:{gw.port}/street"
        await procs(publish_argv(url))
        await publishing(gw, "street")
        yield gw


def token(
    gw: RunningGateway,
    tenant: str,
    subject: str,
    *,
    ttl: float = 600.0,
    roles: tuple[str, ...] = ("viewer",),
    cameras: list[str] | None = None,
) -> str:
    tenancy = gw.gateway.tenancy
    assert tenancy is not None
    return tenancy.issuer.issue(
        tenant=tenant, subject=subject, ttl=timedelta(seconds=ttl), roles=roles, cameras=cameras
    )


def audit_entries(gw: RunningGateway, action: AuditAction) -> list:
    tenancy = gw.gateway.tenancy
    assert tenancy is not None
    tenancy.drain()  # session ends are stored on the database thread, after the event
    return [e for e in tenancy.audit.entries() if e.action == action]


async def test_no_credentials_get_401(tenancy_gw, procs):
    viewer = await procs(read_argv(tenancy_gw.url("street"), seconds=1))
    assert await viewer.wait() != 0
    assert "401" in viewer.text


async def test_who_is_asking_comes_before_whether_the_camera_exists(tenancy_gw):
    """Issue #10.9 at RTSP's doors: without credentials every path, real or not, gets the same
    401 on DESCRIBE, SETUP and ANNOUNCE, so no one can list cameras by their 404s."""
    gw = tenancy_gw
    sdp = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
    answers: dict[str, list[tuple[int, str]]] = {}
    for path in ("street", "yard", "no-such-camera", "street~masked", "yard/sub"):
        probe = await Probe.connect("127.0.0.1", gw.port)
        try:
            base = f"rtsp://127.0.0.1:{gw.port}/{path}"
            describe = await probe.request("DESCRIBE", base)
            transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
            setup = await probe.request("SETUP", f"{base}/trackID=0", (transport,))
            probe.cseq += 1
            probe.send_raw(
                f"ANNOUNCE {base} RTSP/1.0\r\nCSeq: {probe.cseq}\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n".encode()
                + sdp
            )
            announce = await asyncio.wait_for(probe.responses.get(), 10)
            answers[path] = [
                (r.status, r.headers.get("WWW-Authenticate", "").split(" ")[0])
                for r in (describe, setup, announce)
            ]
        finally:
            await probe.close()
    assert set(map(tuple, answers.values())) == {((401, "Digest"),) * 3}, answers


async def test_a_camera_without_a_grant_looks_like_no_camera_and_is_audited(tenancy_gw, procs):
    t = token(tenancy_gw, "police", "officer-1")
    viewer = await procs(read_argv(tenancy_gw.url(f"yard?token={t}"), seconds=1))
    assert await viewer.wait() != 0
    assert "404" in viewer.text  # issue #10.9: as for a camera that does not exist
    denied = audit_entries(tenancy_gw, AuditAction.DENIED)
    assert any(e.camera == "yard" and e.tenant == "police" for e in denied)
    # The token itself is never written anywhere it could be replayed from.
    assert all(t not in repr(e.detail) for e in denied)


async def test_a_valid_token_plays_and_the_session_is_audited(tenancy_gw, procs):
    t = token(tenancy_gw, "police", "officer-1")
    viewer = await procs(read_argv(tenancy_gw.url(f"street?token={t}"), seconds=2))
    assert await viewer.wait() == 0, viewer.text
    assert frames_of(viewer.text) >= 45
    await wait_for(
        lambda: audit_entries(tenancy_gw, AuditAction.SESSION_END),
        5,
        what="the session end in the audit log",
    )
    start = next(
        e for e in audit_entries(tenancy_gw, AuditAction.SESSION_START) if e.tenant == "police"
    )
    assert start.camera == "street" and start.principal == "officer-1"
    assert start.detail["grant"] == "police-town"


async def test_vms_digest_credentials_play(tenancy_gw, procs):
    url = f"rtsp://vms:vms-pass@127.0.0.1:{tenancy_gw.port}/street"
    viewer = await procs(read_argv(url, seconds=2))
    assert await viewer.wait() == 0, viewer.text
    wrong = await procs(read_argv(url.replace("vms-pass", "guess"), seconds=1))
    assert await wrong.wait() != 0 and "401" in wrong.text


async def test_a_token_that_expires_mid_stream_ends_the_session_within_a_second(tenancy_gw, procs):
    t = token(tenancy_gw, "police", "officer-1", ttl=3)
    expires = time.time() + 3
    viewer = await procs(read_argv(tenancy_gw.url(f"street?token={t}"), seconds=20))
    stream = tenancy_gw.hub.get("street")
    await wait_for(lambda: len(stream.readers) == 1, 10, what="the reader to play")
    await wait_for(lambda: not stream.readers, 10, what="the expired session to end")
    ended = time.time()
    # Token exp has one-second resolution: allow for that plus the re-check interval.
    assert ended - expires < 1.0 + 1.0, ended - expires
    assert await viewer.wait(30) is not None
    ends = audit_entries(tenancy_gw, AuditAction.SESSION_END)
    assert any(e.detail["reason"] == "credential expired" for e in ends)


async def test_the_concurrency_cap_refuses_the_next_stream(tenancy_gw, procs):
    t = token(tenancy_gw, "shop", "shop-guard")
    url = tenancy_gw.url(f"street?token={t}")
    first = [await procs(read_argv(url, seconds=15, decode=False)) for _ in range(2)]
    stream = tenancy_gw.hub.get("street")
    await wait_for(lambda: len(stream.readers) == 2, 15, what="two shop streams")
    third = await procs(read_argv(url, seconds=2, decode=False))
    assert await third.wait() != 0
    assert "453" in third.text or "Not Enough Bandwidth" in third.text, third.text
    assert len(stream.readers) == 2
    for p in first:
        p.kill()
    # Capacity comes back when a stream ends.
    await wait_for(lambda: not stream.readers, 10, what="the shop streams to end")
    again = await procs(read_argv(url, seconds=1, decode=False))
    assert await again.wait() == 0, again.text


async def test_revoking_the_grant_drops_the_live_session(tenancy_gw, procs):
    t = token(tenancy_gw, "shop", "shop-guard")
    await procs(read_argv(tenancy_gw.url(f"street?token={t}"), seconds=30, decode=False))
    stream = tenancy_gw.hub.get("street")
    await wait_for(lambda: len(stream.readers) == 1, 10, what="the shop stream")
    tenancy = tenancy_gw.gateway.tenancy
    assert tenancy is not None
    rounds = RecheckRounds(tenancy_gw.gateway, "shop")
    before = rounds.version
    await asyncio.to_thread(tenancy.store.revoke_grant, "shop-street", datetime.now(UTC))
    await wait_for(lambda: not stream.readers, 30, what="the revoked session to end")
    rounds.assert_ended_by_first_round_after(before)  # at once: the next re-check
    ends = audit_entries(tenancy_gw, AuditAction.SESSION_END)
    assert any(e.detail["reason"] == "grant revoked" for e in ends)


async def test_suspending_the_tenant_drops_its_sessions(tenancy_gw, procs):
    t = token(tenancy_gw, "police", "officer-1")
    await procs(read_argv(tenancy_gw.url(f"street?token={t}"), seconds=30, decode=False))
    stream = tenancy_gw.hub.get("street")
    await wait_for(lambda: len(stream.readers) == 1, 10, what="the police stream")
    tenancy = tenancy_gw.gateway.tenancy
    assert tenancy is not None
    rounds = RecheckRounds(tenancy_gw.gateway, "police")
    before = rounds.version
    await asyncio.to_thread(tenancy.store.set_tenant_status, "police", TenantStatus.SUSPENDED)
    await wait_for(lambda: not stream.readers, 30, what="the suspended tenant's session to end")
    rounds.assert_ended_by_first_round_after(before)
    again = await procs(read_argv(tenancy_gw.url(f"street?token={t}"), seconds=1))
    assert await again.wait() != 0 and "403" in again.text


async def test_a_deleted_principals_token_opens_nothing(tenancy_gw):
    t = token(tenancy_gw, "police", "officer-1", roles=("viewer", "operator"))
    url = tenancy_gw.url(f"street?token={t}")
    assert await play_status(url) == 200
    tenancy = tenancy_gw.gateway.tenancy
    assert tenancy is not None
    await asyncio.to_thread(tenancy.store.delete_principal, "officer-1")
    # Nothing is playing, so nothing but the decision itself can notice the deletion.
    statuses: list[int] = []

    async def refused() -> bool:
        statuses.append(await play_status(url))
        return statuses[-1] == 403

    deadline = time.monotonic() + 5
    while not await refused():
        assert time.monotonic() < deadline, statuses
    assert all(s in (200, 403) for s in statuses)


@pytest.mark.parametrize("change", ["deleted", "disabled", "narrowed"])
async def test_a_changed_principal_stops_playing_at_once(tenancy_gw, procs, change):
    # The token lists its roles, as every token the demo prints does.
    t = token(tenancy_gw, "police", "officer-1", roles=("viewer",))
    url = tenancy_gw.url(f"street?token={t}")
    await procs(read_argv(url, seconds=30, decode=False))
    stream = tenancy_gw.hub.get("street")
    await wait_for(lambda: len(stream.readers) == 1, 10, what="the officer's stream")
    tenancy = tenancy_gw.gateway.tenancy
    assert tenancy is not None
    store = tenancy.store
    officer = await asyncio.to_thread(store.get_principal, "officer-1")
    rounds = RecheckRounds(tenancy_gw.gateway, "police")
    before = rounds.version
    if change == "deleted":
        await asyncio.to_thread(store.delete_principal, "officer-1")
    elif change == "disabled":
        await asyncio.to_thread(store.put_principal, replace(officer, disabled=True))
    else:
        narrowed = replace(officer, roles=frozenset({Role.FINANCE}))
        await asyncio.to_thread(store.put_principal, narrowed)
    # The running session ends at the first re-check on the reloaded policy (every 0.1 s)...
    await wait_for(lambda: not stream.readers, 30, what=f"the {change} principal's session to end")
    rounds.assert_ended_by_first_round_after(before)
    ends = audit_entries(tenancy_gw, AuditAction.SESSION_END)
    assert any(e.detail["reason"].startswith("principal") for e in ends)
    # ... and the same token opens nothing any more.
    assert await play_status(url) == 403


async def test_http_publishes_jwks_and_answers_mediamtx_auth(tenancy_gw):
    app = make_http_app(tenancy_gw.gateway)
    app.cleanup_ctx.clear()  # the fixture runs this gateway already
    good = token(tenancy_gw, "police", "officer-1")
    async with TestClient(TestServer(app)) as client:
        jwks = await (await client.get("/.well-known/jwks.json")).json()
        assert jwks["keys"] and all("d" not in k for k in jwks["keys"])

        def body(**kw: str) -> dict[str, str]:
            base = {
                "ip": "10.0.0.9",
                "user": "",
                "password": "",
                "token": "",
                "action": "read",
                "path": "street",
                "protocol": "rtsp",
                "id": "x",
                "query": "",
                "userAgent": "mediamtx",
            }
            return {**base, **kw}

        # Metrics and sessions are for the network's own staff: a bearer token is needed.
        assert (await client.get("/metrics")).status == 401
        viewer = {"Authorization": f"Bearer {good}"}
        assert (await client.get("/metrics", headers=viewer)).status == 403  # a viewer
        operator = token(tenancy_gw, "council", "encoder", roles=("operator",))
        ok = await client.get("/metrics", headers={"Authorization": f"Bearer {operator}"})
        assert ok.status == 200 and "feedgate_readers" in await ok.text()
        assert (await client.get("/healthz")).status == 200

        async def status(**kw: object) -> int:
            return (await client.post("/mediamtx/auth", **kw)).status

        assert await status(json=body()) == 401
        assert await status(json=body(token=good)) == 200
        assert await status(json=body(query=f"token={good}")) == 200
        assert await status(json=body(token=good, path="yard")) == 404  # not granted: none
        assert await status(json=body(user="vms", password="vms-pass")) == 200
        assert await status(json=body(action="fly")) == 400
        assert await status(data=b"not json") == 400
