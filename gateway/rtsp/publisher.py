"""Publishers: an encoder or a partner's camera ANNOUNCEs its SDP to a pushed camera's path,
SETUPs its tracks for RECORD and sends media, interleaved or over UDP, into the hub.

A path has one publisher at a time. Whether a newcomer replaces it or is refused is the
camera's ``override_publisher`` rule (as MediaMTX's ``overridePublisher``): replacing suits a
camera whose encoder reconnects after a network blip before the gateway notices the old
connection is dead; refusing suits a path a partner must not be able to take over.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.protocols.rtsp import Request
from gateway.protocols.rtsp_session import Method, SessionState
from gateway.rtsp.connection import RtspConnection
from gateway.rtsp.handlers import parse_uri, split_track
from gateway.rtsp.reply import Reply, RtspReply
from gateway.rtsp.session import Session
from gateway.stream.hub import PathStream
from gateway.stream.tracks import Track, TrackError, tracks_from_sdp

if TYPE_CHECKING:
    from gateway.rtsp.server import RtspServer

log = logging.getLogger(__name__)


def match_control(tracks: tuple[Track, ...], control: str) -> int | None:
    """Which announced track a publisher's SETUP URL names, by the SDP's control attribute."""
    if not control:
        return 0 if len(tracks) == 1 or tracks[0].control in (None, "*") else None
    for t in tracks:
        c = t.control or ""
        if c == control or c.rstrip("/").endswith("/" + control):
            return t.index
    return None


class Publishing:
    def __init__(self, server: RtspServer) -> None:
        self.server = server

    def _check_free(self, conn: RtspConnection, path: str) -> None:
        """Refuse a second publisher of a camera whose rule keeps the current one."""
        cam = self.server.config.camera(path)
        if cam is None or cam.override_publisher:
            return
        current = self.server.hub.path(path).source_id
        if current is None or any(current == f"push:{sid}" for sid in conn.sessions):
            return
        raise RtspReply(455, f"camera {path!r} already has a publisher (override_publisher off)")

    async def announce(self, conn: RtspConnection, req: Request) -> Reply:
        path, query = parse_uri(req)
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            raise RtspReply(415, "ANNOUNCE needs an application/sdp body")
        # Who is publishing before whether the camera exists (issue #10.9).
        await self.server.authorize(conn, req, "publish", path, query)
        cam = self.server.config.camera(path)
        if cam is None:
            raise RtspReply(404, f"no camera {path!r}")
        if not cam.is_push:
            raise RtspReply(403, f"camera {path!r} is pulled, not published to")
        self._check_free(conn, path)
        try:
            tracks, sd = tracks_from_sdp(req.body)
        except TrackError as exc:
            raise RtspReply(400, str(exc)) from None
        attrs = tuple(
            f"a={k}:{v}" if v is not None else f"a={k}"
            for k, v in sd.attributes
            if k.lower() not in ("control", "range", "tool")
        )
        conn.announced[path] = (tracks, attrs)
        return Reply()

    def setup_target(self, conn: RtspConnection, full: str) -> tuple[str, int]:
        """(path, track index) a publisher's SETUP URL names among what it ANNOUNCEd."""
        path, control = split_track(full)
        announced = conn.announced.get(path)
        if announced is None:
            # The announce may have named the whole URL as the path (no control suffix).
            announced = conn.announced.get(full)
            if announced is not None:
                path, control = full, ""
        if announced is None:
            raise RtspReply(455, "SETUP for RECORD needs a prior ANNOUNCE of this path")
        track = match_control(announced[0], control)
        if track is None:
            raise RtspReply(404, f"no track {control!r}")
        return path, track

    async def record(self, conn: RtspConnection, req: Request) -> Reply:
        session = conn.session_for(req)
        assert session is not None
        if session.protocol.next_state(Method.RECORD) is session.state:
            return Reply(headers=[self.server.session_header(session)])
        self._check_free(conn, session.path)
        await self.server.start_access(session)
        stream = self.server.hub.path(session.path)
        return Reply(
            headers=[self.server.session_header(session)],
            then=lambda: self._start(conn, session, stream),
        )

    def _start(self, conn: RtspConnection, session: Session, stream: PathStream) -> None:
        """Runs once the RECORD 200 is written: the publisher's media is the path's source."""
        if session.state is not SessionState.READY or session.id not in conn.sessions:
            return
        tracks, attrs = conn.announced[session.path]
        source_id = f"push:{session.id}"
        udp = self.server.udp

        def replaced() -> None:
            # Stop routing the old publisher's packets at once, then let it go.
            for ch in [ch for ch, t in conn.channels.items() if t[0] is stream]:
                del conn.channels[ch]
            udp.forget_publisher(session)
            session.source_id = None
            log.info("%s: publisher of %s replaced by a newer one", conn.peer, session.path)
            conn.close()

        session.stream = stream
        stream.attach_source(source_id, tracks, attrs, on_replaced=replaced)
        session.source_id = source_id
        session.protocol.apply(Method.RECORD, time.monotonic())
        for index, setup in session.tracks.items():
            if setup.channels is not None:
                conn.channels[setup.channels[0]] = (stream, index, False)
                conn.channels[setup.channels[1]] = (stream, index, True)
            elif setup.client_ports is not None:
                udp.add_publisher(session, conn.peer_ip, setup.client_ports, stream, index)
        log.info("%s publishing %s", conn.peer, session.path)
