"""The console's pages for camera owners' admins, control rooms and oversight: privacy masks
(an editor drawing polygons on a still of the camera, saving through the REST API), grants,
the tenant's principals (with one-time sign-in links), live sessions across RTSP and WebRTC
(with a kick), and the audit log (search by camera, tenant, person and time; verification).

Each page shows what the control service answers the signed-in caller, with its rules:
masks, grants and principals need the admin role, sessions the admin or operator role, the
audit log the auditor role (or the platform's admins). Changes are made by the page's script
through the REST API, with the session cookie and the page's CSRF value, so they are the API's
own operations, checked and audited there.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.http.console.frame import Frame
from tenants.audit import AuditAction
from tenants.control import ControlError
from tenants.control.audit import AuditQuery
from tenants.model import ID_RE, MaskKind, TenantKind

__all__ = ["AdminPages"]

PAGE = 50
_LOCAL = "%Y-%m-%dT%H:%M"  # what a datetime-local input sends


class AdminPages:
    def __init__(self, frame: Frame, zone: ZoneInfo) -> None:
        self.frame = frame
        self.service = frame.service
        self.zone = zone

    # ---- masks --------------------------------------------------------------------------------

    async def masks(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        caller = who.caller
        try:
            zones = await self.service.masks.list(caller)
            cams = await self.service.cameras.list(caller)
        except ControlError as exc:
            self.frame.refuse(request, exc)
        names = self.frame.names()
        rows = [
            {
                "id": c.id,
                "name": c.name or c.id,
                "owner": names.get(c.owner_tenant, c.owner_tenant),
                "masks": [z for z in zones if z.camera_id == c.id],
                "editable": caller.admin_of(c.owner_tenant),
            }
            for c in cams
        ]
        return self.frame.render(
            request, who, "console/masks.html", "masks", {"title": "Masks", "rows": rows}
        )

    async def mask_editor(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        camera_id = request.match_info["camera"]
        if not ID_RE.match(camera_id):
            self.frame.fail(request, 404, "No such camera.")
        try:
            cam = await self.service.cameras.get(who.caller, camera_id)
            zones = await self.service.masks.list(who.caller, camera_id)
        except ControlError as exc:
            self.frame.refuse(request, exc)
        editable = who.caller.admin_of(cam.owner_tenant)
        data = {
            "camera": cam.id,
            "editable": editable,
            "masks": [z.model_dump(mode="json") for z in zones],
        }
        context = {
            "title": f"Masks of {cam.name or cam.id}",
            "camera": cam,
            "editable": editable,
            "masks": zones,
            "data": json.dumps(data),
            "kinds": [k.value for k in MaskKind],
            "tenant_kinds": [k.value for k in TenantKind],
        }
        return self.frame.render(request, who, "console/mask_editor.html", "masks", context)

    # ---- grants and principals ----------------------------------------------------------------

    async def grants(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        revoked = request.query.get("revoked") == "1"
        try:
            found = await self.service.grants.list(who.caller, include_revoked=revoked)
        except ControlError as exc:
            self.frame.refuse(request, exc)
        names = self.frame.names()
        rows = [
            {
                "grant": g,
                "owner": names.get(g.owner_tenant, g.owner_tenant),
                "grantee": names.get(g.grantee_tenant, g.grantee_tenant),
                "revocable": g.revoked_at is None and who.caller.admin_of(g.owner_tenant),
                "given": g.owner_tenant == who.caller.tenant,
            }
            for g in found
        ]
        context = {"title": "Grants", "rows": rows, "revoked": revoked}
        return self.frame.render(request, who, "console/grants.html", "grants", context)

    async def principals(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        try:
            found = await self.service.principals.list(who.caller)
        except ControlError as exc:
            self.frame.refuse(request, exc)
        names = self.frame.names()
        rows = [{"p": p, "tenant": names.get(p.tenant_id, p.tenant_id)} for p in found]
        return self.frame.render(
            request,
            who,
            "console/principals.html",
            "principals",
            {"title": "Principals", "rows": rows},
        )

    # ---- live sessions ------------------------------------------------------------------------

    async def sessions(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        try:
            found = await self.service.sessions.list(who.caller)
        except ControlError as exc:
            self.frame.refuse(request, exc)
        names = self.frame.names()
        rows = [
            {
                "s": s,
                "tenant": names.get(s.tenant or "", s.tenant or "open"),
                "created": s.created.astimezone(self.zone).strftime("%d %b %H:%M:%S"),
            }
            for s in found
        ]
        return self.frame.render(
            request,
            who,
            "console/sessions.html",
            "sessions",
            {"title": "Live sessions", "rows": rows},
        )

    # ---- the audit log ------------------------------------------------------------------------

    def _when(self, request: web.Request, name: str) -> datetime | None:
        raw = request.query.get(name, "").strip()
        if not raw:
            return None
        try:
            return datetime.strptime(raw[:16], _LOCAL).replace(tzinfo=self.zone)
        except ValueError:
            self.frame.fail(request, 400, "Times are dates and times, e.g. 2026-12-02T09:30.")

    def _id_filter(self, request: web.Request, name: str) -> str | None:
        raw = request.query.get(name, "").strip()
        if not raw:
            return None
        if not ID_RE.match(raw):
            self.frame.fail(request, 400, f"The {name} is an id: a-z, 0-9, '_', '.', '-'.")
        return raw

    async def audit(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        action_raw = request.query.get("action", "")
        if action_raw and action_raw not in AuditAction._value2member_map_:
            self.frame.fail(request, 400, "That is not an audit action.")
        try:
            offset = max(0, min(int(request.query.get("offset", "0") or 0), 10_000_000))
        except ValueError:
            self.frame.fail(request, 400, "The offset is a number.")
        query = AuditQuery(
            start=self._when(request, "from"),
            end=self._when(request, "to"),
            tenant=self._id_filter(request, "tenant"),
            principal=self._id_filter(request, "principal"),
            camera=self._id_filter(request, "camera"),
            action=AuditAction(action_raw) if action_raw else None,
            offset=offset,
            limit=PAGE,
        )
        try:
            found = await self.service.audit.entries(who.caller, query)
            verified = (
                await self.service.audit.verify(who.caller)
                if request.query.get("verify") == "1"
                else None
            )
        except ControlError as exc:
            self.frame.refuse(request, exc)
        form = {
            k: request.query.get(k, "")
            for k in ("from", "to", "tenant", "principal", "camera", "action")
        }
        rows = [
            {
                "e": e,
                "when": e.time.astimezone(self.zone).strftime("%d %b %Y %H:%M:%S"),
                "detail": _summary(e.detail),
            }
            for e in found.items
        ]
        context: dict[str, Any] = {
            "title": "Audit",
            "rows": rows,
            "form": form,
            "actions": [a.value for a in AuditAction],
            "verified": verified,
            "next": _page_link(request, found.next_offset),
            "previous": _page_link(request, offset - PAGE) if offset > 0 else None,
            "zone": str(self.zone),
        }
        return self.frame.render(request, who, "console/audit.html", "audit", context)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/console/masks", self.masks)
        app.router.add_get("/console/masks/{camera}", self.mask_editor)
        app.router.add_get("/console/grants", self.grants)
        app.router.add_get("/console/principals", self.principals)
        app.router.add_get("/console/sessions", self.sessions)
        app.router.add_get("/console/audit", self.audit)


def _summary(detail: dict[str, Any]) -> str:
    """An entry's detail as one short line (the full entry is in the REST API)."""
    parts = [f"{k}={v}" for k, v in sorted(detail.items()) if k not in ("tenants",)]
    text = ", ".join(parts)
    return text if len(text) <= 200 else text[:199] + "…"


def _page_link(request: web.Request, offset: int | None) -> str | None:
    if offset is None:
        return None
    query = {k: v for k, v in request.query.items() if k not in ("offset", "verify")}
    query["offset"] = str(max(0, offset))
    return str(request.rel_url.with_query(query))
