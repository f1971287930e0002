"""A small borough for the PTZ tests: tenants of four kinds, grants with and without the ptz
right, one camera owned by the council and steered through a FAKE ONVIF camera."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.config import (
    CameraConfig,
    Config,
    GrpcConfig,
    HttpConfig,
    PtzConfig,
    RtspConfig,
    TenancyConfig,
)
from gateway.ptz.soap import SoapCodec
from gateway.tenancy import Tenancy
from ops.fakes.onvif_camera import FakeOnvifCamera

SEED = """
[[tenants]]
id = "council"
name = "Council control room"
kind = "council"

[[tenants]]
id = "met-police"
name = "Metropolitan Police"
kind = "police"

[[tenants]]
id = "westfield"
name = "Westfield"
kind = "retail"

[[tenants]]
id = "tfl"
name = "Transport for London"
kind = "transport"

[[principals]]
id = "council-operator"
tenant = "council"
name = "Operator"
roles = ["operator", "viewer"]
digest_password = "council-pw"

[[principals]]
id = "council-admin"
tenant = "council"
name = "Admin"
roles = ["admin", "operator", "viewer", "auditor"]

[[principals]]
id = "police-vms"
tenant = "met-police"
name = "Police VMS"
kind = "service"
roles = ["operator", "viewer"]
digest_password = "police-pw"

[[principals]]
id = "police-desk"
tenant = "met-police"
name = "Police desk"
roles = ["operator", "viewer"]

[[principals]]
id = "westfield-guard"
tenant = "westfield"
name = "Guard"
roles = ["operator", "viewer"]
digest_password = "westfield-pw"

[[principals]]
id = "tfl-operator"
tenant = "tfl"
name = "TfL operator"
roles = ["operator", "viewer"]
digest_password = "tfl-pw"

[[cameras]]
id = "cam1"
owner = "council"
name = "High Street"
tags = ["town"]

[[cameras]]
id = "plain"
owner = "council"
name = "A fixed camera"
tags = ["town"]

[[grants]]
id = "police-ptz"
owner = "council"
grantee = "met-police"
tags = ["town"]
rights = ["live", "ptz"]

[[grants]]
id = "westfield-ptz"
owner = "council"
grantee = "westfield"
cameras = ["cam1"]
rights = ["live", "ptz"]

[[grants]]
id = "tfl-live"
owner = "council"
grantee = "tfl"
cameras = ["cam1"]
rights = ["live"]
"""

PRINCIPALS = {
    "council-operator": "council",
    "council-admin": "council",
    "police-vms": "met-police",
    "police-desk": "met-police",
    "westfield-guard": "westfield",
    "tfl-operator": "tfl",
}


@dataclass
class Clock:
    """The service's clock for lock decisions, driven by the test."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def world_config(
    tmp: Path, camera_url: str, ptz: PtzConfig | None = None, **camera: object
) -> Config:
    (tmp / "seed.toml").write_text(SEED)
    cams = (
        CameraConfig(
            id="cam1",
            onvif=camera_url,
            onvif_username="admin",
            onvif_password="fake-camera",
            **camera,  # type: ignore[arg-type]
        ),
        CameraConfig(id="plain"),
    )
    return Config(
        rtsp=RtspConfig(host="127.0.0.1", port=0, rtp_port=0),
        http=HttpConfig(host="127.0.0.1", port=0),
        grpc=GrpcConfig(port=0),
        tenancy=TenancyConfig(enabled=True, seed=str(tmp / "seed.toml")),
        ptz=ptz or PtzConfig(),
        cameras=cams,
        data_dir=str(tmp / "var"),
    )


def token(tenancy: Tenancy, principal: str, purpose: str | None = None) -> str:
    p = tenancy.policy.snapshot.principals[principal]
    return tenancy.issuer.issue(
        tenant=PRINCIPALS[principal],
        subject=principal,
        ttl=timedelta(hours=1),
        roles=[r.value for r in p.roles],
        purpose=purpose,
    )


_CODEC: SoapCodec | None = None


def codec() -> SoapCodec:
    global _CODEC
    if _CODEC is None:
        _CODEC = SoapCodec.load()
    return _CODEC


@contextlib.asynccontextmanager
async def fake_camera(**kw: object) -> AsyncIterator[FakeOnvifCamera]:
    cam = FakeOnvifCamera(codec(), **kw)  # type: ignore[arg-type]
    await cam.start()
    try:
        yield cam
    finally:
        await cam.stop()


@dataclass
class Api:
    """A gateway (tenancy on, PTZ on cam1 through a FAKE camera) with its HTTP app served on a
    loopback port and its gRPC API on another."""

    gateway: Any
    base: str
    session: Any
    grpc_target: str

    @property
    def tenancy(self) -> Tenancy:
        assert self.gateway.tenancy is not None
        return self.gateway.tenancy  # type: ignore[no-any-return]

    def token(self, who: str, purpose: str | None = None) -> str:
        return token(self.tenancy, who, purpose)

    async def call(
        self, who: str | None, method: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {self.token(who)}"} if who else {}
        async with self.session.request(
            method, f"{self.base}/v1/cameras/{path}", json=body, headers=headers, **kw
        ) as r:
            return r.status, await r.json(content_type=None), r.headers

    def audit(self, **match: object) -> list[dict[str, object]]:
        return audit_rows(self.tenancy, **match)


def audit_rows(tenancy: Tenancy, **match: object) -> list[dict[str, object]]:
    """The audit entries whose fields (or detail keys) match, as flat dicts."""
    out = []
    for e in tenancy.audit.entries():
        row = {
            **e.detail,
            "action": e.action.value,
            "tenant": e.tenant,
            "principal": e.principal,
            "camera": e.camera,
            "purpose": e.purpose,
            "outcome": e.outcome,
        }
        if all(row.get(k) == v for k, v in match.items()):
            out.append(row)
    return out


@contextlib.asynccontextmanager
async def ptz_gateway(
    tmp: Path, camera_url: str, ptz: PtzConfig | None = None, **camera: object
) -> AsyncIterator[Api]:
    from conftest import free_port, free_udp_pair, running_gateway, serving_http

    grpc_port = free_port()
    config = world_config(tmp, camera_url, ptz, **camera)
    config = replace(
        config,
        rtsp=replace(config.rtsp, rtp_port=free_udp_pair()),
        grpc=GrpcConfig(host="127.0.0.1", port=grpc_port),
    )
    async with running_gateway(config) as gw, serving_http(gw) as (server, session):
        base = str(server.make_url("")).rstrip("/")
        yield Api(gw.gateway, base, session, f"127.0.0.1:{grpc_port}")
