"""A network fault between an RTSP server and a UDP client, for tests: an RTSP proxy that
rewrites each SETUP's ``client_port`` to a UDP relay of its own, and relays the server's RTP to
the client's real ports, reordering (or dropping) a share of the packets on the way.

With ``publish=True`` the client is a publisher (ANNOUNCE/RECORD) and the faulty direction is
client → server: the SETUP's ``client_port`` becomes a relay pair that sends to the server
from the ports the server was told, and the reply's ``server_port`` becomes a second pair that
receives the publisher's packets.

Only the RTP of the media direction is touched; RTCP and the RTSP connection pass through
unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

_CLIENT_PORT = re.compile(rb"client_port=(\d+)-(\d+)")
_SERVER_PORT = re.compile(rb"server_port=(\d+)-(\d+)")


@dataclass
class FaultStats:
    relayed: int = 0
    reordered: int = 0  # packets held back and sent after later ones
    dropped: int = 0


class _Relay(asyncio.DatagramProtocol):
    """Receives the server's datagrams for one client port and forwards them, sometimes late."""

    def __init__(
        self,
        proxy: RtspFaultProxy,
        target: tuple[str, int],
        faulty: bool,
        via: asyncio.DatagramTransport | None = None,
    ) -> None:
        self.proxy = proxy
        self.target = target
        self.faulty = faulty
        self.via = via  # send from this socket instead of the receiving one
        self.transport: asyncio.DatagramTransport | None = None
        self.held: list[tuple[int, bytes]] = []  # (packets still to pass it, datagram)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.via is None:
            self.via = self.transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        assert self.via is not None
        proxy = self.proxy
        if not self.faulty:
            self.via.sendto(data, self.target)
            return
        roll = proxy.rng.random()
        if roll < proxy.drop:
            proxy.stats.dropped += 1
            return
        if roll < proxy.drop + proxy.reorder:
            # Sent after the next one to three packets: displaced, a few ms late at most.
            self.held.append((proxy.rng.randint(1, 3), data))
            proxy.stats.reordered += 1
            loop = asyncio.get_running_loop()
            loop.call_later(0.02, self._release_overdue, data)
            return
        self.via.sendto(data, self.target)
        proxy.stats.relayed += 1
        still = []
        for left, held in self.held:
            if left <= 1:
                self.via.sendto(held, self.target)
            else:
                still.append((left - 1, held))
        self.held = still

    def _release_overdue(self, data: bytes) -> None:
        for i, (_, held) in enumerate(self.held):
            if held is data:
                del self.held[i]
                if self.via is not None and not self.via.is_closing():
                    self.via.sendto(held, self.target)
                return


@dataclass
class RtspFaultProxy:
    upstream: tuple[str, int]
    reorder: float = 0.0
    drop: float = 0.0
    seed: int = 0
    publish: bool = False
    port: int = 0
    stats: FaultStats = field(default_factory=FaultStats)
    rng: random.Random = field(default_factory=random.Random)
    _server: asyncio.Server | None = None
    _relays: list[asyncio.DatagramTransport] = field(default_factory=list)
    # publish: per SETUP awaiting its reply, (publisher's ports, our pair facing the server)
    _setups: list[tuple[tuple[int, int], list[asyncio.DatagramTransport]]] = field(
        default_factory=list
    )
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        self.rng.seed(self.seed)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for relay in self._relays:
            relay.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, rewrite=True),
                self._pump(up_reader, writer, reply=self.publish),
            )
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        *,
        rewrite: bool = False,
        reply: bool = False,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                if rewrite and b"client_port=" in data:
                    rewritten = self._rewrite_setup if self.publish else self._rewrite
                    data = await rewritten(data)
                elif reply and b"server_port=" in data and self._setups:
                    data = await self._rewrite_reply(data)
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError, RuntimeError):
            dst.write_eof()

    async def _rewrite(self, data: bytes) -> bytes:
        match = _CLIENT_PORT.search(data)
        assert match is not None, data
        ports = (int(match.group(1)), int(match.group(2)))
        base, _ = await self._pair(
            lambda i: lambda: _Relay(self, ("127.0.0.1", ports[i]), i == 0)
        )  # RTP on an even port (reordered), RTCP next
        return data.replace(match.group(0), f"client_port={base}-{base + 1}".encode())

    async def _pair(
        self, make: Callable[[int], Callable[[], asyncio.DatagramProtocol]]
    ) -> tuple[int, list[asyncio.DatagramTransport]]:
        """Bind an even/odd UDP port pair on loopback; ``make(i)`` builds the i-th protocol."""
        loop = asyncio.get_running_loop()
        for _ in range(100):
            base = random.randrange(30000, 60000, 2)
            pair: list[asyncio.DatagramTransport] = []
            try:
                for i in (0, 1):
                    transport, _ = await loop.create_datagram_endpoint(
                        make(i), local_addr=("127.0.0.1", base + i)
                    )
                    pair.append(transport)
            except OSError:
                for t in pair:
                    t.close()
                continue
            self._relays += pair
            return base, pair
        raise RuntimeError("no free UDP port pair for the fault proxy")

    async def _rewrite_setup(self, data: bytes) -> bytes:
        """A publisher's SETUP: the server is told our ports, which send to it (and pass
        whatever it sends back to the publisher's real ports)."""
        match = _CLIENT_PORT.search(data)
        assert match is not None, data
        ports = (int(match.group(1)), int(match.group(2)))
        base, pair = await self._pair(
            lambda i: lambda: _Relay(self, ("127.0.0.1", ports[i]), False)
        )
        self._setups.append((ports, pair))
        return data.replace(match.group(0), f"client_port={base}-{base + 1}".encode())

    async def _rewrite_reply(self, data: bytes) -> bytes:
        """The SETUP's reply: the publisher is told our receiving ports instead of the
        server's; what arrives there goes to the server from the pair it was told about."""
        match = _SERVER_PORT.search(data)
        assert match is not None, data
        (rtp, rtcp), facing = self._setups.pop(0)
        server = (int(match.group(1)), int(match.group(2)))
        base, _ = await self._pair(
            lambda i: lambda: _Relay(self, (self.upstream[0], server[i]), i == 0, via=facing[i])
        )
        data = data.replace(match.group(0), f"server_port={base}-{base + 1}".encode())
        return _CLIENT_PORT.sub(f"client_port={rtp}-{rtcp}".encode(), data, count=1)


@contextlib.asynccontextmanager
async def rtsp_fault_proxy(
    upstream_port: int,
    *,
    reorder: float = 0.0,
    drop: float = 0.0,
    seed: int = 0,
    publish: bool = False,
) -> AsyncIterator[RtspFaultProxy]:
    proxy = RtspFaultProxy(
        ("127.0.0.1", upstream_port), reorder=reorder, drop=drop, seed=seed, publish=publish
    )
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
