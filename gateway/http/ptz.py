"""REST ``/v1/cameras/{id}/ptz/...``: PTZ control over HTTP, rows of the REST API's route table
(so in ``/v1/openapi.json``) over :class:`gateway.ptz.service.PtzService`, the decisions gRPC
and the ONVIF facade get too.

Who is calling is the API's answer (a bearer token, or the console's session cookie from the
gateway's own pages with the CSRF header for a change); whether they may steer this camera is
the PTZ service's (the policy's ``ptz`` action). Refusals are problem documents with a stable
``code``; a locked camera is ``423`` with the holder's tenant kind and the lock's end (never the
person), too many moves ``429`` with ``Retry-After``. ``GET .../ptz/events`` is a Server-Sent
Events stream of the camera's lock state: who holds it, until when, and ``"yours": true`` on
the events about the watcher (e.g. that it was preempted, and why)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.http.api.routes import Binary, Call, Route
from gateway.live import Refusal
from gateway.ptz.arbiter import LockView
from gateway.ptz.events import view_json
from gateway.ptz.model import ErrorCode, PtzError, Vector, check_move
from gateway.ptz.service import Caller, PtzService
from tenants.policy import AccessRequest, Action

PREFIX = "/v1/cameras/{id}/ptz"
MAX_BODY = 4096
KEEPALIVE_S = 15.0
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# What a PTZ refusal can be, besides the API's own (400, 401, 413...).
ERRORS = (400, 401, 403, 404, 413, 423, 429, 502, 503, 504)
_Purpose = Field(None, max_length=256, description="why; recorded in the audit log")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    purpose: str | None = _Purpose


class MoveBody(_Body):
    kind: str = Field(description="continuous, absolute or relative")
    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    timeout: float | None = Field(None, description="continuous: seconds until it stops")


class GotoBody(_Body):
    preset: str | None = Field(None, description="a preset's token; or home")
    home: bool = False


class PresetBody(_Body):
    name: str
    token: str | None = Field(None, description="overwrite this preset")


class ReserveBody(_Body):
    reason: str
    seconds: float


class PurposeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str | None = _Purpose


class Holder(BaseModel):
    tenant_kind: str
    priority: int | None = None


class PtzLock(BaseModel):
    """Who steers the camera: its kind of tenant and priority, never the person."""

    camera: str
    state: str = Field(description="free, held or reserved")
    holder: Holder | None = None
    until: str | None = Field(None, description="RFC 3339, UTC")
    reason: str | None = None


class Position(BaseModel):
    pan: float
    tilt: float
    zoom: float


class LockReply(BaseModel):
    lock: PtzLock


class MoveReply(LockReply):
    move: dict[str, Any] = Field(description="the move as sent to the camera")


class Preset(BaseModel):
    token: str
    name: str
    position: Position | None = None


class Presets(BaseModel):
    presets: list[Preset]


class PresetMade(BaseModel):
    token: str
    name: str


class PtzStatus(BaseModel):
    position: Position | None = None
    moving: bool
    lock: PtzLock


def _lock(view: LockView) -> PtzLock:
    return PtzLock.model_validate(view_json(view))


def _position(v: Vector | None) -> Position | None:
    return Position(**v.as_dict()) if v is not None else None


def refusal(exc: PtzError) -> Refusal:
    """The problem document's facts: a bad request is the API's ``invalid_argument``; the
    PTZ codes (``ptz_locked``, ``rate_limited``, ...) are kept, with the lock's facts."""
    headers = {}
    if "retry_after" in exc.detail:
        headers["Retry-After"] = str(max(1, round(float(exc.detail["retry_after"]) + 0.5)))
    code = "invalid_argument" if exc.code == ErrorCode.BAD_REQUEST else exc.code.value
    return Refusal(exc.status, exc.message, headers, code=code, extra=exc.detail)


PtzHandler = Callable[[Call, PtzService, Caller], Awaitable[BaseModel | web.StreamResponse]]


def _op(op: str, fn: PtzHandler) -> Callable[[Call], Awaitable[BaseModel | web.StreamResponse]]:
    """The row's handler: the policy's ``ptz`` decision on the camera for the credential the
    caller presented (with the body's or the query's purpose), then ``fn``."""

    async def handle(c: Call) -> BaseModel | web.StreamResponse:
        ptz = c.use(PtzService)
        purpose = getattr(c.body, "purpose", None) or getattr(c.query, "purpose", None)
        if op == "reserve" and purpose is None:
            purpose = c.body.reason[:256]
        req = AccessRequest(
            Action.PTZ,
            "http",
            camera=c.path["id"],
            token=c.token,
            purpose=purpose,
            peer=c.caller.peer,
        )
        try:
            return await fn(c, ptz, await ptz.caller(req, op))
        except PtzError as exc:
            raise refusal(exc) from None

    return handle


async def move(c: Call, ptz: PtzService, who: Caller) -> BaseModel:
    b: MoveBody = c.body
    cfg = ptz.config
    m = check_move(
        b.kind,
        b.pan,
        b.tilt,
        b.zoom,
        timeout=b.timeout,
        default_timeout=cfg.default_timeout,
        max_timeout=cfg.max_timeout,
    )
    return MoveReply(lock=_lock(await ptz.move(who, m)), move=m.audit_detail())


async def stop(c: Call, ptz: PtzService, who: Caller) -> BaseModel:
    return LockReply(lock=_lock(await ptz.stop_move(who)))


async def goto(c: Call, ptz: PtzService, who: Caller) -> BaseModel:
    b: GotoBody = c.body
    if b.home == (b.preset is not None):
        raise PtzError(ErrorCode.BAD_REQUEST, "preset or home: exactly one")
    view = await (ptz.goto_home(who) if b.home else ptz.goto_preset(who, b.preset))
    return LockReply(lock=_lock(view))


async def presets(c: Call, ptz: PtzService, who: Caller) -> BaseModel:
    found = await ptz.presets(who)
    return Presets(
        presets=[Preset(token=p.token, name=p.name, position=_position(p.position)) for p in found]
    )


async def set_preset(c: Call, ptz: PtzService, who: Caller) -> BaseModel:
    b: PresetBody = c.body
    return PresetMade(token=await ptz.set_preset(who, b.name, b.token), name=b.name)


async def status(c: Call, ptz: PtzService, who: Caller) -> BaseModel:
    st, view = await ptz.status(who)
    return PtzStatus(position=_position(st.position), moving=st.moving, lock=_lock(view))


async def reserve(c: Call, ptz: PtzService, who: Caller) -> BaseModel:
    b: ReserveBody = c.body
    return LockReply(lock=_lock(await ptz.reserve(who, b.reason, b.seconds)))


async def release(c: Call, ptz: PtzService, who: Caller) -> BaseModel:
    return LockReply(lock=_lock(await ptz.release(who)))


async def events(c: Call, ptz: PtzService, who: Caller) -> web.StreamResponse:
    """Server-Sent Events: the lock state now, then each change, until the client goes, the
    server stops or the caller's credential expires."""
    assert c.request is not None
    ptz.client(who.camera)  # a camera without PTZ has no lock to watch: 404 no_ptz
    sub = ptz.subscribe(who.camera)
    try:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **_HEADERS, "X-Accel-Buffering": "no"}
        )
        await resp.prepare(c.request)
        first: LockView = await ptz.lock_view(who.camera)
        await _send(resp, "state", view_json(first))
        expires = who.decision.expires_at
        mine = (who.claimant.tenant, who.claimant.principal)
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
            await _send(resp, event.type, event.json_for(*mine))
        return resp
    except (ConnectionResetError, ConnectionError):
        return web.Response(status=499)
    finally:
        ptz.events.unsubscribe(sub)


async def _send(resp: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


def row(
    method: str, path: str, operation: str, summary: str, fn: PtzHandler, op: str,
    response: type[BaseModel] | Binary, **kw: Any,
) -> Route:  # fmt: skip
    errors = ERRORS if "body" in kw else tuple(e for e in ERRORS if e != 413)
    return Route(method, f"{PREFIX}{path}", operation, summary, _op(op, fn), "ptz", response,
                 service=PtzService, errors=errors, max_body=MAX_BODY, **kw)  # fmt: skip


_EVENTS = Binary("text/event-stream", "Server-Sent Events: state, lock, preempted, released...")

ROUTES: list[Route] = [
    row("POST", "/move", "PtzMove", "Move the camera (taking or keeping its lock)", move, "move",
        MoveReply, body=MoveBody),
    row("POST", "/stop", "PtzStop", "Stop a continuous move", stop, "stop", LockReply,
        query=PurposeQuery),
    row("POST", "/goto", "PtzGoto", "Go to a preset, or home", goto, "goto", LockReply,
        body=GotoBody),
    row("GET", "/presets", "PtzListPresets", "The camera's presets", presets, "presets", Presets),
    row("POST", "/presets", "PtzSetPreset", "Save the camera's position as a preset", set_preset,
        "set_preset", PresetMade, body=PresetBody, status=201),
    row("GET", "/status", "PtzStatus", "Position, movement and lock", status, "status",
        PtzStatus),
    row("POST", "/reserve", "PtzReserve", "Reserve the camera for an incident", reserve,
        "reserve", LockReply, body=ReserveBody),
    row("POST", "/release", "PtzRelease", "Let go of the lock or end your reservation", release,
        "release", LockReply),
    row("GET", "/events", "PtzEvents", "The camera's lock state as it changes", events, "events",
        _EVENTS),
]  # fmt: skip


__all__ = ["PREFIX", "ROUTES", "refusal"]
