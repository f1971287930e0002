"""One RTSP connection: bytes in, the parser's events out to handlers in order, replies and
media back, and the deadlines that close a slow or silent peer.

Each connection processes its requests in order on one task; interleaved RTP from a publisher
takes a synchronous fast path straight into the hub.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import socket
import time
from typing import TYPE_CHECKING

from gateway.protocols.rtsp import (
    InterleavedFrame,
    Request,
    Response,
    RtspError,
    RtspParser,
    format_response,
)
from gateway.protocols.rtsp_deadlines import ConnectionDeadlines, Expiry
from gateway.protocols.rtsp_headers import parse_session
from gateway.protocols.rtsp_session import SessionError
from gateway.rtsp.reply import Reply, RtspReply
from gateway.rtsp.session import Session
from gateway.stream.hub import PathStream, Reader
from gateway.stream.tracks import Track

if TYPE_CHECKING:
    from gateway.cluster.relay import RelayGate
    from gateway.rtsp.hooks import Grant
    from gateway.rtsp.server import RtspServer

log = logging.getLogger(__name__)

# What a client may still send for a session its source ended, to wind down.
_WIND_DOWN = frozenset(("PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"))

SERVER_NAME = "feedgate"
# Requests (and frames behind them) a connection may have waiting before we stop reading it.
MAX_PENDING_EVENTS = 256


def _release_read_callback(transport: asyncio.BaseTransport) -> None:
    """Python 3.11's selector transport keeps its read callback as a bound method of itself, a
    cycle that only a full collection frees; with viewers reconnecting all day, every closed
    one waits in the oldest generation (the soak's last growing class). 3.12 releases it on
    close (CPython gh-100348); this does the same once the connection is lost."""
    if "_read_ready_cb" in vars(transport):
        vars(transport)["_read_ready_cb"] = None


class RtspConnection(asyncio.Protocol):
    def __init__(self, server: RtspServer, *, internal: bool = False, secure: bool = False) -> None:
        self.server = server
        # Connections on the private Unix socket come from this gateway's own worker processes.
        self.internal = internal
        # Internal connections from other nodes (gateway.cluster.relay) must pass this gate:
        # Digest with the cluster secret, once per connection, and the lease's fencing token.
        self.gate: RelayGate | None = None
        self.relay_authenticated = False
        self.relay_fence: int | None = None
        # RTSPS: media must stay inside the TLS stream (interleaved), never go out over UDP.
        self.secure = secure
        self.parser = RtspParser()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_ip = ""
        self.id = secrets.token_hex(8)  # unlike the peer address, never reused
        self.sessions: dict[str, Session] = {}
        # Counted against its address's cap on connections not yet admitted by the access
        # layer, until a request of its is.
        self.counted_unauthenticated = False
        # For a publishing connection: interleaved channel -> (stream, track, is_rtcp).
        self.channels: dict[int, tuple[PathStream, int, bool]] = {}
        # Paths this connection ANNOUNCEd: their tracks and session-level SDP attributes.
        self.announced: dict[str, tuple[tuple[Track, ...], tuple[str, ...]]] = {}
        # (action, path) -> what the access control allowed on this connection.
        self.allowed: dict[tuple[str, str], Grant] = {}
        self.reader: Reader | None = None  # the playing reader's flow-control target
        # Sessions the server ended because their source changed (gateway.rtsp.goodbye): a
        # TEARDOWN of one still gets 200. Insertion-ordered, bounded there.
        self.finished: dict[str, None] = {}
        self.frames_ignored = 0
        self._pending: collections.deque[Request | InterleavedFrame] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._handling = False
        self._reading_paused = False
        self._closed = False
        self._deadlines: ConnectionDeadlines | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

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
        if not self.server.admit(self):
            transport.write(format_response(503, [("CSeq", "0"), ("Connection", "close")]))
            self.close()
            return
        self._deadlines = ConnectionDeadlines(
            self.server.deadline_limits, asyncio.get_running_loop().time()
        )
        self._arm_deadline()

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
        self.observe(completed=bool(events))

    def pause_writing(self) -> None:
        if self.reader is not None:
            self.reader.pause_writing()

    def resume_writing(self) -> None:
        if self.reader is not None:
            self.reader.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server.connection_closed(self)
        for session in list(self.sessions.values()):
            self.server.end_session(session, "connection closed")
        self.sessions.clear()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        if self.transport is not None:
            _release_read_callback(self.transport)

    # ---- deadlines -----------------------------------------------------------------------------

    def observe(self, *, completed: bool = False) -> None:
        """Tell the deadlines what this connection is doing now (after a read, a handled
        request, a session's end)."""
        if self._deadlines is None or self._closed:
            return
        self._deadlines.observe(
            self.parser.pending,
            has_session=bool(self.sessions),
            busy=bool(self._pending) or self._handling,
            now=asyncio.get_running_loop().time(),
            completed=completed,
            winding_down=bool(self.finished) and not self.sessions,
        )
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        assert self._deadlines is not None
        deadline = self._deadlines.deadline()
        if deadline is None:
            return  # an armed timer stays: when it fires it finds nothing expired
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(deadline, self._on_deadline)
        self._timer_at = deadline

    def _on_deadline(self) -> None:
        self._timer = None
        if self._deadlines is None or self._closed:
            return
        expired = self._deadlines.expired(asyncio.get_running_loop().time())
        if expired is None:
            self._arm_deadline()
            return
        # Counted (and exported in /metrics) rather than logged one by one: a flood of such
        # peers must not become a flood of log lines.
        log.debug("%s: %s deadline passed; closing", self.peer, expired)
        self.server.counters[f"deadline_{expired.name.lower()}"] += 1
        if expired not in (Expiry.IDLE, Expiry.WIND_DOWN):
            self.write(format_response(408, [("CSeq", "0"), ("Connection", "close")]))
        if self.transport is not None and self.transport.get_write_buffer_size():
            self.abort()  # a peer that does not read either would hold a closing socket open
        else:
            self.close()

    # ---- request processing --------------------------------------------------------------------

    async def _drain(self) -> None:
        while self._pending and not self._closed:
            event = self._pending.popleft()
            if isinstance(event, InterleavedFrame):
                self._on_frame(event)
                continue
            self._handling = True
            try:
                await self._handle(event)
            finally:
                self._handling = False
            if self._reading_paused and len(self._pending) < MAX_PENDING_EVENTS // 2:
                self._reading_paused = False
                if self.transport is not None and not self._closed:
                    self.transport.resume_reading()
        self.observe()

    async def _handle(self, req: Request) -> None:
        cseq = req.cseq or "0"
        headers: list[tuple[str, str]] = [("CSeq", cseq), ("Server", SERVER_NAME)]
        if req.method == "ANNOUNCE" and self.server.handoff is not None:
            # Publishers belong to the primary worker, which owns every camera's source.
            await self.server.handoff(self, req)
            return
        if self.finished and (sid := self._finished_session(req)) is not None:
            # Ended by its source (gateway.rtsp.goodbye): the client winds down as after any
            # end of stream, and its PAUSE or TEARDOWN is no error.
            if req.method == "TEARDOWN":
                del self.finished[sid]
            else:
                headers.append(("Session", sid))
            self.write(format_response(200, headers))
            return
        try:
            handler = self.server.handlers.get(req.method)
            if handler is None:
                raise RtspReply(501, f"method {req.method} not implemented")
            reply = await handler(self, req)
        except (RtspReply, SessionError) as refusal:
            extra = refusal.headers if isinstance(refusal, RtspReply) else []
            if refusal.status >= 500:
                log.warning(
                    "%s %s %s -> %d %s",
                    self.peer,
                    req.method,
                    req.uri,
                    refusal.status,
                    refusal.reason,
                )
            else:
                log.info("%s %s -> %d %s", self.peer, req.method, refusal.status, refusal.reason)
            self.write(format_response(refusal.status, headers + extra))
            return
        except Exception:
            log.exception("%s: %s failed", self.peer, req.method)
            self.write(format_response(500, headers))
            return
        self._answer(req, headers, reply)

    def _answer(self, req: Request, headers: list[tuple[str, str]], reply: Reply) -> None:
        self.write(format_response(reply.status, headers + reply.headers, reply.body))
        if reply.then is not None:
            try:
                reply.then()
            except Exception:
                log.exception("%s: starting %s failed", self.peer, req.method)
                self.abort()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def _protocol_error(self, exc: RtspError) -> None:
        log.info("%s: protocol error %d %s; closing", self.peer, exc.status, exc.reason)
        self.server.counters["protocol_errors"] += 1
        headers = [("CSeq", exc.cseq or "0"), ("Server", SERVER_NAME), ("Connection", "close")]
        self.write(format_response(exc.status, headers))
        self.close()

    @property
    def closing(self) -> bool:
        return self._closed or self.transport is None

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
        target = self.channels.get(frame.channel)
        now = time.monotonic()
        # A publisher's media is its proof of life (encoders rarely send keep-alives), as is
        # a reader's RTCP receiver report.
        for session in self.sessions.values():
            session.touch(now)
        if target is not None:
            stream, track, is_rtcp = target
            if is_rtcp:
                stream.on_rtcp(track, frame.payload)
            else:
                stream.on_rtp(track, frame.payload)
            return
        self.frames_ignored += 1

    def _finished_session(self, req: Request) -> str | None:
        """The id of the ended session a PAUSE, TEARDOWN or keep-alive names, if it names one."""
        value = req.headers.get("Session")
        if value is None or req.method not in _WIND_DOWN:
            return None
        try:
            sid, _timeout = parse_session(value)
        except RtspError:
            return None
        return sid if sid in self.finished and sid not in self.sessions else None

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
