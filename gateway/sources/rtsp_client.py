"""RTSP 1.0 client: DESCRIBE/SETUP/PLAY against a camera (or another gateway), TCP interleaved
by default or UDP, with Basic and Digest credentials. Used by pull ingest and worker relays."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from gateway.protocols.rtsp import (
    InterleavedFrame,
    Request,
    Response,
    RtspError,
    RtspParser,
    format_request,
    format_response,
)
from gateway.protocols.rtsp_auth import Challenge, authorization_header, parse_www_authenticate
from gateway.protocols.rtsp_headers import (
    TransportSpec,
    format_transport,
    parse_session,
    parse_transport,
)
from gateway.protocols.sdp import resolve_control
from gateway.sources.source_tls import DEFAULT_PORTS, client_context
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

USER_AGENT = "feedgate"


class RtspClientError(Exception):
    """The server refused, answered nonsense, or went away."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# on_packet(channel, payload): channel is 2*track for RTP and 2*track+1 for RTCP in both modes.
PacketCallback = Callable[[int, bytes], None]


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, on_packet: PacketCallback, on_lost: Callable[[Exception | None], None]):
        self.parser = RtspParser()
        self.on_packet = on_packet
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.waiters: dict[str, asyncio.Future[Response]] = {}
        self.channel_map: dict[int, int] = {}  # server interleaved channel -> our channel
        self.bytes_in = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            events = self.parser.feed(data)
        except RtspError as exc:
            log.warning("server sent malformed RTSP: %s", exc.reason)
            assert self.transport is not None
            self.transport.abort()
            return
        for event in events:
            if isinstance(event, InterleavedFrame):
                ch = self.channel_map.get(event.channel)
                if ch is not None:
                    self.on_packet(ch, event.payload)
            elif isinstance(event, Response):
                fut = self.waiters.pop(event.cseq or "", None)
                if fut is not None and not fut.done():
                    fut.set_result(event)
            elif isinstance(event, Request) and self.transport is not None:
                # Servers may ping us (GET_PARAMETER/OPTIONS); answer rather than stall them.
                self.transport.write(format_response(200, [("CSeq", event.cseq or "0")]))

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(RtspClientError("connection closed"))
        self.waiters.clear()
        self.on_lost(exc)


class _UdpReceiver(asyncio.DatagramProtocol):
    def __init__(self, channel: int, on_packet: PacketCallback) -> None:
        self.channel = channel
        self.on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.on_packet(self.channel, data)


@dataclass
class DescribeResult:
    sdp: bytes
    base_url: str


class RtspClient:
    """One RTSP client session. Not reusable after close()."""

    def __init__(
        self,
        url: str,
        *,
        on_packet: PacketCallback,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        unix_path: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.unix_path = unix_path  # connect here instead of the URL's host (worker relays)
        # TLS (the cluster's relays): the context to verify the server with, and the name its
        # certificate must carry (default: the URL's host).
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise RtspClientError(f"not an rtsp:// URL: {url!r}")
        if parts.scheme == "rtsps" and ssl_context is None and unix_path is None:
            # rtsps:// is never pulled in plaintext: verify as a browser would by default.
            self.ssl_context = client_context()
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.username = (
            username
            if username is not None
            else (unquote(parts.username) if parts.username else None)
        )
        self.password = (
            password
            if password is not None
            else (unquote(parts.password) if parts.password else None)
        )
        netloc = self.host if ":" not in self.host else f"[{self.host}]"
        if parts.port:
            netloc += f":{parts.port}"
        # Credentials never travel in the URL we send, nor appear in logs.
        self.url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        self.on_packet = on_packet
        self.timeout = timeout
        self.cseq = 0
        self.session: str | None = None
        self.session_timeout = 60
        self._auth_challenges: list[Challenge] = []
        self._proto: _ClientProtocol | None = None
        self._udp: list[asyncio.DatagramTransport] = []
        self.closed: asyncio.Future[Exception | None] | None = None
        self._keepalive: asyncio.Task[None] | None = None

    @property
    def bytes_in(self) -> int:
        return self._proto.bytes_in if self._proto else 0

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()

        def lost(exc: Exception | None) -> None:
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(exc)

        def factory() -> _ClientProtocol:
            return _ClientProtocol(self.on_packet, lost)

        try:
            if self.unix_path is not None:
                connecting = loop.create_unix_connection(factory, self.unix_path)
            else:
                connecting = loop.create_connection(
                    factory,
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=(self.server_hostname or self.host)
                    if self.ssl_context is not None
                    else None,
                )
            async with asyncio.timeout(self.timeout):
                _t, proto = await connecting
        except ssl.SSLError as exc:
            reason = _tls_reason(exc)
            where = f"{self.host}:{self.port}"
            raise RtspClientError(f"TLS handshake with {where} failed: {reason}") from None
        except (OSError, TimeoutError) as exc:
            what = "connect to" if self.ssl_context is None else "connect over TLS to"
            raise RtspClientError(f"cannot {what} {self.host}:{self.port}: {exc}") from None
        self._proto = proto

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        for attempt in range(2):
            resp = await self._send(method, url, headers or [], body)
            if resp.status == 401 and attempt == 0 and self.username is not None:
                try:
                    challenges = parse_www_authenticate(resp.headers.get_all("WWW-Authenticate"))
                except RtspError:
                    raise RtspClientError("unparseable WWW-Authenticate", 401) from None
                self._auth_challenges = list(challenges)
                continue
            return resp
        return resp

    async def _send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            raise RtspClientError("not connected")
        self.cseq += 1
        cseq = str(self.cseq)
        all_headers = [("CSeq", cseq), ("User-Agent", USER_AGENT), *headers]
        if self.session is not None:
            all_headers.append(("Session", self.session))
        if self._auth_challenges and self.username is not None:
            try:
                value = authorization_header(
                    self._auth_challenges,
                    method,
                    url,
                    self.username,
                    self.password or "",
                )
            except ValueError as exc:
                raise RtspClientError(str(exc), 401) from None
            all_headers.append(("Authorization", value))
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        proto.waiters[cseq] = fut
        proto.transport.write(format_request(method, url, all_headers, body))
        try:
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that
            # races with the response (see gateway.sources.ingest).
            async with asyncio.timeout(self.timeout):
                return await fut
        except TimeoutError:
            proto.waiters.pop(cseq, None)
            raise RtspClientError(f"{method} timed out after {self.timeout}s") from None

    def _check(self, resp: Response, what: str) -> None:
        if resp.status != 200:
            raise RtspClientError(f"{what}: {resp.status} {resp.reason}", resp.status)

    async def describe(self) -> DescribeResult:
        resp = await self.request("DESCRIBE", self.url, [("Accept", "application/sdp")])
        self._check(resp, "DESCRIBE")
        base = resp.headers.get("Content-Base") or resp.headers.get("Content-Location") or self.url
        return DescribeResult(resp.body, base)

    async def setup(
        self, base_url: str, control: str | None, track: int, transport: str = "tcp"
    ) -> None:
        url = resolve_control(base_url, control)
        if transport == "tcp":
            spec = TransportSpec(profile="RTP/AVP/TCP", interleaved=(2 * track, 2 * track + 1))
        else:
            rtp_port = await self._bind_udp_pair(track)
            spec = TransportSpec(profile="RTP/AVP", client_port=(rtp_port, rtp_port + 1))
        resp = await self.request("SETUP", url, [("Transport", format_transport(spec))])
        self._check(resp, "SETUP")
        if self.session is None:
            value = resp.headers.get("Session")
            if value is None:
                raise RtspClientError("SETUP response without Session")
            try:
                self.session, timeout = parse_session(value)
            except RtspError as exc:
                raise RtspClientError(f"bad Session header: {exc.reason}") from None
            self.session_timeout = timeout or 60
        reply = parse_transport(resp.headers.get("Transport") or "")
        assert self._proto is not None
        if transport == "tcp":
            pair = reply[0].interleaved if reply and reply[0].interleaved else spec.interleaved
            assert pair is not None
            self._proto.channel_map[pair[0]] = 2 * track
            self._proto.channel_map[pair[1]] = 2 * track + 1

    async def _bind_udp_pair(self, track: int) -> int:
        loop = asyncio.get_running_loop()
        for _ in range(50):
            port = random.randrange(20000, 60000, 2)
            try:
                rtp, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpReceiver(2 * track, self.on_packet), local_addr=("0.0.0.0", port)
                )
            except OSError:
                continue
            try:
                rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpReceiver(2 * track + 1, self.on_packet),
                    local_addr=("0.0.0.0", port + 1),
                )
            except OSError:
                rtp.close()
                continue
            for t in (rtp, rtcp):
                sock = t.get_extra_info("socket")
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            self._udp += [rtp, rtcp]
            return port
        raise RtspClientError("no free UDP port pair")

    async def play(self) -> Response:
        resp = await self.request("PLAY", self.url, [("Range", "npt=0.000-")])
        self._check(resp, "PLAY")
        self._keepalive = asyncio.get_running_loop().create_task(self._keepalive_loop())
        return resp

    async def _keepalive_loop(self) -> None:
        interval = max(1.0, self.session_timeout / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.request("GET_PARAMETER", self.url)
            except RtspClientError:
                return

    def end_of_stream(self, why: str) -> None:
        """The server ended the stream without closing the connection (its RTCP BYE on every
        track): whoever waits on ``closed`` sees an error naming ``why``."""
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(RtspClientError(why))

    async def wait_closed(self) -> Exception | None:
        assert self.closed is not None
        return await self.closed

    async def close(self) -> None:
        if self._keepalive is not None:
            await cancel_and_wait(self._keepalive)
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            if self.session is not None:
                with contextlib.suppress(RtspClientError, OSError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._send("TEARDOWN", self.url, [], b"")
            proto.transport.close()
        for t in self._udp:
            t.close()
        self._udp.clear()


def _tls_reason(exc: ssl.SSLError) -> str:
    """'certificate verify failed: self-signed certificate', 'wrong version number' (a
    plaintext server): without OpenSSL's file and line."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc)
