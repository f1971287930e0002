"""REST ``/v1/sars``: subject access requests, rows of the REST API's route table over
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
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field

from gateway.http.api.routes import Call, Handler, Instant, PageQuery, Route
from gateway.http.exports import MAX_BODY, ExportView, Text, row
from gateway.recording.exports import RedactionZone
from gateway.sar.service import Findings, SarService
from tenants.control.schemas import TAG_PATTERN, TEXT_PATTERN, Body, Id, View
from tenants.control.views import page, page_of
from tenants.sar import SarState, SubjectAccessRequest

__all__ = ["ROUTES", "FindingsView", "SarView"]

SAR_ID = r"^sar-[0-9a-f]{12}$"
_Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
_Required = Annotated[str, Field(min_length=1, max_length=512, pattern=TEXT_PATTERN)]


class Closed(StrEnum):
    FULFILLED = SarState.FULFILLED.value
    REFUSED = SarState.REFUSED.value
    WITHDRAWN = SarState.WITHDRAWN.value


class OpenBody(Body):
    subject: _Required = Field(description="who asks: kept in the request, never audited")
    contact: _Required
    start: Instant
    end: Instant
    cameras: list[Id] = Field(default_factory=list, max_length=256)
    area: Text | None = Field(None, max_length=128, description="south,west,north,east")


class RedactionBody(Body):
    id: Annotated[str, Field(pattern=TAG_PATTERN)]
    points: list[_Point] = Field(min_length=3, max_length=64)
    start: Instant
    end: Instant


class CopyBody(Body):
    camera: Id
    start: Instant | None = Field(None, description="default: the request's window")
    end: Instant | None = None
    redactions: list[RedactionBody] = Field(default_factory=list, max_length=32)


class CloseBody(Body):
    state: Closed
    outcome: _Required


class SarQuery(PageQuery):
    state: SarState | None = None


class SarView(View):
    id: str
    tenant: str
    subject: str
    contact: str
    cameras: list[str]
    area: str | None = Field(description="south,west,north,east")
    start: datetime
    end: datetime
    opened: datetime
    opened_by: str
    due: date = Field(description="one calendar month on, in the deployment's time zone")
    state: SarState
    outcome: str | None
    closed: datetime | None

    @classmethod
    def of(cls, r: SubjectAccessRequest) -> SarView:
        return cls(
            id=r.id, tenant=r.tenant, subject=r.subject, contact=r.contact,
            cameras=list(r.cameras), area=r.area.text() if r.area else None, start=r.start,
            end=r.end, opened=r.opened, opened_by=r.opened_by, due=r.due, state=r.state,
            outcome=r.outcome, closed=r.closed,
        )  # fmt: skip


class SpanView(View):
    start: datetime
    end: datetime


class TouchView(View):
    """One use of the request's footage: who, when, what, and which footage."""

    seq: int
    time: datetime
    action: str
    tenant: str | None
    principal: str | None
    camera: str
    purpose: str | None
    footage_start: datetime
    footage_end: datetime | None = Field(description="null: a live session still running")


class FindingsView(View):
    request: SarView
    recordings: dict[str, list[SpanView]] = Field(description="camera: its recorded spans")
    touches: list[TouchView]
    copies: list[ExportView]

    @classmethod
    def of(cls, f: Findings) -> FindingsView:
        return cls(
            request=SarView.of(f.request),
            recordings={
                cam: [SpanView(start=s.start, end=s.end) for s in spans]
                for cam, spans in f.recordings.items()
            },
            touches=[TouchView.model_validate(t, from_attributes=True) for t in f.touches],
            copies=[ExportView.of(j) for j in f.copies],
        )


# ----------------------------------------------------------------------------- handlers


def _sars(c: Call) -> SarService:
    return c.use(SarService)


async def open_request(c: Call) -> BaseModel:
    b: OpenBody = c.body
    r = await _sars(c).open(
        c.token, subject=b.subject, contact=b.contact, start=b.start, end=b.end,
        cameras=b.cameras, area=b.area, peer=c.caller.peer,
    )  # fmt: skip
    return SarView.of(r)


async def list_requests(c: Call) -> BaseModel:
    q: SarQuery = c.query
    found = await _sars(c).list_requests(
        c.token, state=q.state.value if q.state else None, peer=c.caller.peer
    )
    return page(SarView, [SarView.of(r) for r in found], q.offset, q.limit)


async def get_request(c: Call) -> BaseModel:
    return SarView.of(await _sars(c).get(c.token, c.path["id"], peer=c.caller.peer))


async def findings(c: Call) -> BaseModel:
    return FindingsView.of(await _sars(c).findings(c.token, c.path["id"], peer=c.caller.peer))


async def copy(c: Call) -> BaseModel:
    b: CopyBody = c.body
    zones = [RedactionZone(z.id, tuple(z.points), z.start, z.end) for z in b.redactions]
    job = await _sars(c).copy(
        c.token, c.path["id"], b.camera, redactions=zones, start=b.start, end=b.end,
        peer=c.caller.peer,
    )  # fmt: skip
    return ExportView.of(job)


async def close(c: Call) -> BaseModel:
    b: CloseBody = c.body
    r = await _sars(c).close(c.token, c.path["id"], b.state.value, b.outcome, peer=c.caller.peer)
    return SarView.of(r)


def _row(
    method: str, path: str, operation: str, summary: str, handler: Handler,
    response: type[BaseModel], **kw: Any,
) -> Route:  # fmt: skip
    return row(method, path, operation, summary, handler, "sars", response, service=SarService,
               **kw)  # fmt: skip


_ID = (("id", SAR_ID),)

ROUTES: list[Route] = [
    _row("POST", "/v1/sars", "OpenSar", "Open a subject access request (due in one month)",
         open_request, SarView, body=OpenBody, status=201, location="/v1/sars/{id}",
         max_body=MAX_BODY),
    _row("GET", "/v1/sars", "ListSars", "Subject access requests and their due dates",
         list_requests, page_of(SarView), query=SarQuery),
    _row("GET", "/v1/sars/{id}", "GetSar", "A subject access request", get_request, SarView,
         patterns=_ID),
    _row("GET", "/v1/sars/{id}/findings", "SarFindings",
         "The recordings of the request's window and every use of that footage", findings,
         FindingsView, patterns=_ID),
    _row("POST", "/v1/sars/{id}/copies", "CopySar",
         "Make the subject's copy of one camera with redaction zones burnt in (an export)",
         copy, ExportView, body=CopyBody, status=202, location="/v1/exports/{id}",
         max_body=MAX_BODY, patterns=_ID),
    _row("POST", "/v1/sars/{id}/close", "CloseSar",
         "Close a request as fulfilled, refused or withdrawn, with its outcome", close,
         SarView, body=CloseBody, patterns=_ID),
]  # fmt: skip
