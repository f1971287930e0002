"""Playback on the camera's own RTSP URL, inside the RTSP server (same connections, limits,
deadlines and hostile-input handling as live; the server calls in through small hooks).

A request is playback when it asks for recorded media:

- the URL form, for clients that cannot send a clock range (ffmpeg, VLC):
  ``rtsp://gw/cam1?token=...&start=2026-12-01T10:15:00Z[&end=...|&duration=s]``, remembered
  by the connection for its SETUPs (whose URLs lose the query);
- ``Require: onvif-replay`` (ONVIF replay clients);
- a first PLAY with ``Range: clock=...`` on a session set up live (GStreamer's rtspsrc in
  ONVIF mode, VMSs): the session turns into a playback before any media flows.

Each playback session gets a private hub path fed from the recording
(:class:`~gateway.playback.feed.PlaybackFeed`); its viewer is an ordinary hub reader of it, or
of its masked variant for a masked tenant (the live transcoder, burning in the same zones).
Admission, caps, the audit entry (``playback``, with its range and purpose), metering (seconds
of recording served) and the re-check are the live sessions' own (:mod:`gateway.live`).

A recording with sound is described with two tracks, the pictures and the camera's AAC (the
same ``mpeg4-generic`` SDP the live path passes on), both set up in one session on its private
path. A masked tenant is described the pictures only: its viewer reads the masked variant,
whose transcoder carries no sound, and an SDP must not offer what never comes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.playback.feed import PlaybackFeed, recorded_tracks
from gateway.playback.media import RecordedFormat, Unreachable
from gateway.playback.recorded import RecordedSource
from gateway.playback.service import PlaybackService, Viewer
from gateway.playback.state import Pacer, StateError
from gateway.protocols.rtsp import Request, RtspError
from gateway.protocols.rtsp_headers import RtpInfoEntry, format_rtp_info
from gateway.protocols.rtsp_replay import (
    ONVIF_REPLAY,
    format_clock,
    format_clock_range,
    format_scale,
    parse_play,
    parse_url_range,
)
from gateway.protocols.rtsp_session import Method, SessionState
from gateway.recording.audio import aac_format
from gateway.rtsp.handlers import match_reader_control, parse_uri, split_track
from gateway.rtsp.reply import Reply, RtspReply
from gateway.stream.tracks import Track, describe_sdp
from tenants.policy import Decision

if TYPE_CHECKING:
    from gateway.rtsp.connection import RtspConnection
    from gateway.rtsp.handlers import Methods
    from gateway.rtsp.server import RtspServer
    from gateway.rtsp.session import Session

__all__ = ["RtspPlayback"]

log = logging.getLogger(__name__)

# How long a PLAY waits for its first recorded frame before answering (so RTP-Info and Range
# name what is really sent); a seek on a 2-core box takes tens of milliseconds.
FIRST_FRAME_WAIT = 5.0
VARIANT_WAIT = 10.0
MAX_RANGES = 50  # seeks kept in a session's audit detail


@dataclass
class _Intent:
    """What a connection's DESCRIBE asked for one camera, for its SETUPs."""

    start: datetime | None
    end: datetime | None


@dataclass
class _Playback:
    camera: str
    private: str  # the hub path the recording is fed into
    pacer: Pacer
    feed: PlaybackFeed | None = None
    ranges: list[str] = field(default_factory=list)
    # A session set up on the live camera's tracks (then a PLAY with a clock Range): those
    # tracks, which the recording's sound must match to be sent in the live audio's place.
    live_tracks: tuple[Track, ...] | None = None


def _onvif(req: Request) -> bool:
    return any(
        tag.strip().lower() == ONVIF_REPLAY
        for value in req.headers.get_all("Require")
        for tag in value.split(",")
    )


def _status(exc: RtspError | StateError) -> RtspReply:
    headers = []
    if exc.status == 551:
        headers = [("Unsupported", exc.reason.partition(": ")[2] or ONVIF_REPLAY)]
    return RtspReply(exc.status, exc.reason, headers)


def _sound(decision: Decision | None) -> bool:
    """Whether this viewer is sent the recording's sound: not a masked one (see above)."""
    return decision is None or not decision.mask_zones


async def _format_at(source: RecordedSource, when: datetime | None) -> RecordedFormat | None:
    """The recording's format at ``when``; a 503 with the reason if its file is not here."""
    try:
        return await source.run(source.format_at, when)
    except Unreachable as exc:
        raise RtspReply(503, str(exc)) from None


class RtspPlayback:
    def __init__(self, server: RtspServer, service: PlaybackService) -> None:
        self.server = server
        self.service = service
        self.intents: weakref.WeakKeyDictionary[RtspConnection, dict[str, _Intent]] = (
            weakref.WeakKeyDictionary()
        )
        self.sessions: dict[str, _Playback] = {}
        self.served_seconds = 0.0  # recording served by the sessions that have ended
        self._tasks: set[asyncio.Task[None]] = set()
        server.playback = self

    # ---- which requests are playback ----------------------------------------------------------

    def wants(self, conn: RtspConnection, req: Request, camera: str, query: dict[str, str]) -> bool:
        if "~" in camera:
            return False
        return "start" in query or _onvif(req) or camera in self.intents.get(conn, {})

    def owns(self, session: Session) -> bool:
        return session.id in self.sessions

    def takes_play(self, session: Session, req: Request) -> bool:
        """A playback session's PLAY, or a live session's first PLAY asking for a clock time."""
        if session.id in self.sessions:
            return True
        value = req.headers.get("Range") or ""
        return (
            not session.started
            and session.state is SessionState.READY
            and (value.strip().lower().startswith("clock") or _onvif(req))
        )

    # ---- DESCRIBE and SETUP -------------------------------------------------------------------

    def _intent(self, conn: RtspConnection, camera: str, query: dict[str, str]) -> _Intent:
        try:
            asked = parse_url_range(query)
        except RtspError as exc:
            raise RtspReply(exc.status, exc.reason) from None
        if asked is None:
            known = self.intents.get(conn, {}).get(camera)
            return known or _Intent(None, None)
        return _Intent(*asked)

    async def _authorize(
        self,
        conn: RtspConnection,
        req: Request,
        camera: str,
        query: dict[str, str],
        start: datetime | None,
    ) -> Decision | None:
        age = None if start is None else max(0.0, (self.service.clock() - start).total_seconds())
        grant = await self.server.authorize(
            conn, req, "playback", camera, query, playback_age_s=age
        )
        decision = grant if isinstance(grant, Decision) else None
        earliest = self.service.earliest(decision)
        if decision is not None and start is not None and earliest is not None and start < earliest:
            # The connection's cached decision (a request without credentials) is held to
            # the grant's age too.
            limit = self.service.max_age(decision)
            seconds = int(limit.total_seconds()) if limit is not None else 0
            reason = f"grant {decision.grant_id}: footage older than {seconds}s"
            await self.service.refused(
                decision, self._viewer(conn, req, query), camera, status=403, reason=reason
            )
            raise RtspReply(403, reason)
        return decision

    @staticmethod
    def _viewer(conn: RtspConnection, req: Request, query: dict[str, str]) -> Viewer:
        return Viewer(
            "rtsp", conn.peer_ip, purpose=query.get("purpose") or req.headers.get("X-Purpose")
        )

    async def describe(
        self, methods: Methods, conn: RtspConnection, req: Request, path: str, query: dict[str, str]
    ) -> Reply:
        camera = path
        intent = self._intent(conn, camera, query)
        # Who is asking before whether the camera or its recording exists.
        decision = await self._authorize(conn, req, camera, query, intent.start)
        source = self.service.source(camera)
        fmt = await _format_at(source, intent.start)
        if fmt is None:
            raise RtspReply(404, f"no recording of {camera!r}")
        self.intents.setdefault(conn, {})[camera] = intent
        sdp = describe_sdp(
            recorded_tracks(fmt, sound=_sound(decision)),
            name=f"{camera} (recorded)",
            session_id=self.server.sdp_session_id,
            host=methods._local_host(conn),
        )
        if intent.start is not None:
            sdp = sdp.replace(
                "a=range:npt=now-", f"a=range:{format_clock_range(intent.start, intent.end)}"
            )
        base = req.uri.split("?", 1)[0].rstrip("/") + "/"
        return Reply(
            headers=[("Content-Base", base), ("Content-Type", "application/sdp")],
            body=sdp.encode(),
        )

    async def setup_target(
        self, conn: RtspConnection, req: Request, full: str, query: dict[str, str]
    ) -> tuple[str, str, int]:
        camera, control = split_track(full)
        intent = self._intent(conn, camera, query)
        decision = await self._authorize(conn, req, camera, query, intent.start)
        self.intents.setdefault(conn, {})[camera] = intent
        source = self.service.source(camera)
        fmt = await _format_at(source, intent.start)
        if fmt is None:
            raise RtspReply(404, f"no recording of {camera!r}")
        index = match_reader_control(recorded_tracks(fmt, sound=_sound(decision)), control)
        if index is None:
            raise RtspReply(404, f"no track {control!r}")
        session = conn.session_for(req, required=False)
        pb = self.sessions.get(session.id) if session is not None else None
        if pb is not None and pb.camera == camera:
            return camera, pb.private, index  # the session's next track: the same path
        private = (
            f"{camera}~playback-{id(conn):x}-{len(self.sessions)}-{time.monotonic_ns() % 10**9}"
        )
        return camera, private, index

    def created(self, session: Session, camera: str) -> None:
        """A playback SETUP made this session (its path is the private one)."""
        intent = self.intents.get(session.conn, {}).get(camera) or _Intent(None, None)
        origin = intent.start or self.service.clock()
        self.sessions[session.id] = _Playback(
            camera, session.path, Pacer(origin=origin, end=intent.end)
        )

    def _convert(self, session: Session) -> _Playback:
        """A live-set-up session's first PLAY asks for a clock time: play the recording."""
        camera = session.path.partition("~")[0]
        private = f"{camera}~playback-{session.id}"
        pb = _Playback(camera, private, Pacer(origin=self.service.clock()))
        pb.live_tracks = self.server.hub.path(session.path).tracks
        self.sessions[session.id] = pb
        session.path = private
        return pb

    # ---- PLAY, PAUSE, the end -----------------------------------------------------------------

    async def play(
        self, methods: Methods, conn: RtspConnection, req: Request, session: Session
    ) -> Reply:
        try:
            asked = parse_play(req.headers)
        except RtspError as exc:
            raise _status(exc) from None
        pb = self.sessions.get(session.id) or self._convert(session)
        session.protocol.next_state(Method.PLAY)
        _path, query = parse_uri(req)
        try:
            cseq_text = req.cseq or ""
            cseq = int(cseq_text) if cseq_text.isdigit() else 0
            position = pb.pacer.play(asked, time.monotonic(), cseq)
        except StateError as exc:
            raise _status(exc) from None
        start = await self._first_recorded(pb, position.start)
        decision = await self._authorize(conn, req, pb.camera, query, start)
        if decision is not None:
            session.grant = decision
        stream = await self._stream(session, pb, decision)
        if (
            session.state is SessionState.PLAYING
            and session.reader is not None
            and session.stream is not None
        ):
            # A seek while playing: the reader comes back at the new key frame.
            session.stream.remove_reader(session.reader)
            if session.started:
                self.server.access.paused(session)
            session.protocol.apply(Method.PAUSE, time.monotonic())
        if len(pb.ranges) < MAX_RANGES:
            pb.ranges.append(format_clock_range(position.start, position.end))
        session.detail.update(
            {"from": format_clock(position.start), "ranges": pb.ranges, "scale": position.scale}
        )
        feed = pb.feed
        assert feed is not None
        session.media_clock = lambda: feed.served_seconds
        if position.start != start:
            position = dataclasses.replace(position, start=start)
            pb.pacer.position = position
        feed.play(position)
        await self.server.start_access(session)
        try:
            async with asyncio.timeout(FIRST_FRAME_WAIT):
                await feed.first.wait()
        except TimeoutError:
            pass
        if feed.first_sent is None and feed.task is not None and feed.task.done():
            raise RtspReply(
                404, f"nothing recorded of {pb.camera} from {format_clock(position.start)}"
            )
        if stream.name != pb.private and not await stream.wait_source(VARIANT_WAIT):
            raise RtspReply(503, "masked playback is not ready")
        first = feed.first_sent or position.start
        if asked.npt_start is not None or (asked.start is None and not asked.onvif):
            npt = max(0.0, (first - pb.pacer.origin).total_seconds())
            range_value = f"npt={npt:.3f}-"
        else:
            range_value = format_clock_range(first, position.end)
        positions = stream.start_position()
        if stream.name == pb.private and feed.start_rtp:
            # Each track's (seq, rtptime) at the reply's Range start, as the feed placed them: a
            # track whose first packet is still waiting in the hub (sound before the next
            # picture) is not in its cache yet, and a player drops packets before seq.
            positions = list(feed.start_rtp)
        base = req.uri.split("?", 1)[0].rstrip("/")
        rtp_info = format_rtp_info(
            RtpInfoEntry(f"{base}/trackID={i}", positions[i][0], positions[i][1])
            for i in sorted(session.tracks)
            if i < len(positions)
        )
        headers = [
            self.server.session_header(session),
            ("Range", range_value),
            ("Scale", format_scale(position.scale)),
            ("RTP-Info", rtp_info),
        ]
        if asked.onvif:
            headers.append(("Rate-Control", "yes" if position.rate_control else "no"))
        return Reply(headers=headers, then=lambda: methods._attach(conn, session, stream))

    async def _first_recorded(self, pb: _Playback, start: datetime) -> datetime:
        """An instant before any recording (rtspsrc's ``clock=19000101T000000Z-``: from the
        beginning) is the first recorded one, so its age is the recording's, not 1900's."""
        if start.year > 1990:
            return start
        spans = await self.service.run(
            self.service.index.spans, pb.camera, start, self.service.clock()
        )
        return spans[0].start if spans else start

    async def _stream(self, session: Session, pb: _Playback, decision: Decision | None) -> Any:
        """The hub path this viewer reads: the private one or its masked variant."""
        if pb.feed is None:
            source = self.service.source(pb.camera)
            fmt = await _format_at(source, pb.pacer.origin)
            if fmt is None:
                raise RtspReply(404, f"no recording of {pb.camera!r}")
            stream_in = self.server.hub.path(pb.private)

            def congested() -> bool:
                reader = session.reader
                return reader is not None and reader.paused_since is not None

            tracks = recorded_tracks(fmt, sound=_sound(decision) and self._fits(pb, fmt))
            pb.feed = PlaybackFeed(
                source,
                stream_in,
                tracks[0],
                pb.pacer,
                audio=fmt.audio if len(tracks) > 1 else None,
                onvif=True,
                congested=congested,
            )
        served = await self.server.access.route(
            pb.private, decision if decision is not None else True
        )
        session.path = served
        return self.server.hub.path(served)

    @staticmethod
    def _fits(pb: _Playback, fmt: RecordedFormat) -> bool:
        """A session set up live gets the recording's sound only where its live second track
        was that same AAC (its client set it up, and decodes it, as described then)."""
        if pb.live_tracks is None:
            return True
        live = aac_format(pb.live_tracks[1]) if len(pb.live_tracks) > 1 else None
        return live is not None and fmt.audio is not None and live.config == fmt.audio.config

    def paused(self, session: Session) -> None:
        pb = self.sessions.get(session.id)
        if pb is None:
            return
        try:
            pb.pacer.pause()
        except StateError as exc:
            raise _status(exc) from None
        if pb.feed is not None:
            pb.feed.cancel()

    def ended(self, session: Session) -> None:
        pb = self.sessions.pop(session.id, None)
        if pb is None:
            return
        if pb.feed is not None:
            self.served_seconds += pb.feed.served_seconds
        task = asyncio.get_running_loop().create_task(self._close(pb, session.path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, pb: _Playback, served: str) -> None:
        if pb.feed is not None:
            await pb.feed.stop()
        hub = self.server.hub
        hub.paths.pop(pb.private, None)
        if served != pb.private:
            # Its masked variant's transcoder stops when its linger runs out; then its path goes.
            linger = getattr(getattr(self.server.access, "sessions", None), "variants", None)
            await asyncio.sleep((linger.linger if linger is not None else 0) + 1)
            stream = hub.paths.get(served)
            if stream is not None and not stream.readers and not stream.has_source:
                hub.paths.pop(served, None)

    async def stop(self) -> None:
        for sid in list(self.sessions):
            pb = self.sessions.pop(sid)
            if pb.feed is not None:
                await pb.feed.stop()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)
