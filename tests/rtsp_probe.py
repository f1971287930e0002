"""A small RTSP client for tests that need status codes, not pictures: DESCRIBE/SETUP/PLAY over
TCP interleaved, with the answers parsed by the gateway's own sans-I/O parser and the media
counted and discarded. Cheap enough to hold hundreds of sessions from one process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.protocols.rtsp import InterleavedFrame, Response, RtspParser


@dataclass
class Probe:
    host: str
    port: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parser: RtspParser = field(default_factory=RtspParser)
    responses: asyncio.Queue[Response] = field(default_factory=asyncio.Queue)
    media_bytes: int = 0
    # (arrival time, RTP timestamp) of each RTP packet on channel 0, when a test asks for them
    rtp_times: list[tuple[float, int]] | None = None
    cseq: int = 0
    session: str | None = None
    _pump: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, host: str, port: int) -> Probe:
        reader, writer = await asyncio.open_connection(host, port)
        probe = cls(host, port, reader, writer)
        probe._pump = asyncio.get_running_loop().create_task(probe._read())
        return probe

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.parser.feed(data):
                if isinstance(event, InterleavedFrame):
                    self.media_bytes += len(event.payload)
                    if self.rtp_times is not None and event.channel == 0:
                        ts = int.from_bytes(event.payload[4:8], "big")
                        self.rtp_times.append((time.monotonic(), ts))
                elif isinstance(event, Response):
                    self.responses.put_nowait(event)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(
        self, method: str, uri: str, headers: tuple[tuple[str, str], ...] = (), timeout: float = 10
    ) -> Response:
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: rtsp-probe"]
        if self.session is not None:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in headers]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = await asyncio.wait_for(self.responses.get(), timeout)
        sid = response.headers.get("Session")
        if sid is not None:
            self.session = sid.split(";")[0].strip()
        return response

    async def play(
        self, path: str, *, headers: tuple[tuple[str, str], ...] = (), timeout: float = 10
    ) -> int:
        """DESCRIBE, SETUP (track 0, interleaved) and PLAY ``path`` (which may carry a query);
        the first status that is not 200, or PLAY's 200."""
        base = f"rtsp://{self.host}:{self.port}/{path}"
        r = await self.request("DESCRIBE", base, (("Accept", "application/sdp"), *headers), timeout)
        if r.status != 200:
            return r.status
        plain, _, query = base.partition("?")
        setup = f"{plain}/trackID=0" + (f"?{query}" if query else "")
        transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
        r = await self.request("SETUP", setup, (transport, *headers), timeout)
        if r.status != 200:
            return r.status
        r = await self.request("PLAY", base, headers, timeout)
        return r.status

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump


async def play_status(url: str, *, timeout: float = 10) -> int:
    """Open a connection, DESCRIBE/SETUP/PLAY, close; the status as in :meth:`Probe.play`."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    probe = await Probe.connect(parts.hostname, parts.port)
    try:
        path = parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")
        return await probe.play(path, timeout=timeout)
    finally:
        await probe.close()
