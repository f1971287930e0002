"""HLS VOD over the recording, for a timeline scrubber (hls.js, Safari's player, the console).

``GET /hls/{camera}/index.m3u8?start=&end=|duration=`` lists the recorded fragments of the
window as byte ranges of the recorder's own segment files (``EXT-X-MAP`` is each file's init
bytes; ``EXT-X-BYTERANGE`` each ``moof`` + ``mdat``), each with its capture time
(``EXT-X-PROGRAM-DATE-TIME``) and a discontinuity at every new file and every gap.
``GET /hls/{camera}/file/{segment}/media.mp4`` serves a segment file with HTTP Range, nothing
re-encoded.

A tenant whose decision names mask zones is never given those bytes (403 on ``file/``): its
playlist lists the same recorded time as masked segments, each burnt in on demand by the cutter
``/get`` uses and served as its own fMP4 (``masked/{segment}/{first}-{last}/init.mp4`` and
``media.mp4``; :mod:`gateway.playback.hls_masked`, which also bounds them). Liftable zones lift
as on ``/get``: ``unmasked=1`` with the unmask right and a purpose. Who is asking is answered
before whether the camera or the recording exists. The playlist is audited as one playback;
each file range or masked segment served is metered as the recording it covers.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

from aiohttp import web

from gateway.live import Refusal
from gateway.masking.zones import Zone
from gateway.playback.hls_masked import (
    GAP,
    RETRY_AFTER,
    Busy,
    Group,
    MaskedSegments,
    burn,
    groups,
    masked_playlist,
)
from gateway.playback.params import ParamError, parse_list
from gateway.playback.service import PlaybackService, Viewer
from gateway.recording.export_cut import CutError, Unreachable
from gateway.recording.index import Fragment, Segment
from gateway.recording.settings import RecordingConfig
from tenants.policy import Decision

__all__ = ["HLS_PREFIX", "MASKED_HLS", "MAX_WINDOW", "add_hls_routes", "playlist"]

HLS_PREFIX = "/hls/"
MAX_WINDOW = timedelta(hours=6)  # 21,600 one-second fragments: a playlist of about 2 MB
MASKED = (
    "a masked tenant is not given the recording's own bytes: its playlist names masked segments"
)
MASKED_HLS = web.AppKey("masked_hls", MaskedSegments)
_RANGE_PREFIX = "bytes="


def _pdt(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def playlist(
    fragments: list[Fragment], segments: dict[str, Segment], file_url: dict[str, str]
) -> str:
    """The VOD playlist of these fragments (in time order) of these segment files."""
    longest = max((f.end - f.start).total_seconds() for f in fragments)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(longest))}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ]
    current: str | None = None
    prev_end: datetime | None = None
    for f in fragments:
        if f.end <= f.start:
            continue  # a segment's audio after its last picture: no time of its own to list
        url = file_url[f.segment]
        if f.segment != current:
            if current is not None:
                lines.append("#EXT-X-DISCONTINUITY")
            seg = segments[f.segment]
            lines.append(f'#EXT-X-MAP:URI="{url}",BYTERANGE="{seg.init_length}@0"')
            current = f.segment
        elif prev_end is not None and f.start - prev_end > GAP:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(f.start)}")
        lines.append(f"#EXTINF:{(f.end - f.start).total_seconds():.3f},")
        lines.append(f"#EXT-X-BYTERANGE:{f.length}@{f.offset}")
        lines.append(url)
        prev_end = f.end
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """[first, last] of a single ``bytes=`` range (the whole file without one)."""
    if not header:
        return 0, size - 1
    spec = header.strip()
    if not spec.startswith(_RANGE_PREFIX) or "," in spec:
        return 0, size - 1  # aiohttp answers what it can; metering counts the whole file
    first, _, last = spec[len(_RANGE_PREFIX) :].partition("-")
    try:
        if not first:
            n = int(last)
            return max(0, size - n), size - 1
        return int(first), min(size - 1, int(last)) if last else size - 1
    except ValueError:
        return 0, size - 1


def add_hls_routes(
    app: web.Application,
    service: PlaybackService,
    credentials: Callable[[web.Request], str | None],
    *,
    tmp_dir: Path,
    settings: RecordingConfig | None = None,
) -> MaskedSegments:
    settings = settings or RecordingConfig()
    masked = MaskedSegments(
        transcodes=settings.hls_masked_transcodes,
        wait=settings.hls_masked_wait,
        cache_bytes=settings.hls_masked_cache_bytes,
    )
    app[MASKED_HLS] = service.masked_hls = masked
    tmp_dir.mkdir(parents=True, exist_ok=True)
    for stale in tmp_dir.glob("hls-*.mp4*"):
        stale.unlink(missing_ok=True)  # a previous run's scratch files

    def viewer(request: web.Request) -> Viewer:
        purpose = request.headers.get("X-Purpose") or request.query.get("purpose") or None
        return Viewer(
            "hls",
            request.remote or "",
            token=credentials(request),
            purpose=purpose,
            unmasked=request.query.get("unmasked") in ("1", "true", "yes"),
        )

    def _query(request: web.Request) -> dict[str, str]:
        keep = {k: request.query[k] for k in ("token", "purpose", "unmasked") if k in request.query}
        return keep

    async def index(request: web.Request) -> web.StreamResponse:
        camera = request.match_info["camera"]
        query = {
            "path": camera,
            **{k: v for k, v in request.query.items() if k not in ("duration", "unmasked")},
        }
        try:
            params = parse_list(query)
            if params.start is None:
                raise ParamError("start: required (RFC 3339, e.g. 2026-12-01T10:15:00Z)")
            end = params.end
            if end is None and "duration" in request.query:
                try:
                    seconds = float(request.query["duration"])
                except ValueError:
                    raise ParamError("duration: must be a number of seconds") from None
                if not 0 < seconds <= MAX_WINDOW.total_seconds():
                    raise ParamError("duration: above 0 and at most 6 hours")
                end = params.start + timedelta(seconds=seconds)
            if end is None:
                raise ParamError("end: required (or duration)")
            if end - params.start > MAX_WINDOW:
                raise ParamError("end: at most 6 hours after start")
            decision = await service.authorize(viewer(request), camera, params.start)
        except ParamError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        except Refusal as exc:
            return web.Response(status=exc.status, text=exc.reason + "\n", headers=exc.headers)
        window_start, window_end = params.start, end
        if decision is not None and decision.mask_zones:
            return await masked_index(request, decision, camera, window_start, window_end)
        source = service.source(camera)

        def walk() -> list[Fragment]:
            return [f for f in source.walk(window_start, window_end) if f.start < window_end]

        fragments = await service.run(walk)
        if not fragments:
            return web.Response(status=404, text=f"no recording of {camera} in that window\n")
        ids = sorted({f.segment for f in fragments})
        segments = {s: seg for s in ids if (seg := await service.run(service.index.segment, s))}
        fragments = [f for f in fragments if f.segment in segments]
        extra = urlencode(_query(request))
        file_url = {
            # Players want a media extension on the URL (ffmpeg's HLS demuxer refuses others).
            s: f"file/{quote(s, safe='/')}/media.mp4" + (f"?{extra}" if extra else "")
            for s in segments
        }
        await service.audit(
            decision,
            {
                "protocol": "hls",
                "from": _pdt(params.start),
                "to": _pdt(end),
                "variant": decision.variant if decision else "unmasked",
            },
        )
        return web.Response(
            text=playlist(fragments, segments, file_url),
            content_type="application/vnd.apple.mpegurl",
            headers={"Cache-Control": "private, max-age=10"},
        )

    async def asked(
        request: web.Request, camera: str, seg_id: str
    ) -> tuple[Segment | None, Decision | None]:
        """The recorded file named and the viewer's decision on it. Who is asking is decided
        before anything is said of the file: the decision is taken at the file's start only
        if it is this camera's (the caller answers "no such recording" after)."""
        segment = await service.run(service.index.segment, seg_id)
        start = segment.start if segment is not None and segment.camera == camera else None
        return segment, await service.authorize(viewer(request), camera, start)

    async def file(request: web.Request) -> web.StreamResponse:
        camera = request.match_info["camera"]
        seg_id = request.match_info["segment"]
        try:
            segment, decision = await asked(request, camera, seg_id)
        except Refusal as exc:
            return web.Response(status=exc.status, text=exc.reason + "\n", headers=exc.headers)
        if decision is not None and decision.mask_zones:
            return web.Response(status=403, text=MASKED + "\n")
        if segment is None or segment.camera != camera:
            return web.Response(status=404, text="no such recording\n")
        path = service.index.file(segment)
        try:
            size = path.stat().st_size
        except OSError:
            reason = await service.run(service.index.unreachable, segment)
            return web.Response(status=503, text=f"{reason or 'recording unreadable'}\n")
        first, last = _byte_range(request.headers.get("Range"), size)
        frags = await service.run(service.index.fragments, seg_id)
        seconds = sum(
            (f.end - f.start).total_seconds()
            for f in frags
            if f.offset >= first and f.offset + f.length - 1 <= last
        )
        if seconds:
            service.metered(
                decision,
                f"hls-{secrets.token_hex(8)}",
                protocol="hls",
                seconds=seconds,
                bytes_sent=max(0, last - first + 1),
            )
        return web.FileResponse(
            path, headers={"Content-Type": "video/mp4", "Cache-Control": "private, max-age=60"}
        )

    async def masked_index(
        request: web.Request, decision: Decision, camera: str, start: datetime, end: datetime
    ) -> web.StreamResponse:
        source = service.source(camera)

        def find() -> list[Group]:
            ids: dict[str, None] = {}
            for f in source.walk(start, end):
                if f.start < end:
                    ids.setdefault(f.segment)
            found = [
                g
                for s in ids
                for g in groups(service.index.fragments(s))
                if g.end > start and g.start < end
            ]
            return sorted(found, key=lambda g: g.start)

        found = await service.run(find)
        if not found:
            return web.Response(status=404, text=f"no recording of {camera} in that window\n")
        extra = urlencode(_query(request))

        def url(g: Group, part: str) -> str:
            where = f"masked/{quote(g.segment, safe='/')}/{g.first}-{g.last}/{part}.mp4"
            return where + (f"?{extra}" if extra else "")

        await service.audit(
            decision,
            {
                "protocol": "hls",
                "from": _pdt(start),
                "to": _pdt(end),
                "variant": decision.variant,
            },
        )
        return web.Response(
            text=masked_playlist(found, url),
            content_type="application/vnd.apple.mpegurl",
            headers={"Cache-Control": "private, max-age=10"},
        )

    async def masked_segment(request: web.Request) -> web.StreamResponse:
        camera, seg_id = request.match_info["camera"], request.match_info["segment"]
        first, last = int(request.match_info["first"]), int(request.match_info["last"])
        try:
            segment, decision = await asked(request, camera, seg_id)
        except Refusal as exc:
            return web.Response(status=exc.status, text=exc.reason + "\n", headers=exc.headers)
        if decision is None or not decision.mask_zones:
            return web.Response(
                status=404, text="masked segments are for masked viewers; see the playlist\n"
            )
        if segment is None or segment.camera != camera:
            return web.Response(status=404, text="no such recording\n")
        frags = await service.run(service.index.fragments, seg_id)
        group = next((g for g in groups(frags) if g.first == first), None)
        if group is None or not first <= last <= group.last:
            return web.Response(status=404, text="no such masked segment\n")
        # The playlist's group as it listed it (a file still recording may have grown since).
        end = next(f.end for f in frags if f.seq == last)
        group = Group(seg_id, first, last, group.start, end)
        zones = tuple(Zone(z.id, z.points) for z in decision.mask_zones)
        scratch = tmp_dir / f"hls-{secrets.token_hex(8)}.mp4"
        try:
            burnt = await masked.get(
                (camera, decision.variant, seg_id, first, last),
                lambda: service.run(burn, service.index, segment, group, zones, scratch),
            )
        except Busy:
            return web.Response(
                status=503,
                text="too many masked segments being burnt in; try again\n",
                headers={"Retry-After": RETRY_AFTER},
            )
        except Unreachable as exc:  # a segment on another node's disk: say so, not 404/500
            return web.Response(status=503, text=f"{exc}\n")
        except CutError as exc:
            return web.Response(status=404, text=f"{exc}\n")
        body = burnt.init if request.match_info["part"] == "init" else burnt.media
        if request.match_info["part"] == "media":
            service.metered(
                decision,
                f"hls-{secrets.token_hex(8)}",
                protocol="hls",
                seconds=burnt.seconds,
                bytes_sent=len(burnt.media),
            )
        return web.Response(
            body=body,
            content_type="video/mp4",
            headers={"Cache-Control": "private, max-age=60"},
        )

    async def cleanup(app: web.Application) -> None:
        await masked.close()

    app.router.add_get(HLS_PREFIX + "{camera}/index.m3u8", index)
    app.router.add_get(HLS_PREFIX + "{camera}/file/{segment:.+}/media.mp4", file)
    app.router.add_get(
        HLS_PREFIX + r"{camera}/masked/{segment:.+}/{first:\d+}-{last:\d+}/{part:init|media}.mp4",
        masked_segment,
    )
    app.on_cleanup.append(cleanup)
    return masked
