"""The RTSP server's UDP media: one RTP and one RTCP socket shared by every UDP session, and
the routing of what arrives on them (a publisher's packets to its camera's stream; a reader's
RTCP receiver reports as its proof of life).

A publisher's RTP crosses the same bounded reorder buffer as a pulled UDP camera's
(:class:`~gateway.stream.udp_reorder.UdpReorder`, one per RECORD session): UDP may swap
packets, and readers over TCP must get them in order.

Readers are sent to through a :class:`~gateway.stream.hub.UdpTarget` the hub writes to; how
fast the hub writes (pacing a GOP burst) is the hub's business, not this module's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.rtsp.session import Session
from gateway.stream.hub import PathStream, UdpTarget
from gateway.stream.udp_reorder import UdpReorder

Address = tuple[str, int]


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, media: UdpMedia, rtcp: bool) -> None:
        self.media = media
        self.rtcp = rtcp

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self.media.received(data, (str(addr[0]), int(addr[1])), self.rtcp)


class UdpMedia:
    def __init__(
        self, host: str, port: int, *, reorder_window: float = 0.05, reorder_packets: int = 512
    ) -> None:
        self.host = host
        self.port = port  # RTP here, RTCP on port + 1; 0 means no UDP at all
        self.reorder_window = reorder_window
        self.reorder_packets = reorder_packets
        self.rtp: asyncio.DatagramTransport | None = None
        self.rtcp: asyncio.DatagramTransport | None = None
        # (ip, port) -> a publisher's track, or a reader's session (by its RTCP port).
        self._sources: dict[Address, tuple[PathStream, int, Session]] = {}
        self._readers: dict[Address, Session] = {}
        self._reorders: dict[str, UdpReorder] = {}  # a publisher's session id -> its reordering

    @property
    def available(self) -> bool:
        return self.rtp is not None and self.rtcp is not None

    @property
    def server_ports(self) -> tuple[int, int]:
        return self.port, self.port + 1

    async def start(self) -> None:
        if not self.port:
            return
        loop = asyncio.get_running_loop()
        self.rtp, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self, rtcp=False), local_addr=(self.host, self.port)
        )
        self.rtcp, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self, rtcp=True), local_addr=(self.host, self.port + 1)
        )

    def close(self) -> None:
        for t in (self.rtp, self.rtcp):
            if t is not None:
                t.close()

    def received(self, data: bytes, addr: Address, rtcp: bool) -> None:
        target = self._sources.get(addr)
        if target is not None:
            stream, track, publisher = target
            publisher.touch()
            if rtcp:
                stream.on_rtcp(track, data)
                return
            reorder = self._reorders.get(publisher.id)
            if reorder is not None:
                reorder.push(track, data)
            else:
                stream.on_rtp(track, data)
            return
        reader = self._readers.get(addr)
        if reader is not None:
            reader.touch()

    def reader_target(
        self, session: Session, ip: str, ports: tuple[tuple[int, int] | None, ...]
    ) -> UdpTarget:
        """Where the hub sends a UDP reader's packets; its RTCP reports keep it alive."""
        assert self.rtp is not None and self.rtcp is not None
        for pair in ports:
            if pair is not None:
                self._readers[(ip, pair[1])] = session
        return UdpTarget(self.rtp, self.rtcp, ip, ports)

    def add_publisher(
        self, session: Session, ip: str, ports: tuple[int, int], stream: PathStream, track: int
    ) -> None:
        for port in ports:
            self._sources[(ip, port)] = (stream, track, session)
        if self.reorder_window > 0 and session.id not in self._reorders:
            self._reorders[session.id] = UdpReorder(
                stream,
                len(stream.tracks),
                window=self.reorder_window,
                max_packets=self.reorder_packets,
                source_id=session.source_id,
            )

    def forget_publisher(self, session: Session) -> None:
        """Stop taking ``session``'s packets; what its reordering holds goes to the path first,
        in order, if the session is still the path's source (call this before detaching it)."""
        reorder = self._reorders.pop(session.id, None)
        if reorder is not None:
            reorder.close()
        for key in [k for k, v in self._sources.items() if v[2] is session]:
            del self._sources[key]

    def forget(self, session: Session) -> None:
        """Stop routing anything to or from ``session``."""
        self.forget_publisher(session)
        for key in [k for k, v in self._readers.items() if v is session]:
            del self._readers[key]
