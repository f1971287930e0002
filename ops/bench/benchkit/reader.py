"""The load generator: a minimal RTSP-over-TCP reader written independently of feedgate's code,
and a fleet of them opened at a given rate."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from benchkit.procs import HOST

PARSE, COUNT = 0, 1
_SINK = memoryview(bytearray(256 * 1024))  # shared scratch buffer for byte-counting sessions
_RTSP = b"RTSP/"


class RtspError(Exception):
    pass


class Reader(asyncio.BufferedProtocol):
    """One RTSP session. Parses everything until the first keyframe (and for its whole life
    when `sampled`), then only counts bytes, reading into a shared scratch buffer."""

    def __init__(self, idx: int, sampled: bool, rcvlowat: int) -> None:
        self.idx = idx
        self.sampled = sampled
        self.rcvlowat = rcvlowat
        self.mode = PARSE
        self.rxv: memoryview = memoryview(bytearray(64 * 1024))
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.nbytes = 0
        self.cseq = 0
        self.waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self.closed = False
        self.session = ""
        self.playing = False
        self.t_connect = 0.0
        self.t_play = 0.0
        self.t_keyframe = 0.0
        self.t_first_pkt = 0.0
        self.last_seq = -1
        self.pkts = 0
        self.lost = 0
        self.desync = 0
        self.ts_last = -1
        self.media_ticks = 0  # RTP clock ticks received (90 kHz), sampled sessions only
        # Behind live (sampled sessions): media seconds received since the first keyframe minus
        # wall seconds since it. Its peak is how far behind live a real-time player starts; the
        # last time it grew (by > 20 ms) is when the burst ended: packets now arrive live, and a
        # player that plays the burst as fast as it can is at the live edge.
        self.ts_key = -1
        self.behind_peak = 0.0
        self.t_live = 0.0
        self.next_keepalive = 0.0
        self.keepalive_every = 20.0
        self.url = ""

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SINK if self.mode == COUNT else self.rxv

    def buffer_updated(self, nbytes: int) -> None:
        self.nbytes += nbytes
        if self.mode == COUNT:
            return
        self.buf += self.rxv[:nbytes]
        self._drain()

    def eof_received(self) -> bool:
        return False

    # parsing
    def _drain(self) -> None:
        buf = self.buf
        n = len(buf)
        pos = 0
        while pos < n and self.mode == PARSE:
            c = buf[pos]
            if c == 0x24:  # '$' interleaved frame
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                end = pos + 4 + ln
                if end > n:
                    break
                if buf[pos + 1] == 0 and ln >= 13:
                    self._rtp(buf, pos + 4, ln)
                pos = end
            elif c == 0x52:  # 'R' of RTSP/1.0
                if n - pos < 5:
                    break
                if buf[pos : pos + 5] != _RTSP:
                    pos = self._resync(buf, pos)
                    continue
                hend = buf.find(b"\r\n\r\n", pos)
                if hend < 0:
                    break
                head = bytes(buf[pos:hend]).decode("latin-1")
                lines = head.split("\r\n")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                blen = int(headers.get("content-length", "0") or 0)
                if hend + 4 + blen > n:
                    break
                body = bytes(buf[hend + 4 : hend + 4 + blen])
                pos = hend + 4 + blen
                try:
                    status = int(lines[0].split()[1])
                except (IndexError, ValueError):
                    status = 0
                if self.waiter and not self.waiter.done():
                    self.waiter.set_result((status, headers, body))
            else:
                pos = self._resync(buf, pos)
        del buf[:pos]

    def _resync(self, buf: bytearray, pos: int) -> int:
        self.desync += 1
        j = buf.find(b"$", pos + 1)
        return j if j >= 0 else len(buf)

    def _rtp(self, buf: bytearray, off: int, ln: int) -> None:
        b0 = buf[off]
        if b0 >> 6 != 2:
            return
        self.pkts += 1
        if not self.t_first_pkt:
            self.t_first_pkt = time.monotonic()
        seq = (buf[off + 2] << 8) | buf[off + 3]
        if self.last_seq >= 0:
            gap = (seq - self.last_seq - 1) & 0xFFFF
            if gap >= 0x8000:  # duplicate / reordered: keep the highest
                return
            self.lost += gap
        self.last_seq = seq
        ts = (buf[off + 4] << 24) | (buf[off + 5] << 16) | (buf[off + 6] << 8) | buf[off + 7]
        if self.ts_last >= 0:
            dts = (ts - self.ts_last) & 0xFFFFFFFF
            if dts < 0x80000000:
                self.media_ticks += dts
                self.ts_last = ts
        else:
            self.ts_last = ts
        if self.t_keyframe:
            if self.ts_key >= 0:
                now = time.monotonic()
                if now - self.t_keyframe < 5.0:
                    behind = ((ts - self.ts_key) & 0xFFFFFFFF) / 90000 - (now - self.t_keyframe)
                    if behind > self.behind_peak + 0.02:  # still in the burst
                        self.t_live = now
                    self.behind_peak = max(self.behind_peak, behind)
            return
        h = off + 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension
            if h + 4 > off + ln:
                return
            h += 4 + 4 * ((buf[h + 2] << 8) | buf[h + 3])
        if h + 4 > off + ln:
            return
        nal = buf[h] & 0x1F
        if nal == 24:  # STAP-A: look at the first aggregated NAL
            nal = buf[h + 3] & 0x1F
        elif nal == 28:  # FU-A: start fragment of an IDR
            nal = buf[h + 1] & 0x1F if buf[h + 1] & 0x80 else 0
        if nal in (5, 7):  # IDR slice or SPS (which precedes every IDR in this clip)
            self.t_keyframe = self.t_live = time.monotonic()
            self.ts_key = ts
            self._after_keyframe()

    def _after_keyframe(self) -> None:
        """Cut the per-session cost: unsampled sessions only count bytes from now on, read
        into a shared buffer; SO_RCVLOWAT makes the kernel wake us per ~64 KiB instead of per
        packet (TTFK is already measured, so the coarser wake-up does not bias it)."""
        lowat = self.rcvlowat // 4 if self.sampled else self.rcvlowat
        if lowat > 0 and self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
        if not self.sampled:
            self.mode = COUNT
            self.buf = bytearray()

    # requests
    def send(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: feedgate-bench"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def request(
        self, method: str, url: str, headers: dict[str, str], limit: float
    ) -> tuple[int, dict[str, str], bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.send(method, url, headers)
        try:
            return await asyncio.wait_for(self.waiter, limit)
        finally:
            self.waiter = None


def _resolve(base: str, control: str) -> str:
    if not control or control == "*":
        return base
    if control.startswith("rtsp://"):
        return control
    return base.rstrip("/") + "/" + control


def sdp_video_control(sdp: str) -> str:
    in_video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_video = line.startswith("m=video")
        elif in_video and line.startswith("a=control:"):
            return line[len("a=control:") :].strip()
    return ""


@dataclass
class LoadGen:
    url: str
    readers: int
    sample_every: int
    ramp_rate: float
    rcvlowat: int
    timeout: float = 15.0
    sessions: list[Reader] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)

    async def session(self, idx: int) -> None:
        r = Reader(idx, idx % self.sample_every == 0, self.rcvlowat)
        self.sessions.append(r)
        await self.open(r, self.url)

    async def open(self, r: Reader, url: str) -> None:
        """DESCRIBE, SETUP (TCP interleaved), PLAY ``url`` on ``r``; failures are counted by
        step and close it."""
        loop = asyncio.get_running_loop()
        step = "connect"
        r.t_connect = time.monotonic()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: r, HOST, int(url.split(":")[2].split("/")[0])),
                self.timeout,
            )
            step = "DESCRIBE"
            st, hdrs, body = await r.request(
                "DESCRIBE", url, {"Accept": "application/sdp"}, self.timeout
            )
            if st != 200:
                raise RtspError(f"DESCRIBE {st}")
            base = hdrs.get("content-base") or hdrs.get("content-location") or url
            step = "SETUP"
            track = _resolve(base, sdp_video_control(body.decode(errors="replace")))
            st, hdrs, _ = await r.request(
                "SETUP", track, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"}, self.timeout
            )
            if st != 200 or "session" not in hdrs:
                raise RtspError(f"SETUP {st}")
            sess = hdrs["session"].split(";")
            r.session = sess[0].strip()
            for part in sess[1:]:
                k, _, v = part.strip().partition("=")
                if k.lower() == "timeout" and v.strip().isdigit():
                    r.keepalive_every = min(20.0, max(2.0, int(v) / 3))
            step = "PLAY"
            r.url = base
            r.t_play = time.monotonic()
            st, _, _ = await r.request("PLAY", base, {"Range": "npt=0.000-"}, self.timeout)
            if st != 200:
                raise RtspError(f"PLAY {st}")
            r.playing = True
            r.next_keepalive = time.monotonic() + r.keepalive_every
        except RtspError as exc:
            self.failures[str(exc)] += 1
            self._close(r)
        except TimeoutError:
            self.failures[f"{step} timeout"] += 1
            self._close(r)
        except (ConnectionError, OSError) as exc:
            self.failures[f"{step}: {type(exc).__name__}"] += 1
            self._close(r)

    @staticmethod
    def _close(r: Reader) -> None:
        if r.transport is not None:
            r.transport.abort()
        r.closed = True

    async def ramp(self) -> None:
        t0 = time.monotonic()
        tasks = []
        for i in range(self.readers):
            delay = t0 + i / self.ramp_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.session(i)))
        await asyncio.gather(*tasks)

    async def keepalive(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            for r in self.sessions:
                if r.playing and not r.closed and now >= r.next_keepalive:
                    r.next_keepalive = now + r.keepalive_every
                    with contextlib.suppress(Exception):
                        r.send("GET_PARAMETER", r.url, {})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def total_bytes(self) -> int:
        return sum(r.nbytes for r in self.sessions)

    def close_all(self) -> None:
        for r in self.sessions:
            if r.transport is not None and not r.closed:
                r.transport.abort()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]
