"""Issue #10's control-plane findings, each as a test that failed on the code before the fix
(the gRPC entry point; the REST one is tests/test_rest_api.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import test_grpc
from conftest import free_port, publish_argv, read_argv, wait_for
from feedgate.v1 import cameras_pb2, cameras_pb2_grpc, grants_pb2, tenants_pb2
from rest_fixtures import rest_gateway
from rtsp_probe import Probe
from test_grpc import Api, camera, grant, refused

from gateway.grpc.server import start_grpc
from tenants.audit import AuditAction

api = test_grpc.api


async def test_finding_10_a_tenant_lists_only_itself_and_its_partners(api: Api) -> None:
    shop = api.md("sadmin")
    listed = await api.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=shop)
    assert [t.id for t in listed.tenants] == ["shop"]
    await api.grants.PutGrant(grant("mall-police", "shop", "police", camera_ids=["mall"]),
                              metadata=shop)  # fmt: skip
    for who, seen in (
        ("sadmin", ["police", "shop"]),
        ("paud", ["police", "shop"]),
        ("root", ["council", "police", "shop"]),
    ):
        listed = await api.tenants.ListTenants(tenants_pb2.ListTenantsRequest(),
                                               metadata=api.md(who))  # fmt: skip
        assert [t.id for t in listed.tenants] == seen, who
    err = await refused(
        api.tenants.GetTenant(tenants_pb2.GetTenantRequest(id="council"), metadata=shop)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_finding_9_others_objects_look_like_no_objects(api: Api) -> None:
    police = api.md("padmin")
    pairs = [
        (cameras_pb2.DeleteCameraRequest(id="street"), cameras_pb2.DeleteCameraRequest(id="zz"),
         api.cameras.DeleteCamera),
        (cameras_pb2.GetCameraRequest(id="street"), cameras_pb2.GetCameraRequest(id="zz"),
         api.cameras.GetCamera),
        (tenants_pb2.DeletePrincipalRequest(id="sadmin"),
         tenants_pb2.DeletePrincipalRequest(id="zz"), api.tenants.DeletePrincipal),
    ]  # fmt: skip
    for real, missing, call in pairs:
        a = await refused(call(real, metadata=police))
        b = await refused(call(missing, metadata=police))
        assert a.code() == b.code(), (real, a.details(), b.details())
        real_id, missing_id = real.id, missing.id
        assert (a.details() or "").replace(real_id, "?") == (b.details() or "").replace(
            missing_id, "?"
        )
    # A grant's camera list: another tenant's camera and no camera get the same answer.
    shop = api.md("sadmin")
    a = await refused(api.grants.PutGrant(grant("g1", "shop", "police", camera_ids=["street"]),
                                          metadata=shop))  # fmt: skip
    b = await refused(api.grants.PutGrant(grant("g1", "shop", "police", camera_ids=["zz"]),
                                          metadata=shop))  # fmt: skip
    assert a.code() == b.code() and (a.details() or "").replace("street", "?") == (
        b.details() or ""
    ).replace("zz", "?")


async def test_finding_8_grpc_refusals_are_audited(api: Api) -> None:
    before = [e for e in api.tenancy.audit.entries() if e.action == AuditAction.DENIED]
    await refused(api.tenants.ListTenants(tenants_pb2.ListTenantsRequest()))  # no token
    await refused(api.cameras.PutCamera(camera("x", "council"), metadata=api.md("pview")))
    await refused(api.grants.RevokeGrant(grants_pb2.RevokeGrantRequest(id="nope"),
                                         metadata=api.md("padmin")))  # fmt: skip
    denied = [e for e in api.tenancy.audit.entries() if e.action == AuditAction.DENIED]
    new = denied[len(before) :]
    assert [(e.tenant, e.principal, e.detail["status"]) for e in new] == [
        (None, None, 401),
        ("police", "pview", 403),
        ("police", "padmin", 403),
    ]
    assert all(e.detail["protocol"] == "grpc" for e in new)


async def test_finding_8_a_flood_of_refusals_cannot_fill_the_log(api: Api) -> None:
    before = api.tenancy.audit.size()
    for _ in range(200):
        await refused(api.tenants.ListTenants(tenants_pb2.ListTenantsRequest()))
    written = api.tenancy.audit.size() - before
    assert 1 <= written <= 60


async def test_finding_5_sessions_elsewhere_end_when_their_camera_is_deleted_or_re_owned(
    tmp_path: Path, procs: Any
) -> None:
    """The control API of another process (here: gRPC with no media plane of its own, as on a
    control-only node or another worker) deletes one camera's record and moves another's to a
    new owner. The sessions under the old decisions end at this process's next re-check:
    the owner's viewer of the deleted camera, the police viewer whose grant came from the
    camera's old owner, and the old owner's encoders. (Failed on e4f9a9e: they played on.)"""
    async with rest_gateway(tmp_path) as rest:
        port = free_port()
        server = await start_grpc(rest.tenancy, "127.0.0.1", port, platform_tenant="council")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            cams = cameras_pb2_grpc.CameraServiceStub(channel)
            rtsp = f"rtsp://127.0.0.1:{rest.rtsp_port}"
            for cam in ("street", "yard"):
                await procs(publish_argv(f"rtsp://cop:cop-secret@127.0.0.1:{rest.rtsp_port}/{cam}"))
            for cam in ("street", "yard"):
                await wait_for(lambda c=cam: (s := rest.gateway.hub.get(c)) is not None
                               and s.gop_cached_bytes > 0, 20, what=f"{cam} published")  # fmt: skip
            viewers = {
                ("cview", "yard"): None,  # the owner's own viewer
                ("pview", "street"): None,  # under the council's grant to the police
            }
            for who, cam in viewers:
                token = rest.token(who, ttl=timedelta(minutes=5))
                viewers[(who, cam)] = await procs(
                    read_argv(f"{rtsp}/{cam}?token={token}", seconds=60, decode=False)
                )

            def playing() -> set[str]:
                return {s.principal or "" for s in rest.gateway.control.core.media.sessions()}

            await wait_for(lambda: playing() >= {"cview", "pview"}, 20, what="both playing")
            root = (("authorization", f"Bearer {rest.token('root')}"),)
            await cams.DeleteCamera(cameras_pb2.DeleteCameraRequest(id="yard"), metadata=root)
            await cams.PutCamera(camera("street", "shop"), metadata=root)
            await wait_for(lambda: not playing() & {"cview", "pview"}, 10,
                           what="the sessions to end")  # fmt: skip
            for proc in viewers.values():
                assert proc is not None and await proc.wait(20) is not None
            rest.tenancy.drain()  # session ends are stored on the database thread
            ends = {
                (e.principal, e.camera): e.detail["reason"]
                for e in rest.tenancy.audit.entries()
                if e.action == AuditAction.SESSION_END
            }
            # The council's encoders end too: nobody publishes a camera under a record gone.
            assert ends == {
                ("cview", "yard"): "camera deleted",
                ("cop", "yard"): "camera deleted",
                ("pview", "street"): "camera changed owner",
                ("cop", "street"): "camera changed owner",
            }
        finally:
            await channel.close()
            await server.stop(0)


async def test_finding_9_rtsp_and_the_hook_answer_unseen_cameras_as_no_camera(
    tmp_path: Path,
) -> None:
    """To the police, the council's camera it has no grant on ("yard"), a configured source
    with no record ("spare"), another tenant's recorded camera ("mall") and no camera at all
    ("nowhere") look the same over RTSP and the MediaMTX hook; without credentials every path
    gets the same 401. (Failed on 313f0e3: "yard" and "mall" answered 403.)"""
    async with rest_gateway(tmp_path) as rest:
        token = rest.token("pview")
        answers: dict[str, set[tuple[int, str]]] = {"rtsp": set(), "hook": set(), "anon": set()}
        for cam in ("yard", "spare", "mall", "nowhere"):
            for who, query in (("rtsp", f"?token={token}"), ("anon", "")):
                probe = await Probe.connect("127.0.0.1", rest.rtsp_port)
                try:
                    url = f"rtsp://127.0.0.1:{rest.rtsp_port}/{cam}{query}"
                    r = await probe.request("DESCRIBE", url)
                finally:
                    await probe.close()
                answers[who].add((r.status, r.reason.replace(cam, "?")))
            body = {"ip": "127.0.0.1", "action": "read", "path": cam, "token": token}
            async with rest.session.post(rest.base + "/mediamtx/auth", json=body) as resp:
                reason = (await resp.json())["reason"]
                answers["hook"].add((resp.status, reason.replace(cam, "?")))
        assert answers["rtsp"] == {(404, "Not Found")}, answers
        assert answers["hook"] == {(404, "no camera '?'")}, answers
        assert len(answers["anon"]) == 1 and next(iter(answers["anon"]))[0] == 401, answers
