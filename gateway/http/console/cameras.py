"""The console's camera pages: the cameras the principal may see (with a still of each), one
camera with its player, the video wall (1, 4, 9 or 16 WHEP players, its layout saved per
principal) and the camera map (SVG, no tiles from anywhere).

What a camera page lists comes from the control service (``cameras.list``: the cameras the
caller's tenant owns or has grants on); whether and how each may be watched is the policy's
live decision for the caller, the one WHEP and RTSP ask: so a still is of the viewer's own
masked variant, and a camera outside its grant's hours says so instead of showing a picture.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.http.console import geo
from gateway.http.console.frame import Frame, Signed
from gateway.http.console.layouts import TILES, Layout, LayoutStore
from gateway.http.console.stills import Stills
from gateway.http.csrf import cookie_refusal
from tenants.audit import AuditAction
from tenants.control import Code, ControlError
from tenants.control.rules import CAMERA_ROLES
from tenants.control.schemas import CameraView, parse
from tenants.model import ID_RE, Role
from tenants.policy import AccessRequest, Action, Decision

if TYPE_CHECKING:
    from gateway.core import Gateway

__all__ = ["CameraPages"]

_STILL_AUDIT_EVERY = 60.0  # one "still" entry per principal and camera a minute, at most
_MAX_AUDITED = 10_000
_EXPORTERS = frozenset({Role.INVESTIGATOR, Role.ADMIN})
_PLACEHOLDER = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 480 270"><rect width="480" '
    'height="270" fill="#000"/><text x="240" y="142" fill="#9aa4b1" font-family="sans-serif" '
    'font-size="20" text-anchor="middle">{}</text></svg>'
)


class CameraPages:
    def __init__(self, frame: Frame, gateway: Gateway, stills: Stills, layouts: LayoutStore):
        self.frame = frame
        self.service = frame.service
        self.gateway = gateway
        self.stills = stills
        self.layouts = layouts
        self._audited: OrderedDict[tuple[str, str], float] = OrderedDict()

    # ---- what the caller may see --------------------------------------------------------------

    async def _visible(self, request: web.Request, who: Signed) -> list[CameraView]:
        try:
            return await self.service.cameras.list(who.caller)
        except ControlError as exc:
            self.frame.refuse(request, exc)

    async def _decision(self, request: web.Request, who: Signed, camera: str) -> Decision:
        """The policy's live decision for this caller and camera (never a lift)."""
        return await self.service.core.policy.authorize(
            AccessRequest(
                Action.LIVE, "console", camera=camera, token=who.token, peer=request.remote or ""
            )
        )

    async def _steerable(self, request: web.Request, who: Signed, camera: str) -> bool:
        """Whether to show the PTZ controls: the camera is steered through ONVIF and the
        policy gives this caller the ptz right on it (each call is decided again anyway)."""
        ptz = self.gateway.ptz
        if ptz is not None:
            await ptz.sync()
        if ptz is None or camera not in ptz.cameras:
            return False
        decision = await self.service.core.policy.authorize(
            AccessRequest(
                Action.PTZ, "console", camera=camera, token=who.token, peer=request.remote or ""
            )
        )
        return decision.allow

    def _card(self, cam: CameraView, decision: Decision, names: dict[str, str]) -> dict[str, Any]:
        return {
            "id": cam.id,
            "name": cam.name or cam.id,
            "owner": names.get(cam.owner_tenant, cam.owner_tenant),
            "location": cam.location,
            "area": cam.area_type.value.replace("_", " "),
            "watch": decision.allow,
            "why": "" if decision.allow else decision.reason,
            "masked": decision.allow and bool(decision.mask_zones),
            "position": cam.latitude is not None,
        }

    async def _cards(self, request: web.Request, who: Signed) -> list[dict[str, Any]]:
        names = self.frame.names()
        return [
            self._card(cam, await self._decision(request, who, cam.id), names)
            for cam in await self._visible(request, who)
        ]

    # ---- pages --------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        if not who.has(CAMERA_ROLES):
            return self.frame.render(request, who, "console/home.html", "", {"title": "Console"})
        cards = await self._cards(request, who)
        return self.frame.render(
            request, who, "console/cameras.html", "cameras", {"title": "Cameras", "cards": cards}
        )

    async def camera(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        camera_id = self._id(request)
        try:
            cam = await self.service.cameras.get(who.caller, camera_id)
        except ControlError as exc:
            self.frame.refuse(request, exc)
        card = self._card(cam, await self._decision(request, who, cam.id), self.frame.names())
        context = {
            "title": card["name"],
            "card": card,
            "camera": cam,
            "manage_masks": who.caller.admin_of(cam.owner_tenant),
            "layout": json.dumps({"tiles": 1, "cameras": [cam.id]}),
            "steer": await self._steerable(request, who, cam.id),
            # The recordings' timeline: where this process plays back and the camera records.
            "playback": self.gateway.playback is not None
            and any(c.id == cam.id and c.record for c in self.gateway.config.cameras),
            # The timeline's link to the Exports page (the export service decides again).
            "export": self.gateway.exports is not None and who.has(_EXPORTERS),
        }
        return self.frame.render(request, who, "console/camera.html", "cameras", context)

    async def wall(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        cards = await self._cards(request, who)
        layout = self._asked_layout(request)
        if layout is None:
            layout = await asyncio.to_thread(self.layouts.get, who.caller.subject)
        if layout is None:
            layout = Layout.first([c["id"] for c in cards if c["watch"]])
        by_id = {c["id"]: c for c in cards}
        tiles = [by_id.get(c) if c is not None else None for c in layout.per_tile()]
        context = {
            "title": "Wall",
            "tiles": tiles,
            "count": layout.tiles,
            "choices": TILES,
            "cards": cards,
            "layout": layout.model_dump_json(),
            # The cameras a tile offers "Steer" for (the PTZ panel under the wall).
            "steerable": [c["id"] for c in cards if await self._steerable(request, who, c["id"])],
        }
        return self.frame.render(
            request, who, "console/wall.html", "wall", context, body_class="wall"
        )

    def _asked_layout(self, request: web.Request) -> Layout | None:
        """``?tiles=4&cameras=a,b,,d``: a layout to show (a link; never saved by a GET)."""
        if "tiles" not in request.query:
            return None
        raw = request.query.get("cameras", "")
        cameras = [c or None for c in raw.split(",")] if raw else []
        try:
            return parse(Layout, {"tiles": int(request.query["tiles"]), "cameras": cameras})
        except (ValueError, ControlError):
            self.frame.fail(request, 400, "A wall has 1, 4, 9 or 16 tiles of camera ids.")

    async def save_layout(self, request: web.Request) -> web.StreamResponse:
        """PUT (JSON) from the wall's script, with the page's CSRF value."""
        who = await self.frame.signed(request)
        why = cookie_refusal(request)
        if why is not None:
            return web.json_response({"detail": why}, status=403)
        try:
            layout = parse(Layout, json.loads(await request.read()))
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"detail": "not a layout"}, status=400)
        except ControlError as exc:
            return web.json_response({"detail": str(exc)}, status=400)
        await asyncio.to_thread(self.layouts.put, who.caller.subject, layout)
        return web.Response(status=204)

    async def map(self, request: web.Request) -> web.StreamResponse:
        who = await self.frame.signed(request)
        cams = await self._visible(request, who)
        placed = [(c.id, c.latitude, c.longitude) for c in cams if c.latitude is not None]
        view = geo.project([(k, lat, lon) for k, lat, lon in placed if lon is not None])
        by_id = {c.id: c for c in cams}
        context = {
            "title": "Map",
            "view": view,
            "names": {c.id: c.name or c.id for c in cams},
            "unplaced": [by_id[c.id] for c in cams if c.latitude is None],
        }
        return self.frame.render(request, who, "console/map.html", "map", context)

    # ---- stills -------------------------------------------------------------------------------

    def _id(self, request: web.Request) -> str:
        raw = request.match_info["camera"]
        if not ID_RE.match(raw):
            self.frame.fail(request, 404, "No such camera.")
        return raw

    async def still(self, request: web.Request) -> web.StreamResponse:
        """A JPEG of the camera as this caller would see it live (its masks burnt in)."""
        who = await self.frame.signed(request)
        camera = self._id(request)
        try:
            await self.service.cameras.get(who.caller, camera)
        except ControlError as exc:
            if exc.code == Code.UNAUTHENTICATED:
                self.frame.refuse(request, exc)
            return self._placeholder(404, "No such camera")
        decision = await self._decision(request, who, camera)
        if not decision.allow:
            return self._placeholder(403, "Not to be watched now")
        jpeg = await self.stills.jpeg(camera, decision.variant, decision.mask_zones)
        if jpeg is None:
            return self._placeholder(404, "No picture")
        await self._audit_still(who, camera, decision)
        ttl = max(1, int(self.stills.ttl))
        return web.Response(
            body=jpeg,
            content_type="image/jpeg",
            headers={"Cache-Control": f"private, max-age={ttl}"},
        )

    @staticmethod
    def _placeholder(status: int, text: str) -> web.Response:
        return web.Response(
            status=status,
            text=_PLACEHOLDER.format(text),
            content_type="image/svg+xml",
            headers={"Cache-Control": "private, max-age=5"},
        )

    async def _audit_still(self, who: Signed, camera: str, decision: Decision) -> None:
        """A still shown is footage disclosed: audited, once a minute per principal and
        camera (a page of thumbnails reloaded is not a new look each time)."""
        key = (who.caller.subject, camera)
        now = time.monotonic()
        last = self._audited.get(key)
        if last is not None and now - last < _STILL_AUDIT_EVERY:
            return
        self._audited[key] = now
        self._audited.move_to_end(key)
        while len(self._audited) > _MAX_AUDITED:
            self._audited.popitem(last=False)
        owner = self.service.core.snapshot.cameras.get(camera)
        tenants = sorted({who.caller.tenant, *((owner.owner_tenant,) if owner else ())})
        audit = self.service.core.audit
        await asyncio.to_thread(
            audit.append,
            AuditAction.STILL,
            tenant=who.caller.tenant,
            principal=who.caller.subject,
            camera=camera,
            purpose=decision.purpose,
            detail={
                "via": "console",
                "variant": decision.variant,
                "grant": decision.grant_id,
                "tenants": tenants,
            },
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/console", self.index)
        app.router.add_get("/console/cameras/{camera}", self.camera)
        app.router.add_get("/console/stills/{camera}", self.still)
        app.router.add_get("/console/wall", self.wall)
        app.router.add_put("/console/wall/layout", self.save_layout)
        app.router.add_get("/console/map", self.map)
