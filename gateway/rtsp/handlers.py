"""The RTSP methods a server answers, one handler each: OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE,
TEARDOWN and the keep-alives. Whether a method is valid in a session's state is the sans-I/O
table's decision (:mod:`gateway.protocols.rtsp_session`); the handlers do what the new state
means: attach a reader to the hub, detach it, end the session. A publisher's ANNOUNCE and
RECORD are in :mod:`gateway.rtsp.publisher`."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote

from gateway.protocols.rtsp import Request, RtspError
from gateway.protocols.rtsp_headers import (
    RtpInfoEntry,
    format_rtp_info,
    format_transport,
    parse_transport,
    split_uri,
)
from gateway.protocols.rtsp_session import (
    Method,
    SessionMode,
    SessionState,
    TransportMode,
    choose_transport,
    reply_transport,
)
from gateway.rtsp.connection import RtspConnection
from gateway.rtsp.goodbye import reader_dropped
from gateway.rtsp.reply import Handler, Reply, RtspReply
from gateway.rtsp.session import Session
from gateway.stream.hub import PathStream, Reader
from gateway.stream.tracks import Track, describe_sdp

if TYPE_CHECKING:
    from gateway.rtsp.hooks import Grant
    from gateway.rtsp.publisher import Publishing
    from gateway.rtsp.server import RtspServer

PUBLIC_METHODS = ", ".join(Method)
# How long DESCRIBE waits for a configured camera's source to come up before answering 404.
DESCRIBE_WAIT = 5.0


# A track control as clients name them: trackID=0 (live555, ours), streamid=1 (ffmpeg),
# stream=0 (GStreamer), track1.
_CONTROL = re.compile(r"[A-Za-z][A-Za-z0-9_-]*=[A-Za-z0-9_-]*|track[A-Za-z0-9_-]*")


def control_after_query(uri: str) -> str:
    """The URI with a track control that follows its query moved onto the path.

    Clients that build each SETUP URL as the DESCRIBE URL plus '/trackID=N' put the control
    after the query when the URL has one: ``rtsp://gw/cam?token=T/trackID=0``. Read as it
    stands, the token would be ``T/trackID=0`` and the viewer refused 401 at SETUP (a playback
    ``start=.../trackID=0`` would not parse either). Tokens and times never hold a '/', so a
    last '/'-segment shaped like a control is one."""
    base, sep, query = uri.partition("?")
    if not sep:
        return uri
    head, slash, tail = query.rpartition("/")
    if not slash or not _CONTROL.fullmatch(unquote(tail)):
        return uri
    return f"{base.rstrip('/')}/{tail}" + (f"?{head}" if head else "")


def parse_uri(req: Request) -> tuple[str, dict[str, str]]:
    try:
        path, _raw_query, query = split_uri(control_after_query(req.uri))
    except RtspError as exc:
        raise RtspReply(400, exc.reason) from None
    return path, query


def split_track(path: str) -> tuple[str, str]:
    """'cam1/trackID=0' -> ('cam1', 'trackID=0'); 'cam1' -> ('cam1', '')."""
    head, sep, tail = path.rpartition("/")
    if sep and ("=" in tail or tail.startswith("track")):
        return head, tail
    return path, ""


def match_reader_control(tracks: tuple[Track, ...], control: str) -> int | None:
    if not control:
        return 0 if len(tracks) == 1 else None
    key, _, value = control.partition("=")
    if key.lower() in ("trackid", "streamid") and value.isdigit():
        index = int(value)
        return index if index < len(tracks) else None
    return None


class Methods:
    """The method handlers of one server, keyed by method name in :meth:`table`."""

    def __init__(self, server: RtspServer, publishing: Publishing) -> None:
        self.server = server
        self.publishing = publishing

    def table(self) -> dict[str, Handler]:
        return {
            Method.OPTIONS: self.options,
            Method.DESCRIBE: self.describe,
            Method.SETUP: self.setup,
            Method.PLAY: self.play,
            Method.PAUSE: self.pause,
            Method.TEARDOWN: self.teardown,
            Method.GET_PARAMETER: self.keepalive,
            Method.SET_PARAMETER: self.keepalive,
            Method.ANNOUNCE: self.publishing.announce,
            Method.RECORD: self.publishing.record,
        }

    async def options(self, conn: RtspConnection, req: Request) -> Reply:
        return Reply(headers=[("Public", PUBLIC_METHODS)])

    async def keepalive(self, conn: RtspConnection, req: Request) -> Reply:
        session = conn.session_for(req, required=False)
        if session is None:
            return Reply()
        session.protocol.apply(Method(req.method), time.monotonic())
        return Reply(headers=[self.server.session_header(session)])

    async def describe(self, conn: RtspConnection, req: Request) -> Reply:
        server = self.server
        path, query = parse_uri(req)
        if server.playback is not None and server.playback.wants(conn, req, path, query):
            return await server.playback.describe(self, conn, req, path, query)  # type: ignore[no-any-return]
        # Who is asking before whether the camera exists (issue #10.9): an unknown caller gets
        # the same 401 for every path, so it cannot list cameras by their 404s.
        grant = await server.authorize(conn, req, "read", path, query)
        if not server.known_path(path):
            raise RtspReply(404, f"no camera {path!r}")
        stream = server.hub.path(path)
        if not stream.has_source and server.on_demand is not None:
            server.on_demand(path)
        if not await stream.wait_source(DESCRIBE_WAIT):
            raise RtspReply(404, f"camera {path!r} has no source right now")
        stream = await self.routed_stream(conn, path, grant)
        cam = server.config.camera(path.partition("/")[0])
        sdp = describe_sdp(
            stream.tracks,
            name=cam.name if cam and cam.name else path,
            session_id=server.sdp_session_id,
            host=self._local_host(conn),
        )
        base = req.uri.split("?", 1)[0].rstrip("/") + "/"
        return Reply(
            headers=[("Content-Base", base), ("Content-Type", "application/sdp")],
            body=sdp.encode(),
        )

    async def routed_stream(self, conn: RtspConnection, path: str, grant: Grant) -> PathStream:
        """The stream this viewer gets: the camera itself, or (masks) its shared variant."""
        hub = self.server.hub
        if conn.internal:
            return hub.path(path)
        routed = await self.server.access.route(path, grant)
        stream = hub.path(routed)
        if routed != path and not await stream.wait_source(DESCRIBE_WAIT):
            raise RtspReply(503, f"masked variant of {path!r} is not ready")
        return stream

    @staticmethod
    def _local_host(conn: RtspConnection) -> str:
        if conn.transport is None:
            return "0.0.0.0"
        sockname = conn.transport.get_extra_info("sockname")
        return str(sockname[0]) if isinstance(sockname, tuple) else "0.0.0.0"

    async def setup(self, conn: RtspConnection, req: Request) -> Reply:
        server = self.server
        full, query = parse_uri(req)
        session = conn.session_for(req, required=False)
        value = req.headers.get("Transport")
        if value is None:
            raise RtspReply(400, "no Transport header")
        try:
            specs = parse_transport(value)
        except RtspError as exc:
            raise RtspReply(400, exc.reason) from None
        # ``allowed`` is what the access control granted for (``action``, ``camera``); a
        # masked viewer's session is on its variant's path, but its grant is the camera's.
        if any(s.mode.upper() == "RECORD" for s in specs):
            mode = SessionMode.RECORD
            path, track = self.publishing.setup_target(conn, full)
            camera, action = path, "publish"
        elif server.playback is not None and server.playback.wants(
            conn, req, split_track(full)[0], query
        ):
            mode = SessionMode.PLAY
            camera, path, track = await server.playback.setup_target(conn, req, full, query)
            action = "playback"
        else:
            mode = SessionMode.PLAY
            camera, path, track = await self._reader_target(conn, req, full, query)
            action = "read"
        if session is not None:
            if session.path != path:
                raise RtspReply(459, "aggregate operation not allowed across paths")
            if session.mode is not mode:
                raise RtspReply(455, "cannot mix PLAY and RECORD in one session")
            session.protocol.check_setup(track)
        used: set[int] = set()
        for other in conn.sessions.values():
            used |= other.protocol.channels()
        transport = choose_transport(
            specs,
            track,
            used_channels=used,
            udp=server.udp.available,
            secure=conn.secure,
        )
        if session is None:
            session = server.new_session(conn, path, mode)
            session.grant = conn.allowed.get((action, camera))
            if action == "playback":
                server.playback.created(session, camera)
        session.protocol.setup(transport, time.monotonic())
        spec = reply_transport(transport, server.udp.server_ports)
        return Reply(
            headers=[("Transport", format_transport(spec)), server.session_header(session)]
        )

    async def _reader_target(
        self, conn: RtspConnection, req: Request, full: str, query: dict[str, str]
    ) -> tuple[str, str, int]:
        """(camera path, hub path, track index) a reader's SETUP URL names, after the access
        check; the hub path is the camera's own or its masked variant's."""
        server = self.server
        path, control = split_track(full)
        grant = await server.authorize(conn, req, "read", path, query)
        if not server.known_path(path):
            raise RtspReply(404, f"no camera {path!r}")
        if not server.hub.path(path).has_source:
            raise RtspReply(404, f"camera {path!r} has no source right now")
        stream = await self.routed_stream(conn, path, grant)
        track = match_reader_control(stream.tracks, control)
        if track is None:
            raise RtspReply(404, f"no track {control!r}")
        return path, stream.name, track

    async def play(self, conn: RtspConnection, req: Request) -> Reply:
        session = conn.session_for(req)
        assert session is not None
        playback = self.server.playback
        if playback is not None and playback.takes_play(session, req):
            return await playback.play(self, conn, req, session)  # type: ignore[no-any-return]
        session.protocol.next_state(Method.PLAY)
        stream = self.server.hub.path(session.path)
        if not stream.has_source:
            raise RtspReply(404, "camera has no source right now")
        header = self.server.session_header(session)
        if session.state is SessionState.PLAYING:
            return Reply(headers=[header, ("Range", "npt=now-")])
        if max(session.tracks) >= len(stream.tracks):
            raise RtspReply(455, "the camera's tracks changed; DESCRIBE again")
        await self.server.start_access(session)
        positions = stream.start_position()
        base = req.uri.split("?", 1)[0].rstrip("/")
        entries = [
            RtpInfoEntry(f"{base}/trackID={i}", positions[i][0], positions[i][1])
            for i in sorted(session.tracks)
        ]
        return Reply(
            headers=[header, ("Range", "npt=now-"), ("RTP-Info", format_rtp_info(entries))],
            then=lambda: self._attach(conn, session, stream),
        )

    def _attach(self, conn: RtspConnection, session: Session, stream: PathStream) -> None:
        """Runs once the PLAY 200 is written, so media never precedes the response."""
        if session.state is not SessionState.READY or session.id not in conn.sessions:
            return
        ntracks = len(stream.tracks)
        if session.transport is TransportMode.TCP_INTERLEAVED:
            pairs = [
                session.tracks[i].channels if i in session.tracks else None for i in range(ntracks)
            ]
            reader = Reader(
                channels=tuple(pair[0] if pair else None for pair in pairs),
                transport=conn.transport,
                on_kick=lambda why: reader_dropped(self.server, conn, session, why),
            )
            conn.reader = reader
        else:
            ports = tuple(
                session.tracks[i].client_ports if i in session.tracks else None
                for i in range(ntracks)
            )
            reader = Reader(
                channels=tuple(None for _ in range(ntracks)),
                udp=self.server.udp.reader_target(session, conn.peer_ip, ports),
                on_kick=lambda why: reader_dropped(self.server, conn, session, why),
            )
        session.stream = stream
        session.reader = reader
        session.protocol.apply(Method.PLAY, time.monotonic())
        if session.started:
            # Before add_reader: the GOP burst it writes at once is delivered bytes too.
            self.server.access.attached(session)
        stream.add_reader(reader)

    async def pause(self, conn: RtspConnection, req: Request) -> Reply:
        session = conn.session_for(req)
        assert session is not None
        if self.server.playback is not None and self.server.playback.owns(session):
            self.server.playback.paused(session)
        session.protocol.next_state(Method.PAUSE)
        if session.state is SessionState.PLAYING and session.reader and session.stream:
            session.stream.remove_reader(session.reader)
            if session.started:
                self.server.access.paused(session)
        session.protocol.apply(Method.PAUSE, time.monotonic())
        return Reply(headers=[self.server.session_header(session)])

    async def teardown(self, conn: RtspConnection, req: Request) -> Reply:
        session = conn.session_for(req)
        assert session is not None
        session.protocol.apply(Method.TEARDOWN, time.monotonic())
        self.server.end_session(session, "teardown")
        return Reply()
