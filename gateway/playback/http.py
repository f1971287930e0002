"""Playback over HTTP, MediaMTX-compatible: ``GET /list?path=&start=&end=`` (recorded spans,
contiguous segments merged, broken at gaps) and ``GET /get?path=&start=&duration=&format=``
(the range cut to one MP4, fragmented or not, that a player can seek in with HTTP Range).

Credentials are a ``Bearer`` token, ``?token=`` (MediaMTX's clients) or the console's session
cookie. Who is asking is answered before whether the camera or its recording exists. A masked
tenant's copy is burnt in (re-encoded) from the recording; nobody else's copy is re-encoded.
A cut is kept for a couple of minutes so a player's Range requests are served from it, and is
audited and metered once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web

from gateway.http.csrf import session_token
from gateway.live import Refusal
from gateway.masking.zones import Zone
from gateway.playback.params import MediaFormat, ParamError, parse_get, parse_list
from gateway.playback.service import PlaybackService, Viewer
from gateway.recording.export_cut import CutError, TimedZone, Unreachable, cut
from tenants.policy import Decision

__all__ = ["PLAYBACK_PATHS", "CutCache", "add_playback_routes"]

log = logging.getLogger(__name__)

PLAYBACK_PATHS = frozenset({"/list", "/get"})
# Cuts made at once by this process (each a worker thread and, masked, an encoder).
MAX_CUTS = 4
CACHE_TTL = 120.0
CACHE_ENTRIES = 16
MAX_GET = timedelta(hours=1)  # longer ranges are exports

Credentials = Callable[[web.Request], "str | None"]


def bearer_or_query(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


def viewer_credential(request: web.Request) -> str | None:
    """A bearer token, ``?token=``, or the console's session cookie from its own pages (a
    ``<video>`` element's requests carry no headers of the page's)."""
    return bearer_or_query(request) or session_token(request)


def _text(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=reason + "\n", headers=headers)


def _iso(t: datetime) -> str:
    """RFC 3339 in UTC, the fraction only when there is one (as Go's RFC3339Nano writes it)."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class _Cut:
    path: Path
    size: int
    media_start: datetime
    media_end: datetime
    used: float


class CutCache:
    """Cuts kept briefly by (who may see what, camera, range, format), on disk, bounded."""

    def __init__(self, directory: Path, *, ttl: float = CACHE_TTL, entries: int = CACHE_ENTRIES):
        self.directory = directory
        self.ttl = ttl
        self.entries = entries
        self.cuts: dict[tuple[str, ...], _Cut] = {}
        self.locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self.slots = asyncio.Semaphore(MAX_CUTS)

    def expire(self, now: float) -> None:
        for key, c in list(self.cuts.items()):
            if now - c.used > self.ttl:
                del self.cuts[key]
                c.path.unlink(missing_ok=True)
        while len(self.cuts) > self.entries:
            key = min(self.cuts, key=lambda k: self.cuts[k].used)
            self.cuts.pop(key).path.unlink(missing_ok=True)
        for key in [
            k for k, lock in self.locks.items() if k not in self.cuts and not lock.locked()
        ]:
            del self.locks[key]

    def clear(self) -> None:
        for c in self.cuts.values():
            c.path.unlink(missing_ok=True)
        self.cuts.clear()


def add_playback_routes(
    app: web.Application,
    service: PlaybackService,
    *,
    tmp_dir: Path,
    credentials: Credentials = bearer_or_query,
) -> CutCache:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    for stale in tmp_dir.glob("cut-*.mp4*"):
        stale.unlink(missing_ok=True)  # a previous run's, never served again
    cache = CutCache(tmp_dir)

    def viewer(request: web.Request) -> Viewer:
        purpose = request.headers.get("X-Purpose") or request.query.get("purpose") or None
        return Viewer(
            "http",
            request.remote or "",
            token=credentials(request),
            purpose=purpose,
            unmasked=request.query.get("unmasked") in ("1", "true", "yes"),
        )

    async def list_spans(request: web.Request) -> web.StreamResponse:
        try:
            params = parse_list(request.query)
            decision = await service.authorize(viewer(request), params.path, None)
        except ParamError as exc:
            return _text(400, str(exc))
        except Refusal as exc:
            return _text(exc.status, exc.reason, exc.headers)
        start = params.start or datetime(1970, 1, 1, tzinfo=UTC)
        end = params.end or service.clock() + timedelta(days=1)
        earliest = service.earliest(decision)
        if earliest is not None:
            start = max(start, earliest)  # what the grant cannot play back is not listed
        spans = (
            await service.run(service.index.spans, params.path, start, end) if end > start else []
        )
        base = f"{request.scheme}://{request.host}/get"
        token = request.query.get("token")
        items = []
        for span in spans:
            seconds = span.duration.total_seconds()
            query = {"path": params.path, "start": _iso(span.start), "duration": f"{seconds:.6f}"}
            if token:
                query["token"] = token
            items.append(
                {
                    "start": _iso(span.start),
                    "duration": seconds,
                    "url": f"{base}?{urlencode(query)}",
                }
            )
        return web.json_response(items, headers={"Cache-Control": "no-store"})

    async def get(request: web.Request) -> web.StreamResponse:
        try:
            params = parse_get(request.query)
            decision = await service.authorize(viewer(request), params.path, params.start)
        except ParamError as exc:
            return _text(400, str(exc))
        except Refusal as exc:
            return _text(exc.status, exc.reason, exc.headers)
        if params.end - params.start > MAX_GET:
            return _text(
                400,
                f"duration: at most {int(MAX_GET.total_seconds())} seconds; export longer ranges",
            )
        key = (
            decision.tenant or "" if decision else "",
            decision.variant if decision else "unmasked",
            params.path,
            _iso(params.start),
            f"{params.duration:.6f}",
            params.format.value,
        )
        now = time.monotonic()
        cache.expire(now)
        lock = cache.locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                made = cache.cuts.get(key)
                if made is None:
                    made = await _make(
                        params.path, params.start, params.end, params.format, decision
                    )
                    if made is None:
                        return _text(404, f"no recording of {params.path} in that range")
                    cache.cuts[key] = made
                    await service.audit(
                        decision,
                        {
                            "protocol": "http",
                            "from": _iso(params.start),
                            "to": _iso(params.end),
                            "served_from": _iso(made.media_start),
                            "format": params.format.value,
                            "variant": decision.variant if decision else "unmasked",
                        },
                    )
                    service.metered(
                        decision,
                        f"get-{secrets.token_hex(8)}",
                        protocol="http",
                        seconds=(made.media_end - made.media_start).total_seconds(),
                        bytes_sent=made.size,
                    )
        except _Busy:
            return _text(503, "too many cuts in progress; try again", {"Retry-After": "2"})
        except Unreachable as exc:  # a segment on another node's disk: say so, not 404/500
            return _text(503, str(exc))
        finally:
            if not lock.locked() and key not in cache.cuts:
                cache.locks.pop(key, None)
        made.used = time.monotonic()
        name = f"{params.path}-{made.media_start.strftime('%Y%m%dT%H%M%SZ')}.mp4"
        return web.FileResponse(
            made.path,
            headers={
                "Content-Type": "video/mp4",
                "Content-Disposition": f'inline; filename="{name}"',
                "Cache-Control": "private, max-age=60",
                "X-Media-Start": _iso(made.media_start),
            },
        )

    async def _make(
        camera: str, start: datetime, end: datetime, fmt: MediaFormat, decision: Decision | None
    ) -> _Cut | None:
        if cache.slots.locked():
            raise _Busy()
        async with cache.slots:
            path = tmp_dir / f"cut-{secrets.token_hex(8)}.mp4"
            zones = tuple(
                TimedZone(Zone(z.id, z.points)) for z in (decision.mask_zones if decision else ())
            )
            try:
                result = await service.run(
                    cut,
                    service.index,
                    camera,
                    start,
                    end,
                    path,
                    zones=zones,
                    fragmented=fmt is MediaFormat.FMP4,
                )
            except Unreachable:
                path.unlink(missing_ok=True)
                raise
            except CutError as exc:
                log.info("/get %s %s: %s", camera, _iso(start), exc)
                return None
            size = path.stat().st_size
            return _Cut(path, size, result.media_start, result.media_end, time.monotonic())

    async def cleanup(app: web.Application) -> None:
        cache.clear()

    app.router.add_get("/list", list_spans)
    app.router.add_get("/get", get)
    app.on_cleanup.append(cleanup)
    return cache


class _Busy(Exception):
    pass
