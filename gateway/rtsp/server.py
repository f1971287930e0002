"""RTSP 1.0 server: readers (PLAY over TCP interleaved or UDP) and publishers (ANNOUNCE/RECORD).

The asyncio layer only: bytes come in, ``RtspParser`` turns them into events, handlers answer
and move packets between connections and the hub. Each connection processes its requests in
order on one task; interleaved RTP from a publisher takes a synchronous fast path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config
from gateway.protocols.rtsp import (
    InterleavedFrame,
    Request,
    Response,
    RtpInfoEntry,
    RtspError,
    RtspParser,
    TransportSpec,
    format_response,
    format_rtp_info,
    format_session,
    format_transport,
    parse_session,
    parse_transport,
    split_uri,
)
from gateway.stream.hub import PathStream, Reader, StreamHub, UdpTarget
from gateway.stream.tracks import Track, TrackError, describe_sdp, tracks_from_sdp
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SERVER_NAME = "feedgate"
PUBLIC_METHODS = (
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER, "
    "ANNOUNCE, RECORD"
)
# Requests (and frames behind them) a connection may have waiting before we stop reading it.
MAX_PENDING_EVENTS = 256
# How long DESCRIBE waits for a configured camera's source to come up before answering 404.
DESCRIBE_WAIT = 5.0


class RtspReply(Exception):
    """Raised by a handler to answer with an error status."""

    def __init__(self, status: int, reason: str = "", headers: list[tuple[str, str]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


@dataclass
class AccessCheck:
    """What an entry point asks the policy before serving a request."""

    action: str  # "read" or "publish"
    path: str
    request: Request
    peer: str
    query: dict[str, str]
    secure: bool = False  # RTSPS: credentials travel inside TLS


# A bare authorizer: return None to allow, or an RtspReply to refuse.
Authorizer = Callable[[AccessCheck], Awaitable[RtspReply | None]]


async def allow_all(check: AccessCheck) -> RtspReply | None:
    return None


class AccessControl:
    """The server's one policy hook. ``check`` answers every DESCRIBE/SETUP/ANNOUNCE with a
    refusal or an opaque grant (kept on the session); ``started`` may still refuse a PLAY or
    RECORD (a concurrency cap) and ``ended`` is told when that session ends. This base class
    wraps a bare authorizer; gateway.rtsp.access.PolicyAccess is the tenant policy."""

    def __init__(self, authorizer: Authorizer = allow_all) -> None:
        self.authorizer = authorizer

    async def check(self, check: AccessCheck) -> RtspReply | object:
        refusal = await self.authorizer(check)
        return refusal if refusal is not None else True

    async def started(self, session: Session) -> RtspReply | None:
        """Admit the PLAY/RECORD (it may await blocking work done elsewhere), or refuse it."""
        return None

    def attached(self, session: Session) -> None:
        """The session's hub reader exists now (it is created after the PLAY reply)."""
        return None

    def paused(self, session: Session) -> None:
        """The session was PAUSEd: it receives nothing until the next PLAY."""
        return None

    async def route(self, path: str, grant: object) -> str:
        """The hub path to serve for this grant: the camera's own, or a derived variant."""
        return path

    def ended(self, session: Session, reason: str) -> None:
        return None


@dataclass
class TrackSetup:
    track: int
    transport: TransportSpec
    channels: tuple[int, int] | None = None  # TCP interleaved (rtp, rtcp)
    client_ports: tuple[int, int] | None = None  # UDP


@dataclass
class Session:
    id: str
    conn: RtspConnection
    path: str
    mode: str  # "play" or "record"
    tracks: dict[int, TrackSetup] = field(default_factory=dict)
    state: str = "ready"  # ready, playing, recording
    reader: Reader | None = None
    stream: PathStream | None = None
    created: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.monotonic)
    source_id: str | None = None
    grant: object = None  # what the access control allowed this session with
    started: bool = False  # access control was told of its PLAY/RECORD

    def touch(self) -> None:
        self.last_activity = time.monotonic()


class RtspConnection(asyncio.Protocol):
    def __init__(self, server: RtspServer, *, internal: bool = False, secure: bool = False) -> None:
        self.server = server
        # Connections on the private Unix socket come from this gateway's own worker processes.
        self.internal = internal
        # RTSPS: media must stay inside the TLS stream (interleaved), never go out over UDP.
        self.secure = secure
        self.parser = RtspParser()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_ip = ""
        self.sessions: dict[str, Session] = {}
        self._pending: collections.deque[Request | InterleavedFrame] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._closed = False
        # For a publishing connection: interleaved channel -> (stream, track, is_rtcp).
        self._channels: dict[int, tuple[PathStream, int, bool]] = {}
        self._announced: dict[str, tuple[tuple[Track, ...], tuple[str, ...]]] = {}
        # (action, path) -> what the access control allowed on this connection.
        self.allowed: dict[tuple[str, str], object] = {}
        self._reader: Reader | None = None  # the playing reader's flow-control target
        self.frames_ignored = 0

    # ---- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer_ip = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        limit = self.server.config.rtsp.reader_queue_bytes
        transport.set_write_buffer_limits(high=limit, low=limit // 2)
        self.server.connections.add(self)
        if len(self.server.connections) > self.server.config.rtsp.max_connections:
            log.warning("connection limit reached; refusing %s", self.peer)
            transport.write(format_response(503, [("CSeq", "0")]))
            self.close()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except RtspError as exc:
            self._protocol_error(exc)
            return
        for event in events:
            if isinstance(event, InterleavedFrame) and not self._pending:
                self._on_frame(event)
            elif isinstance(event, Response):
                continue  # we send no requests; a stray response is harmless
            else:
                self._pending.append(event)
        if self._pending:
            if len(self._pending) > MAX_PENDING_EVENTS and not self._reading_paused:
                self._reading_paused = True
                assert self.transport is not None
                self.transport.pause_reading()
            if self._worker is None or self._worker.done():
                self._worker = asyncio.get_running_loop().create_task(self._drain())

    def pause_writing(self) -> None:
        if self._reader is not None:
            self._reader.pause_writing()

    def resume_writing(self) -> None:
        if self._reader is not None:
            self._reader.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        for session in list(self.sessions.values()):
            self.server.end_session(session, "connection closed")
        self.sessions.clear()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    # ---- request processing --------------------------------------------------------------------

    async def _drain(self) -> None:
        while self._pending and not self._closed:
            event = self._pending.popleft()
            if isinstance(event, InterleavedFrame):
                self._on_frame(event)
                continue
            await self._handle(event)
            if self._reading_paused and len(self._pending) < MAX_PENDING_EVENTS // 2:
                self._reading_paused = False
                if self.transport is not None and not self._closed:
                    self.transport.resume_reading()

    async def _handle(self, req: Request) -> None:
        cseq = req.cseq or "0"
        headers: list[tuple[str, str]] = [("CSeq", cseq), ("Server", SERVER_NAME)]
        if req.method == "ANNOUNCE" and self.server.handoff is not None:
            # Publishers belong to the primary worker, which owns every camera's source.
            await self.server.handoff(self, req)
            return
        try:
            handler = self.server.handlers.get(req.method)
            if handler is None:
                raise RtspReply(501, f"method {req.method} not implemented")
            status, extra, body = await handler(self, req)
        except RtspReply as reply:
            if reply.status >= 500:
                log.warning(
                    "%s %s %s -> %d %s", self.peer, req.method, req.uri, reply.status, reply.reason
                )
            else:
                log.info("%s %s -> %d %s", self.peer, req.method, reply.status, reply.reason)
            self.write(format_response(reply.status, headers + reply.headers))
            return
        except Exception:
            log.exception("%s: %s failed", self.peer, req.method)
            self.write(format_response(500, headers))
            return
        self.write(format_response(status, headers + extra, body))
        if status == 200 and req.method in ("PLAY", "RECORD"):
            self.server.after_start(self, req)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def _protocol_error(self, exc: RtspError) -> None:
        log.info("%s: protocol error %d %s; closing", self.peer, exc.status, exc.reason)
        self.server.counters["protocol_errors"] += 1
        headers = [("CSeq", exc.cseq or "0"), ("Server", SERVER_NAME), ("Connection", "close")]
        self.write(format_response(exc.status, headers))
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closed = True
            self.transport.abort()

    # ---- interleaved frames --------------------------------------------------------------------

    def _on_frame(self, frame: InterleavedFrame) -> None:
        target = self._channels.get(frame.channel)
        if target is not None:
            # A publisher's media is its proof of life: encoders rarely send keep-alives.
            for session in self.sessions.values():
                session.touch()
            stream, track, is_rtcp = target
            if is_rtcp:
                stream.on_rtcp(track, frame.payload)
            else:
                stream.on_rtp(track, frame.payload)
            return
        # A reader's RTCP receiver report: proof of life for its session.
        for session in self.sessions.values():
            session.touch()
        self.frames_ignored += 1

    def session_for(self, req: Request, required: bool = True) -> Session | None:
        value = req.headers.get("Session")
        if value is None:
            if required:
                raise RtspReply(454, "no Session header")
            return None
        try:
            sid, _timeout = parse_session(value)
        except RtspError as exc:
            raise RtspReply(400, exc.reason) from None
        session = self.sessions.get(sid)
        if session is None:
            # Unknown here: either never existed or belongs to another connection. Both 454,
            # so a replayed id on a new connection cannot take over someone's session.
            raise RtspReply(454, "session not found on this connection")
        session.touch()
        return session


HandlerResult = tuple[int, list[tuple[str, str]], bytes]
Handler = Callable[[RtspConnection, Request], Awaitable[HandlerResult]]


def _split_track(path: str) -> tuple[str, str]:
    """'cam1/trackID=0' -> ('cam1', 'trackID=0'); 'cam1' -> ('cam1', '')."""
    head, sep, tail = path.rpartition("/")
    if sep and ("=" in tail or tail.startswith("track")):
        return head, tail
    return path, ""


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: RtspServer, rtcp: bool) -> None:
        self.server = server
        self.rtcp = rtcp

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        key = (str(addr[0]), int(addr[1]))
        target = self.server.udp_sources.get(key)
        if target is not None:
            stream, track, publisher = target
            publisher.touch()
            if self.rtcp:
                stream.on_rtcp(track, data)
            else:
                stream.on_rtp(track, data)
            return
        reader = self.server.udp_readers.get(key)
        if reader is not None:
            reader.touch()


class RtspServer:
    """Listens, owns every session, and routes media between connections and the hub."""

    def __init__(
        self,
        config: Config,
        hub: StreamHub,
        *,
        authorizer: Authorizer = allow_all,
        access: AccessControl | None = None,
        on_demand: Callable[[str], None] | None = None,
        reuse_port: bool = False,
        internal_path: str | None = None,
        handoff: Callable[[RtspConnection, Request], Awaitable[None]] | None = None,
        udp_port: int | None = None,
    ) -> None:
        self.config = config
        self.access = access if access is not None else AccessControl(authorizer)
        self.reuse_port = reuse_port
        self.internal_path = internal_path
        self.handoff = handoff
        self.udp_port = config.rtsp.rtp_port if udp_port is None else udp_port
        self.hub = hub
        self.access = access if access is not None else AccessControl(authorizer)
        self.on_demand = on_demand
        self.sessions: dict[str, Session] = {}
        self.connections: set[RtspConnection] = set()
        self.counters: collections.Counter[str] = collections.Counter()
        self.udp_rtp: asyncio.DatagramTransport | None = None
        self.udp_rtcp: asyncio.DatagramTransport | None = None
        # UDP routing: (ip, port) -> publisher track, or reader session (its RTCP port).
        self.udp_sources: dict[tuple[str, int], tuple[PathStream, int, Session]] = {}
        self.udp_readers: dict[tuple[str, int], Session] = {}
        self._servers: list[asyncio.Server] = []
        self._tls_server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sdp_session_id = secrets.randbits(40)
        self.handlers: dict[str, Handler] = {
            "OPTIONS": RtspServer._options,
            "DESCRIBE": self._describe,
            "SETUP": self._setup,
            "PLAY": self._play,
            "PAUSE": self._pause,
            "TEARDOWN": self._teardown,
            "GET_PARAMETER": self._keepalive,
            "SET_PARAMETER": self._keepalive,
            "ANNOUNCE": self._announce,
            "RECORD": self._record,
        }

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        loop = asyncio.get_running_loop()
        rc = self.config.rtsp
        if sock is not None:
            server = await loop.create_server(lambda: RtspConnection(self), sock=sock)
        else:
            server = await loop.create_server(
                lambda: RtspConnection(self),
                rc.host,
                rc.port,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
                backlog=4096,
            )
        self._servers.append(server)
        if rc.tls_cert and self.handoff is None:
            # Secondaries hand publishers to the primary by passing the socket, which a TLS
            # session cannot survive; so RTSPS is the primary's (or the only process's).
            from gateway.tls import server_ssl_context

            self._tls_server = await loop.create_server(
                lambda: RtspConnection(self, secure=True),
                rc.host,
                rc.tls_port,
                ssl=server_ssl_context(rc.tls_cert, rc.tls_key),
                ssl_handshake_timeout=10.0,
                reuse_address=True,
                backlog=4096,
            )
            self._servers.append(self._tls_server)
        if self.internal_path is not None:
            internal = await loop.create_unix_server(
                lambda: RtspConnection(self, internal=True), self.internal_path, backlog=256
            )
            os.chmod(self.internal_path, 0o600)
            self._servers.append(internal)
        if self.udp_port:
            self.udp_rtp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, rtcp=False), local_addr=(rc.host, self.udp_port)
            )
            self.udp_rtcp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, rtcp=True), local_addr=(rc.host, self.udp_port + 1)
            )
        self._tasks.append(loop.create_task(self._expire_sessions()))
        self._tasks.append(loop.create_task(self.hub.run_reaper()))

    @property
    def port(self) -> int:
        sock = self._servers[0].sockets[0]
        return int(sock.getsockname()[1])

    @property
    def tls_port(self) -> int | None:
        """The RTSPS port, when this process serves RTSPS."""
        if self._tls_server is None:
            return None
        return int(self._tls_server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        await cancel_and_wait(*self._tasks)
        for t in (self.udp_rtp, self.udp_rtcp):
            if t is not None:
                t.close()

    async def _expire_sessions(self) -> None:
        timeout = self.config.rtsp.session_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.last_activity > timeout:
                    log.info("session %s on %s timed out", session.id, session.path)
                    self.counters["sessions_timed_out"] += 1
                    conn = session.conn
                    self.end_session(session, "timeout")
                    conn.sessions.pop(session.id, None)
                    if not conn.sessions and session.state != "ready":
                        conn.close()

    # ---- sessions ------------------------------------------------------------------------------

    def _new_session(self, conn: RtspConnection, path: str, mode: str) -> Session:
        sid = secrets.token_hex(8)
        session = Session(sid, conn, path, mode)
        self.sessions[sid] = session
        conn.sessions[sid] = session
        self.counters["sessions_started"] += 1
        return session

    def end_session(self, session: Session, reason: str) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        if session.started:
            session.started = False
            try:
                self.access.ended(session, reason)
            except Exception:
                log.exception("access control failed to record the end of %s", session.id)
        if session.reader is not None and session.stream is not None:
            session.stream.remove_reader(session.reader)
            if session.conn._reader is session.reader:
                session.conn._reader = None
        if session.source_id is not None and session.stream is not None:
            session.stream.detach_source(session.source_id)
            for ch in [ch for ch, t in session.conn._channels.items() if t[0] is session.stream]:
                del session.conn._channels[ch]
        for key in [k for k, v in self.udp_sources.items() if v[2] is session]:
            del self.udp_sources[key]
        for key in [k for k, v in self.udp_readers.items() if v is session]:
            del self.udp_readers[key]
        log.debug("session %s ended: %s", session.id, reason)

    def _session_header(self, session: Session) -> tuple[str, str]:
        return ("Session", format_session(session.id, int(self.config.rtsp.session_timeout)))

    def known_path(self, path: str) -> bool:
        if "~" in path:
            return False  # derived variants are reached through the policy, never by name
        if self.hub.get(path) is not None and self.hub.paths[path].has_source:
            return True
        cam_id, _, sub = path.partition("/")
        cam = self.config.camera(cam_id)
        return cam is not None and (sub == "" or (sub == "sub" and cam.sub_source is not None))

    async def _authorize(
        self, conn: RtspConnection, req: Request, action: str, path: str, query: dict[str, str]
    ) -> object:
        """Ask the access control; raise its refusal. A request that carries no credentials
        of its own (SETUP/PLAY built from Content-Base lose the ?token= query) reuses what
        this connection was allowed for the same path and action."""
        if conn.internal:
            return True
        has_creds = "token" in query or "Authorization" in req.headers
        cached = conn.allowed.get((action, path))
        if not has_creds and cached is not None:
            return cached
        result = await self.access.check(
            AccessCheck(action, path, req, conn.peer_ip, query, secure=conn.secure)
        )
        if isinstance(result, RtspReply):
            self.counters[f"denied_{result.status}"] += 1
            raise result
        conn.allowed[(action, path)] = result
        return result

    async def _start_access(self, session: Session) -> None:
        if session.conn.internal or session.started:
            return
        refusal = await self.access.started(session)
        if refusal is not None:
            self.counters[f"denied_{refusal.status}"] += 1
            raise refusal
        if session.id not in self.sessions:
            # It ended (its connection closed) while being admitted: undo the admission.
            self.access.ended(session, "connection closed")
            raise RtspReply(454, "session ended while starting")
        session.started = True

    # ---- handlers ------------------------------------------------------------------------------

    @staticmethod
    async def _options(conn: RtspConnection, req: Request) -> HandlerResult:
        return 200, [("Public", PUBLIC_METHODS)], b""

    async def _keepalive(self, conn: RtspConnection, req: Request) -> HandlerResult:
        session = conn.session_for(req, required=False)
        extra = [self._session_header(session)] if session else []
        return 200, extra, b""

    def _parse_uri(self, req: Request) -> tuple[str, dict[str, str]]:
        try:
            path, _raw_query, query = split_uri(req.uri)
        except RtspError as exc:
            raise RtspReply(400, exc.reason) from None
        return path, query

    async def _describe(self, conn: RtspConnection, req: Request) -> HandlerResult:
        path, query = self._parse_uri(req)
        if not self.known_path(path):
            raise RtspReply(404, f"no camera {path!r}")
        grant = await self._authorize(conn, req, "read", path, query)
        stream = self.hub.path(path)
        if not stream.has_source and self.on_demand is not None:
            self.on_demand(path)
        if not await stream.wait_source(DESCRIBE_WAIT):
            raise RtspReply(404, f"camera {path!r} has no source right now")
        stream = await self._routed_stream(conn, path, grant)
        host = self._local_host(conn)
        cam = self.config.camera(path.partition("/")[0])
        sdp = describe_sdp(
            stream.tracks,
            name=cam.name if cam and cam.name else path,
            session_id=self._sdp_session_id,
            host=host,
        )
        base = req.uri.split("?", 1)[0].rstrip("/") + "/"
        return (
            200,
            [("Content-Base", base), ("Content-Type", "application/sdp")],
            sdp.encode(),
        )

    async def _routed_stream(self, conn: RtspConnection, path: str, grant: object) -> PathStream:
        """The stream this viewer gets: the camera itself, or (masks) its shared variant."""
        if conn.internal:
            return self.hub.path(path)
        routed = await self.access.route(path, grant)
        stream = self.hub.path(routed)
        if routed != path and not await stream.wait_source(DESCRIBE_WAIT):
            raise RtspReply(503, f"masked variant of {path!r} is not ready")
        return stream

    @staticmethod
    def _local_host(conn: RtspConnection) -> str:
        if conn.transport is None:
            return "0.0.0.0"
        sockname = conn.transport.get_extra_info("sockname")
        return str(sockname[0]) if isinstance(sockname, tuple) else "0.0.0.0"

    async def _setup(self, conn: RtspConnection, req: Request) -> HandlerResult:
        full, query = self._parse_uri(req)
        path, control = _split_track(full)
        session = conn.session_for(req, required=False)
        value = req.headers.get("Transport")
        if value is None:
            raise RtspReply(400, "no Transport header")
        try:
            specs = parse_transport(value)
        except RtspError as exc:
            raise RtspReply(400, exc.reason) from None
        record = any(s.mode.upper() == "RECORD" for s in specs)
        if record:
            announced = conn._announced.get(path)
            if announced is None:
                # The announce may have named the whole URL as the path (no control suffix).
                announced = conn._announced.get(full)
                if announced is not None:
                    path, control = full, ""
            if announced is None:
                raise RtspReply(455, "SETUP for RECORD needs a prior ANNOUNCE of this path")
            track_index = _match_control(announced[0], control)
        else:
            if not self.known_path(path):
                raise RtspReply(404, f"no camera {path!r}")
            grant = await self._authorize(conn, req, "read", path, query)
            if not self.hub.path(path).has_source:
                raise RtspReply(404, f"camera {path!r} has no source right now")
            stream = await self._routed_stream(conn, path, grant)
            routed = stream.name
            track_index = _match_reader_control(stream.tracks, control)
        if track_index is None:
            raise RtspReply(404, f"no track {control!r}")
        if session is not None:
            if session.path != (path if record else routed):
                raise RtspReply(459, "aggregate operation not allowed across paths")
            if session.state != "ready":
                raise RtspReply(455, "SETUP not allowed while playing or recording")
            if session.mode != ("record" if record else "play"):
                raise RtspReply(455, "cannot mix PLAY and RECORD in one session")
            if track_index in session.tracks:
                raise RtspReply(455, f"track {track_index} already set up")
        spec, setup = self._choose_transport(conn, specs, track_index, session)
        if session is None:
            session = self._new_session(
                conn, path if record else routed, "record" if record else "play"
            )
            session.grant = conn.allowed.get(("publish" if record else "read", path))
        session.tracks[track_index] = setup
        reply_spec = _reply_transport(spec, setup, self.udp_port, conn.peer_ip)
        return (
            200,
            [("Transport", format_transport(reply_spec)), self._session_header(session)],
            b"",
        )

    def _choose_transport(
        self, conn: RtspConnection, specs: list[TransportSpec], track: int, session: Session | None
    ) -> tuple[TransportSpec, TrackSetup]:
        used: set[int] = set()
        if session is not None:
            for ts in session.tracks.values():
                if ts.channels:
                    used.update(ts.channels)
        for other in conn.sessions.values():
            for ts in other.tracks.values():
                if ts.channels:
                    used.update(ts.channels)
        for spec in specs:
            if not spec.unicast:
                continue  # multicast is not offered
            if spec.is_tcp:
                pair = spec.interleaved or (2 * track, 2 * track + 1)
                if pair[0] in used or pair[1] in used:
                    raise RtspReply(461, f"interleaved channels {pair} already in use")
                return spec, TrackSetup(track, spec, channels=pair)
            if spec.client_port is not None and self.udp_rtp is not None and not conn.secure:
                return spec, TrackSetup(track, spec, client_ports=spec.client_port)
        if conn.secure:
            raise RtspReply(461, "RTSPS carries media interleaved in the TLS stream (TCP) only")
        raise RtspReply(461, "no supported transport (TCP interleaved or UDP unicast)")

    async def _play(self, conn: RtspConnection, req: Request) -> HandlerResult:
        session = conn.session_for(req)
        assert session is not None
        if session.mode != "play":
            raise RtspReply(455, "PLAY on a RECORD session")
        if not session.tracks:
            raise RtspReply(455, "nothing set up")
        stream = self.hub.path(session.path)
        if not stream.has_source:
            raise RtspReply(404, "camera has no source right now")
        if session.state == "playing":
            return 200, [self._session_header(session), ("Range", "npt=now-")], b""
        if max(session.tracks) >= len(stream.tracks):
            raise RtspReply(455, "the camera's tracks changed; DESCRIBE again")
        await self._start_access(session)
        positions = stream.start_position()
        base = req.uri.split("?", 1)[0].rstrip("/")
        entries = [
            RtpInfoEntry(f"{base}/trackID={i}", positions[i][0], positions[i][1])
            for i in sorted(session.tracks)
        ]
        return (
            200,
            [
                self._session_header(session),
                ("Range", "npt=now-"),
                ("RTP-Info", format_rtp_info(entries)),
            ],
            b"",
        )

    def after_start(self, conn: RtspConnection, req: Request) -> None:
        """Runs once the PLAY/RECORD 200 is written, so media never precedes the response."""
        session = conn.session_for(req)
        assert session is not None
        if session.state != "ready":
            return
        stream = self.hub.path(session.path)
        session.stream = stream
        if session.mode == "record":
            self._start_record(conn, session, stream)
            return
        ntracks = len(stream.tracks)
        if any(ts.channels for ts in session.tracks.values()):
            channel_pairs = [
                session.tracks[i].channels if i in session.tracks else None for i in range(ntracks)
            ]
            channels = tuple(pair[0] if pair else None for pair in channel_pairs)
            reader = Reader(
                channels=channels, transport=conn.transport, on_kick=lambda reason: conn.abort()
            )
            conn._reader = reader
        else:
            assert self.udp_rtp is not None and self.udp_rtcp is not None
            ports = tuple(
                session.tracks[i].client_ports if i in session.tracks else None
                for i in range(ntracks)
            )
            reader = Reader(
                channels=tuple(None for _ in range(ntracks)),
                udp=UdpTarget(self.udp_rtp, self.udp_rtcp, conn.peer_ip, ports),
                on_kick=lambda reason: conn.abort(),
            )
            for pair in ports:
                if pair is not None:
                    self.udp_readers[(conn.peer_ip, pair[1])] = session
        session.reader = reader
        session.state = "playing"
        if session.started:
            # Before add_reader: the GOP burst it writes at once is delivered bytes too.
            self.access.attached(session)
        stream.add_reader(reader)

    def _start_record(self, conn: RtspConnection, session: Session, stream: PathStream) -> None:
        tracks, attrs = conn._announced[session.path]
        source_id = f"push:{session.id}"

        def replaced() -> None:
            # Stop routing the old publisher's packets at once, then let it go.
            for ch in [ch for ch, t in conn._channels.items() if t[0] is stream]:
                del conn._channels[ch]
            for key in [k for k, v in self.udp_sources.items() if v[2] is session]:
                del self.udp_sources[key]
            session.source_id = None
            log.info("%s: publisher of %s replaced by a newer one", conn.peer, session.path)
            conn.close()

        stream.attach_source(source_id, tracks, attrs, on_replaced=replaced)
        session.source_id = source_id
        session.state = "recording"
        for index, setup in session.tracks.items():
            if setup.channels is not None:
                conn._channels[setup.channels[0]] = (stream, index, False)
                conn._channels[setup.channels[1]] = (stream, index, True)
            elif setup.client_ports is not None:
                self.udp_sources[(conn.peer_ip, setup.client_ports[0])] = (stream, index, session)
                self.udp_sources[(conn.peer_ip, setup.client_ports[1])] = (stream, index, session)
        log.info("%s publishing %s", conn.peer, session.path)

    async def _record(self, conn: RtspConnection, req: Request) -> HandlerResult:
        session = conn.session_for(req)
        assert session is not None
        if session.mode != "record":
            raise RtspReply(455, "RECORD on a PLAY session")
        if not session.tracks:
            raise RtspReply(455, "nothing set up")
        await self._start_access(session)
        return 200, [self._session_header(session)], b""

    async def _pause(self, conn: RtspConnection, req: Request) -> HandlerResult:
        session = conn.session_for(req)
        assert session is not None
        if session.state == "playing" and session.reader is not None and session.stream:
            session.stream.remove_reader(session.reader)
            session.state = "ready"
            if session.started:
                self.access.paused(session)
        return 200, [self._session_header(session)], b""

    async def _teardown(self, conn: RtspConnection, req: Request) -> HandlerResult:
        session = conn.session_for(req)
        assert session is not None
        self.end_session(session, "teardown")
        conn.sessions.pop(session.id, None)
        return 200, [], b""

    async def _announce(self, conn: RtspConnection, req: Request) -> HandlerResult:
        path, query = self._parse_uri(req)
        cam = self.config.camera(path)
        if cam is None:
            raise RtspReply(404, f"no camera {path!r}")
        if not cam.is_push:
            raise RtspReply(403, f"camera {path!r} is pulled, not published to")
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            raise RtspReply(415, "ANNOUNCE needs an application/sdp body")
        await self._authorize(conn, req, "publish", path, query)
        try:
            tracks, sd = tracks_from_sdp(req.body)
        except TrackError as exc:
            raise RtspReply(400, str(exc)) from None
        attrs = tuple(
            f"a={k}:{v}" if v is not None else f"a={k}"
            for k, v in sd.attributes
            if k.lower() not in ("control", "range", "tool")
        )
        conn._announced[path] = (tracks, attrs)
        return 200, [], b""


def _match_control(tracks: tuple[Track, ...], control: str) -> int | None:
    """Which announced track a publisher's SETUP URL names, by the SDP's control attribute."""
    if not control:
        return 0 if len(tracks) == 1 or tracks[0].control in (None, "*") else None
    for t in tracks:
        c = t.control or ""
        if c == control or c.rstrip("/").endswith("/" + control):
            return t.index
    return None


def _match_reader_control(tracks: tuple[Track, ...], control: str) -> int | None:
    if not control:
        return 0 if len(tracks) == 1 else None
    key, _, value = control.partition("=")
    if key.lower() in ("trackid", "streamid") and value.isdigit():
        index = int(value)
        return index if index < len(tracks) else None
    return None


def _reply_transport(
    spec: TransportSpec, setup: TrackSetup, rtp_port: int, peer_ip: str
) -> TransportSpec:
    from dataclasses import replace

    if setup.channels is not None:
        return replace(
            spec,
            profile="RTP/AVP/TCP",
            interleaved=setup.channels,
            client_port=None,
            server_port=None,
            destination=None,
            source=None,
        )
    # Media only ever goes to the connection's own address: a Transport destination naming a
    # third party would make us a traffic reflector.
    return replace(
        spec,
        server_port=(rtp_port, rtp_port + 1),
        interleaved=None,
        destination=None,
        source=None,
    )
