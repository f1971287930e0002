"""The REST API (/v1/) end to end: every resource through HTTP against a real gateway, with
the same rules and audit entries as gRPC, RFC 9457 problems and pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import publish_argv, read_argv, wait_for
from pydantic import BaseModel, Field
from rest_fixtures import Rest, rest_gateway

from gateway.http.api.app import add_api_routes, api_problems
from gateway.http.api.routes import Call, Route
from tenants.audit import AuditAction
from tenants.audit.merkle import leaf_hash, verify_consistency, verify_inclusion


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[Rest]:
    async with rest_gateway(tmp_path) as r:
        yield r


def _writes(rest: Rest) -> list[tuple[str, str | None]]:
    return [
        (str(e.detail["api"]), e.principal)
        for e in rest.tenancy.audit.entries()
        if e.detail.get("via") == "http" and "api" in e.detail
    ]


async def test_the_openapi_document_is_3_1_and_public(rest: Rest) -> None:
    status, doc = await rest.call(None, "GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    for path in (
        "/v1/tenants",
        "/v1/principals",
        "/v1/cameras",
        "/v1/grants",
        "/v1/masks",
        "/v1/tokens",
        "/v1/audit/entries",
        "/v1/audit/verify",
        "/v1/audit/proofs/inclusion",
        "/v1/sessions",
        "/v1/usage",
        "/v1/invoices",
    ):
        assert path in doc["paths"], path  # fmt: skip
    listing = doc["paths"]["/v1/cameras"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"limit", "offset"}
    assert listing["responses"]["403"]["content"]["application/problem+json"]


async def test_who_is_calling_comes_first_and_refusals_are_audited(rest: Rest) -> None:
    status, body = await rest.call(None, "GET", "/v1/cameras/street")
    assert status == 401 and body["code"] == "unauthenticated"
    assert body["type"] == "urn:feedgate:problem:unauthenticated" and body["status"] == 401
    # A bad body from nobody is still a 401, not a 400: nothing is looked at before identity.
    status, body = await rest.call(None, "PUT", "/v1/cameras/x", {"nonsense": True})
    assert status == 401
    denied = rest.denials()
    assert len(denied) == 2 and all(e.detail["protocol"] == "http" for e in denied)
    assert denied[0].detail["status"] == 401


async def test_the_platform_admin_drives_every_resource(rest: Rest, procs) -> None:
    root = "root"
    # tenants
    s, t = await rest.call(root, "POST", "/v1/tenants", {"id": "transit", "name": "Transit",
                                                        "kind": "transport"})  # fmt: skip
    assert (s, t["status"]) == (201, "active")
    s, p = await rest.call(root, "POST", "/v1/tenants", {"id": "transit", "name": "T",
                                                        "kind": "transport"})  # fmt: skip
    assert s == 409 and p["code"] == "already_exists"
    transit = {"id": "transit", "name": "Transit Ltd", "kind": "transport"}
    s, t = await rest.call(root, "PUT", "/v1/tenants/transit", transit)
    assert s == 200 and t["name"] == "Transit Ltd"
    s, page = await rest.call(root, "GET", "/v1/tenants", limit=2)
    assert s == 200 and [x["id"] for x in page["items"]] == ["council", "farside"]
    assert page["next_offset"] == 2
    s, page = await rest.call(root, "GET", "/v1/tenants", limit=2, offset=4)
    assert [x["id"] for x in page["items"]] == ["transit"] and page["next_offset"] is None
    s, t = await rest.call(root, "POST", "/v1/tenants/transit/status",
                           {"status": "suspended", "reason": "unpaid"})  # fmt: skip
    assert s == 200 and t["status"] == "suspended"
    await rest.call(root, "POST", "/v1/tenants/transit/status", {"status": "active"})
    s, t = await rest.call(root, "GET", "/v1/tenants/transit")
    assert s == 200 and t["status"] == "active"

    # principals
    s, pr = await rest.call(root, "PUT", "/v1/principals/tops",
                            {"id": "tops", "tenant_id": "transit", "name": "Ops",
                             "roles": ["admin", "viewer"], "digest_password": "pw"})  # fmt: skip
    assert s == 200 and pr["has_digest"] and "digest_password" not in pr
    s, pr = await rest.call(root, "GET", "/v1/principals/tops")
    assert s == 200 and pr["roles"] == ["admin", "viewer"]
    s, page = await rest.call(root, "GET", "/v1/principals", tenant_id="transit")
    assert [x["id"] for x in page["items"]] == ["tops"]
    s, p = await rest.call(root, "PUT", "/v1/principals/tops",
                           {"id": "other", "tenant_id": "transit", "name": "x"})  # fmt: skip
    assert s == 400 and p["field"] == "id"

    # cameras
    bus = {"id": "bus-1", "owner_tenant": "transit", "tags": ["bus"]}
    s, cam = await rest.call(root, "PUT", "/v1/cameras/bus-1", bus)
    assert s == 200 and cam["retention_days"] == 31
    s, cam = await rest.call(root, "GET", "/v1/cameras/bus-1")
    assert s == 200 and cam["tags"] == ["bus"]
    s, page = await rest.call(root, "GET", "/v1/cameras", owner="transit")
    assert [x["id"] for x in page["items"]] == ["bus-1"]
    bad = {"id": "bus-2", "owner_tenant": "transit", "retention_days": 0}
    s, p = await rest.call(root, "PUT", "/v1/cameras/bus-2", bad)
    assert s == 400 and p["code"] == "invalid_argument" and p["field"] == "retention_days"

    # masks
    square = [{"x": 0.1, "y": 0.1}, {"x": 0.4, "y": 0.1}, {"x": 0.4, "y": 0.4}]
    s, m = await rest.call(root, "PUT", "/v1/masks/seat",
                           {"id": "seat", "camera_id": "bus-1", "points": square,
                            "kind": "liftable"})  # fmt: skip
    assert s == 200 and m["kind"] == "liftable" and len(m["points"]) == 3
    assert [z.id for z in rest.tenancy.policy.snapshot.masks["bus-1"]] == ["seat"]
    s, m = await rest.call(root, "GET", "/v1/masks/seat")
    assert s == 200 and m["camera_id"] == "bus-1"
    s, page = await rest.call(root, "GET", "/v1/masks", camera_id="bus-1")
    assert [x["id"] for x in page["items"]] == ["seat"]

    # grants
    s, g = await rest.call(root, "PUT", "/v1/grants/bus-police",
                           {"id": "bus-police", "owner_tenant": "transit",
                            "grantee_tenant": "police", "camera_ids": ["bus-1"],
                            "rights": ["live"],
                            "constraints": {"max_concurrent_streams": 2,
                                            "time_windows": [{"start": "07:00",
                                                              "end": "23:00"}]}})  # fmt: skip
    assert s == 200 and g["constraints"]["max_concurrent_streams"] == 2 and g["revoked_at"] is None
    s, g = await rest.call(root, "GET", "/v1/grants/bus-police")
    assert s == 200 and g["constraints"]["time_windows"][0]["start"] == "07:00"
    s, page = await rest.call(root, "GET", "/v1/grants", owner="transit")
    assert [x["id"] for x in page["items"]] == ["bus-police"]
    s, g = await rest.call(root, "POST", "/v1/grants/bus-police/revoke", {"reason": "ended"})
    assert s == 200 and g["revoked_at"] is not None
    s, page = await rest.call(root, "GET", "/v1/grants", owner="transit", include_revoked=True)
    assert [x["id"] for x in page["items"]] == ["bus-police"]

    # tokens
    s, tok = await rest.call(root, "POST", "/v1/tokens",
                             {"tenant": "transit", "subject": "tops", "ttl_seconds": 600,
                              "roles": ["viewer"], "purpose": "test"})  # fmt: skip
    assert s == 201
    claims = rest.tenancy.verifier.verify(tok["token"])
    assert (claims.tenant, claims.subject, claims.roles) == ("transit", "tops", {"viewer"})
    assert claims.token_id == tok["token_id"]

    # deletes
    assert (await rest.call(root, "DELETE", "/v1/masks/seat"))[0] == 204
    assert (await rest.call(root, "DELETE", "/v1/cameras/bus-1"))[0] == 204
    assert (await rest.call(root, "DELETE", "/v1/principals/tops"))[0] == 204
    s, p = await rest.call(root, "GET", "/v1/cameras/bus-1")
    assert s == 404 and p["code"] == "not_found"  # the platform admin sees every tenant's

    assert _writes(rest) == [
        ("CreateTenant", "root"), ("UpdateTenant", "root"), ("SetTenantStatus", "root"),
        ("SetTenantStatus", "root"), ("PutPrincipal", "root"), ("PutCamera", "root"),
        ("PutMask", "root"), ("PutGrant", "root"), ("RevokeGrant", "root"),
        ("DeleteMask", "root"), ("DeleteCamera", "root"), ("DeletePrincipal", "root"),
    ]  # fmt: skip
    issued = [e for e in rest.tenancy.audit.entries() if e.action == AuditAction.TOKEN_ISSUED]
    assert issued[-1].detail["via"] == "http" and issued[-1].detail["token_id"] == tok["token_id"]

    # live sessions: a police viewer on the council's street camera, listed and kicked
    await procs(publish_argv(f"rtsp://cop:cop-secret@127.0.0.1:{rest.rtsp_port}/street"))
    await wait_for(lambda: (s := rest.gateway.hub.get("street")) is not None and s.has_source
                   and s.gop_cached_bytes > 0, 20, what="street published")  # fmt: skip
    viewer_token = rest.token("pview", ttl=timedelta(minutes=5))
    viewer = await procs(read_argv(f"rtsp://127.0.0.1:{rest.rtsp_port}/street?token={viewer_token}",
                                   seconds=60, decode=False))  # fmt: skip
    playing: list[dict[str, object]] = []

    async def poll() -> None:
        _, page = await rest.call(root, "GET", "/v1/sessions")
        playing[:] = [x for x in page["items"] if x["tenant"] == "police"]

    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while not playing and datetime.now(UTC) < deadline:
        await poll()
    assert playing and playing[0]["camera"] == "street" and playing[0]["principal"] == "pview"
    sid = str(playing[0]["id"])
    s, _ = await rest.call(root, "DELETE", f"/v1/sessions/{sid}", reason="test")
    assert s == 204
    assert await viewer.wait(20) is not None
    await poll()
    assert not playing
    assert any(e.detail.get("api") == "KickSession" for e in rest.tenancy.audit.entries())

    # usage and invoices
    period = datetime.now(UTC).strftime("%Y-%m")
    s, page = await rest.call(root, "GET", "/v1/usage", period=period)
    assert s == 200 and isinstance(page["items"], list)
    s, page = await rest.call(root, "GET", "/v1/invoices", period=period)
    assert s == 200 and page["items"] == []
    s, em = await rest.call(root, "GET", "/v1/usage/emitted")
    assert s == 200 and "since" in em and isinstance(em["cameras"], dict)


async def test_the_audit_log_is_searched_verified_and_proven(rest: Rest) -> None:
    log = rest.tenancy.audit
    log.append(AuditAction.SESSION_START, tenant="police", principal="pview", camera="street")
    log.append(AuditAction.SESSION_START, tenant="shop", principal="sadmin", camera="mall")
    log.append(AuditAction.SESSION_START, tenant="council", principal="root", camera="yard")
    s, page = await rest.call("root", "GET", "/v1/audit/entries", action="session_start", limit=2)
    assert s == 200 and [e["tenant"] for e in page["items"]] == ["police", "shop"]
    assert page["next_offset"] == 2
    s, page = await rest.call("paud", "GET", "/v1/audit/entries", action="session_start")
    assert [e["tenant"] for e in page["items"]] == ["police"]
    s, page = await rest.call("root", "GET", "/v1/audit/entries", camera="yard",
                              **{"from": "2020-01-01T00:00:00Z"})  # fmt: skip
    assert [e["camera"] for e in page["items"]] == ["yard"]
    s, rep = await rest.call("paud", "GET", "/v1/audit/verify")
    assert s == 200 and rep["ok"] and rep["entries"] == log.size()
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    s, ex = await rest.call("paud", "GET", "/v1/audit/disclosures",
                            **{"from": f"{day}T00:00:00Z", "to": f"{day}T23:59:59Z"})  # fmt: skip
    assert s == 200 and ex["rows"] == 1 and "shop" not in ex["csv"]

    size = log.size()
    entry = next(e for e in log.entries() if e.tenant == "police")
    s, proof = await rest.call("paud", "GET", "/v1/audit/proofs/inclusion", seq=entry.seq)
    assert s == 200 and proof["size"] == size
    assert bytes.fromhex(proof["leaf_hash"]) == leaf_hash(entry.canonical())
    assert verify_inclusion(bytes.fromhex(proof["leaf_hash"]), entry.seq, size,
                            [bytes.fromhex(h) for h in proof["proof"]],
                            bytes.fromhex(proof["root"]))  # fmt: skip
    shop_entry = next(e for e in log.entries() if e.tenant == "shop")
    s, _ = await rest.call("paud", "GET", "/v1/audit/proofs/inclusion", seq=shop_entry.seq)
    assert s == 403  # not about the police
    s, c = await rest.call("paud", "GET", "/v1/audit/proofs/consistency", old_size=1)
    assert s == 200 and verify_consistency(1, c["new_size"], bytes.fromhex(c["old_root"]),
                                           bytes.fromhex(c["new_root"]),
                                           [bytes.fromhex(h) for h in c["proof"]])  # fmt: skip
    for who in ("padmin", "pview", "pfin"):
        assert (await rest.call(who, "GET", "/v1/audit/verify"))[0] == 403, who


async def test_cross_tenant_reads_and_writes_are_403_and_audited(rest: Rest) -> None:
    before = len(rest.denials())
    checks = [
        ("GET", "/v1/cameras/yard", None),  # the council's, not granted to the police
        ("GET", "/v1/cameras/no-such-camera", None),
        ("PUT", "/v1/cameras/yard", {"id": "yard", "owner_tenant": "police"}),
        ("DELETE", "/v1/cameras/yard", None),
        ("GET", "/v1/principals/sadmin", None),
        ("DELETE", "/v1/principals/sadmin", None),
        ("GET", "/v1/grants/mall-council", None),
        ("POST", "/v1/grants/street-police/revoke", {}),  # the grantee may not revoke
        ("GET", "/v1/masks/farside-mask", None),
        ("DELETE", "/v1/masks/farside-mask", None),
        ("GET", "/v1/tenants/farside", None),
        ("POST", "/v1/tokens", {"tenant": "shop", "subject": "sadmin"}),
        ("GET", "/v1/principals", None),  # tenant_id below
    ]
    details = {}
    for method, path, body in checks:
        params = {"tenant_id": "shop"} if path == "/v1/principals" else {}
        s, p = await rest.call("padmin", method, path, body, **params)
        assert s == 403 and p["code"] == "permission_denied", (method, path, p)
        details[(method, path)] = p["detail"]
    # A camera the police may not see and one that does not exist look the same.
    assert details[("GET", "/v1/cameras/yard")].replace("yard", "X") == details[
        ("GET", "/v1/cameras/no-such-camera")
    ].replace("no-such-camera", "X")
    denied = rest.denials()[before:]
    assert len(denied) == len(checks)
    assert {e.tenant for e in denied} == {"police"} and {e.principal for e in denied} == {"padmin"}
    assert all(e.detail["protocol"] == "http" and e.detail["status"] == 403 for e in denied)
    # What the police admin may see is scoped to it.
    s, page = await rest.call("padmin", "GET", "/v1/cameras")
    assert [c["id"] for c in page["items"]] == ["street"]
    s, page = await rest.call("padmin", "GET", "/v1/tenants")
    assert [t["id"] for t in page["items"]] == ["council", "police"]


async def test_bad_requests_get_problems(rest: Rest) -> None:
    async with rest.session.put(
        rest.base + "/v1/cameras/x",
        data=b"{not json",
        headers={"Authorization": f"Bearer {rest.token('root')}",
                 "Content-Type": "application/json"},
    ) as r:  # fmt: skip
        assert r.status == 400 and r.content_type == "application/problem+json"
        assert (await r.json(content_type=None))["field"] == "body"
    s, p = await rest.call("root", "GET", "/v1/no-such-thing")
    assert s == 404 and p["code"] == "no_route"
    s, p = await rest.call("root", "PATCH", "/v1/cameras/street")
    assert s == 405 and p["code"] == "method_not_allowed"
    s, p = await rest.call("root", "GET", "/v1/cameras", limit=0)
    assert s == 400 and p["field"] == "limit"
    s, p = await rest.call("root", "GET", "/v1/cameras/Bad!Id")
    assert s == 400 and p["field"] == "id"
    s, p = await rest.call("root", "PUT", "/v1/grants/g", {"id": "g", "owner_tenant": "council",
                           "grantee_tenant": "council", "camera_ids": ["street"],
                           "rights": ["live"]})  # fmt: skip
    assert s == 400 and p["field"] == "grantee_tenant"


class Notes:
    """A service of the process other than the ControlService, as a route table row sees one."""

    def __init__(self) -> None:
        self.tokens: list[str | None] = []

    async def add(self, c: Call, text: str) -> NoteView:
        self.tokens.append(c.token)
        return NoteView(id=f"n{len(self.tokens)}", text=text, principal=c.caller.subject)


class NoteBody(BaseModel):
    text: str = Field(max_length=64)


class NoteView(BaseModel):
    id: str
    text: str
    principal: str


async def _add_note(c: Call) -> BaseModel:
    return await c.use(Notes).add(c, c.body.text)


NOTES = Route("POST", "/v1/notes", "AddNote", "Add a note", _add_note, "notes", NoteView,
              body=NoteBody, status=201, service=Notes, location="/v1/notes/{id}",
              max_body=256)  # fmt: skip


async def test_a_route_may_call_another_service_of_the_process(rest: Rest) -> None:
    """A row naming a service other than the ControlService is served, with its Location and
    its own body limit, after the same authentication, by a process that has the service, and
    is neither served nor documented by one that has not."""
    notes = Notes()
    for services in ([notes], []):
        app = web.Application(middlewares=[api_problems])
        add_api_routes(app, rest.gateway.control, services=services, extra=[NOTES])
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            base = str(server.make_url("")).rstrip("/")
            token = rest.token("padmin")
            auth = {"Authorization": f"Bearer {token}"}
            async with rest.session.get(base + "/v1/openapi.json") as r:
                doc = await r.json()
            async with rest.session.post(base + "/v1/notes", json={"text": "hi"}) as r:
                unauthenticated = r.status
            async with rest.session.post(
                base + "/v1/notes", json={"text": "hi"}, headers=auth
            ) as r:
                status, location, body = r.status, r.headers.get("Location"), await r.json()
            async with rest.session.post(
                base + "/v1/notes",
                data=b'{"text": "' + b"x" * 300 + b'"}',
                headers={**auth, "Content-Type": "application/json"},
            ) as r:
                too_large = r.status, (await r.json())["code"]
        finally:
            await server.close()
        if services:
            assert unauthenticated == 401
            assert (status, location) == (201, "/v1/notes/n1")
            assert body == {"id": "n1", "text": "hi", "principal": "padmin"}
            assert notes.tokens == [token]  # the credential reaches the service; nobody's did not
            assert too_large == (413, "too_large")
            op = doc["paths"]["/v1/notes"]["post"]
            assert op["responses"]["201"]["headers"]["Location"]
            assert op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
        else:
            assert status == 404 and "/v1/notes" not in doc["paths"]
            assert "/v1/cameras" in doc["paths"]
