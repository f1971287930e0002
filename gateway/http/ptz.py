"""REST ``/v1/cameras/{id}/ptz/...``: PTZ control over HTTP, a thin adapter over
:class:`gateway.ptz.service.PtzService` (the decisions gRPC and the ONVIF facade get too).

A bearer token, or the console's session cookie (from the gateway's own pages only and, for a
change, with the page's CSRF header: :func:`gateway.http.csrf.session_token`), so the console's
PTZ controls call these routes as the signed-in principal. Every call is authorized by the PTZ
service (the policy's ``ptz`` action on the camera). Errors are RFC 9457 problem documents
with a stable ``code``; a locked camera is ``423`` with the holder's tenant kind and the lock's
end (never the person), too many moves ``429`` with ``Retry-After``. ``GET .../ptz/events`` is
a Server-Sent Events stream of the camera's lock state: who holds it, until when, and
``"yours": true`` on the events about the watcher (e.g. that it was preempted, and why).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.http.api.app import bearer
from gateway.http.api.problems import CONTENT_TYPE, TITLES
from gateway.http.csrf import session_token
from gateway.ptz.arbiter import LockView
from gateway.ptz.events import view_json
from gateway.ptz.model import ErrorCode, PtzError, Vector, check_move
from gateway.ptz.service import Caller, PtzService
from tenants.policy import AccessRequest, Action

log = logging.getLogger(__name__)

PREFIX = "/v1/cameras/{id}/ptz"
MAX_BODY = 4096
KEEPALIVE_S = 15.0
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    purpose: str | None = Field(None, max_length=256)


class MoveBody(_Body):
    kind: str
    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    timeout: float | None = None


class GotoBody(_Body):
    preset: str | None = None
    home: bool = False


class PresetBody(_Body):
    name: str
    token: str | None = None


class ReserveBody(_Body):
    reason: str
    seconds: float


def ptz_problem(exc: PtzError) -> web.Response:
    body: dict[str, Any] = {
        "type": f"urn:feedgate:problem:{exc.code.value}",
        "title": TITLES.get(exc.status, "Locked" if exc.status == 423 else "Error"),
        "status": exc.status,
        "detail": exc.message,
        "code": exc.code.value,
        **exc.detail,
    }
    headers = dict(_HEADERS)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="feedgate"'
    if "retry_after" in exc.detail:
        headers["Retry-After"] = str(max(1, round(float(exc.detail["retry_after"]) + 0.5)))
    return web.Response(
        text=json.dumps(body), status=exc.status, content_type=CONTENT_TYPE, headers=headers
    )


def _vector(v: Vector | None) -> dict[str, float] | None:
    return v.as_dict() if v is not None else None


def credential(request: web.Request) -> str | None:
    """A bearer token, else the console's session cookie where it counts."""
    return bearer(request) or session_token(request)


def _ok(data: dict[str, Any]) -> web.Response:
    return web.json_response(data, headers=_HEADERS)


async def _parse(request: web.Request, model: type[_Body]) -> Any:
    """The JSON body, checked. Only a request carrying credentials gets this far, so "who are
    you" is still answered first; the policy (which may need the body's purpose) decides
    after."""
    if credential(request) is None:
        raise PtzError(ErrorCode.UNAUTHENTICATED, "credentials required: Authorization: Bearer")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise PtzError(ErrorCode.BAD_REQUEST, f"body: larger than {MAX_BODY} bytes")
    if not raw.strip():
        raw = b"{}"
    if request.content_type not in ("application/json", "application/octet-stream"):
        raise PtzError(ErrorCode.BAD_REQUEST, "body: expected application/json")
    try:
        data = json.loads(raw)
        return model.model_validate(data)
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            raise PtzError(ErrorCode.BAD_REQUEST, f"{where}: {err['msg']}") from None
        raise PtzError(ErrorCode.BAD_REQUEST, "body: not JSON") from None


class PtzRoutes:
    def __init__(self, service: PtzService) -> None:
        self.ptz = service

    async def _caller(self, request: web.Request, op: str, purpose: str | None) -> Caller:
        req = AccessRequest(
            Action.PTZ,
            "http",
            camera=request.match_info["id"],
            token=credential(request),
            purpose=purpose,
            peer=request.remote or "",
        )
        return await self.ptz.caller(req, op)

    def handler(
        self, fn: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request)
            except PtzError as exc:
                return ptz_problem(exc)

        return handle

    async def move(self, request: web.Request) -> web.StreamResponse:
        b: MoveBody = await _parse(request, MoveBody)
        c = await self._caller(request, "move", b.purpose)
        cfg = self.ptz.config
        move = check_move(
            b.kind,
            b.pan,
            b.tilt,
            b.zoom,
            timeout=b.timeout,
            default_timeout=cfg.default_timeout,
            max_timeout=cfg.max_timeout,
        )
        return _ok({"lock": view_json(await self.ptz.move(c, move)), "move": move.audit_detail()})

    async def stop(self, request: web.Request) -> web.StreamResponse:
        c = await self._caller(request, "stop", request.query.get("purpose"))
        return _ok({"lock": view_json(await self.ptz.stop_move(c))})

    async def goto(self, request: web.Request) -> web.StreamResponse:
        b: GotoBody = await _parse(request, GotoBody)
        c = await self._caller(request, "goto", b.purpose)
        if b.home == (b.preset is not None):
            raise PtzError(ErrorCode.BAD_REQUEST, "preset or home: exactly one")
        view = await (self.ptz.goto_home(c) if b.home else self.ptz.goto_preset(c, b.preset))
        return _ok({"lock": view_json(view)})

    async def presets(self, request: web.Request) -> web.StreamResponse:
        c = await self._caller(request, "presets", None)
        found = await self.ptz.presets(c)
        return _ok(
            {
                "presets": [
                    {"token": p.token, "name": p.name, "position": _vector(p.position)}
                    for p in found
                ]
            }
        )

    async def set_preset(self, request: web.Request) -> web.StreamResponse:
        b: PresetBody = await _parse(request, PresetBody)
        c = await self._caller(request, "set_preset", b.purpose)
        token = await self.ptz.set_preset(c, b.name, b.token)
        return web.json_response({"token": token, "name": b.name}, status=201, headers=_HEADERS)

    async def status(self, request: web.Request) -> web.StreamResponse:
        c = await self._caller(request, "status", None)
        st, view = await self.ptz.status(c)
        return _ok({"position": _vector(st.position), "moving": st.moving, "lock": view_json(view)})

    async def reserve(self, request: web.Request) -> web.StreamResponse:
        b: ReserveBody = await _parse(request, ReserveBody)
        c = await self._caller(request, "reserve", b.purpose or b.reason[:256])
        return _ok({"lock": view_json(await self.ptz.reserve(c, b.reason, b.seconds))})

    async def release(self, request: web.Request) -> web.StreamResponse:
        c = await self._caller(request, "release", None)
        return _ok({"lock": view_json(await self.ptz.release(c))})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: the lock state now, then each change, until the client goes,
        the server stops or the caller's credential expires."""
        c = await self._caller(request, "events", None)
        sub = self.ptz.subscribe(c.camera)
        try:
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", **_HEADERS, "X-Accel-Buffering": "no"}
            )
            await resp.prepare(request)
            first: LockView = await self.ptz.lock_view(c.camera)
            await _send(resp, "state", view_json(first))
            expires = c.decision.expires_at
            who = (c.claimant.tenant, c.claimant.principal)
            while True:
                left = KEEPALIVE_S
                if expires is not None:
                    left = min(left, (expires - datetime.now(UTC)).total_seconds())
                    if left <= 0:
                        await _send(resp, "end", {"why": "credential expired"})
                        break
                try:
                    event = await asyncio.wait_for(sub.queue.get(), left)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                await _send(resp, event.type, event.json_for(*who))
            return resp
        except (ConnectionResetError, ConnectionError):
            return web.Response(status=499)
        finally:
            self.ptz.events.unsubscribe(sub)


async def _send(resp: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


def add_ptz_routes(app: web.Application, service: PtzService) -> None:
    r = PtzRoutes(service)
    h = r.handler
    app.router.add_post(f"{PREFIX}/move", h(r.move))
    app.router.add_post(f"{PREFIX}/stop", h(r.stop))
    app.router.add_post(f"{PREFIX}/goto", h(r.goto))
    app.router.add_get(f"{PREFIX}/presets", h(r.presets))
    app.router.add_post(f"{PREFIX}/presets", h(r.set_preset))
    app.router.add_get(f"{PREFIX}/status", h(r.status))
    app.router.add_post(f"{PREFIX}/reserve", h(r.reserve))
    app.router.add_post(f"{PREFIX}/release", h(r.release))
    app.router.add_get(f"{PREFIX}/events", h(r.events))


__all__ = ["PREFIX", "PtzRoutes", "add_ptz_routes", "ptz_problem"]
