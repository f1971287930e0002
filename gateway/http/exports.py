"""REST ``/v1/exports`` and ``/v1/locks``: evidence exports and evidence locks over HTTP, a thin
adapter over :class:`gateway.recording.exports.ExportService` (the decisions the CLI gets too).

* ``POST /v1/exports`` ``{camera, start, end, purpose?, incident_ref?, unmasked?}`` → ``202``
  with the export (``state``: queued, running, done, failed, cancelled, deleted; ``progress``
  0..1) and ``Location``. ``GET /v1/exports[/{id}]`` follows it; ``DELETE /v1/exports/{id}``
  cancels it. ``GET /v1/exports/{id}/file`` is the MP4 (HTTP Range works),
  ``GET /v1/exports/{id}/manifest`` its signed manifest.
* ``POST /v1/locks`` ``{camera, start, end, reason, expires}`` → ``201``; ``GET /v1/locks``
  (``?camera=``); ``DELETE /v1/locks/{id}`` releases one.

Bearer tokens; every refusal is an RFC 9457 problem document with a stable ``code``, and is
audited by the service. Times are RFC 3339 with an offset.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from gateway.http.api.app import bearer
from gateway.http.api.problems import problem
from gateway.recording.export_store import ExportJob
from gateway.recording.exports import ExportError, ExportService
from gateway.recording.index import EvidenceLock

__all__ = ["Body", "add_export_routes", "export_view", "guarded", "lock_view", "read_body"]

MAX_BODY = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExportBody(Body):
    camera: str = Field(min_length=1, max_length=128)
    start: AwareDatetime
    end: AwareDatetime
    purpose: str | None = Field(None, max_length=512)
    incident_ref: str | None = Field(None, max_length=512)
    unmasked: bool = False


class LockBody(Body):
    camera: str = Field(min_length=1, max_length=128)
    start: AwareDatetime
    end: AwareDatetime
    reason: str = Field(min_length=1, max_length=512)
    expires: AwareDatetime


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def export_view(job: ExportJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "camera": job.camera,
        "tenant": job.tenant,
        "principal": job.principal,
        "start": _iso(job.start),
        "end": _iso(job.end),
        "purpose": job.purpose,
        "incident_ref": job.incident_ref,
        "sar_id": job.sar_id,
        "state": job.state.value,
        "progress": 1.0 if job.state.value == "done" else round(job.progress, 3),
        "error": job.error,
        "created": _iso(job.created),
        "finished": _iso(job.finished),
        "expires": _iso(job.expires),
        "masks": list(job.masks),
        "reencoded": job.reencoded,
        "sha256": job.sha256,
        "size": job.size,
    }


def lock_view(lock: EvidenceLock) -> dict[str, Any]:
    return {
        "id": lock.id,
        "camera": lock.camera,
        "start": _iso(lock.start),
        "end": _iso(lock.end),
        "reason": lock.reason,
        "tenant": lock.tenant,
        "principal": lock.principal,
        "created": _iso(lock.created),
        "expires": _iso(lock.expires),
        "released": _iso(lock.released),
        "released_by": lock.released_by,
    }


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(fn: _Handler) -> _Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except ExportError as exc:
            return problem(exc.status, exc.code, str(exc))

    return run


async def read_body(request: web.Request, model: type[Body]) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ExportError(413, "too_large", f"request bodies are at most {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ExportError(413, "too_large", f"request bodies are at most {MAX_BODY} bytes")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ExportError(400, "invalid_argument", f"{where}: {first['msg']}") from None


def _page(request: web.Request) -> tuple[int, int]:
    try:
        limit = int(request.query.get("limit", "100"))
        offset = int(request.query.get("offset", "0"))
    except ValueError:
        raise ExportError(400, "invalid_argument", "limit and offset are integers") from None
    if not (1 <= limit <= 1000 and offset >= 0):
        raise ExportError(400, "invalid_argument", "limit 1..1000, offset >= 0")
    return limit, offset


def add_export_routes(app: web.Application, service: ExportService) -> None:
    def who(request: web.Request) -> tuple[str | None, str]:
        return bearer(request), request.remote or ""

    async def create(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        body: ExportBody = await read_body(request, ExportBody)
        job = await service.create(
            token, body.camera, body.start, body.end, purpose=body.purpose,
            incident_ref=body.incident_ref, unmasked=body.unmasked, peer=peer,
        )  # fmt: skip
        return web.json_response(
            export_view(job),
            status=202,
            headers={**_NO_STORE, "Location": f"/v1/exports/{job.id}"},
        )

    async def list_(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        limit, offset = _page(request)
        jobs = await service.list_exports(token, peer=peer, limit=limit, offset=offset)
        nxt = offset + len(jobs) if len(jobs) == limit else None
        return web.json_response(
            {"items": [export_view(j) for j in jobs], "next_offset": nxt}, headers=_NO_STORE
        )

    async def get(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        job = await service.get(token, request.match_info["id"], peer=peer)
        return web.json_response(export_view(job), headers=_NO_STORE)

    async def cancel(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        job = await service.cancel(token, request.match_info["id"], peer=peer)
        return web.json_response(export_view(job), headers=_NO_STORE)

    async def file(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        media, _ = await service.files(token, request.match_info["id"], peer=peer)
        return web.FileResponse(
            media,
            headers={
                **_NO_STORE,
                "Content-Type": "video/mp4",
                "Content-Disposition": f'attachment; filename="{media.name}"',
            },
        )

    async def manifest(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        _, path = await service.files(token, request.match_info["id"], peer=peer)
        return web.Response(
            body=path.read_bytes(),
            content_type="application/json",
            headers={
                **_NO_STORE,
                "Content-Disposition": f'attachment; filename="{path.name}"',
            },
        )

    async def lock(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        body: LockBody = await read_body(request, LockBody)
        taken = await service.lock(
            token, body.camera, body.start, body.end, reason=body.reason,
            expires=body.expires, peer=peer,
        )  # fmt: skip
        return web.json_response(
            lock_view(taken), status=201, headers={"Location": f"/v1/locks/{taken.id}"}
        )

    async def locks(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        found = await service.locks(token, request.query.get("camera") or None, peer=peer)
        return web.json_response(
            {"items": [lock_view(x) for x in found], "next_offset": None}, headers=_NO_STORE
        )

    async def release(request: web.Request) -> web.StreamResponse:
        token, peer = who(request)
        dropped = await service.release(token, request.match_info["id"], peer=peer)
        return web.json_response(lock_view(dropped))

    r = app.router
    r.add_post("/v1/exports", guarded(create))
    r.add_get("/v1/exports", guarded(list_))
    r.add_get("/v1/exports/{id}", guarded(get))
    r.add_delete("/v1/exports/{id}", guarded(cancel))
    r.add_get("/v1/exports/{id}/file", guarded(file))
    r.add_get("/v1/exports/{id}/manifest", guarded(manifest))
    r.add_post("/v1/locks", guarded(lock))
    r.add_get("/v1/locks", guarded(locks))
    r.add_delete("/v1/locks/{id}", guarded(release))
