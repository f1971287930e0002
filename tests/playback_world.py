"""A tenanted gateway with recordings, for the playback tests: the council owns cam1 and cam2
(cam2 has a permanent privacy mask); the police may play both back (investigators, footage up
to a day old, a purpose required); the shop may only watch cam1 live. The recordings are real
ffmpeg fMP4 in the recorder's layout, indexed in the gateway's own tenancy database through the
recorder's RecordingIndex; the playback service is the one the gateway wires over it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from conftest import RunningGateway, make_config, running_gateway
from export_fixtures import index_segment, write_segment

from gateway.config import BillingConfig, CameraConfig, RecordingConfig, TenancyConfig
from gateway.http.app import make_http_app
from gateway.playback.service import PlaybackService
from gateway.recording.index import RecordingIndex

ZONE = ((0.1, 0.1), (0.4, 0.1), (0.4, 0.5), (0.1, 0.5))

SEED = f"""
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
id = "council-operator"
tenant = "council"
name = "Control room operator"
roles = ["operator"]
[[principals]]
id = "police-investigator"
tenant = "police"
name = "VIIDO investigator"
roles = ["investigator"]
[[principals]]
id = "shop-operator"
tenant = "shop"
name = "Security desk"
roles = ["operator"]

[[cameras]]
id = "cam1"
owner = "council"
[[cameras]]
id = "cam2"
owner = "council"

[[masks]]
id = "home"
camera = "cam2"
points = {[list(p) for p in ZONE]}
kind = "permanent"

[[grants]]
id = "police-playback"
owner = "council"
grantee = "police"
cameras = ["cam1", "cam2"]
rights = ["live", "playback"]
max_playback_age_s = 86400
purpose_required = true
[[grants]]
id = "shop-live"
owner = "council"
grantee = "shop"
cameras = ["cam1"]
rights = ["live"]
"""


@dataclass
class World:
    gw: RunningGateway
    index: RecordingIndex
    service: PlaybackService
    recent: datetime  # cam1 and cam2: 10 s recorded from here (10 minutes ago)
    old: datetime  # cam1: 10 s recorded from here (three days ago)
    base: str = ""  # the HTTP app's URL
    http: ClientSession | None = None
    app: web.Application | None = None

    def token(self, tenant: str, role: str) -> str:
        tenancy = self.gw.gateway.tenancy
        assert tenancy is not None
        return str(
            tenancy.issuer.issue(
                tenant=tenant, subject=f"{tenant}-{role}", roles=[role], ttl=timedelta(hours=1)
            )
        )

    def audit(self, action: Any) -> list[Any]:
        tenancy = self.gw.gateway.tenancy
        assert tenancy is not None
        tenancy.drain()
        return [e for e in tenancy.audit.entries() if e.action == action]


def _second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


@contextlib.asynccontextmanager
async def playback_world(
    tmp_path: Path,
    *,
    http: bool = True,
    seed_text: str = SEED,
    recording: RecordingConfig | None = None,
    **rtsp: Any,
) -> AsyncIterator[World]:
    seed = tmp_path / "seed.toml"
    seed.write_text(seed_text)
    config = replace(
        make_config((CameraConfig(id="cam1"), CameraConfig(id="cam2")), **rtsp),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed), recheck_interval=0.1),
        billing=BillingConfig(enabled=True),
        recording=recording or RecordingConfig(),
    )
    root = tmp_path / "recordings"
    root.mkdir(parents=True)
    write_segment(root / "cam1-recent.mp4", 10)
    write_segment(root / "cam1-old.mp4", 10, source="smptebars=size=320x240:rate=25")
    write_segment(root / "cam2-recent.mp4", 10)
    now = datetime.now(UTC)
    recent, old = _second(now - timedelta(minutes=10)), _second(now - timedelta(days=3))
    async with running_gateway(config) as gw:
        tenancy = gw.gateway.tenancy
        assert tenancy is not None
        index = RecordingIndex(tenancy.db, root)
        for name, camera, start in (
            ("cam1-recent", "cam1", recent),
            ("cam1-old", "cam1", old),
            ("cam2-recent", "cam2", recent),
        ):
            index_segment(index, camera, name, root / f"{name}.mp4", start)
        metering = gw.gateway.metering
        service = PlaybackService(
            index, tenancy=tenancy, live=gw.gateway.live, meter=metering.meter if metering else None
        )
        gw.gateway.playback = service
        world = World(gw, index, service, recent, old)
        try:
            if not http:
                yield world
                return
            app = world.app = make_http_app(gw.gateway)
            app.cleanup_ctx.clear()  # running_gateway runs it
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            try:
                async with ClientSession() as session:
                    world.base = str(server.make_url("")).rstrip("/")
                    world.http = session
                    yield world
            finally:
                await server.close()
        finally:
            await service.stop()
