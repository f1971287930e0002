"""MediaMTX as the media plane (issue #15.5): feedgate's v3 API client against the FAKE of
MediaMTX's API (ops/fakes/mediamtx_api.py, its documented paths and JSON), served over real
HTTP on loopback; the supervisor's decisions are the real tenancy policy's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from test_mediamtx import _seed

from billing.model import UsageEvent
from gateway.config import Config, TenancyConfig
from gateway.mediamtx.client import MediaMtxApi, MediaMtxError, MtxSession
from gateway.mediamtx.supervisor import MediaMtxSupervisor
from gateway.tenancy import Tenancy
from ops.fakes.mediamtx_api import FakeMediaMtx


class Collected:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def emit(self, event: UsageEvent) -> None:
        self.events.append(event)

    def bytes_of(self, tenant: str) -> int:
        return sum(e.bytes_sent for e in self.events if e.tenant == tenant)


@dataclass
class World:
    fake: FakeMediaMtx
    api: MediaMtxApi
    tenancy: Tenancy
    sink: Collected
    now: datetime

    def token(self, tenant: str, subject: str, minutes: float = 5) -> str:
        return self.tenancy.issuer.issue(
            tenant=tenant, subject=subject, roles=["viewer"], ttl=timedelta(minutes=minutes)
        )

    def supervisor(self) -> MediaMtxSupervisor:
        return MediaMtxSupervisor(
            self.api, self.tenancy.policy, sink=self.sink, clock=lambda: self.now
        )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    (tmp_path / "seed.toml").write_text(_seed())
    config = Config(
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(tmp_path / "seed.toml")),
    )
    tenancy = Tenancy.open(config)
    fake = FakeMediaMtx("feedgate", "api-secret")
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    api = MediaMtxApi(str(server.make_url("")), username="feedgate", password="api-secret")
    try:
        yield World(fake, api, tenancy, Collected(), datetime.now(UTC))
    finally:
        await api.aclose()
        await server.close()
        await tenancy.close()


async def test_the_client_pages_through_sessions_and_kicks(world: World):
    ids = [world.fake.add_session("rtsp", "street", "token=x") for _ in range(230)]
    world.fake.add_session("webrtc", "market")
    sessions = await world.api.sessions("rtsp")
    assert sorted(s.id for s in sessions) == sorted(ids)  # three pages of 100
    assert (await world.api.sessions("webrtc"))[0].path == "market"
    assert {p["name"] for p in await world.api.paths()} == {"street", "market"}
    assert await world.api.kick("rtsp", ids[0]) is True
    assert await world.api.kick("rtsp", ids[0]) is False  # gone: 404
    assert world.fake.kicks == [("rtsp", ids[0])]


async def test_the_client_refuses_what_is_not_mediamtxs_api(world: World):
    wrong = MediaMtxApi(str(world.api._http.base_url), username="feedgate", password="wrong")
    with pytest.raises(MediaMtxError, match="401"):
        await wrong.sessions("rtsp")
    await wrong.aclose()
    with pytest.raises(ValueError):
        await world.api.sessions("ftp")
    assert MtxSession.parse("rtsp", {"id": "a", "path": "p", "outboundBytes": -1}) is None
    assert MtxSession.parse("rtsp", {"path": "p"}) is None
    assert MtxSession.parse("rtsp", ["not", "a", "dict"]) is None


async def test_sessions_are_metered_per_tenant_and_kicked_when_their_token_expires(world: World):
    police = world.token("police", "police-viewer", minutes=1)
    council = world.token("council", "council-viewer", minutes=60)
    p = world.fake.add_session("rtsp", "street", f"token={police}")
    c = world.fake.add_session("webrtc", "street", f"token={council}")
    vms = world.fake.add_session("rtsp", "street", "", user="vms")  # a password: not ours
    sup = world.supervisor()
    world.fake.send("rtsp", p, 1000)
    await sup.tick()
    world.fake.send("rtsp", p, 500)
    world.fake.send("webrtc", c, 2000)
    world.now += timedelta(seconds=5)
    await sup.tick()
    assert world.sink.bytes_of("police") == 1500
    assert world.sink.bytes_of("council") == 2000
    assert {e.protocol for e in world.sink.events} == {"mediamtx-rtsp", "mediamtx-webrtc"}
    assert len({e.event_id for e in world.sink.events}) == len(world.sink.events)
    # The police token expires (plus the leeway): MediaMTX would play on; feedgate kicks it.
    world.now += timedelta(minutes=2)
    await sup.tick()
    assert [k[:2] for k in sup.kicked] == [("rtsp", p)]
    assert p not in world.fake.sessions["rtsp"] and c in world.fake.sessions["webrtc"]
    assert vms in world.fake.sessions["rtsp"] and ("rtsp", vms) in sup.untracked
    police_events = [e for e in world.sink.events if e.tenant == "police"]
    assert police_events[-1].final and police_events[-1].bytes_sent == 0


async def test_a_revoked_grant_ends_its_mediamtx_sessions(world: World):
    police = world.token("police", "police-viewer")
    p = world.fake.add_session("rtsp", "street", f"token={police}")
    sup = world.supervisor()
    await sup.tick()
    assert ("rtsp", p) in sup.tracked
    await world.tenancy.blocking(world.tenancy.store.revoke_grant, "police-cams", datetime.now(UTC))
    await world.tenancy.refresh()
    await sup.tick()
    assert sup.kicked and sup.kicked[0][1] == p and p not in world.fake.sessions["rtsp"]


async def test_a_session_without_a_valid_token_is_kicked_and_not_metered(world: World):
    bad = world.fake.add_session("rtsp", "street", "token=not-a-jwt")
    sup = world.supervisor()
    world.fake.send("rtsp", bad, 10_000)
    await sup.tick()
    assert [k[1] for k in sup.kicked] == [bad]
    assert world.sink.events == []


async def test_a_gateway_with_a_mediamtx_section_supervises_mediamtx(tmp_path: Path):
    import dataclasses

    from conftest import make_config, running_gateway, wait_for

    from gateway.mediamtx.settings import MediaMtxConfig

    (tmp_path / "seed.toml").write_text(_seed())
    fake = FakeMediaMtx()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    config = dataclasses.replace(
        make_config(()),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(tmp_path / "seed.toml")),
        mediamtx=MediaMtxConfig(api_url=str(server.make_url("")), interval=0.1),
    )
    try:
        async with running_gateway(config) as gw:
            tenancy = gw.gateway.tenancy
            token = tenancy.issuer.issue(
                tenant="police", subject="police-viewer", roles=["viewer"],
                ttl=timedelta(minutes=5),
            )  # fmt: skip
            ok = fake.add_session("rtsp", "street", f"token={token}")
            bad = fake.add_session("webrtc", "street", "token=forged")
            await wait_for(lambda: ("webrtc", bad) in fake.kicks, 10, what="the forged kicked")
            await wait_for(lambda: ("rtsp", ok) in gw.gateway.mediamtx.tracked, 10, what="tracked")
            assert ok in fake.sessions["rtsp"]
    finally:
        await server.close()
