"""The console's subject access pages, asking the one subject access service REST asks
(:class:`gateway.sar.service.SarService`) with the signed-in session's token: the same roles
(operators, investigators and admins of the controller open and answer requests; oversight
reads them), the same audit entries, and copies made by the export service.

* ``GET /console/sar``: the requests with their due dates (one calendar month on, local time)
  and outcomes, and the form to open one (subject, contact, the controller's cameras or an
  area, the window in local time). ``POST /console/sar`` opens it.
* ``GET /console/sar/{id}``: the request and its findings (the recordings of the window, every
  view, playback, export, still and mask lift of that footage, the copies made), the
  redaction editor (polygons drawn over a still of the camera, each over a time range:
  ``redact.js`` with the mask editor's drawing code, ``polygon.js``) and the copies with
  their progress and downloads (the Exports page's rows and downloads).
* ``POST /console/sar/{id}/copies`` makes the redacted copy; ``POST /console/sar/{id}/close``
  closes the request as fulfilled, refused or withdrawn, with its outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.http.console.exports import ExportPages
from gateway.http.console.frame import Frame, Signed
from gateway.http.console.localtime import for_input, parse_local, shown
from gateway.recording.exports import ExportError, RedactionZone
from gateway.recording.model import Span
from gateway.sar.service import SarService
from tenants.control import ControlError
from tenants.model import ID_RE, Role
from tenants.sar import SarState, SubjectAccessRequest, due_date

__all__ = ["SarPages"]

_OPENERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.INVESTIGATOR})
_COPIERS = frozenset({Role.ADMIN, Role.INVESTIGATOR})  # a copy is an export
_NO_STORE = {"Cache-Control": "no-store"}
_CLOSED = [s.value for s in SarState if s != SarState.OPEN]
MAX_ZONES = 32
MAX_CLIP = 3600  # seconds of footage the editor plays at once (the playback API's longest cut)
MAX_CLIPS = 200  # pieces of a camera's recorded window the editor offers

_Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class _Point(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: _Unit
    y: _Unit


class _Zone(BaseModel):
    """One redaction zone as redact.js sends it (times as the page's datetime-local inputs)."""

    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    points: list[_Point] = Field(min_length=3, max_length=64)
    start: str = Field(max_length=40)
    end: str = Field(max_length=40)


class _Zones(BaseModel):
    zones: list[_Zone] = Field(max_length=MAX_ZONES)


class SarPages:
    def __init__(
        self,
        frame: Frame,
        sar: SarService,
        exports: ExportPages,
        zone: ZoneInfo,
        *,
        playback: bool = False,
    ) -> None:
        self.frame = frame
        self.sar = sar
        self.exports = exports  # its form checks, time parsing and export rows
        self.zone = zone
        self.playback = playback  # this process plays recordings back (/get): the editor's video

    def _row(self, r: SubjectAccessRequest, now: datetime) -> dict[str, Any]:
        return {
            "id": r.id,
            "subject": r.subject,
            "contact": r.contact,
            "cameras": list(r.cameras),
            "area": r.area.text() if r.area else "",
            "start": shown(r.start, self.zone),
            "end": shown(r.end, self.zone),
            "opened": shown(r.opened, self.zone),
            "opened_by": r.opened_by,
            "due": r.due.strftime("%d %b %Y"),
            "overdue": r.overdue(now, self.zone),
            "state": r.state.value,
            "open": r.state == SarState.OPEN,
            "outcome": r.outcome or "",
            "closed": shown(r.closed, self.zone),
        }

    def _sar_id(self, request: web.Request) -> str:
        raw = request.match_info["id"]
        if not ID_RE.match(raw):
            self.frame.fail(request, 404, "No such request.")
        return raw

    def _failed(self, request: web.Request, exc: ExportError) -> NoReturn:
        self.frame.fail(request, exc.status, str(exc))

    # ---- the register of requests --------------------------------------------------------------

    async def index(
        self,
        request: web.Request,
        who: Signed | None = None,
        *,
        problem: str = "",
        status: int = 200,
        typed: dict[str, Any] | None = None,
    ) -> web.StreamResponse:
        who = who or await self.frame.signed(request)
        state = request.query.get("state", "")
        if state and state not in {s.value for s in SarState}:
            self.frame.fail(request, 400, "The state is open, fulfilled, refused or withdrawn.")
        peer = request.remote or ""
        try:
            found = await self.sar.list_requests(who.token, state=state or None, peer=peer)
            cams = await self.frame.service.cameras.list(who.caller)
        except ExportError as exc:
            return self._failed(request, exc)
        except ControlError as exc:
            self.frame.refuse(request, exc)
        now = datetime.now(UTC)
        typed = typed or {}
        chosen = set(typed.get("cameras", ()))
        context = {
            "title": "Subject access requests",
            "rows": [self._row(r, now) for r in found],
            "state": state,
            "states": [s.value for s in SarState],
            "may_open": who.has(_OPENERS),
            # A tenant answers for the cameras it owns.
            "cameras": [
                {"id": c.id, "name": c.name or c.id, "checked": c.id in chosen}
                for c in cams
                if c.owner_tenant == who.caller.tenant
            ],
            "form": {k: typed.get(k, "") for k in ("subject", "contact", "area", "start", "end")},
            "due": due_date(now, self.zone).strftime("%d %b %Y"),
            "problem": problem,
            "zone": str(self.zone),
        }
        return self.frame.render(request, who, "console/sar.html", "sar", context, status=status)

    async def open(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        if request.content_length is not None and request.content_length > 64 * 1024:
            self.frame.fail(request, 400, "The form is too large.")
        data = await request.post()
        self.frame.check_form(request, data.get("csrf"))
        f = {k: v for k, v in data.items() if isinstance(v, str) and k != "cameras"}
        cameras = [v for v in data.getall("cameras", []) if isinstance(v, str)]
        typed: dict[str, Any] = {**f, "cameras": cameras}
        start = self.exports.when(request, f.get("start", ""), "start of the window")
        end = self.exports.when(request, f.get("end", ""), "end of the window")
        try:
            opened = await self.sar.open(
                who.token, subject=f.get("subject", ""), contact=f.get("contact", ""),
                start=start, end=end, cameras=cameras, area=f.get("area", "").strip() or None,
                peer=request.remote or "",
            )  # fmt: skip
        except ExportError as exc:
            if exc.status in (401, 403, 404):
                return self._failed(request, exc)
            return await self.index(request, who, problem=str(exc), status=exc.status, typed=typed)
        raise web.HTTPSeeOther(f"/console/sar/{opened.id}", headers=_NO_STORE)

    # ---- one request ---------------------------------------------------------------------------

    async def request_page(
        self,
        request: web.Request,
        who: Signed | None = None,
        *,
        problem: str = "",
        status: int = 200,
    ) -> web.StreamResponse:
        who = who or await self.frame.signed(request)
        sar_id = self._sar_id(request)
        try:
            found = await self.sar.findings(who.token, sar_id, peer=request.remote or "")
        except ExportError as exc:
            return self._failed(request, exc)
        r = found.request
        now = datetime.now(UTC)
        recordings = [
            {
                "camera": cam,
                "spans": [
                    {
                        "start": shown(s.start, self.zone),
                        "end": shown(s.end, self.zone),
                        "seconds": round(s.duration.total_seconds()),
                    }
                    for s in spans
                ],
            }
            for cam, spans in sorted(found.recordings.items())
        ]
        touches = [
            {
                "seq": t.seq,
                "time": shown(t.time, self.zone),
                "action": t.action,
                "who": " · ".join(x for x in (t.principal, t.tenant) if x),
                "camera": t.camera,
                "purpose": t.purpose or "",
                "footage": f"{shown(t.footage_start, self.zone)} to "
                + (shown(t.footage_end, self.zone) if t.footage_end else "still running"),
            }
            for t in found.touches
        ]
        editor = {
            "cameras": list(r.cameras),
            "start": for_input(r.start, self.zone),
            "end": for_input(r.end, self.zone),
            # The window's footage under the drawing, so zones are drawn where the third
            # parties are and timed from the footage: what each camera recorded in the window,
            # in pieces of at most an hour (/get's longest cut) the operator picks from. The
            # operator's viewing is a playback like any other, audited with the request's id.
            "playback": self.playback,
            "clips": {cam: self._clips(spans) for cam, spans in found.recordings.items()},
            "clip_start": r.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "clip_seconds": min(MAX_CLIP, round((r.end - r.start).total_seconds())),
            "purpose": f"subject access request {r.id}",
            "zone": str(self.zone),
        }
        context = {
            "title": f"Subject access request {r.id}",
            "r": self._row(r, now),
            "recordings": recordings,
            "touches": touches,
            "copies": await self.exports.rows(found.copies),
            "editor": editor,
            "editor_json": json.dumps(editor),
            "may_copy": r.state == SarState.OPEN and who.has(_COPIERS),
            "may_close": r.state == SarState.OPEN and who.has(_OPENERS),
            "closed_states": _CLOSED,
            "back": f"/console/sar/{r.id}",
            "problem": problem,
            "zone": str(self.zone),
        }
        return self.frame.render(
            request, who, "console/sar_request.html", "sar", context, status=status
        )

    def _clips(self, spans: Sequence[Span]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for span in spans:
            at = span.start
            while at < span.end and len(out) < MAX_CLIPS:
                seconds = min(MAX_CLIP, (span.end - at).total_seconds())
                if seconds < 1:
                    break
                end = at + timedelta(seconds=seconds)
                out.append(
                    {
                        "start": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        "seconds": round(seconds, 3),
                        "label": f"{shown(at, self.zone)} to {shown(end, self.zone)}",
                    }
                )
                at = end
        return out

    def _zones(self, request: web.Request, raw: str) -> list[RedactionZone]:
        try:
            parsed = _Zones.model_validate_json(f'{{"zones": {raw or "[]"}}}')
        except ValidationError:
            self.frame.fail(request, 400, "The redaction zones are not as the page draws them.")
        out = []
        for z in parsed.zones:
            start = self.exports.when(request, z.start, f"start of zone {z.id}")
            end = self.exports.when(request, z.end, f"end of zone {z.id}")
            points = tuple((p.x, p.y) for p in z.points)
            out.append(RedactionZone(z.id, points, start, end))
        return out

    async def copy(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        sar_id = self._sar_id(request)
        f = await self.exports.form(request, who)
        camera = self.exports.camera_id(request, f.get("camera", ""))
        zones = self._zones(request, f.get("redactions", ""))
        start = parse_local(f.get("start", ""), self.zone)
        end = parse_local(f.get("end", ""), self.zone)
        try:
            await self.sar.copy(
                who.token, sar_id, camera, redactions=zones, start=start, end=end,
                peer=request.remote or "",
            )  # fmt: skip
        except ExportError as exc:
            return await self._again(request, who, exc)
        raise web.HTTPSeeOther(f"/console/sar/{sar_id}#copies", headers=_NO_STORE)

    async def close(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        sar_id = self._sar_id(request)
        f = await self.exports.form(request, who)
        try:
            await self.sar.close(
                who.token, sar_id, f.get("state", ""), f.get("outcome", ""),
                peer=request.remote or "",
            )  # fmt: skip
        except ExportError as exc:
            return await self._again(request, who, exc)
        raise web.HTTPSeeOther(f"/console/sar/{sar_id}", headers=_NO_STORE)

    async def _again(
        self, request: web.Request, who: Signed, exc: ExportError
    ) -> web.StreamResponse:
        """A refused form of a request's page: who-you-are and may-you refusals as error
        pages; what the caller can put right on the request's page again, saying why."""
        if exc.status in (401, 403, 404):
            self._failed(request, exc)
        return await self.request_page(request, who, problem=str(exc), status=exc.status)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/console/sar", self.index)
        r.add_post("/console/sar", self.open)
        r.add_get("/console/sar/{id}", self.request_page)
        r.add_post("/console/sar/{id}/copies", self.copy)
        r.add_post("/console/sar/{id}/close", self.close)
