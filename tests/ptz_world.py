"""A small borough for the PTZ tests: tenants of four kinds, grants with and without the ptz
right, one camera owned by the council and steered through a FAKE ONVIF camera."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

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
