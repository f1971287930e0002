"""REST ``/v1/sars``: subject access requests, a thin adapter over
:class:`gateway.sar.service.SarService`.

* ``POST /v1/sars`` ``{subject, contact, start, end, cameras?, area?}`` → ``201``;
  ``GET /v1/sars`` (``?state=open``) lists them with their due dates; ``GET /v1/sars/{id}``.
* ``GET /v1/sars/{id}/findings``: the recordings of the window and every view, playback,
  export, still and mask lift of that footage, and the copies made.
* ``POST /v1/sars/{id}/copies`` ``{camera, start?, end?, redactions: [{id, points, start,
  end}]}`` → ``202``, an export (follow it at ``/v1/exports/{id}``).
* ``POST /v1/sars/{id}/close`` ``{state: fulfilled|refused|withdrawn, outcome}``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import AwareDatetime, Field

from gateway.http.api.app import bearer
from gateway.http.exports import Body, export_view, guarded, read_body
from gateway.recording.exports import RedactionZone
from gateway.sar.service import Findings, SarService
from tenants.sar import SubjectAccessRequest

__all__ = ["add_sar_routes", "sar_view"]

_Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
_Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]


class OpenBody(Body):
    subject: str = Field(min_length=1, max_length=512)
    contact: str = Field(min_length=1, max_length=512)
    start: AwareDatetime
    end: AwareDatetime
    cameras: list[str] = Field(default_factory=list, max_length=256)
    area: str | None = Field(None, max_length=128, description="south,west,north,east")


class RedactionBody(Body):
    id: _Id
    points: list[_Point] = Field(min_length=3, max_length=64)
    start: AwareDatetime
    end: AwareDatetime


class CopyBody(Body):
    camera: str = Field(min_length=1, max_length=128)
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    redactions: list[RedactionBody] = Field(default_factory=list, max_length=32)


class CloseBody(Body):
    state: str
    outcome: str = Field(min_length=1, max_length=512)


def _iso(t: datetime | date | None) -> str | None:
    if t is None:
        return None
    return t.isoformat().replace("+00:00", "Z")


def sar_view(r: SubjectAccessRequest) -> dict[str, Any]:
    return {
        "id": r.id,
        "tenant": r.tenant,
        "subject": r.subject,
        "contact": r.contact,
        "cameras": list(r.cameras),
        "area": r.area.text() if r.area else None,
        "start": _iso(r.start),
        "end": _iso(r.end),
        "opened": _iso(r.opened),
        "opened_by": r.opened_by,
        "due": _iso(r.due),
        "state": r.state.value,
        "outcome": r.outcome,
        "closed": _iso(r.closed),
    }


def findings_view(f: Findings) -> dict[str, Any]:
    return {
        "request": sar_view(f.request),
        "recordings": {
            cam: [{"start": _iso(s.start), "end": _iso(s.end)} for s in spans]
            for cam, spans in f.recordings.items()
        },
        "touches": [
            {
                "seq": t.seq,
                "time": _iso(t.time),
                "action": t.action,
                "tenant": t.tenant,
                "principal": t.principal,
                "camera": t.camera,
                "purpose": t.purpose,
                "footage_start": _iso(t.footage_start),
                "footage_end": _iso(t.footage_end),
            }
            for t in f.touches
        ],
        "copies": [export_view(j) for j in f.copies],
    }


def add_sar_routes(app: web.Application, service: SarService) -> None:
    def who(request: web.Request) -> tuple[str | None, str]:
        return bearer(request), request.remote or ""

    async def open_(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        b: OpenBody = await read_body(request, OpenBody)
        r = await service.open(
            token, subject=b.subject, contact=b.contact, start=b.start, end=b.end,
            cameras=b.cameras, area=b.area, peer=peer,
        )  # fmt: skip
        return web.json_response(sar_view(r), status=201, headers={"Location": f"/v1/sars/{r.id}"})

    async def list_(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        found = await service.list_requests(token, state=request.query.get("state"), peer=peer)
        return web.json_response({"items": [sar_view(r) for r in found], "next_offset": None})

    async def get(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        return web.json_response(sar_view(await service.get(token, request.match_info["id"],
                                                            peer=peer)))  # fmt: skip

    async def findings(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        f = await service.findings(token, request.match_info["id"], peer=peer)
        return web.json_response(findings_view(f))

    async def copy(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        b: CopyBody = await read_body(request, CopyBody)
        zones = [RedactionZone(z.id, tuple(z.points), z.start, z.end) for z in b.redactions]
        job = await service.copy(
            token, request.match_info["id"], b.camera, redactions=zones, start=b.start,
            end=b.end, peer=peer,
        )  # fmt: skip
        return web.json_response(
            export_view(job), status=202, headers={"Location": f"/v1/exports/{job.id}"}
        )

    async def close(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        b: CloseBody = await read_body(request, CloseBody)
        r = await service.close(token, request.match_info["id"], b.state, b.outcome, peer=peer)
        return web.json_response(sar_view(r))

    router = app.router
    router.add_post("/v1/sars", guarded(open_))
    router.add_get("/v1/sars", guarded(list_))
    router.add_get("/v1/sars/{id}", guarded(get))
    router.add_get("/v1/sars/{id}/findings", guarded(findings))
    router.add_post("/v1/sars/{id}/copies", guarded(copy))
    router.add_post("/v1/sars/{id}/close", guarded(close))
