"""REST ``/v1/exports`` and ``/v1/locks``: evidence exports and evidence locks, rows of the REST
API's route table (:mod:`gateway.http.api`) over :class:`gateway.recording.exports.ExportService`
(the decisions the CLI gets too).

* ``POST /v1/exports`` ``{camera, start, end, purpose?, incident_ref?, unmasked?}`` → ``202``
  with the export (``state``: queued, running, done, failed, cancelled, deleted; ``progress``
  0..1) and ``Location``. ``GET /v1/exports[/{id}]`` follows it; ``DELETE /v1/exports/{id}``
  cancels it. ``GET /v1/exports/{id}/file`` is the MP4 (HTTP Range works),
  ``GET /v1/exports/{id}/manifest`` its signed manifest, byte for byte as signed.
* ``POST /v1/locks`` ``{camera, start, end, reason, expires}`` → ``201``; ``GET /v1/locks``
  (``?camera=``); ``DELETE /v1/locks/{id}`` releases one.

Who is calling is answered first, as for every API route; the export service then makes its
own decision on the camera with the same credential. Every refusal is an RFC 9457 problem
document with a stable ``code``, audited by the service. Times are RFC 3339 with an offset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from gateway.http.api.routes import Binary, Call, Handler, Instant, PageQuery, Route
from gateway.recording.export_manifest import ExportManifest
from gateway.recording.export_store import ExportJob, ExportState
from gateway.recording.exports import MAX_TEXT, ExportService
from gateway.recording.index import EvidenceLock
from tenants.control.schemas import TEXT_PATTERN, Body, Id, View
from tenants.control.views import page, page_of

__all__ = ["EXPORT_ERRORS", "MAX_BODY", "ROUTES", "ExportView", "LockView", "Text", "row"]

MAX_BODY = 16 * 1024
# What an export route may answer besides success (the service's refusals included).
EXPORT_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 503)
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
EXPORT_ID = r"^(exp|sar)-[0-9a-f]{16}$"
LOCK_ID = r"^lock-[0-9a-f]{16}$"

Text = Annotated[str, Field(max_length=MAX_TEXT, pattern=TEXT_PATTERN)]


class ExportBody(Body):
    camera: Id
    start: Instant
    end: Instant
    purpose: Text | None = Field(None, description="a purpose or an incident_ref is needed")
    incident_ref: Text | None = None
    unmasked: bool = Field(False, description="lift liftable masks (needs the unmask right)")


class LockBody(Body):
    camera: Id
    start: Instant
    end: Instant
    reason: Text = Field(min_length=1)
    expires: Instant


class LockQuery(PageQuery):
    camera: Id | None = None


class ExportView(View):
    """An export and where it has got to; ``sha256`` and ``size`` once it is done."""

    id: str
    kind: str = Field(description="export, or sar_copy (a subject access request's copy)")
    camera: str
    tenant: str
    principal: str
    start: datetime
    end: datetime
    purpose: str | None
    incident_ref: str | None
    sar_id: str | None
    state: ExportState
    progress: float = Field(ge=0, le=1)
    error: str | None
    created: datetime
    finished: datetime | None
    expires: datetime
    masks: list[str] = Field(description="the ids of the zones burnt in")
    reencoded: bool
    sha256: str | None
    size: int | None

    @classmethod
    def of(cls, job: ExportJob) -> ExportView:
        done = job.state == ExportState.DONE
        progress = 1.0 if done else round(min(max(job.progress, 0.0), 1.0), 3)
        return cls.model_validate(job.with_(progress=progress), from_attributes=True)


class LockView(View):
    """An evidence lock: its range is kept past retention until it is released or expires."""

    id: str
    camera: str
    start: datetime
    end: datetime
    reason: str
    tenant: str
    principal: str
    created: datetime
    expires: datetime
    released: datetime | None
    released_by: str | None

    @classmethod
    def of(cls, lock: EvidenceLock) -> LockView:
        return cls.model_validate(lock, from_attributes=True)


class SignatureView(View):
    alg: Literal["EdDSA"]
    kid: str = Field(description="the signing key's RFC 7638 thumbprint, in the gateway's JWKS")
    value: str = Field(description="base64url Ed25519 signature of the canonical manifest")


class SignedManifest(View):
    """``<id>.manifest.json``, as written and signed."""

    manifest: ExportManifest
    signature: SignatureView


# ----------------------------------------------------------------------------- handlers


def _exports(c: Call) -> ExportService:
    return c.use(ExportService)


async def create_export(c: Call) -> BaseModel:
    b: ExportBody = c.body
    job = await _exports(c).create(
        c.token, b.camera, b.start, b.end, purpose=b.purpose, incident_ref=b.incident_ref,
        unmasked=b.unmasked, peer=c.caller.peer,
    )  # fmt: skip
    return ExportView.of(job)


async def list_exports(c: Call) -> BaseModel:
    q: PageQuery = c.query
    jobs = await _exports(c).list_exports(
        c.token, peer=c.caller.peer, limit=q.limit, offset=q.offset
    )
    more = q.offset + len(jobs) if len(jobs) == q.limit else None
    return page_of(ExportView)(items=[ExportView.of(j) for j in jobs], next_offset=more)


async def get_export(c: Call) -> BaseModel:
    return ExportView.of(await _exports(c).get(c.token, c.path["id"], peer=c.caller.peer))


async def cancel_export(c: Call) -> BaseModel:
    return ExportView.of(await _exports(c).cancel(c.token, c.path["id"], peer=c.caller.peer))


async def export_file(c: Call) -> web.StreamResponse:
    media, _ = await _exports(c).files(c.token, c.path["id"], peer=c.caller.peer)
    # FileResponse reads in the executor and answers Range (206, 416) itself.
    return web.FileResponse(
        media,
        headers={
            **_NO_STORE,
            "Content-Type": "video/mp4",
            "Content-Disposition": f'attachment; filename="{media.name}"',
        },
    )


async def export_manifest(c: Call) -> web.StreamResponse:
    _, manifest = await _exports(c).files(c.token, c.path["id"], peer=c.caller.peer)
    return web.FileResponse(  # the exact bytes signed, never re-serialised
        manifest,
        headers={
            **_NO_STORE,
            "Content-Type": "application/json",
            "Content-Disposition": f'attachment; filename="{manifest.name}"',
        },
    )


async def take_lock(c: Call) -> BaseModel:
    b: LockBody = c.body
    lock = await _exports(c).lock(
        c.token, b.camera, b.start, b.end, reason=b.reason, expires=b.expires,
        peer=c.caller.peer,
    )  # fmt: skip
    return LockView.of(lock)


async def list_locks(c: Call) -> BaseModel:
    q: LockQuery = c.query
    found = await _exports(c).locks(c.token, q.camera, peer=c.caller.peer)
    return page(LockView, [LockView.of(x) for x in found], q.offset, q.limit)


async def release_lock(c: Call) -> BaseModel:
    return LockView.of(await _exports(c).release(c.token, c.path["id"], peer=c.caller.peer))


def row(
    method: str, path: str, operation: str, summary: str, handler: Handler, tag: str,
    response: type[BaseModel] | Binary, *, service: type[Any] = ExportService, **kw: Any,
) -> Route:  # fmt: skip
    """A route of the export service (or ``service``), answering its refusals too."""
    errors = EXPORT_ERRORS if "body" in kw else tuple(e for e in EXPORT_ERRORS if e != 413)
    return Route(method, path, operation, summary, handler, tag, response, service=service,
                 errors=errors, **kw)  # fmt: skip


_EXPORT_ID = (("id", EXPORT_ID),)
_MANIFEST = Binary("application/json", "The signed manifest", schema=SignedManifest)
_LOCK_ID = (("id", LOCK_ID),)

ROUTES: list[Route] = [
    row("POST", "/v1/exports", "CreateExport",
        "Cut a camera's recording of a time range to a signed MP4 with your masks burnt in",
        create_export, "exports", ExportView, body=ExportBody, status=202,
        location="/v1/exports/{id}", max_body=MAX_BODY),
    row("GET", "/v1/exports", "ListExports", "Exports you may see, newest first",
        list_exports, "exports", page_of(ExportView), query=PageQuery),
    row("GET", "/v1/exports/{id}", "GetExport", "An export and its progress", get_export,
        "exports", ExportView, patterns=_EXPORT_ID),
    row("DELETE", "/v1/exports/{id}", "CancelExport", "Cancel an export still being cut",
        cancel_export, "exports", ExportView, patterns=_EXPORT_ID),
    row("GET", "/v1/exports/{id}/file", "GetExportFile", "The finished export's MP4",
        export_file, "exports", Binary("video/mp4", "The MP4", ranges=True),
        patterns=_EXPORT_ID),
    row("GET", "/v1/exports/{id}/manifest", "GetExportManifest",
        "The export's signed manifest (verify with `feedgate export verify`)",
        export_manifest, "exports", _MANIFEST, patterns=_EXPORT_ID),
    row("POST", "/v1/locks", "TakeLock",
        "Keep a camera's recording of a time range past retention, with a reason",
        take_lock, "locks", LockView, body=LockBody, status=201,
        location="/v1/locks/{id}", max_body=MAX_BODY),
    row("GET", "/v1/locks", "ListLocks", "Evidence locks you may see", list_locks, "locks",
        page_of(LockView), query=LockQuery),
    row("DELETE", "/v1/locks/{id}", "ReleaseLock", "Release an evidence lock",
        release_lock, "locks", LockView, patterns=_LOCK_ID),
]  # fmt: skip
