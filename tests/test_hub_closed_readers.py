"""The hub stops writing to a reader whose connection is going (issue #9's soak).

A reader's TCP connection can be lost between two access units of one burst: a write meets the
peer's reset, asyncio closes the transport and only *schedules* connection_lost, which is what
ends the session and removes the reader. A publisher's one read can carry many access units
(more so on a loaded machine), and every write to such a transport until then is thrown away,
logged as "socket.send() raised exception." from the fifth on: the hour soak logged 1,325 of
them. The hub must see ``transport.is_closing()`` and detach the reader instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest
from conftest import wait_for

from gateway.protocols.rtp import RTP_HEADER
from gateway.stream.hub import PathStream, Reader
from gateway.stream.tracks import Track

TCP_CLOSE = 7  # tcp_info.tcpi_state after the peer's RST


def _rtp(seq: int, ts: int, nal: bytes) -> bytes:
    return RTP_HEADER.pack(0x80, 0x80 | 96, seq, ts, 0x1234) + nal


class _Conn(asyncio.Protocol):
    """Owns a reader as the RTSP server does: its loss removes the reader, when delivered."""

    def __init__(self, stream: PathStream, ready: asyncio.Future[_Conn]) -> None:
        self.stream = stream
        self.ready = ready
        self.reader: Reader | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Like a reader paused for a moment: the reset is found by a write, not by a read.
        transport.pause_reading()
        self.reader = Reader(channels=(0,), transport=transport)
        self.stream.add_reader(self.reader)
        self.ready.set_result(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reader is not None:
            self.stream.remove_reader(self.reader)


async def test_a_reader_reset_in_the_middle_of_a_burst_is_detached_not_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncio")
    stream = PathStream("cam")
    stream.attach_source("pub", (Track(0, "video", "H264", 90000, 96, ()),))
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[_Conn] = loop.create_future()
    server = await loop.create_server(lambda: _Conn(stream, ready), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    try:
        conn = await asyncio.wait_for(ready, 10)
        assert conn.reader is not None and conn.transport is not None
        # The viewer goes away with a reset (SO_LINGER 0), as a killed player's kernel does.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        sock = conn.transport.get_extra_info("socket")
        await wait_for(
            lambda: sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_CLOSE,
            10,
            what="the server's socket to see the reset",
        )
        # One publisher read's worth of access units, handled in one callback: a keyframe,
        # then 20 frames. The first write meets the reset.
        stream.on_rtp(0, _rtp(1, 0, b"\x65" + b"\x00" * 400))
        for i in range(20):
            stream.on_rtp(0, _rtp(2 + i, 3600 * (i + 1), b"\x41" + b"\x00" * 400))
        lost_writes = [r for r in caplog.records if "socket.send() raised" in r.getMessage()]
        assert lost_writes == [], f"{len(lost_writes)} writes to a lost connection"
        assert conn.reader not in stream.readers  # detached at once, before connection_lost
        assert conn.reader.packets_sent <= 1  # the write that found the reset, no more
        await wait_for(lambda: conn.transport is not None and conn.transport.is_closing(), 5)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_a_reader_whose_connection_is_being_closed_gets_no_more_media() -> None:
    # close() with bytes still queued keeps the transport until they drain; what the hub would
    # write meanwhile only grows that queue for a connection that is going anyway.
    stream = PathStream("cam")
    stream.attach_source("pub", (Track(0, "video", "H264", 90000, 96, ()),))
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[_Conn] = loop.create_future()
    server = await loop.create_server(lambda: _Conn(stream, ready), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    try:
        conn = await asyncio.wait_for(ready, 10)
        assert conn.reader is not None and conn.transport is not None
        stream.on_rtp(0, _rtp(1, 0, b"\x65" + b"\x00" * 400))
        sent = conn.reader.bytes_sent
        assert sent > 0
        conn.transport.close()
        for i in range(5):
            stream.on_rtp(0, _rtp(2 + i, 3600 * (i + 1), b"\x41" + b"\x00" * 400))
        assert conn.reader.bytes_sent == sent
        assert conn.reader not in stream.readers
    finally:
        client.close()
        server.close()
        await server.wait_closed()
