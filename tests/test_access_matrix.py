"""Issue #10's acceptance matrix: every role of the platform tenant and of a partner, and a
deleted principal, against every action at every entry point (RTSP, REST, gRPC, the MediaMTX
hook, and /metrics over HTTP), on one real gateway.

``ALLOWED`` is the one table of who may do what; everybody else is refused. Each refusal must
leave exactly what the refusal log writes: a DENIED audit entry naming the caller and the entry
point's protocol (the deleted principal is named by its tenant only: it no longer exists). An
allowed call must leave no DENIED entry. RTSP stops at DESCRIBE (live) and ANNOUNCE (publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
import pytest_asyncio
from conftest import free_port, publish_argv, spawn, wait_for
from feedgate.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    cameras_pb2,
    cameras_pb2_grpc,
    grants_pb2,
    grants_pb2_grpc,
    masks_pb2,
    masks_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)
from rest_fixtures import Rest, rest_gateway
from rtsp_probe import Probe

from gateway.config import CameraConfig
from gateway.grpc.server import start_grpc
from tenants.audit import AuditAction
from tenants.model import (
    Camera,
    Grant,
    MaskZone,
    Principal,
    Right,
    Role,
    Tenant,
    TenantKind,
)

ROLES = ("admin", "operator", "viewer", "finance", "auditor")
PLATFORM, PARTNER = "council", "police"
PA, PO, PV, PF, PU = (f"{PLATFORM}-{r}" for r in ROLES)
QA, QO, QV, QF, QU = (f"{PARTNER}-{r}" for r in ROLES)
GONE = "gone"  # a council principal with every role, deleted; its token still lists them
EVERYONE = (PA, PO, PV, PF, PU, QA, QO, QV, QF, QU, GONE)
WATCHERS = frozenset({PA, PO, PV, QA, QO, QV})

# The one table: who may do what. Objects: the partner's tenant and its principal
# "police-spare"; the platform's camera "depot", its mask "depot-mask" and its grant
# "police-cams" to the partner (live and playback on "street" and "depot"); deletes act on a
# fresh object of the same owner each time. Media: the platform's camera "street".
ALLOWED: dict[str, frozenset[str]] = {
    "tenant.read": frozenset({PA, PU, QA, QU}),
    "tenant.write": frozenset({PA}),
    "tenant.delete": frozenset({PA}),  # tenants are suspended, not deleted
    "principal.read": frozenset({PA, QA}),
    "principal.write": frozenset({PA, QA}),
    "principal.delete": frozenset({PA, QA}),
    "camera.read": WATCHERS,
    "camera.write": frozenset({PA}),
    "camera.delete": frozenset({PA}),
    "mask.read": frozenset({PA, QA}),
    "mask.write": frozenset({PA}),
    "mask.delete": frozenset({PA}),
    "grant.read": frozenset({PA, QA}),
    "grant.write": frozenset({PA}),
    "grant.delete": frozenset({PA}),  # revoked by the owner only
    "token.write": frozenset({PA, QA}),  # a token for "police-spare"
    "audit.read": frozenset({PA, PU, QU}),
    "live": WATCHERS,
    "publish": frozenset({PA, PO}),  # the camera's owner
    "playback": frozenset({PA, PO, QA, QO}),
    "metrics": frozenset({PA, PO}),  # the platform's staff
    "media_server": frozenset({PA, PO}),  # MediaMTX's api and pprof
    "sessions": frozenset({PA, PO, QA, QO}),
    "usage": frozenset({PA, PF, QA, QF}),
}

WHO = {name: name.partition("-")[0] for name in EVERYONE} | {GONE: PLATFORM, "encoder": PLATFORM}


def _seed() -> str:
    out = [
        f'[[tenants]]\nid = "{t}"\nname = "{t.title()}"\nkind = "{t}"\n'
        for t in (PLATFORM, PARTNER)
    ]
    for name in EVERYONE:
        roles = list(ROLES) if name == GONE else [name.partition("-")[2]]
        out.append(f'[[principals]]\nid = "{name}"\ntenant = "{WHO[name]}"\nname = "{name}"\n'
                   f"roles = {roles!r}\n".replace("'", '"'))  # fmt: skip
    out.append(
        '[[principals]]\nid = "police-spare"\ntenant = "police"\nname = "Spare"\n'
        'roles = ["viewer"]\n'
        '[[principals]]\nid = "encoder"\ntenant = "council"\nname = "Encoder"\nkind = "service"\n'
        'roles = ["operator"]\ndigest_password = "encoder-secret"\n'
        '[[cameras]]\nid = "street"\nowner = "council"\n'
        '[[cameras]]\nid = "depot"\nowner = "council"\n'
        '[[masks]]\nid = "depot-mask"\ncamera = "depot"\n'
        "points = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]\n"
        '[[grants]]\nid = "police-cams"\nowner = "council"\ngrantee = "police"\n'
        'cameras = ["street", "depot"]\nrights = ["live", "playback"]\n'
    )
    return "\n".join(out)


@dataclass
class World:
    rest: Rest
    channel: grpc.aio.Channel
    made: int = 0
    stubs: dict[str, Any] = field(default_factory=dict)

    def md(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(who)}"),)

    def token(self, who: str) -> str:
        roles = list(ROLES) if who == GONE else ()
        return str(self.rest.tenancy.issuer.issue(tenant=WHO[who], subject=who, roles=roles))

    def stub(self, cls: Any) -> Any:
        return self.stubs.setdefault(cls.__name__, cls(self.channel))

    async def fresh(self, kind: str) -> str:
        """A new object of the kind the delete rows act on, owned as the table says."""
        self.made += 1
        oid = f"x{self.made}"
        store = self.rest.tenancy.store
        make: dict[str, Callable[[], object]] = {
            "tenant": lambda: store.put_tenant(Tenant(oid, oid, TenantKind.BOROUGH)),
            "principal": lambda: store.put_principal(
                Principal(oid, PARTNER, oid, roles=frozenset({Role.VIEWER}))
            ),
            "camera": lambda: store.put_camera(Camera(oid, PLATFORM)),
            "mask": lambda: store.put_mask(
                MaskZone(oid, "depot", ((0.5, 0.5), (0.9, 0.5), (0.9, 0.9)))
            ),
            "grant": lambda: store.put_grant(
                Grant(
                    oid,
                    PLATFORM,
                    PARTNER,
                    camera_ids=frozenset({"depot"}),
                    rights=frozenset({Right.LIVE}),
                )
            ),
        }
        await self.rest.tenancy.blocking(make[kind])
        await self.rest.tenancy.blocking(self.rest.tenancy.policy.reload)
        return oid


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp_path = tmp_path_factory.mktemp("matrix")
    cameras = (CameraConfig(id="street"),)
    async with rest_gateway(tmp_path, seed_text=_seed(), who=WHO, cameras=cameras) as rest:
        tenancy = rest.tenancy
        # Every refusal of the matrix comes from loopback: the flood limit is tested elsewhere.
        tenancy.refusals.per_source = tenancy.refusals.total = 1_000_000
        await tenancy.blocking(tenancy.store.delete_principal, GONE)
        await tenancy.blocking(tenancy.policy.reload)
        grpc_port = free_port()
        server = await start_grpc(tenancy, "127.0.0.1", grpc_port, platform_tenant=PLATFORM,
                                  service=rest.gateway.control)  # fmt: skip
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
        encoder = await spawn(
            publish_argv(f"rtsp://encoder:encoder-secret@127.0.0.1:{rest.rtsp_port}/street")
        )
        try:
            await wait_for(lambda: (s := rest.gateway.hub.get("street")) is not None
                           and s.gop_cached_bytes > 0, 30, what="street published")  # fmt: skip
            yield World(rest, channel)
        finally:
            encoder.kill(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await encoder.wait(10)
            encoder.kill()
            await channel.close()
            await server.stop(0)


# ----------------------------------------------------------------------------- entry points
# Each probe answers True (allowed) or False (refused: 401 or 403, UNAUTHENTICATED or
# PERMISSION_DENIED); any other answer fails the row.

Probe_ = Callable[[World, str], Awaitable[bool]]


def _http_verdict(status: int, what: str, body: Any) -> bool:
    if 200 <= status < 300:
        return True
    if status in (401, 403):
        return False
    raise AssertionError(f"{what}: unexpected {status} {body}")


def rest(method: str, path: str, body: Any = None, **params: Any) -> Probe_:
    async def probe(w: World, who: str) -> bool:
        target = path
        if "{fresh}" in path:
            target = path.replace("{fresh}", await w.fresh(path.split("/")[2].rstrip("s")))
        status, data = await w.rest.call(who, method, target, body, **params)
        return _http_verdict(status, f"{method} {target}", data)

    return probe


def rpc(stub: Any, method: str, request: Any, **fields: Any) -> Probe_:
    """``request(**fields)``; a field given as ``FRESH + kind`` gets a fresh object's id.
    ListMasks counts as allowed only if it lists the mask."""
    fresh = next(((k, v[len(FRESH):]) for k, v in fields.items()
                  if isinstance(v, str) and v.startswith(FRESH)), None)  # fmt: skip

    async def probe(w: World, who: str) -> bool:
        given = dict(fields)
        if fresh is not None:
            given[fresh[0]] = await w.fresh(fresh[1])
        try:
            resp = await getattr(w.stub(stub), method)(request(**given), metadata=w.md(who))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return False
            raise AssertionError(f"{method}: unexpected {exc.code()} {exc.details()}") from None
        return method != "ListMasks" or "depot-mask" in {m.id for m in resp.masks}

    return probe


def http_get(path: str) -> Probe_:
    async def probe(w: World, who: str) -> bool:
        headers = {"Authorization": f"Bearer {w.token(who)}"}
        async with w.rest.session.get(w.rest.base + path, headers=headers) as r:
            return _http_verdict(r.status, path, await r.text())

    return probe


def mediamtx(action: str, path: str = "street") -> Probe_:
    async def probe(w: World, who: str) -> bool:
        body = {"ip": "127.0.0.1", "action": action, "path": path, "protocol": "rtsp",
                "token": w.token(who)}  # fmt: skip
        async with w.rest.session.post(w.rest.base + "/mediamtx/auth", json=body) as r:
            return _http_verdict(r.status, f"mediamtx {action}", await r.text())

    return probe


_SDP = (
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
    b"a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:streamid=0\r\n"
)


def rtsp(method: str) -> Probe_:
    """DESCRIBE (live) or ANNOUNCE (publish) of "street" with the caller's token."""

    async def probe(w: World, who: str) -> bool:
        url = f"rtsp://127.0.0.1:{w.rest.rtsp_port}/street?token={w.token(who)}"
        conn = await Probe.connect("127.0.0.1", w.rest.rtsp_port)
        try:
            if method == "DESCRIBE":
                reply = await conn.request("DESCRIBE", url)
            else:
                head = (
                    f"ANNOUNCE {url} RTSP/1.0\r\nCSeq: 1\r\n"
                    f"Content-Type: application/sdp\r\nContent-Length: {len(_SDP)}\r\n\r\n"
                )
                conn.send_raw(head.encode() + _SDP)  # fmt: skip
                reply = await asyncio.wait_for(conn.responses.get(), 10)
        finally:
            await conn.close()
        return _http_verdict(reply.status, f"RTSP {method}", reply.reason)

    return probe


_POLICE = {"id": "police", "name": "Police", "kind": "police"}
_SPARE = {"id": "police-spare", "tenant_id": "police", "name": "Spare", "roles": ["viewer"]}
_DEPOT = {"id": "depot", "owner_tenant": "council"}
_TRIANGLE = [{"x": 0.1, "y": 0.1}, {"x": 0.4, "y": 0.1}, {"x": 0.4, "y": 0.4}]
_MASK = {"id": "depot-mask", "camera_id": "depot", "points": _TRIANGLE}
_GRANT = {"id": "police-cams", "owner_tenant": "council", "grantee_tenant": "police",
          "camera_ids": ["street", "depot"], "rights": ["live", "playback"]}  # fmt: skip
_TOKEN = {"tenant": "police", "subject": "police-spare", "ttl_seconds": 60}
_PERIOD = datetime.now(UTC).strftime("%Y-%m")
FRESH = "fresh:"
T, C, M, G = (tenants_pb2_grpc.TenantServiceStub, cameras_pb2_grpc.CameraServiceStub,
              masks_pb2_grpc.MaskServiceStub, grants_pb2_grpc.GrantServiceStub)  # fmt: skip
A, K = audit_pb2_grpc.AuditServiceStub, tokens_pb2_grpc.TokenServiceStub
t, c, m, g = tenants_pb2, cameras_pb2, masks_pb2, grants_pb2

# Where each action is reached. The entry point's protocol is what its DENIED entries say.
PROTOCOL = {"rest": "http", "http": "http", "grpc": "grpc", "rtsp": "rtsp",
            "mediamtx": "mediamtx-rtsp"}  # fmt: skip
ENTRIES: list[tuple[str, str, Probe_]] = [
    ("tenant.read", "rest", rest("GET", "/v1/tenants/police")),
    ("tenant.read", "grpc", rpc(T, "GetTenant", t.GetTenantRequest, id="police")),
    ("tenant.write", "rest", rest("PUT", "/v1/tenants/police", _POLICE)),
    ("tenant.write", "grpc", rpc(T, "UpdateTenant", t.PutTenantRequest, tenant=_POLICE)),
    ("tenant.delete", "rest", rest("POST", "/v1/tenants/{fresh}/status", {"status": "suspended"})),
    ("tenant.delete", "grpc", rpc(T, "SetTenantStatus", t.SetTenantStatusRequest,
                                  id=FRESH + "tenant", status="suspended")),
    ("principal.read", "rest", rest("GET", "/v1/principals/police-spare")),
    ("principal.read", "grpc", rpc(T, "ListPrincipals", t.ListPrincipalsRequest,
                                   tenant_id="police")),
    ("principal.write", "rest", rest("PUT", "/v1/principals/police-spare", _SPARE)),
    ("principal.write", "grpc", rpc(T, "PutPrincipal", t.PutPrincipalRequest, principal=_SPARE)),
    ("principal.delete", "rest", rest("DELETE", "/v1/principals/{fresh}")),
    ("principal.delete", "grpc", rpc(T, "DeletePrincipal", t.DeletePrincipalRequest,
                                     id=FRESH + "principal")),
    ("camera.read", "rest", rest("GET", "/v1/cameras/depot")),
    ("camera.read", "grpc", rpc(C, "GetCamera", c.GetCameraRequest, id="depot")),
    ("camera.write", "rest", rest("PUT", "/v1/cameras/depot", _DEPOT)),
    ("camera.write", "grpc", rpc(C, "PutCamera", c.PutCameraRequest,
                                 camera={**_DEPOT, "retention_days": 31})),
    ("camera.delete", "rest", rest("DELETE", "/v1/cameras/{fresh}")),
    ("camera.delete", "grpc", rpc(C, "DeleteCamera", c.DeleteCameraRequest, id=FRESH + "camera")),
    ("mask.read", "rest", rest("GET", "/v1/masks/depot-mask")),
    ("mask.read", "grpc", rpc(M, "ListMasks", m.ListMasksRequest, camera_id="depot")),
    ("mask.write", "rest", rest("PUT", "/v1/masks/depot-mask", _MASK)),
    ("mask.write", "grpc", rpc(M, "PutMask", m.PutMaskRequest, mask=_MASK)),
    ("mask.delete", "rest", rest("DELETE", "/v1/masks/{fresh}")),
    ("mask.delete", "grpc", rpc(M, "DeleteMask", m.DeleteMaskRequest, id=FRESH + "mask")),
    ("grant.read", "rest", rest("GET", "/v1/grants/police-cams")),
    ("grant.read", "grpc", rpc(G, "GetGrant", g.GetGrantRequest, id="police-cams")),
    ("grant.write", "rest", rest("PUT", "/v1/grants/police-cams", _GRANT)),
    ("grant.write", "grpc", rpc(G, "PutGrant", g.PutGrantRequest, grant=_GRANT)),
    ("grant.delete", "rest", rest("POST", "/v1/grants/{fresh}/revoke", {})),
    ("grant.delete", "grpc", rpc(G, "RevokeGrant", g.RevokeGrantRequest, id=FRESH + "grant")),
    ("token.write", "rest", rest("POST", "/v1/tokens", _TOKEN)),
    ("token.write", "grpc", rpc(K, "IssueToken", tokens_pb2.IssueTokenRequest, **_TOKEN)),
    ("audit.read", "rest", rest("GET", "/v1/audit/entries", limit=1)),
    ("audit.read", "grpc", rpc(A, "ListEntries", audit_pb2.ListEntriesRequest, limit=1)),
    ("live", "rtsp", rtsp("DESCRIBE")),
    ("live", "mediamtx", mediamtx("read")),
    ("publish", "rtsp", rtsp("ANNOUNCE")),
    ("publish", "mediamtx", mediamtx("publish")),
    ("playback", "mediamtx", mediamtx("playback")),
    ("metrics", "http", http_get("/metrics")),
    ("metrics", "mediamtx", mediamtx("metrics", "")),
    ("media_server", "mediamtx", mediamtx("api", "")),
    ("media_server", "mediamtx", mediamtx("pprof", "")),
    ("sessions", "rest", rest("GET", "/v1/sessions")),
    ("usage", "rest", rest("GET", "/v1/usage", period=_PERIOD)),
    ("usage", "rest", rest("GET", "/v1/invoices", period=_PERIOD)),
]  # fmt: skip
_IDS = [f"{action}-{entry}-{i}" for i, (action, entry, _) in enumerate(ENTRIES)]


def test_the_table_covers_every_action_at_every_entry_point() -> None:
    assert {action for action, _, _ in ENTRIES} == set(ALLOWED)
    resources = {a.partition(".")[0] for a in ALLOWED if "." in a}
    for resource in resources:
        for verb in ("read", "write", "delete"):
            key = f"{resource}.{verb}"
            if key in ALLOWED:
                assert {e for a, e, _ in ENTRIES if a == key} == {"rest", "grpc"}, key
    assert {e for _, e, _ in ENTRIES} == set(PROTOCOL)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("action", "entry", "probe"), ENTRIES, ids=_IDS)
async def test_matrix(world: World, action: str, entry: str, probe: Probe_) -> None:
    audit = world.rest.tenancy.audit
    wrong = []
    for who in EVERYONE:
        before = audit.size()
        allowed = await probe(world, who)
        denied = [e for e in audit.entries(before) if e.action == AuditAction.DENIED]
        expected = who in ALLOWED[action]
        if allowed != expected:
            wrong.append(f"{who}: {'allowed' if allowed else 'refused'}")
        elif allowed and denied:
            wrong.append(f"{who}: allowed, yet audited as refused {[e.detail for e in denied]}")
        elif not allowed:
            named = (WHO[who], None if who == GONE else who, PROTOCOL[entry])
            seen = [(e.tenant, e.principal, e.detail.get("protocol")) for e in denied]
            if seen != [named]:
                wrong.append(f"{who}: refused, audited as {seen}, not once as {named}")
    assert not wrong, f"{action} over {entry}: " + "; ".join(wrong)
