"""The control API through a real grpc.aio channel, and the admin CLI against it."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedgate
import grpc
import pytest
from conftest import free_port, make_config
from feedgate.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    cameras_pb2,
    cameras_pb2_grpc,
    common_pb2,
    grants_pb2,
    grants_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)

from gateway.config import Config, TenancyConfig
from gateway.grpc.server import start_grpc
from gateway.tenancy import Tenancy
from tenants.audit import AuditAction
from tenants.model import TenantStatus

REPO = Path(__file__).resolve().parent.parent

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
id = "root"
tenant = "council"
name = "Platform admin"
roles = ["admin", "auditor"]

[[principals]]
id = "padmin"
tenant = "police"
name = "Police admin"
roles = ["admin"]

[[principals]]
id = "pview"
tenant = "police"
name = "Police viewer"
roles = ["viewer"]

[[principals]]
id = "paud"
tenant = "police"
name = "Police auditor"
roles = ["auditor"]

[[principals]]
id = "pfin"
tenant = "police"
name = "Police finance"
roles = ["finance"]

[[principals]]
id = "sadmin"
tenant = "shop"
name = "Shop admin"
roles = ["admin", "viewer"]

[[cameras]]
id = "street"
owner = "council"
tags = ["town"]

[[cameras]]
id = "mall"
owner = "shop"
tags = ["inside"]
"""

WHO = {
    "root": "council",
    "padmin": "police",
    "pview": "police",
    "paud": "police",
    "pfin": "police",
    "sadmin": "shop",
}


def tenancy_config(tmp_path: Path) -> Config:
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    return replace(
        make_config(),
        data_dir=str(tmp_path),
        tenancy=TenancyConfig(enabled=True, seed=str(seed)),
    )


@dataclass
class Api:
    tenancy: Tenancy
    channel: grpc.aio.Channel
    port: int

    @property
    def tenants(self) -> Any:
        return tenants_pb2_grpc.TenantServiceStub(self.channel)

    @property
    def cameras(self) -> Any:
        return cameras_pb2_grpc.CameraServiceStub(self.channel)

    @property
    def grants(self) -> Any:
        return grants_pb2_grpc.GrantServiceStub(self.channel)

    @property
    def tokens(self) -> Any:
        return tokens_pb2_grpc.TokenServiceStub(self.channel)

    @property
    def audit(self) -> Any:
        return audit_pb2_grpc.AuditServiceStub(self.channel)

    def token(self, who: str, **kw: Any) -> str:
        return self.tenancy.issuer.issue(tenant=WHO[who], subject=who, **kw)

    def md(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(who)}"),)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    tenancy = Tenancy.open(tenancy_config(tmp_path))
    port = free_port()
    server = await start_grpc(tenancy, "127.0.0.1", port, platform_tenant="council")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Api(tenancy, channel, port)
    finally:
        await channel.close()
        await server.stop(0)
        await tenancy.close()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def camera(id: str, owner: str, **kw: Any) -> cameras_pb2.PutCameraRequest:
    return cameras_pb2.PutCameraRequest(camera=common_pb2.Camera(id=id, owner_tenant=owner, **kw))


def grant(id: str, owner: str, grantee: str, **kw: Any) -> grants_pb2.PutGrantRequest:
    kw.setdefault("rights", ["live"])
    return grants_pb2.PutGrantRequest(
        grant=common_pb2.Grant(id=id, owner_tenant=owner, grantee_tenant=grantee, **kw)
    )


def audited(api: Api) -> list[tuple[str, str | None, str | None]]:
    return [(e.action.value, e.principal, e.detail.get("api")) for e in api.tenancy.audit.entries()]


# ----------------------------------------------------------------------------- authentication


async def test_calls_without_a_valid_token_are_unauthenticated(api: Api) -> None:
    err = await refused(api.tenants.ListTenants(tenants_pb2.ListTenantsRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    bogus = api.token("root")[:-6] + "AAAAAA"  # a bad signature
    for value in (f"Bearer {bogus}", "Bearer not-a-jwt", f"Basic {bogus}"):
        err = await refused(
            api.tenants.ListTenants(
                tenants_pb2.ListTenantsRequest(), metadata=(("authorization", value),)
            )
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, value
        assert bogus not in (err.details() or "")
    expired = api.token("root", now=datetime.now(UTC) - timedelta(hours=2))
    err = await refused(
        api.cameras.ListCameras(
            cameras_pb2.ListCamerasRequest(), metadata=(("authorization", f"Bearer {expired}"),)
        )
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in (err.details() or "")
    # The public keys need no token.
    jwks = await api.tokens.GetJwks(tokens_pb2.GetJwksRequest())
    assert json.loads(jwks.jwks_json)["keys"][0]["kty"] == "OKP"


async def test_viewers_and_finance_have_no_control_rights(api: Api) -> None:
    for who in ("pview", "pfin"):
        err = await refused(
            api.cameras.PutCamera(camera("new-cam", "police"), metadata=api.md(who))
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, who
        err = await refused(
            api.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=api.md(who))
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, who
        err = await refused(
            api.tokens.IssueToken(
                tokens_pb2.IssueTokenRequest(tenant="police", subject="pview"),
                metadata=api.md(who),
            )
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, who
    # A token with a role its principal does not hold gets nothing more.
    md = (("authorization", f"Bearer {api.token('pview', roles=['admin'])}"),)
    err = await refused(api.cameras.PutCamera(camera("new-cam", "police"), metadata=md))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not any(a == "config" for a, _, _ in audited(api))


async def test_suspended_tenants_and_deleted_principals_are_refused(api: Api) -> None:
    md_police = api.md("padmin")
    await api.tenants.SetTenantStatus(
        tenants_pb2.SetTenantStatusRequest(id="police", status="suspended"),
        metadata=api.md("root"),
    )
    err = await refused(
        api.cameras.ListCameras(cameras_pb2.ListCamerasRequest(), metadata=md_police)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "suspended" in (err.details() or "")
    err = await refused(
        api.tenants.SetTenantStatus(
            tenants_pb2.SetTenantStatusRequest(id="council", status="suspended"),
            metadata=api.md("root"),
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    md_shop = api.md("sadmin")
    await api.tenants.DeletePrincipal(
        tenants_pb2.DeletePrincipalRequest(id="sadmin"), metadata=api.md("root")
    )
    err = await refused(api.cameras.ListCameras(cameras_pb2.ListCamerasRequest(), metadata=md_shop))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


# ----------------------------------------------------------------------------- platform admin


async def test_platform_admin_manages_tenants_cameras_and_grants(api: Api) -> None:
    md = api.md("root")
    t = await api.tenants.CreateTenant(
        tenants_pb2.PutTenantRequest(
            tenant=common_pb2.Tenant(id="transit", name="Transit", kind="transport")
        ),
        metadata=md,
    )
    assert (t.id, t.status) == ("transit", "active")
    err = await refused(
        api.tenants.CreateTenant(
            tenants_pb2.PutTenantRequest(
                tenant=common_pb2.Tenant(id="transit", name="Again", kind="transport")
            ),
            metadata=md,
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    await api.tenants.UpdateTenant(
        tenants_pb2.PutTenantRequest(
            tenant=common_pb2.Tenant(id="transit", name="Transit Ltd", kind="transport")
        ),
        metadata=md,
    )
    shown = await api.tenants.GetTenant(tenants_pb2.GetTenantRequest(id="transit"), metadata=md)
    assert shown.name == "Transit Ltd"
    listed = await api.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=md)
    assert [t.id for t in listed.tenants] == ["council", "police", "shop", "transit"]

    await api.tenants.PutPrincipal(
        tenants_pb2.PutPrincipalRequest(
            principal=common_pb2.Principal(
                id="tadmin", tenant_id="transit", name="Transit admin", roles=["admin"]
            ),
            digest_password="s3cret",
        ),
        metadata=md,
    )
    principals = await api.tenants.ListPrincipals(
        tenants_pb2.ListPrincipalsRequest(tenant_id="transit"), metadata=md
    )
    assert [(p.id, list(p.roles), p.has_digest) for p in principals.principals] == [
        ("tadmin", ["admin"], True)
    ]

    cam = await api.cameras.PutCamera(
        camera(
            "platform-1", "transit", name="Platform 1", tags=["rail"], area_type="transport_hub"
        ),
        metadata=md,
    )
    assert (cam.retention_days, cam.area_type) == (31, "transport_hub")
    g = await api.grants.PutGrant(
        grant(
            "transit-police",
            "transit",
            "police",
            camera_ids=["platform-1"],
            rights=["live", "playback"],
            constraints=common_pb2.Constraints(
                time_windows=[common_pb2.TimeWindow(start="08:00", end="18:00", weekdays=[0, 1])],
                max_concurrent_streams=2,
                purpose_required=True,
            ),
        ),
        metadata=md,
    )
    assert g.HasField("created_at") and not g.HasField("revoked_at")
    assert g.constraints.max_concurrent_streams == 2
    # The policy sees the grant at once.
    snap = api.tenancy.policy.snapshot
    assert "platform-1" in snap.cameras
    assert "transit-police" in {x.id for x in snap.grants}

    grants = await api.grants.ListGrants(
        grants_pb2.ListGrantsRequest(owner_tenant="transit"), metadata=md
    )
    assert [x.id for x in grants.grants] == ["transit-police"]
    cams = await api.cameras.ListCameras(
        cameras_pb2.ListCamerasRequest(owner_tenant="transit"), metadata=md
    )
    assert [c.id for c in cams.cameras] == ["platform-1"]

    revoked = await api.grants.RevokeGrant(
        grants_pb2.RevokeGrantRequest(id="transit-police", reason="contract ended"), metadata=md
    )
    assert revoked.HasField("revoked_at")
    assert "transit-police" not in {x.id for x in api.tenancy.policy.snapshot.grants}
    err = await refused(
        api.grants.PutGrant(
            grant("transit-police", "transit", "police", camera_ids=["platform-1"]), metadata=md
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # revoked grants are history
    listed_all = await api.grants.ListGrants(
        grants_pb2.ListGrantsRequest(owner_tenant="transit", include_revoked=True), metadata=md
    )
    assert [x.id for x in listed_all.grants] == ["transit-police"]

    await api.tenants.SetTenantStatus(
        tenants_pb2.SetTenantStatusRequest(id="transit", status="suspended", reason="test"),
        metadata=md,
    )
    assert api.tenancy.policy.snapshot.tenants["transit"].status == TenantStatus.SUSPENDED
    await api.cameras.DeleteCamera(cameras_pb2.DeleteCameraRequest(id="platform-1"), metadata=md)
    err = await refused(
        api.cameras.GetCamera(cameras_pb2.GetCameraRequest(id="platform-1"), metadata=md)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND

    # Every write is in the audit log, with the caller as principal.
    writes = [(a, p, m) for a, p, m in audited(api) if m is not None]
    assert writes == [
        ("tenant_changed", "root", "CreateTenant"),
        ("tenant_changed", "root", "UpdateTenant"),
        ("config", "root", "PutPrincipal"),
        ("config", "root", "PutCamera"),
        ("grant_created", "root", "PutGrant"),
        ("grant_revoked", "root", "RevokeGrant"),
        ("tenant_changed", "root", "SetTenantStatus"),
        ("config", "root", "DeleteCamera"),
    ]
    entries = list(api.tenancy.audit.entries())
    assert all(e.tenant == "council" for e in entries if e.detail.get("api"))
    revoke = next(e for e in entries if e.action == AuditAction.GRANT_REVOKED)
    assert revoke.detail["reason"] == "contract ended"
    assert "s3cret" not in json.dumps([dict(e.detail) for e in entries])


# ----------------------------------------------------------------------------- tenant admins


async def test_a_tenant_admin_stays_within_its_tenant(api: Api) -> None:
    police, shop = api.md("padmin"), api.md("sadmin")
    pd = grpc.StatusCode.PERMISSION_DENIED

    # Its own cameras: yes. Another tenant's, or an id another tenant uses: no.
    await api.cameras.PutCamera(camera("van-1", "police", tags=["mobile"]), metadata=police)
    for req in (camera("van-2", "council"), camera("street", "police")):
        err = await refused(api.cameras.PutCamera(req, metadata=police))
        assert err.code() == pd, req
    err = await refused(
        api.cameras.DeleteCamera(cameras_pb2.DeleteCameraRequest(id="street"), metadata=police)
    )
    assert err.code() == pd
    assert "street" in api.tenancy.policy.snapshot.cameras

    # Grants it owns: yes; as another owner: no.
    err = await refused(
        api.grants.PutGrant(
            grant("steal", "council", "police", camera_ids=["street"]), metadata=police
        )
    )
    assert err.code() == pd
    err = await refused(
        api.grants.PutGrant(grant("bad", "shop", "police", camera_ids=["street"]), metadata=shop)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # not the shop's camera
    await api.grants.PutGrant(
        grant("mall-police", "shop", "police", camera_ids=["mall"]), metadata=shop
    )
    # The grantee sees the grant and the camera it covers, but cannot revoke it.
    seen = await api.grants.ListGrants(grants_pb2.ListGrantsRequest(), metadata=police)
    assert [g.id for g in seen.grants] == ["mall-police"]
    cams = await api.cameras.ListCameras(cameras_pb2.ListCamerasRequest(), metadata=police)
    assert [c.id for c in cams.cameras] == ["mall", "van-1"]
    err = await refused(
        api.grants.RevokeGrant(grants_pb2.RevokeGrantRequest(id="mall-police"), metadata=police)
    )
    assert err.code() == pd
    err = await refused(
        api.cameras.GetCamera(cameras_pb2.GetCameraRequest(id="street"), metadata=police)
    )
    # Others' cameras look exactly like no camera at all (issue #10 finding 9).
    assert err.code() == pd
    missing = await refused(
        api.cameras.GetCamera(cameras_pb2.GetCameraRequest(id="nothing"), metadata=police)
    )
    assert missing.code() == pd
    assert (err.details() or "").replace("street", "X") == (missing.details() or "").replace(
        "nothing", "X"
    )

    # Principals: its own only.
    err = await refused(
        api.tenants.PutPrincipal(
            tenants_pb2.PutPrincipalRequest(
                principal=common_pb2.Principal(id="mole", tenant_id="shop", name="x")
            ),
            metadata=police,
        )
    )
    assert err.code() == pd
    err = await refused(
        api.tenants.PutPrincipal(  # taking over the shop's principal by its id
            tenants_pb2.PutPrincipalRequest(
                principal=common_pb2.Principal(
                    id="sadmin", tenant_id="police", name="x", roles=["admin"]
                )
            ),
            metadata=police,
        )
    )
    assert err.code() == pd
    mine = await api.tenants.ListPrincipals(tenants_pb2.ListPrincipalsRequest(), metadata=police)
    assert {p.tenant_id for p in mine.principals} == {"police"}
    err = await refused(
        api.tenants.ListPrincipals(
            tenants_pb2.ListPrincipalsRequest(tenant_id="shop"), metadata=police
        )
    )
    assert err.code() == pd
    err = await refused(
        api.tenants.CreateTenant(
            tenants_pb2.PutTenantRequest(tenant=common_pb2.Tenant(id="x", name="x", kind="retail")),
            metadata=police,
        )
    )
    assert err.code() == pd

    # Tokens: for its own tenant's principals, with no more roles than they hold.
    err = await refused(
        api.tokens.IssueToken(
            tokens_pb2.IssueTokenRequest(tenant="shop", subject="sadmin"), metadata=police
        )
    )
    assert err.code() == pd
    err = await refused(
        api.tokens.IssueToken(
            tokens_pb2.IssueTokenRequest(tenant="police", subject="pview", roles=["admin"]),
            metadata=police,
        )
    )
    assert err.code() == pd
    assert "admin" in (err.details() or "")
    err = await refused(
        api.tokens.IssueToken(
            tokens_pb2.IssueTokenRequest(tenant="police", subject="sadmin"), metadata=police
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # not a police principal


async def test_issued_tokens_verify(api: Api) -> None:
    resp = await api.tokens.IssueToken(
        tokens_pb2.IssueTokenRequest(
            tenant="police",
            subject="pview",
            cameras=["mall"],
            ttl_seconds=600,
            roles=["viewer"],
            purpose="incident 42",
        ),
        metadata=api.md("padmin"),
    )
    claims = api.tenancy.verifier.verify(resp.token)
    assert (claims.tenant, claims.subject) == ("police", "pview")
    assert claims.roles == {"viewer"} and claims.cameras == {"mall"}
    assert claims.purpose == "incident 42"
    assert claims.token_id == resp.token_id
    assert resp.expires_at.ToDatetime(tzinfo=UTC) == claims.expires_at
    assert timedelta(seconds=590) < claims.expires_at - datetime.now(UTC) <= timedelta(seconds=600)
    entry = [e for e in api.tenancy.audit.entries() if e.action == AuditAction.TOKEN_ISSUED][-1]
    assert (entry.tenant, entry.principal, entry.purpose) == ("police", "padmin", "incident 42")
    assert entry.detail["token_id"] == resp.token_id and entry.detail["subject"] == "pview"
    assert resp.token not in json.dumps(dict(entry.detail))
    # The platform admin issues for any tenant; the default lifetime is 15 minutes.
    resp = await api.tokens.IssueToken(
        tokens_pb2.IssueTokenRequest(tenant="shop", subject="sadmin"), metadata=api.md("root")
    )
    claims = api.tenancy.verifier.verify(resp.token)
    assert claims.tenant == "shop" and claims.expires_at - claims.issued_at == timedelta(minutes=15)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("cameras.PutCamera", camera("Bad Id!", "police"), "camera.id"),
        ("cameras.PutCamera", camera("ok", "police", retention_days=5000), "camera.retention_days"),
        ("cameras.PutCamera", camera("ok", "police", area_type="moon"), "camera.area_type"),
        ("cameras.PutCamera", camera("ok", "police", tags=["a b"]), "camera.tags"),
        ("cameras.PutCamera", camera("ok", "police", name="x" * 500), "camera.name"),
        ("grants.PutGrant", grant("g", "police", "shop", camera_ids=["van"], rights=["fly"]),
         "grant.rights"),
        ("grants.PutGrant", grant("g", "police", "shop"), "grant.camera_ids"),
        ("grants.PutGrant", grant("g", "police", "police", camera_tags=["t"]),
         "grant.grantee_tenant"),
        (
            "grants.PutGrant",
            grant(
                "g", "police", "shop", camera_tags=["t"],
                constraints=common_pb2.Constraints(
                    time_windows=[common_pb2.TimeWindow(start="8am", end="18:00")]
                ),
            ),
            "grant.constraints.time_windows[0].start",
        ),
        (
            "grants.PutGrant",
            grant("g", "police", "shop", camera_tags=["t"],
                  constraints=common_pb2.Constraints(ptz_priority=40000)),
            "grant.constraints.ptz_priority",
        ),
        ("tokens.IssueToken",
         tokens_pb2.IssueTokenRequest(tenant="police", subject="pview", ttl_seconds=0),
         "ttl_seconds"),
        ("tokens.IssueToken",
         tokens_pb2.IssueTokenRequest(tenant="police", subject="pview", ttl_seconds=86401),
         "ttl_seconds"),
        ("tokens.IssueToken",
         tokens_pb2.IssueTokenRequest(tenant="police", subject="pview", roles=["king"]),
         "roles"),
        ("tokens.IssueToken",
         tokens_pb2.IssueTokenRequest(tenant="police", subject="pview", purpose="a\nb"),
         "purpose"),
        ("tenants.CreateTenant",
         tenants_pb2.PutTenantRequest(tenant=common_pb2.Tenant(id="t", name="T", kind="pirate")),
         "tenant.kind"),
        ("tenants.CreateTenant",
         tenants_pb2.PutTenantRequest(
             tenant=common_pb2.Tenant(
                 id="t", name="T", kind="retail", jwks_url="http://idp.example/jwks",
                 issuer="https://idp.example", algorithms=["ES256"],
             )
         ),
         "tenant.jwks_url"),
        ("tenants.SetTenantStatus",
         tenants_pb2.SetTenantStatusRequest(id="shop", status="closed"), "status"),
    ],
)  # fmt: skip
async def test_invalid_fields_are_named(api: Api, method: str, request_: Any, field: str) -> None:
    service, name = method.split(".")
    err = await refused(getattr(getattr(api, service), name)(request_, metadata=api.md("root")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert (err.details() or "").startswith(field + ":"), err.details()


async def test_unknown_ids_are_not_found(api: Api) -> None:
    md = api.md("root")
    for call in (
        api.cameras.GetCamera(cameras_pb2.GetCameraRequest(id="nope"), metadata=md),
        api.grants.RevokeGrant(grants_pb2.RevokeGrantRequest(id="nope"), metadata=md),
        api.tenants.GetTenant(tenants_pb2.GetTenantRequest(id="nope"), metadata=md),
        api.cameras.PutCamera(camera("cam-x", "nope"), metadata=md),
    ):
        assert (await refused(call)).code() == grpc.StatusCode.NOT_FOUND


# ----------------------------------------------------------------------------- audit


async def test_auditors_verify_list_and_export(api: Api) -> None:
    log = api.tenancy.audit
    now = datetime.now(UTC)
    log.append(AuditAction.SESSION_START, tenant="police", principal="pview", camera="mall",
               purpose="=cmd()")  # fmt: skip
    log.append(AuditAction.SESSION_START, tenant="shop", principal="sadmin", camera="mall")
    log.append(AuditAction.SESSION_START, tenant="council", principal="root", camera="street")
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    lo, hi = common_pb2.Grant().created_at, common_pb2.Grant().created_at
    lo.FromDatetime(day)
    hi.FromDatetime(day + timedelta(days=1))

    report = await api.audit.Verify(audit_pb2.VerifyRequest(), metadata=api.md("paud"))
    assert report.ok and report.entries == 3 and not report.HasField("first_bad_seq")

    # The platform auditor sees everything.
    export = await api.audit.ExportDisclosures(
        audit_pb2.ExportDisclosuresRequest(from_time=lo, to_time=hi), metadata=api.md("root")
    )
    rows = list(csv.reader(io.StringIO(export.csv)))
    assert rows[0][:4] == ["date", "recipient_organisation", "recipient_person", "reason"]
    assert export.rows == 3 and [r[1] for r in rows[1:]] == ["police", "shop", "council"]
    assert rows[1][3] == "'=cmd()"  # no spreadsheet formulas
    # A tenant's auditor: disclosures to it.
    export = await api.audit.ExportDisclosures(
        audit_pb2.ExportDisclosuresRequest(from_time=lo, to_time=hi), metadata=api.md("paud")
    )
    assert export.rows == 1 and "shop" not in export.csv and "council" not in export.csv
    err = await refused(
        api.audit.ExportDisclosures(audit_pb2.ExportDisclosuresRequest(), metadata=api.md("paud"))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "from_time" in (err.details() or "")

    listed = await api.audit.ListEntries(
        audit_pb2.ListEntriesRequest(limit=2), metadata=api.md("root")
    )
    assert [e.seq for e in listed.entries] == [0, 1] and listed.more
    page = await api.audit.ListEntries(
        audit_pb2.ListEntriesRequest(limit=2, page=1, from_time=lo), metadata=api.md("root")
    )
    assert [e.seq for e in page.entries] == [2] and not page.more
    mine = await api.audit.ListEntries(audit_pb2.ListEntriesRequest(), metadata=api.md("paud"))
    assert [e.tenant for e in mine.entries] == ["police"]
    for who in ("padmin", "pview", "pfin"):
        err = await refused(api.audit.Verify(audit_pb2.VerifyRequest(), metadata=api.md(who)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, who


# ----------------------------------------------------------------------------- the CLI


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDGATE_")}
    # The stubs' package wherever it is importable from here (installed, or protos/).
    paths = [str(Path(feedgate.__file__).resolve().parent.parent), str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


async def cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or _cli_env(),
        cwd=REPO,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_against_the_server(api: Api) -> None:
    env = _cli_env(FEEDGATE_SERVER=f"127.0.0.1:{api.port}", FEEDGATE_TOKEN=api.token("root"))
    rc, out, err = await cli("tenants", "list", "--json", env=env)
    assert rc == 0, err
    assert [t["id"] for t in json.loads(out)["tenants"]] == ["council", "police", "shop"]

    rc, out, err = await cli(
        "cameras", "put", "--id", "gate", "--owner", "council", "--tags", "town,entry",
        "--area-type", "high_street", "--retention-days", "14", env=env,
    )  # fmt: skip
    assert rc == 0, err
    rc, out, err = await cli(
        "grants", "create", "--id", "town-police", "--owner", "council", "--grantee", "police",
        "--tags", "town", "--rights", "live,playback", "--window", "08:00-18:00@0,1,2,3,4",
        "--max-streams", "3", "--purpose-required", "--quality", "sub", "--ptz-priority", "5",
        env=env,
    )  # fmt: skip
    assert rc == 0, err
    stored = api.tenancy.store.get_grant("town-police")
    assert stored.camera_tags == {"town"} and stored.constraints.max_concurrent_streams == 3
    assert str(stored.constraints.time_windows[0]) == "08:00-18:00@0,1,2,3,4"
    rc, out, err = await cli("grants", "show", "town-police", "--json", env=env)
    assert rc == 0 and json.loads(out)["constraints"]["quality_cap"] == "sub", err
    rc, out, err = await cli("cameras", "list", "--owner", "council", env=env)
    assert rc == 0 and "gate" in out and "street" in out, err

    rc, out, err = await cli(
        "token", "issue", "--tenant", "police", "--subject", "pview", "--ttl", "15m",
        "--role", "viewer", "--camera", "gate", env=env,
    )  # fmt: skip
    assert rc == 0, err
    claims = api.tenancy.verifier.verify(out.strip())
    assert claims.subject == "pview" and claims.cameras == {"gate"}
    assert claims.expires_at - claims.issued_at == timedelta(minutes=15)

    rc, out, err = await cli("grants", "revoke", "town-police", env=env)
    assert rc == 0, err
    assert "town-police" not in {g.id for g in api.tenancy.policy.snapshot.grants}
    rc, out, err = await cli("audit", "verify", env=env)
    assert rc == 0 and out.startswith("ok: "), (out, err)
    rc, out, err = await cli("audit", "list", "--limit", "3", "--json", env=env)
    assert rc == 0 and len(json.loads(out)["entries"]) == 3, err

    # Refusals: a message and exit 1; no token: UNAUTHENTICATED.
    viewer = {**env, "FEEDGATE_TOKEN": api.token("pview")}
    rc, out, err = await cli("cameras", "delete", "gate", env=viewer)
    assert rc == 1 and "PERMISSION_DENIED" in err
    rc, out, err = await cli("tenants", "list", "--token", "", env=env)
    assert rc == 1 and "UNAUTHENTICATED" in err


async def test_cli_local_token_issue_and_audit_verify(tmp_path: Path) -> None:
    config = tenancy_config(tmp_path)
    toml = tmp_path / "feedgate.toml"
    toml.write_text(
        f'data_dir = "{tmp_path}"\n[tenancy]\nenabled = true\nseed = "{tmp_path / "seed.toml"}"\n'
    )
    env = _cli_env()
    for subject in ("root", "padmin"):
        rc, out, err = await cli(
            "token", "issue", "--local", "--config", str(toml),
            "--tenant", WHO[subject], "--subject", subject, "--ttl", "3600", env=env,
        )  # fmt: skip
        assert rc == 0, err
        token = out.strip()
        assert "\n" not in token and token.count(".") == 2
    rc, out, err = await cli(
        "token", "issue", "--local", "--config", str(toml), "--tenant", "police",
        "--subject", "pview", "--role", "admin", env=env,
    )  # fmt: skip
    assert rc == 1 and "PERMISSION_DENIED" in err and not out

    tenancy = Tenancy.open(config)
    try:
        claims = tenancy.verifier.verify(token)
        assert (claims.tenant, claims.subject) == ("police", "padmin")
        issued = [e for e in tenancy.audit.entries() if e.action == AuditAction.TOKEN_ISSUED]
        assert [e.detail["subject"] for e in issued] == ["root", "padmin"]
        assert all(str(e.principal).startswith("local:") for e in issued)
    finally:
        await tenancy.close()

    rc, out, err = await cli("audit", "verify", "--local", "--config", str(toml), env=env)
    assert rc == 0, (out, err)
    assert re.fullmatch(r"ok: 2 entries, \d+ checkpoints", out.strip()), out
    rc, out, err = await cli(
        "audit", "export", "--local", "--config", str(toml),
        "--from", "2020-01-01", "--to", "2099-12-31", env=env,
    )  # fmt: skip
    assert rc == 0 and out.startswith("date,recipient_organisation"), err

    # Someone edits an entry in the database file: verification names it and fails.
    with sqlite3.connect(tmp_path / "feedgate.db") as db:
        db.execute("UPDATE audit_entries SET principal = 'someone-else' WHERE seq = 1")
    rc, out, err = await cli("audit", "verify", "--local", "--config", str(toml), env=env)
    assert rc == 1, (out, err)
    assert "entry 1" in out and "first bad entry: 1" in out


async def test_cli_admin_verbs(api: Api, tmp_path: Path) -> None:
    env = _cli_env(FEEDGATE_SERVER=f"127.0.0.1:{api.port}", FEEDGATE_TOKEN=api.token("root"))
    steps: list[tuple[str, ...]] = [
        ("tenants", "create", "--id", "transit", "--name", "Transit", "--kind", "transport"),
        ("tenants", "suspend", "transit", "--reason", "unpaid"),
        ("tenants", "activate", "transit"),
        ("principals", "put", "--id", "tops", "--tenant", "transit", "--name", "Ops",
         "--roles", "viewer,operator"),
        ("cameras", "put", "--id", "bus-1", "--owner", "transit", "--name", "Bus 1"),
        ("grants", "create", "--id", "bus-police", "--owner", "transit", "--grantee", "police",
         "--cameras", "bus-1", "--rights", "live"),
        ("principals", "delete", "tops"),
        ("cameras", "delete", "bus-1"),
    ]  # fmt: skip
    for argv in steps:
        rc, out, err = await cli(*argv, env=env)
        assert rc == 0, (argv, err)
    rc, out, err = await cli("tenants", "show", "transit", "--json", env=env)
    assert rc == 0 and json.loads(out)["status"] == "active", err
    rc, out, err = await cli("principals", "list", "--tenant", "police", env=env)
    assert rc == 0 and out.splitlines()[0].split()[:2] == ["ID", "TENANT_ID"], err
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"padmin", "paud", "pfin", "pview"}
    rc, out, err = await cli("grants", "list", "--grantee", "police", "--json", env=env)
    assert rc == 0 and [g["id"] for g in json.loads(out)["grants"]] == ["bus-police"], err
    rc, out, err = await cli("cameras", "show", "bus-1", env=env)
    assert rc == 1 and "NOT_FOUND" in err
    rc, out, err = await cli("grants", "create", "--id", "x", "--owner", "transit",
                             "--grantee", "police", "--rights", "live", env=env)  # fmt: skip
    assert rc == 2 and "--cameras or --tags" in err
    api.tenancy.audit.append(AuditAction.SESSION_START, tenant="police", principal="pview",
                             camera="mall")  # fmt: skip
    today = datetime.now(UTC).date().isoformat()
    out_file = tmp_path / "disclosures.csv"
    rc, out, err = await cli("audit", "export", "--from", today, "--to", today,
                             "--out", str(out_file), env=env)  # fmt: skip
    assert rc == 0 and "1 disclosures" in err, err
    assert list(csv.reader(out_file.open()))[1][1:3] == ["police", "pview"]
    actions = [a for a, _, m in audited(api) if m is not None]
    assert actions == [
        "tenant_changed", "tenant_changed", "tenant_changed", "config", "config",
        "grant_created", "config", "config",
    ]  # fmt: skip
