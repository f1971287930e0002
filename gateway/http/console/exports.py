"""The console's Exports page: evidence exports and evidence locks for investigators and admins
(auditors read the list), asking the one export service REST asks
(:class:`gateway.recording.exports.ExportService`), with the signed-in session's token, so
the decisions, masks, audit entries and billing are the same as for ``/v1/exports``.

* ``GET /console/exports``: the form (camera, start, end in local time, purpose or incident
  reference; the camera's timeline links here with the stretch filled in), the caller's
  exports with their state and progress (``exports.js`` polls
  ``GET /console/exports/{id}/progress``), the MP4 and signed manifest of each finished one
  with its SHA-256 and the signing key's id, and the evidence locks.
* ``POST /console/exports`` starts one; ``POST /console/exports/{id}/cancel`` cancels one;
  ``GET /console/exports/{id}/file`` and ``.../manifest`` download them.
* ``POST /console/locks`` takes an evidence lock (range, reason, expiry);
  ``POST /console/locks/{id}/release`` releases one.

Every POST is a form of the console's own pages (same origin and the page's CSRF value).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.http.console.frame import EXPORT_ROLES, Frame, Signed
from gateway.http.console.localtime import for_input, parse_local, shown
from gateway.recording.export_store import UNFINISHED, ExportJob, ExportState
from gateway.recording.exports import ExportError, ExportService
from gateway.recording.index import EvidenceLock
from tenants.control import ControlError
from tenants.model import ID_RE, Role

__all__ = ["ExportPages", "job_row"]

_MAX_FORM = 16 * 1024
_KIDS_KEPT = 2048
_LOCKERS = frozenset({Role.INVESTIGATOR, Role.ADMIN})
_NO_STORE = {"Cache-Control": "no-store"}
DEFAULT_MINUTES = 5  # the form's default stretch: the last five minutes
LOCK_DAYS = 90  # a new lock's default expiry


def job_row(job: ExportJob, zone: ZoneInfo, kid: str | None = None) -> dict[str, Any]:
    """One export (or subject access copy) as the pages show it."""
    done = job.state == ExportState.DONE
    return {
        "id": job.id,
        "kind": job.kind,
        "camera": job.camera,
        "who": f"{job.principal} ({job.tenant})",
        "start": shown(job.start, zone),
        "end": shown(job.end, zone),
        "seconds": round((job.end - job.start).total_seconds()),
        "why": job.purpose or job.incident_ref or "",
        "incident_ref": job.incident_ref or "",
        "state": job.state.value,
        "unfinished": job.state in UNFINISHED,
        "percent": 100 if done else round(100 * max(0.0, min(job.progress, 1.0))),
        "error": job.error or "",
        "created": shown(job.created, zone),
        "expires": shown(job.expires, zone),
        "masks": list(job.masks),
        "sha256": job.sha256 or "",
        "size": job.size or 0,
        "kid": kid or "",
        "done": done,
    }


def _lock_row(lock: EvidenceLock, zone: ZoneInfo, now: datetime) -> dict[str, Any]:
    return {
        "id": lock.id,
        "camera": lock.camera,
        "start": shown(lock.start, zone),
        "end": shown(lock.end, zone),
        "reason": lock.reason,
        "who": f"{lock.principal} ({lock.tenant})",
        "expires": shown(lock.expires, zone),
        "released": shown(lock.released, zone),
        "released_by": lock.released_by or "",
        "active": lock.active(now),
    }


class ExportPages:
    def __init__(self, frame: Frame, exports: ExportService, zone: ZoneInfo) -> None:
        self.frame = frame
        self.exports = exports
        self.zone = zone
        # A finished export's manifest never changes: its signer's key id, read once.
        self._kids: OrderedDict[str, str] = OrderedDict()

    # ---- helpers shared with the subject access pages ------------------------------------------

    async def form(self, request: web.Request, who: Signed) -> dict[str, str]:
        """A console form's fields, after the same-origin and CSRF checks."""
        if request.content_length is not None and request.content_length > _MAX_FORM:
            self.frame.fail(request, 400, f"Forms are at most {_MAX_FORM} bytes.")
        data = await request.post()
        self.frame.check_form(request, data.get("csrf"))
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def when(self, request: web.Request, raw: str, name: str) -> datetime:
        t = parse_local(raw, self.zone)
        if t is None:
            self.frame.fail(request, 400, f"The {name} is a date and time, e.g. 2026-12-02T09:30.")
        return t

    def camera_id(self, request: web.Request, raw: str) -> str:
        if not ID_RE.match(raw):
            self.frame.fail(request, 400, "Choose a camera.")
        return raw

    def export_id(self, request: web.Request) -> str:
        raw = request.match_info["id"]
        if not ID_RE.match(raw):
            self.frame.fail(request, 404, "No such export.")
        return raw

    async def kid(self, job: ExportJob) -> str | None:
        """The key id that signed a finished export's manifest (None if it cannot be read)."""
        if job.state != ExportState.DONE:
            return None
        if job.id in self._kids:
            return self._kids[job.id]
        path = self.exports.dir / f"{job.id}.manifest.json"
        kid = await asyncio.to_thread(_signer, path)
        if kid is not None:
            self._kids[job.id] = kid
            while len(self._kids) > _KIDS_KEPT:
                self._kids.popitem(last=False)
        return kid

    async def rows(self, jobs: list[ExportJob]) -> list[dict[str, Any]]:
        return [job_row(j, self.zone, await self.kid(j)) for j in jobs]

    # ---- the page ------------------------------------------------------------------------------

    async def index(
        self,
        request: web.Request,
        who: Signed | None = None,
        *,
        problem: str = "",
        status: int = 200,
        typed: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        who = who or await self.frame.signed(request)
        if not who.has(EXPORT_ROLES):
            await self.frame.forbid(
                request, who, "Exports", "Exports are for investigators, admins and auditors."
            )
        peer = request.remote or ""
        try:
            cams = await self.frame.service.cameras.list(who.caller)
            jobs = await self.exports.list_exports(who.token, peer=peer, limit=100)
            locks = await self.exports.locks(who.token, peer=peer)
        except ControlError as exc:
            self.frame.refuse(request, exc)
        except ExportError as exc:
            self.frame.fail(request, exc.status, str(exc))
        now = datetime.now(UTC)
        q = typed if typed is not None else dict(request.query)
        start = parse_local(q.get("start", ""), self.zone) or now - timedelta(
            minutes=DEFAULT_MINUTES
        )
        end = parse_local(q.get("end", ""), self.zone) or now
        form = {
            "camera": q.get("camera", ""),
            "start": for_input(start, self.zone),
            "end": for_input(end, self.zone),
            "purpose": q.get("purpose", ""),
            "incident_ref": q.get("incident_ref", ""),
            "lock_expires": for_input(now + timedelta(days=LOCK_DAYS), self.zone),
        }
        context = {
            "title": "Exports",
            "cameras": [{"id": c.id, "name": c.name or c.id} for c in cams],
            "form": form,
            "exports": await self.rows([j for j in jobs if j.kind == "export"]),
            "locks": [_lock_row(x, self.zone, now) for x in locks],
            "may_export": who.has(_LOCKERS),
            "problem": problem,
            "zone": str(self.zone),
        }
        return self.frame.render(
            request, who, "console/exports.html", "exports", context, status=status
        )

    def _footage(self, request: web.Request, f: dict[str, str]) -> tuple[str, datetime, datetime]:
        """A form's camera and time range."""
        camera = self.camera_id(request, f.get("camera", ""))
        start = self.when(request, f.get("start", ""), "start")
        return camera, start, self.when(request, f.get("end", ""), "end")

    async def _refused(
        self, request: web.Request, who: Signed, exc: ExportError, f: dict[str, str]
    ) -> web.StreamResponse:
        """A refused form: who-you-are and may-you refusals as error pages; anything the
        caller can put right (range, purpose, too many) on the page again, with what was typed."""
        if exc.status in (401, 403, 404):
            self.frame.fail(request, exc.status, str(exc))
        return await self.index(request, who, problem=str(exc), status=exc.status, typed=f)

    async def create(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        f = await self.form(request, who)
        camera, start, end = self._footage(request, f)
        try:
            job = await self.exports.create(
                who.token, camera, start, end, purpose=f.get("purpose") or None,
                incident_ref=f.get("incident_ref") or None, unmasked=f.get("unmasked") == "1",
                peer=request.remote or "", via="console",
            )  # fmt: skip
        except ExportError as exc:
            return await self._refused(request, who, exc, f)
        raise web.HTTPSeeOther(f"/console/exports#{job.id}", headers=_NO_STORE)

    async def progress(self, request: web.Request) -> web.StreamResponse:
        """A running export's state, for the page's script (JSON)."""
        who = await self.frame.signed(request)
        try:
            job = await self.exports.get(
                who.token, self.export_id(request), peer=request.remote or ""
            )
        except ExportError as exc:
            return web.json_response({"detail": str(exc)}, status=exc.status, headers=_NO_STORE)
        row = job_row(job, self.zone)
        body = {k: row[k] for k in ("id", "state", "percent", "error", "unfinished")}
        return web.json_response(body, headers=_NO_STORE)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        f = await self.form(request, who)
        try:
            await self.exports.cancel(who.token, self.export_id(request), peer=request.remote or "")
        except ExportError as exc:
            self.frame.fail(request, exc.status, str(exc))
        raise web.HTTPSeeOther(_back(f.get("back", "")), headers=_NO_STORE)

    async def _files(self, request: web.Request) -> tuple[Path, Path]:
        who = await self.frame.signed(request)
        try:
            return await self.exports.files(
                who.token, self.export_id(request), peer=request.remote or ""
            )
        except ExportError as exc:
            self.frame.fail(request, exc.status, str(exc))

    async def file(self, request: web.Request) -> web.StreamResponse:
        media, _ = await self._files(request)
        return _download(media, "video/mp4")

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        _, path = await self._files(request)
        return _download(path, "application/json")

    # ---- evidence locks ------------------------------------------------------------------------

    async def lock(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        f = await self.form(request, who)
        camera, start, end = self._footage(request, f)
        expires = self.when(request, f.get("expires", ""), "expiry")
        try:
            await self.exports.lock(
                who.token, camera, start, end, reason=f.get("reason", ""), expires=expires,
                peer=request.remote or "", via="console",
            )  # fmt: skip
        except ExportError as exc:
            return await self._refused(request, who, exc, f)
        raise web.HTTPSeeOther("/console/exports#locks", headers=_NO_STORE)

    async def release(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        await self.form(request, who)
        lock_id = request.match_info["id"]
        if not ID_RE.match(lock_id):
            self.frame.fail(request, 404, "No such lock.")
        try:
            await self.exports.release(who.token, lock_id, peer=request.remote or "", via="console")
        except ExportError as exc:
            self.frame.fail(request, exc.status, str(exc))
        raise web.HTTPSeeOther("/console/exports#locks", headers=_NO_STORE)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/console/exports", self.index)
        r.add_post("/console/exports", self.create)
        r.add_get("/console/exports/{id}/progress", self.progress)
        r.add_post("/console/exports/{id}/cancel", self.cancel)
        r.add_get("/console/exports/{id}/file", self.file)
        r.add_get("/console/exports/{id}/manifest", self.manifest)
        r.add_post("/console/locks", self.lock)
        r.add_post("/console/locks/{id}/release", self.release)


def _back(raw: str) -> str:
    """Where a form returns to: this page, or a subject access request's."""
    if raw.startswith("/console/sar/") and ID_RE.match(raw.removeprefix("/console/sar/")):
        return raw
    return "/console/exports"


def _download(path: Path, content_type: str) -> web.FileResponse:
    return web.FileResponse(
        path,
        headers={
            **_NO_STORE,
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{path.name}"',
        },
    )


def _signer(path: Path) -> str | None:
    """The ``signature.kid`` of a manifest file (blocking)."""
    try:
        doc = json.loads(path.read_bytes())
        kid = doc["signature"]["kid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return kid if isinstance(kid, str) and len(kid) <= 128 else None
