"""A real gateway (tenancy and billing on) with its HTTP app on a loopback port, and a client
that calls the REST API as each principal of a small seeded network. Shared by the REST, the
schemathesis and the access-matrix tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from conftest import make_config, running_gateway, serving_http

from gateway.config import BillingConfig, CameraConfig, TenancyConfig
from gateway.core import Gateway

# council runs the network; police and shop are partners; "farside" shares nothing with the
# police, so nothing of it may ever reach the police.
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

[[tenants]]
id = "farside"
name = "Other borough"
kind = "borough"

[[principals]]
id = "root"
tenant = "council"
name = "Platform admin"
roles = ["admin", "auditor"]

[[principals]]
id = "cop"
tenant = "council"
name = "Council operator"
roles = ["operator"]
digest_password = "cop-secret"

[[principals]]
id = "cview"
tenant = "council"
name = "Council viewer"
roles = ["viewer"]

[[principals]]
id = "cfin"
tenant = "council"
name = "Council finance"
roles = ["finance"]

[[principals]]
id = "caud"
tenant = "council"
name = "Council auditor"
roles = ["auditor"]

[[principals]]
id = "padmin"
tenant = "police"
name = "Police admin"
roles = ["admin"]

[[principals]]
id = "pop"
tenant = "police"
name = "Police operator"
roles = ["operator", "investigator"]

[[principals]]
id = "pview"
tenant = "police"
name = "Police viewer"
roles = ["viewer"]

[[principals]]
id = "pfin"
tenant = "police"
name = "Police finance"
roles = ["finance"]

[[principals]]
id = "paud"
tenant = "police"
name = "Police auditor"
roles = ["auditor"]

[[principals]]
id = "sadmin"
tenant = "shop"
name = "Shop admin"
roles = ["admin", "viewer"]

[[principals]]
id = "farside-admin"
tenant = "farside"
name = "Other admin"
roles = ["admin"]

[[cameras]]
id = "street"
owner = "council"
tags = ["town"]

[[cameras]]
id = "yard"
owner = "council"

[[cameras]]
id = "mall"
owner = "shop"

[[cameras]]
id = "farside-cam"
owner = "farside"

[[grants]]
id = "street-police"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live", "playback"]

[[grants]]
id = "mall-council"
owner = "shop"
grantee = "council"
cameras = ["mall"]
rights = ["live"]

[[grants]]
id = "farside-grant"
owner = "farside"
grantee = "council"
cameras = ["farside-cam"]
rights = ["live"]

[[masks]]
id = "farside-mask"
camera = "farside-cam"
points = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]
"""

WHO = {
    "root": "council",
    "cop": "council",
    "cview": "council",
    "cfin": "council",
    "caud": "council",
    "padmin": "police",
    "pop": "police",
    "pview": "police",
    "pfin": "police",
    "paud": "police",
    "sadmin": "shop",
    "farside-admin": "farside",
}
# Configured cameras (sources on this gateway): "street" and "yard" are pushed by encoders,
# "spare" has a source but no record in the register yet.
CAMERAS = (CameraConfig(id="street"), CameraConfig(id="yard"), CameraConfig(id="spare"))


@dataclass
class Rest:
    gateway: Gateway
    base: str
    session: ClientSession
    rtsp_port: int
    who: Mapping[str, str] = field(default_factory=lambda: WHO)  # principal -> its tenant

    @property
    def tenancy(self) -> Any:
        assert self.gateway.tenancy is not None
        return self.gateway.tenancy

    def token(self, who: str, **kw: Any) -> str:
        return str(self.tenancy.issuer.issue(tenant=self.who[who], subject=who, **kw))

    async def call(
        self, who: str | None, method: str, path: str, body: Any = None, **params: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token(who)}"} if who else {}
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers, params=query
        ) as r:
            data = await r.json(content_type=None) if r.status != 204 else None
            return r.status, data

    def denials(self) -> list[Any]:
        return [e for e in self.tenancy.audit.entries() if e.action.value == "denied"]


@contextlib.asynccontextmanager
async def rest_gateway(
    tmp_path: Path,
    *,
    seed_text: str = SEED,
    who: Mapping[str, str] = WHO,
    cameras: tuple[CameraConfig, ...] = CAMERAS,
    **rtsp: Any,
) -> AsyncIterator[Rest]:
    """The gateway of ``seed_text`` (default: the network above; ``who``: its principals'
    tenants) with ``cameras`` configured, its HTTP app served on a loopback port."""
    seed = tmp_path / "seed.toml"
    seed.write_text(seed_text)
    config = replace(
        make_config(cameras, **rtsp),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed)),
        billing=BillingConfig(enabled=True),
    )
    async with running_gateway(config) as gw, serving_http(gw) as (server, session):
        base = str(server.make_url("")).rstrip("/")
        yield Rest(gw.gateway, base, session, gw.port, who)
