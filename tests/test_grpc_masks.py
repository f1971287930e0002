"""MaskService: privacy masks through the control API (and the admin CLI), every change audited
and live at once. Fixtures and the seed (council, police, shop; cameras street and mall) are
tests/test_grpc.py's."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import pytest
import test_grpc
from feedgate.v1 import masks_pb2, masks_pb2_grpc
from test_grpc import Api, _cli_env, camera, cli, grant, refused

from tenants.audit import AuditAction, AuditEntry
from tenants.model import MaskKind, MaskZone, TenantKind
from tenants.policy import AccessRequest, Action

api = test_grpc.api  # the fixture: a control API server on the seed, and a channel to it

SQUARE = [(0.1, 0.1), (0.4, 0.1), (0.4, 0.4), (0.1, 0.4)]


def stub(api: Api) -> Any:
    return masks_pb2_grpc.MaskServiceStub(api.channel)


def mask(
    id: str, camera_id: str, points: list[tuple[float, float]] | None = None, **kw: Any
) -> masks_pb2.PutMaskRequest:
    pts = [masks_pb2.Point(x=x, y=y) for x, y in (SQUARE if points is None else points)]
    return masks_pb2.PutMaskRequest(
        mask=masks_pb2.Mask(id=id, camera_id=camera_id, points=pts, **kw)
    )


def mask_entries(api: Api) -> list[AuditEntry]:
    return [e for e in api.tenancy.audit.entries() if e.action == AuditAction.MASK_CHANGED]


def live_zones(api: Api) -> dict[str, tuple[MaskZone, ...]]:
    return api.tenancy.policy.snapshot.masks


async def test_platform_admin_puts_a_mask_live_and_audited(api: Api) -> None:
    masks = stub(api)
    md = api.md("root")
    got = await masks.PutMask(
        mask("bench", "street", kind="liftable", tenant_kinds=["retail", "sports"], label="Bench"),
        metadata=md,
    )
    assert got.id == "bench" and got.kind == "liftable" and len(got.points) == 4
    assert list(got.tenant_kinds) == ["retail", "sports"] and got.label == "Bench"

    # In the policy at once, without waiting for a reload.
    (zone,) = live_zones(api)["street"]
    assert zone == MaskZone(
        "bench",
        "street",
        tuple(SQUARE),
        MaskKind.LIFTABLE,
        frozenset({TenantKind.RETAIL, TenantKind.SPORTS}),
        "Bench",
    )
    (entry,) = mask_entries(api)
    assert (entry.tenant, entry.principal, entry.camera) == ("council", "root", "street")
    assert entry.detail["api"] == "PutMask" and entry.detail["tenants"] == ["council"]
    assert entry.detail["op"] == "create" and entry.detail["mask"] == "bench"
    assert entry.detail["kind"] == "liftable" and entry.detail["points"] == 4
    assert entry.detail["tenant_kinds"] == ["retail", "sports"]

    # An update (permanent, every tenant) is audited with what it replaced.
    await masks.PutMask(mask("bench", "street", points=SQUARE[:3]), metadata=md)
    (zone,) = live_zones(api)["street"]
    assert zone.kind == MaskKind.PERMANENT and not zone.tenant_kinds and len(zone.points) == 3
    entry = mask_entries(api)[-1]
    assert entry.detail["op"] == "update" and entry.detail["points"] == 3
    assert entry.detail["previous"]["kind"] == "liftable"

    # A live decision for the owner's viewer burns it in.
    await masks.PutMask(mask("till", "mall"), metadata=md)
    decision = await api.tenancy.policy.authorize(
        AccessRequest(Action.LIVE, "rtsp", camera="mall", token=api.token("sadmin"))
    )
    assert decision.allow and decision.masked
    assert [z.id for z in decision.mask_zones] == ["till"]


@pytest.mark.parametrize("who", ["pview", "paud", "pfin"])
async def test_non_admins_are_refused(api: Api, who: str) -> None:
    masks = stub(api)
    await masks.PutMask(mask("m", "street"), metadata=api.md("root"))
    md = api.md(who)
    for call in (
        masks.PutMask(mask("m2", "street"), metadata=md),
        masks.ListMasks(masks_pb2.ListMasksRequest(), metadata=md),
        masks.DeleteMask(masks_pb2.DeleteMaskRequest(id="m"), metadata=md),
    ):
        assert (await refused(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert [z.id for z in live_zones(api)["street"]] == ["m"]
    assert len(mask_entries(api)) == 1


async def test_a_tenant_admin_manages_only_its_own_cameras_masks(api: Api) -> None:
    masks = stub(api)
    shop, police = api.md("sadmin"), api.md("padmin")

    # Another tenant's camera the police cannot see: as if it did not exist (the same refusal
    # as for a camera that does not exist).
    err = await refused(masks.PutMask(mask("snoop", "mall"), metadata=police))
    none = await refused(masks.PutMask(mask("snoop", "no-such-camera"), metadata=police))
    assert err.code() == none.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == (none.details() or "").replace("no-such-camera", "mall")
    # Its owner can.
    await masks.PutMask(mask("till", "mall"), metadata=shop)
    err = await refused(masks.DeleteMask(masks_pb2.DeleteMaskRequest(id="till"), metadata=police))
    none = await refused(masks.DeleteMask(masks_pb2.DeleteMaskRequest(id="nil"), metadata=police))
    assert err.code() == none.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == (none.details() or "").replace("nil", "till")
    listed = await masks.ListMasks(masks_pb2.ListMasksRequest(), metadata=police)
    assert list(listed.masks) == []

    # Granted the camera: the police admin reads its masks but still may not change them.
    await api.grants.PutGrant(grant("mall-police", "shop", "police", camera_ids=["mall"]),
                              metadata=shop)  # fmt: skip
    listed = await masks.ListMasks(masks_pb2.ListMasksRequest(camera_id="mall"), metadata=police)
    assert [m.id for m in listed.masks] == ["till"]
    for call in (
        masks.PutMask(mask("till", "mall", kind="liftable"), metadata=police),
        masks.PutMask(mask("other", "mall"), metadata=police),
        masks.DeleteMask(masks_pb2.DeleteMaskRequest(id="till"), metadata=police),
    ):
        assert (await refused(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    (zone,) = live_zones(api)["mall"]
    assert zone.kind == MaskKind.PERMANENT

    # Mask ids are global: a tenant cannot take over another's mask by putting its id on its
    # own camera (that would lift it from the other's camera).
    await api.cameras.PutCamera(camera("van", "police"), metadata=police)
    err = await refused(masks.PutMask(mask("till", "van"), metadata=police))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [z.id for z in live_zones(api)["mall"]] == ["till"]
    # Not even the platform admin moves a mask between cameras.
    err = await refused(masks.PutMask(mask("till", "street"), metadata=api.md("root")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    await masks.PutMask(mask("plate", "van"), metadata=police)
    listed = await masks.ListMasks(masks_pb2.ListMasksRequest(), metadata=police)
    assert [m.id for m in listed.masks] == ["plate", "till"]
    listed = await masks.ListMasks(masks_pb2.ListMasksRequest(), metadata=shop)
    assert [m.id for m in listed.masks] == ["till"]
    err = await refused(
        masks.ListMasks(masks_pb2.ListMasksRequest(camera_id="street"), metadata=police)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [(e.principal, e.detail["mask"]) for e in mask_entries(api)] == [
        ("sadmin", "till"),
        ("padmin", "plate"),
    ]


def _points(*pts: tuple[float, float]) -> list[tuple[float, float]]:
    return list(pts)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (masks_pb2.PutMaskRequest(), "mask"),
        (mask("m", "street", points=SQUARE[:2]), "mask.points"),
        (mask("m", "street", points=[(0.5, 0.5)] * 65), "mask.points"),
        (mask("m", "street", points=_points((0.1, 0.1), (1.5, 0.1), (0.5, 0.5))),
         "mask.points[1].x"),
        (mask("m", "street", points=_points((0.1, math.nan), (0.9, 0.1), (0.5, 0.5))),
         "mask.points[0].y"),
        (mask("m", "street", points=_points((0.1, 0.1), (0.9, 0.1), (-math.inf, 0.5))),
         "mask.points[2].x"),
        (mask("m", "street", points=_points((0.1, 0.1), (0.9, 0.1), (0.5, -0.01))),
         "mask.points[2].y"),
        (mask("Bad Id!", "street"), "mask.id"),
        (mask("m", ""), "mask.camera_id"),
        (mask("m", "street", kind="opaque"), "mask.kind"),
        (mask("m", "street", tenant_kinds=["retail", "pirates"]), "mask.tenant_kinds"),
        (mask("m", "street", label="a\nb"), "mask.label"),
        (mask("m", "street", label="x" * 500), "mask.label"),
        (masks_pb2.ListMasksRequest(camera_id="Bad!"), "camera_id"),
        (masks_pb2.DeleteMaskRequest(id=""), "id"),
    ],
)  # fmt: skip
async def test_invalid_fields_are_named(api: Api, request_: Any, field: str) -> None:
    method = {
        masks_pb2.PutMaskRequest: "PutMask",
        masks_pb2.ListMasksRequest: "ListMasks",
        masks_pb2.DeleteMaskRequest: "DeleteMask",
    }[type(request_)]
    err = await refused(getattr(stub(api), method)(request_, metadata=api.md("root")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert (err.details() or "").startswith(field + ":"), err.details()
    assert not live_zones(api) and not mask_entries(api)


async def test_delete_and_list_by_camera(api: Api) -> None:
    masks = stub(api)
    md = api.md("root")
    for mid, cam in (("a", "street"), ("b", "street"), ("c", "mall")):
        await masks.PutMask(mask(mid, cam, kind="liftable"), metadata=md)
    listed = await masks.ListMasks(masks_pb2.ListMasksRequest(camera_id="street"), metadata=md)
    assert [m.id for m in listed.masks] == ["a", "b"]
    listed = await masks.ListMasks(masks_pb2.ListMasksRequest(), metadata=md)
    assert [(m.id, m.camera_id) for m in listed.masks] == [
        ("a", "street"),
        ("b", "street"),
        ("c", "mall"),
    ]
    assert [(p.x, p.y) for p in listed.masks[0].points] == SQUARE

    await masks.DeleteMask(masks_pb2.DeleteMaskRequest(id="a"), metadata=md)
    assert [z.id for z in live_zones(api)["street"]] == ["b"]
    entry = mask_entries(api)[-1]
    assert entry.camera == "street" and entry.detail["api"] == "DeleteMask"
    assert entry.detail["op"] == "delete" and entry.detail["mask"] == "a"
    assert entry.detail["kind"] == "liftable" and entry.detail["points"] == 4
    listed = await masks.ListMasks(masks_pb2.ListMasksRequest(camera_id="street"), metadata=md)
    assert [m.id for m in listed.masks] == ["b"]

    for call in (
        masks.DeleteMask(masks_pb2.DeleteMaskRequest(id="a"), metadata=md),
        masks.PutMask(mask("d", "nope"), metadata=md),
        masks.ListMasks(masks_pb2.ListMasksRequest(camera_id="nope"), metadata=md),
    ):
        assert (await refused(call)).code() == grpc.StatusCode.NOT_FOUND
    assert len(mask_entries(api)) == 4


async def test_cli_masks_put_list_delete(api: Api) -> None:
    env = _cli_env(FEEDGATE_SERVER=f"127.0.0.1:{api.port}", FEEDGATE_TOKEN=api.token("root"))
    rc, out, err = await cli(
        "masks", "put", "--id", "door", "--camera", "street", "--points", "0,0 0.5,0 0.5,0.25",
        "--kind", "liftable", "--tenant-kinds", "retail,sports", "--label", "Front door",
        "--json", env=env,
    )  # fmt: skip
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["points"][0] == {"x": 0.0, "y": 0.0} and shown["kind"] == "liftable"
    (zone,) = live_zones(api)["street"]
    assert zone.points == ((0.0, 0.0), (0.5, 0.0), (0.5, 0.25))
    assert zone.tenant_kinds == {TenantKind.RETAIL, TenantKind.SPORTS}
    assert zone.label == "Front door"
    assert mask_entries(api)[-1].principal == "root"

    rc, out, err = await cli("masks", "put", "--id", "till", "--camera", "mall",
                             "--points", "0.1,0.1 0.2,0.1 0.2,0.2", env=env)  # fmt: skip
    assert rc == 0, err
    rc, out, err = await cli("masks", "list", "--camera", "street", "--json", env=env)
    assert rc == 0, err
    assert [m["id"] for m in json.loads(out)["masks"]] == ["door"]
    rc, out, err = await cli("masks", "list", env=env)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "CAMERA_ID", "KIND", "TENANT_KINDS", "POINTS", "LABEL"]
    assert lines[1].split() == ["door", "street", "liftable", "retail,sports", "3", "Front", "door"]
    assert lines[2].split() == ["till", "mall", "permanent", "-", "3", "-"]

    # The server names what is wrong; unparseable points are a usage error.
    rc, out, err = await cli("masks", "put", "--id", "x", "--camera", "street",
                             "--points", "0,0 1.5,0 1,1", env=env)  # fmt: skip
    assert rc == 1 and "INVALID_ARGUMENT" in err and "mask.points[1].x" in err, err
    rc, out, err = await cli("masks", "put", "--id", "x", "--camera", "street",
                             "--points", "0,0 1 1,1", env=env)  # fmt: skip
    assert rc == 2 and "--points" in err, err
    viewer = {**env, "FEEDGATE_TOKEN": api.token("pview")}
    rc, out, err = await cli("masks", "delete", "door", env=viewer)
    assert rc == 1 and "PERMISSION_DENIED" in err

    rc, out, err = await cli("masks", "delete", "door", env=env)
    assert rc == 0 and "deleted mask door" in out, err
    assert "street" not in live_zones(api)
    assert [e.detail["op"] for e in mask_entries(api)] == ["create", "create", "delete"]
