"""RTSP 1.0 server: readers (PLAY over TCP interleaved or UDP) and publishers (ANNOUNCE/RECORD).

This module listens (RTSP, RTSPS, the workers' private Unix socket, UDP media), enforces the
connection limits, owns every session and expires idle ones. A connection's bytes and
deadlines are :mod:`gateway.rtsp.connection`'s; the methods are :mod:`gateway.rtsp.handlers`'
and :mod:`gateway.rtsp.publisher`'s; UDP media is :mod:`gateway.rtsp.udp`'s; which method is
valid when is the sans-I/O table in :mod:`gateway.protocols.rtsp_session`.
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
from typing import Any

from gateway.config import Config
from gateway.protocols.rtsp import Request
from gateway.protocols.rtsp_deadlines import DeadlineLimits
from gateway.protocols.rtsp_headers import format_session
from gateway.protocols.rtsp_session import RtspSession, SessionMode, SessionState
from gateway.rtsp.connection import RtspConnection
from gateway.rtsp.handlers import Methods
from gateway.rtsp.hooks import AccessCheck, AccessControl, Authorizer, Grant, allow_all
from gateway.rtsp.publisher import Publishing
from gateway.rtsp.reply import Handler, RtspReply
from gateway.rtsp.session import Session
from gateway.rtsp.udp import UdpMedia
from gateway.stream.hub import StreamHub
from gateway.tasks import cancel_and_wait

# The names the access layer and the process wiring import from here.
__all__ = [
    "AccessCheck",
    "AccessControl",
    "Authorizer",
    "RtspConnection",
    "RtspReply",
    "RtspServer",
    "Session",
    "allow_all",
]

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL = 10.0  # seconds between log lines about refused connections


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
        rc = config.rtsp
        self.config = config
        self.hub = hub
        self.access = access if access is not None else AccessControl(authorizer)
        self.reuse_port = reuse_port
        self.internal_path = internal_path
        self.handoff = handoff
        self.on_demand = on_demand
        self.udp = UdpMedia(
            rc.host,
            rc.rtp_port if udp_port is None else udp_port,
            reorder_window=config.ingest.reorder_window,
            reorder_packets=config.ingest.reorder_packets,
        )
        self.deadline_limits = DeadlineLimits(
            head=rc.request_head_timeout,
            body=rc.request_body_timeout,
            idle=rc.idle_timeout,
            wind_down=rc.session_timeout,
        )
        self.sessions: dict[str, Session] = {}
        self.connections: set[RtspConnection] = set()
        self.counters: collections.Counter[str] = collections.Counter()
        # Connections per address that no request of has been admitted on yet.
        self.unauthenticated: collections.Counter[str] = collections.Counter()
        self.sdp_session_id = secrets.randbits(40)
        # RTSP playback of recordings (gateway.playback.rtsp.RtspPlayback), when recording is on.
        self.playback: Any = None
        self.handlers: dict[str, Handler] = Methods(self, Publishing(self)).table()
        self._servers: list[asyncio.Server] = []
        self._tls_server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._refusal_logged = -REFUSAL_LOG_INTERVAL
        self._refusals_at_log = 0

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
        await self.udp.start()
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
        if self.playback is not None:
            await self.playback.stop()
        self.udp.close()

    # ---- connections ---------------------------------------------------------------------------

    def admit(self, conn: RtspConnection) -> bool:
        """Take a new connection in, or refuse it (it is then answered 503 and closed)."""
        rc = self.config.rtsp
        if len(self.connections) >= rc.max_connections:
            self._refused(conn, "connection limit reached")
            return False
        if conn.peer_ip and not conn.internal:
            if self.unauthenticated[conn.peer_ip] >= rc.max_unauthenticated_per_ip:
                why = f"{rc.max_unauthenticated_per_ip} unauthenticated connections already"
                self._refused(conn, why)
                return False
            self.unauthenticated[conn.peer_ip] += 1
            conn.counted_unauthenticated = True
        self.connections.add(conn)
        return True

    def _refused(self, conn: RtspConnection, why: str) -> None:
        # One line per interval, not one per connection: a refusal is what a flood looks like.
        self.counters["connections_refused"] += 1
        now = time.monotonic()
        if now >= self._refusal_logged + REFUSAL_LOG_INTERVAL:
            suppressed = self.counters["connections_refused"] - self._refusals_at_log - 1
            self._refusal_logged, self._refusals_at_log = now, self.counters["connections_refused"]
            more = f" ({suppressed} more since the last report)" if suppressed > 0 else ""
            log.warning("refusing %s: %s%s", conn.peer, why, more)

    def _uncount(self, conn: RtspConnection) -> None:
        if conn.counted_unauthenticated:
            conn.counted_unauthenticated = False
            self.unauthenticated[conn.peer_ip] -= 1
            if self.unauthenticated[conn.peer_ip] <= 0:
                del self.unauthenticated[conn.peer_ip]

    def connection_closed(self, conn: RtspConnection) -> None:
        self.connections.discard(conn)
        self._uncount(conn)

    # ---- sessions ------------------------------------------------------------------------------

    async def _expire_sessions(self) -> None:
        timeout = self.config.rtsp.session_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.protocol.expired(now):
                    log.info("session %s on %s timed out", session.id, session.path)
                    self.counters["sessions_timed_out"] += 1
                    conn = session.conn
                    was_ready = session.state is SessionState.READY
                    self.end_session(session, "timeout")
                    if not conn.sessions and not was_ready:
                        conn.close()

    def new_session(self, conn: RtspConnection, path: str, mode: SessionMode) -> Session:
        sid = secrets.token_hex(8)
        protocol = RtspSession(mode, self.config.rtsp.session_timeout, time.monotonic())
        session = Session(sid, conn, path, protocol)
        self.sessions[sid] = session
        conn.sessions[sid] = session
        self.counters["sessions_started"] += 1
        return session

    def end_session(self, session: Session, reason: str) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        conn = session.conn
        conn.sessions.pop(session.id, None)
        if session.started:
            session.started = False
            try:
                self.access.ended(session, reason)
            except Exception:
                log.exception("access control failed to record the end of %s", session.id)
        if session.reader is not None and session.stream is not None:
            session.stream.remove_reader(session.reader)
            if conn.reader is session.reader:
                conn.reader = None
        # A UDP publisher's held packets reach the path before it loses its source.
        self.udp.forget_publisher(session)
        if session.source_id is not None and session.stream is not None:
            session.stream.detach_source(session.source_id)
            for ch in [ch for ch, t in conn.channels.items() if t[0] is session.stream]:
                del conn.channels[ch]
        self.udp.forget(session)
        if self.playback is not None:
            self.playback.ended(session)
        conn.observe()
        # The reader's kick callback closes over its session, so the two form a cycle that
        # only the garbage collector would free, taking the connection, its parser and socket
        # with it: at a reconnect a minute per viewer that is the soak's growing heap.
        session.reader = None
        log.debug("session %s ended: %s", session.id, reason)

    def session_header(self, session: Session) -> tuple[str, str]:
        return ("Session", format_session(session.id, int(self.config.rtsp.session_timeout)))

    def known_path(self, path: str) -> bool:
        if "~" in path:
            return False  # derived variants are reached through the policy, never by name
        if self.hub.get(path) is not None and self.hub.paths[path].has_source:
            return True
        cam_id, _, sub = path.partition("/")
        cam = self.config.camera(cam_id)
        return cam is not None and (sub == "" or (sub == "sub" and cam.sub_source is not None))

    # ---- access --------------------------------------------------------------------------------

    async def authorize(
        self,
        conn: RtspConnection,
        req: Request,
        action: str,
        path: str,
        query: dict[str, str],
        *,
        playback_age_s: float | None = None,
    ) -> Grant:
        """Ask the access control; raise its refusal. A request that carries no credentials
        of its own (SETUP/PLAY built from Content-Base lose the ?token= query) reuses what
        this connection was allowed for the same path and action."""
        if conn.internal:
            if conn.gate is not None:
                conn.gate.check(conn, req, action, path, query)
            return True
        has_creds = "token" in query or "Authorization" in req.headers
        cached = conn.allowed.get((action, path))
        if not has_creds and cached is not None:
            return cached
        result = await self.access.check(
            AccessCheck(
                action,
                path,
                req,
                conn.peer_ip,
                query,
                secure=conn.secure,
                connection=conn.id,
                playback_age_s=playback_age_s,
            )
        )
        if isinstance(result, RtspReply):
            self.counters[f"denied_{result.status}"] += 1
            raise result
        conn.allowed[(action, path)] = result
        self._uncount(conn)
        return result

    async def start_access(self, session: Session) -> None:
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
