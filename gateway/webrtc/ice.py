"""ICE for WHEP viewers: where our host candidates are gathered (configured addresses, a UDP
port range), what we advertise (a 1:1 NAT's public address as a server-reflexive candidate of
each host candidate), and the STUN/TURN servers the browser is told about in ``Link`` headers.

aioice does the connectivity checks. It gathers on every non-loopback address with an ephemeral
port; ``GatewayConnection`` binds where the config says instead. The gateway itself gathers no
server-reflexive or relayed candidates: it is the public end, and the browser's STUN/TURN
candidates reach it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import socket
import time
from dataclasses import dataclass

from aioice import Candidate, Connection
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, get_host_addresses
from aiortc.rtcicetransport import RTCIceCandidate, RTCIceGatherer, RTCIceTransport

from gateway.config import WebRtcConfig

# Socket buffers: a viewer joining gets the cached GOP (hundreds of packets) at once.
SEND_BUFFER = 1024 * 1024
RECEIVE_BUFFER = 256 * 1024


class IceError(Exception):
    """No candidate could be gathered (every port of the range is taken, or no address)."""


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server the browser may use (announced, never used by the gateway)."""

    url: str
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class IceSettings:
    host_addresses: tuple[str, ...] = ()  # () = every non-loopback IPv4 address of this host
    public_addresses: tuple[str, ...] = ()  # a 1:1 NAT's public addresses, advertised as srflx
    port_min: int = 0  # 0, 0: any ephemeral port
    port_max: int = 0
    servers: tuple[str, ...] = ()  # stun:/turn:/turns: URLs for the browser
    turn_username: str = ""
    turn_credential: str = ""
    # coturn's use-auth-secret (the TURN REST API): each viewer gets its own time-limited
    # credentials, so no long-lived TURN password reaches a browser.
    turn_secret: str = ""
    turn_ttl: float = 3600.0

    @classmethod
    def from_config(cls, wc: WebRtcConfig) -> IceSettings:
        return cls(
            host_addresses=wc.host_addresses,
            public_addresses=wc.public_addresses,
            port_min=wc.udp_port_min,
            port_max=wc.udp_port_max,
            servers=wc.ice_servers,
            turn_username=wc.turn_username,
            turn_credential=wc.turn_credential,
            turn_secret=wc.turn_secret,
            turn_ttl=wc.turn_ttl,
        )

    def addresses(self) -> list[str]:
        return list(self.host_addresses) or get_host_addresses(use_ipv4=True, use_ipv6=False)

    def ice_servers(self, user: str, now: float | None = None) -> list[IceServer]:
        out: list[IceServer] = []
        for url in self.servers:
            if not url.startswith("turn"):
                out.append(IceServer(url))
            elif self.turn_secret:
                expiry = int((now if now is not None else time.time()) + self.turn_ttl)
                username = f"{expiry}:{user}"
                mac = hmac.new(self.turn_secret.encode(), username.encode(), hashlib.sha1)
                out.append(IceServer(url, username, base64.b64encode(mac.digest()).decode()))
            else:
                out.append(IceServer(url, self.turn_username, self.turn_credential))
        return out


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def link_headers(servers: list[IceServer]) -> list[str]:
    """``Link`` header values naming the ICE servers (RFC 9725 §4.4)."""
    out = []
    for s in servers:
        value = f'<{s.url}>; rel="ice-server"'
        if s.username is not None and s.credential is not None:
            value += (
                f"; username={_quoted(s.username)}; credential={_quoted(s.credential)}"
                '; credential-type="password"'
            )
        out.append(value)
    return out


def _bind(address: str, port_min: int, port_max: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    ports = [0] if not port_min else list(range(port_min, port_max + 1))
    start = random.randrange(len(ports))
    for i in range(len(ports)):
        port = ports[(start + i) % len(ports)]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            sock.bind((address, port))
        except OSError:
            sock.close()
            if port == 0:
                raise
            continue
        sock.setblocking(False)
        return sock
    raise IceError(f"no free UDP port on {address} in {port_min}-{port_max}")


class GatewayConnection(Connection):
    """aioice's ICE agent, gathering host candidates where the config says."""

    def __init__(self, settings: IceSettings) -> None:
        super().__init__(ice_controlling=False, components=1, use_ipv6=False)
        self.settings = settings

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        loop = asyncio.get_running_loop()
        candidates = []
        s = self.settings
        for address in s.addresses():
            sock = _bind(address, s.port_min, s.port_max)
            try:
                _transport, protocol = await loop.create_datagram_endpoint(
                    lambda: StunProtocol(self), sock=sock
                )
            except OSError:
                sock.close()
                raise
            host, port = sock.getsockname()[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            self._protocols.append(protocol)
            candidates.append(protocol.local_candidate)
        if not candidates:
            raise IceError("no address to gather ICE candidates on")
        return candidates


class _Gatherer(RTCIceGatherer):
    def __init__(self, settings: IceSettings) -> None:
        super().__init__(iceServers=[])
        self._connection = GatewayConnection(settings)


def ice_transport(settings: IceSettings) -> RTCIceTransport:
    """A controlled ICE transport whose gatherer binds as ``settings`` say."""
    return RTCIceTransport(_Gatherer(settings))


def advertised_candidates(
    transport: RTCIceTransport, settings: IceSettings
) -> tuple[RTCIceCandidate, ...]:
    """Our host candidates, then for each a server-reflexive candidate on every public
    address of the 1:1 NAT (same port: the NAT maps it one to one)."""
    hosts = transport.iceGatherer.getLocalCandidates()
    out = list(hosts)
    for public in settings.public_addresses:
        for c in hosts:
            if (":" in public) != (":" in c.ip):
                continue
            out.append(
                RTCIceCandidate(
                    component=c.component,
                    foundation=candidate_foundation("srflx", "udp", c.ip),
                    ip=public,
                    port=c.port,
                    priority=candidate_priority(c.component, "srflx"),
                    protocol="udp",
                    type="srflx",
                    relatedAddress=c.ip,
                    relatedPort=c.port,
                )
            )
    return tuple(out)


def nominated(
    transport: RTCIceTransport,
) -> tuple[asyncio.DatagramTransport, tuple[str, int]] | None:
    """The socket and remote address of the pair the browser nominated, or None. (aioice keeps
    it private; the shared sender writes to it directly rather than through two coroutines per
    packet.)"""
    pair = transport._connection._nominated.get(1)
    if pair is None:
        return None
    sock = getattr(pair.protocol, "transport", None)
    if sock is None or sock.is_closing():
        return None
    return sock, pair.remote_addr


def remote_candidates(transport: RTCIceTransport) -> int:
    return len(transport.getRemoteCandidates())


def queued(sock: asyncio.DatagramTransport) -> int:
    """Bytes asyncio holds for this socket because the kernel would not take them yet."""
    size: int = getattr(sock, "get_write_buffer_size", lambda: 0)()
    return size
