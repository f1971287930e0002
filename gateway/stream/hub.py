"""The stream hub: one owner per camera path, fanning each RTP packet out to every reader.

A ``PathStream`` is the only thing that mutates a camera path's media state. Ingest (pull or push)
hands it packets; it rewrites them onto one continuous output timeline (so a camera that drops and
comes back looks to readers like one stream with a gap, not a new stream), groups them into access
units, keeps the current GOP for late joiners, and writes each access unit to every reader with
one ``transport.write`` per reader.

Readers never slow the source or each other: the hub only ever *offers* bytes. A reader whose
socket buffer is full (asyncio paused its writing) loses whole access units until the next
keyframe, counted, and is disconnected if it stays stuck for the write timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.protocols import h264, h265
from gateway.protocols.rtp import (
    RTP_HEADER,
    RtpError,
    rewrite_rtp,
    rewrite_sender_report,
    rtp_header,
)
from gateway.stream.joining import JoinPolicy
from gateway.stream.reorder import ReorderCounters
from gateway.stream.stall import StallDetector, StallEvent, StallState
from gateway.stream.stats import VideoStats
from gateway.stream.timeline import PathTimeline, ntp_from_seconds
from gateway.stream.tracks import Track

log = logging.getLogger(__name__)

_SEQ_MOD = 1 << 16
SOURCE_CHANGED = "source format changed"  # why readers are dropped: DESCRIBE again


@dataclass
class UdpTarget:
    """Where a UDP reader receives: our RTP/RTCP sockets and the client's ports per track."""

    rtp: asyncio.DatagramTransport
    rtcp: asyncio.DatagramTransport
    host: str
    ports: tuple[tuple[int, int] | None, ...]  # per track: (client rtp port, client rtcp port)


# A reader that takes packets rather than bytes (WebRTC re-packs and encrypts per viewer): it is
# given each access unit's (track, RTP packet, is_rtcp) items and whether it starts a GOP, and
# returns what it sent: (packets, bytes).
PacketSink = Callable[[list[tuple[int, bytes, bool]], bool], tuple[int, int]]


class Reader:
    """A PLAYing session as the hub sees it. The RTSP server owns the connection; the hub owns
    the counters and the flow-control state, which it alone mutates."""

    __slots__ = (
        "bytes_sent",
        "channels",
        "closed",
        "frames_dropped",
        "key",
        "on_kick",
        "packets_dropped",
        "packets_sent",
        "paused_since",
        "sink",
        "transport",
        "udp",
        "waiting_key",
    )

    def __init__(
        self,
        *,
        channels: tuple[int | None, ...],
        transport: asyncio.WriteTransport | None = None,
        udp: UdpTarget | None = None,
        sink: PacketSink | None = None,
        on_kick: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.channels = channels  # per track: interleaved RTP channel, None if not set up
        self.key = channels  # readers with the same channel map share framed bytes
        self.transport = transport
        self.udp = udp
        self.sink = sink
        self.on_kick = on_kick
        self.bytes_sent = 0
        self.packets_sent = 0
        self.packets_dropped = 0
        self.frames_dropped = 0
        self.waiting_key = True
        self.paused_since: float | None = None
        self.closed = False

    # Called by the server's protocol from asyncio's flow-control callbacks.
    def pause_writing(self) -> None:
        if self.paused_since is None:
            self.paused_since = time.monotonic()

    def resume_writing(self) -> None:
        self.paused_since = None


class _Batch:
    """One access unit (plus any audio/RTCP that arrived with it), ready to be framed."""

    __slots__ = ("framed", "is_key", "items", "params_only")

    def __init__(self) -> None:
        # (track index, packet, is_rtcp)
        self.items: list[tuple[int, bytes, bool]] = []
        self.is_key = False
        self.params_only = False
        self.framed: dict[tuple[int | None, ...], tuple[bytes, int, int]] = {}

    def frame_for(self, channels: tuple[int | None, ...]) -> tuple[bytes, int, int]:
        """Interleaved bytes for this channel map, built once per map: (data, packets, bytes)."""
        cached = self.framed.get(channels)
        if cached is not None:
            return cached
        parts: list[bytes] = []
        count = 0
        ntracks = len(channels)
        for track, packet, is_rtcp in self.items:
            ch = channels[track] if track < ntracks else None
            if ch is None:
                continue
            if is_rtcp:
                ch += 1
            n = len(packet)
            parts.append(bytes((0x24, ch, n >> 8, n & 0xFF)))
            parts.append(packet)
            count += 1
        data = b"".join(parts)
        result = (data, count, len(data))
        self.framed[channels] = result
        return result


@dataclass
class PathCounters:
    bytes_in: int = 0
    packets_in: int = 0
    bytes_out: int = 0
    packets_out: int = 0
    packets_dropped: int = 0
    frames_dropped: int = 0
    readers_dropped: int = 0
    source_restarts: int = 0
    bad_packets: int = 0
    parameter_sets_injected: int = 0  # IDRs given the source's new SPS/PPS in band


class PathStream:
    """A camera path: its current source, its readers, its GOP cache and its counters."""

    def __init__(
        self,
        name: str,
        *,
        gop_cache_bytes: int = 16 * 1024 * 1024,
        write_timeout: float = 10.0,
        stall: StallDetector | None = None,
        join: JoinPolicy | None = None,
    ) -> None:
        self.name = name
        self.join = join or JoinPolicy()
        self.stall = stall or StallDetector()
        # Told when the source stalls and recovers; None: nobody watches this path (variants).
        self.on_stall: Callable[[PathStream, StallEvent], None] | None = None
        self.gop_cache_bytes = gop_cache_bytes
        self.write_timeout = write_timeout
        self.tracks: tuple[Track, ...] = ()
        self.session_attrs: tuple[str, ...] = ()
        self.source_id: str | None = None
        self.readers: set[Reader] = set()
        self.counters = PathCounters()
        self.video_stats = VideoStats()  # the current source's frame rate, GOP, bit rate
        self.reorder = ReorderCounters()  # UDP ingest's reordering of this path's source
        self.timeline: PathTimeline | None = None
        self._video_track = -1
        self._inject: tuple[bytes, ...] = ()  # parameter sets put in band (see attach_source)
        self._params_seen = False
        self._keyframe_fn: Callable[[bytes], bool] | None = None
        self._params_fn: Callable[[bytes], bool] | None = None
        self._batch = _Batch()
        self._batch_ts: int | None = None
        self._batch_params_only = False
        self._gop: list[_Batch] = []
        self._gop_bytes = 0
        self._gop_since = 0.0  # when the cached GOP's keyframe arrived (monotonic)
        self._source_event = asyncio.Event()
        self._last_rtp: list[tuple[int, int]] = []  # per track: (out seq, out ts), last packet
        self._on_replaced: Callable[[], None] | None = None

    # ---- source side -------------------------------------------------------------------------

    @property
    def has_source(self) -> bool:
        return self.source_id is not None

    async def wait_source(self, timeout: float) -> bool:
        if self.has_source:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._source_event.wait()
        except TimeoutError:
            return False
        return self.has_source

    def attach_source(
        self,
        source_id: str,
        tracks: Iterable[Track],
        session_attrs: Iterable[str] = (),
        on_replaced: Callable[[], None] | None = None,
    ) -> None:
        """A publisher or pull ingest has started. Readers stay attached across a source restart
        when the new source has the same track formats; otherwise they are disconnected, since the
        SDP they were given no longer describes what they would receive.

        A new publisher replaces the current one (a restarted encoder must not wait for its old
        connection to time out); the old one is told through its ``on_replaced``."""
        tracks = tuple(tracks)
        if self.source_id is not None:
            replaced = self._on_replaced
            self.detach_source(self.source_id)
            if replaced is not None:
                replaced()
        self._on_replaced = on_replaced
        if self.tracks and (
            len(tracks) != len(self.tracks)
            or not all(a.same_format(b) for a, b in zip(tracks, self.tracks, strict=True))
        ):
            for reader in list(self.readers):
                self.kick(reader, SOURCE_CHANGED)
            self.timeline = None
        if self.timeline is None or len(self.timeline) != len(tracks):
            # The output wall clock (sender reports' NTP) follows this process's clock.
            ntp_base = ntp_from_seconds(time.time() - time.monotonic())
            self.timeline = PathTimeline((t.clock_rate for t in tracks), ntp_base=ntp_base)
            self._last_rtp = [(c.last_out_seq, c.last_out_ts) for c in self.timeline.tracks]
        else:
            self.counters.source_restarts += 1
            self.timeline.restart()
        self._inject = self._parameter_sets_to_inject(tracks)
        self._params_seen = False
        self.tracks = tracks
        self.session_attrs = tuple(session_attrs)
        self.source_id = source_id
        self._video_track = -1
        self._keyframe_fn = self._params_fn = None
        for t in tracks:
            if t.is_video and t.codec in ("H264", "H265"):
                self._video_track = t.index
                mod = h264 if t.codec == "H264" else h265
                self._keyframe_fn = mod.is_keyframe_packet
                self._params_fn = mod.is_parameter_set_packet
                break
        self.video_stats = VideoStats()
        # The old GOP belongs to the old source's timeline; new readers wait for the new one.
        self._gop = []
        self._gop_bytes = 0
        self._batch = _Batch()
        self._batch_ts = None
        self._source_event.set()
        log.info("path %s: source %s attached (%d tracks)", self.name, source_id, len(tracks))

    def _parameter_sets_to_inject(self, tracks: tuple[Track, ...]) -> tuple[bytes, ...]:
        """A source that carries its parameter sets only in its SDP, restarted with other ones
        (a resolution change) for readers that were described the old ones: its new parameter
        sets, to put in band before each IDR that comes without its own."""
        old = next((t for t in self.tracks if t.is_video), None)
        new = next((t for t in tracks if t.is_video), None)
        if old is None or new is None or not self.readers:
            return ()
        before, after = old.parameter_sets(), new.parameter_sets()
        if after and after != before:
            log.info("path %s: parameter sets changed; sent in band before IDRs", self.name)
            return after
        # The same ones again: readers from before an earlier change may still need them.
        return self._inject if after == before else ()

    def _inject_parameter_sets(
        self, track: int, packet: bytes, out_seq: int, out_ts: int, ssrc: int
    ) -> bytes:
        """Put the injected parameter sets, one single-NAL packet each, before this IDR packet:
        they take its sequence numbers and the rest of the stream moves on by as many."""
        assert self.timeline is not None
        n = len(self._inject)
        self.timeline.shift_seq(track, n)
        for i, nal in enumerate(self._inject):
            header = RTP_HEADER.pack(0x80, packet[1] & 0x7F, (out_seq + i) % _SEQ_MOD, out_ts, ssrc)
            self._batch.items.append((track, header + nal, False))
        self.counters.parameter_sets_injected += 1
        out_seq = (out_seq + n) % _SEQ_MOD
        self._last_rtp[track] = (out_seq, out_ts)
        return rewrite_rtp(packet, out_seq, out_ts, ssrc)

    def detach_source(self, source_id: str) -> None:
        if self.source_id != source_id:
            return  # a replaced publisher's late goodbye
        self._flush()
        self.source_id = None
        self._on_replaced = None
        self._source_event = asyncio.Event()
        log.info(
            "path %s: source %s detached; %d readers wait", self.name, source_id, len(self.readers)
        )

    def on_rtp(self, track: int, packet: bytes) -> None:
        """One RTP packet from the source. Runs per packet: keep it lean."""
        try:
            _pt, marker, seq, ts, _ssrc, offset = rtp_header(packet)
        except RtpError:
            self.counters.bad_packets += 1
            return
        timeline = self.timeline
        if timeline is None or track >= len(timeline):
            self.counters.bad_packets += 1
            return
        now = time.monotonic()
        stall = self.stall
        if stall.state is StallState.LIVE:
            stall.last_media = now
        elif (event := stall.media(now)) is not None and self.on_stall is not None:
            self.on_stall(self, event)
        out_seq, out_ts = timeline.rtp(track, seq, ts, now)
        self._last_rtp[track] = (out_seq, out_ts)
        packet = rewrite_rtp(packet, out_seq, out_ts, timeline.tracks[track].ssrc)
        counters = self.counters
        counters.packets_in += 1
        counters.bytes_in += len(packet)

        if track != self._video_track:
            self._batch.items.append((track, packet, False))
            if self._video_track < 0:
                self._flush()  # audio-only or unknown codec: no access units to wait for
            return
        if self._batch_ts is not None and ts != self._batch_ts:
            self._flush()  # the source did not mark the end of the last access unit
        batch = self._batch
        if not batch.items or self._batch_ts is None:
            self._batch_params_only = True
        self._batch_ts = ts
        payload = packet[offset:]
        if self._inject and self._params_fn is not None and self._params_fn(payload):
            self._params_seen = True  # in band: nothing to add before this GOP's IDR
        if self._keyframe_fn is not None and not batch.is_key and self._keyframe_fn(payload):
            batch.is_key = True
            if self._inject and not self._params_seen:
                ssrc = timeline.tracks[track].ssrc
                packet = self._inject_parameter_sets(track, packet, out_seq, out_ts, ssrc)
        if self._batch_params_only and not (self._params_fn and self._params_fn(payload)):
            self._batch_params_only = False
        batch.items.append((track, packet, False))
        if marker:
            self._flush()

    def on_rtcp(self, track: int, packet: bytes) -> None:
        """Sender reports are rewritten onto the output timeline, the new source's first one
        included, so readers keep their tracks in sync and in time across source restarts."""
        timeline = self.timeline
        if timeline is None or track >= len(timeline) or len(packet) < 28 or packet[1] != 200:
            return
        if packet[0] & 0xC0 != 0x80 or ((packet[2] << 8) | packet[3]) < 6:
            return  # not version 2, or shorter than a sender report says it must be
        try:
            ntp = int.from_bytes(packet[8:16], "big")
            rtp_ts = int.from_bytes(packet[16:20], "big")
            out_ntp, out_ts = timeline.sender_report(track, ntp, rtp_ts, time.monotonic())
            packet = rewrite_sender_report(packet, timeline.tracks[track].ssrc, out_ts, out_ntp)
        except (RtpError, ValueError):
            return
        self._batch.items.append((track, packet, True))

    # ---- fan-out ------------------------------------------------------------------------------

    def _flush(self) -> None:
        batch = self._batch
        if not batch.items:
            return
        ts, self._batch_ts = self._batch_ts, None
        self._batch = _Batch()
        self.stall.frame(time.monotonic())
        params_only = self._batch_params_only and self._video_track >= 0
        if ts is not None and not params_only:
            self.video_stats.add(ts, sum(len(p) for _, p, _ in batch.items), batch.is_key)
        self._batch_params_only = False
        if batch.is_key and not params_only:
            self._params_seen = False  # the next GOP must bring its own (or get ours)
        if params_only:
            # SPS/PPS sent as their own access unit start a GOP too.
            batch.is_key = batch.params_only = True
        self._cache(batch)
        if self.readers:
            self._deliver(batch)

    def _cache(self, batch: _Batch) -> None:
        if self._video_track < 0:
            return
        size = sum(len(p) for _, p, _ in batch.items)
        if batch.is_key:
            # Keep parameter sets that came just before this keyframe as their own unit.
            if not (len(self._gop) == 1 and self._gop[0].params_only and not batch.params_only):
                self._gop = []
                self._gop_bytes = 0
                self._gop_since = time.monotonic()
        elif not self._gop:
            return  # no keyframe seen yet: nothing a late joiner could decode
        if self._gop_bytes + size > self.gop_cache_bytes:
            # A GOP this long is not worth holding; late joiners wait for the next keyframe.
            self._gop = []
            self._gop_bytes = 0
            return
        self._gop.append(batch)
        self._gop_bytes += size

    def _deliver(self, batch: _Batch) -> None:
        counters = self.counters
        is_key = batch.is_key
        for reader in list(self.readers):
            if reader.paused_since is not None:
                # The reader's socket is full: drop this access unit, resume at a keyframe.
                _data, n, _size = batch.frame_for(reader.key)
                reader.packets_dropped += n
                reader.frames_dropped += 1
                counters.packets_dropped += n
                counters.frames_dropped += 1
                reader.waiting_key = True
                continue
            if reader.waiting_key:
                if not is_key:
                    _data, n, _size = batch.frame_for(reader.key)
                    reader.packets_dropped += n
                    reader.frames_dropped += 1
                    counters.packets_dropped += n
                    counters.frames_dropped += 1
                    continue
                reader.waiting_key = False
            self._send(reader, batch)

    def _send(self, reader: Reader, batch: _Batch) -> None:
        if reader.sink is not None:
            n, size = reader.sink(batch.items, batch.is_key)
            reader.packets_sent += n
            reader.bytes_sent += size
            self.counters.packets_out += n
            self.counters.bytes_out += size
            return
        if reader.transport is not None:
            if reader.transport.is_closing():
                # Lost (a write met a reset) or closing: asyncio drops writes until connection_lost
                # ends the session (warning from the 5th) or queues them behind the close.
                self.readers.discard(reader)
                return
            data, n, size = batch.frame_for(reader.key)
            if n:
                reader.transport.write(data)
                reader.packets_sent += n
                reader.bytes_sent += size
                self.counters.packets_out += n
                self.counters.bytes_out += size
            return
        udp = reader.udp
        if udp is None:
            return
        ports = udp.ports
        host = udp.host
        sent = 0
        nbytes = 0
        for track, packet, is_rtcp in batch.items:
            pair = ports[track] if track < len(ports) else None
            if pair is None:
                continue
            if is_rtcp:
                udp.rtcp.sendto(packet, (host, pair[1]))
            else:
                udp.rtp.sendto(packet, (host, pair[0]))
            sent += 1
            nbytes += len(packet)
        reader.packets_sent += sent
        reader.bytes_sent += nbytes
        self.counters.packets_out += sent
        self.counters.bytes_out += nbytes

    # ---- readers ------------------------------------------------------------------------------

    def start_position(self) -> list[tuple[int, int]]:
        """Per track (seq, rtptime) of the next packet a new reader will get, for RTP-Info."""
        if self._gop:
            first: dict[int, tuple[int, int]] = {}
            for batch in self._gop:
                for track, packet, is_rtcp in batch.items:
                    if not is_rtcp and track not in first:
                        first[track] = (
                            int.from_bytes(packet[2:4], "big"),
                            int.from_bytes(packet[4:8], "big"),
                        )
            return [
                first.get(i, ((s + 1) % _SEQ_MOD, t)) for i, (s, t) in enumerate(self._last_rtp)
            ]
        return [((s + 1) % _SEQ_MOD, t) for s, t in self._last_rtp]

    def add_reader(self, reader: Reader) -> None:
        """Start a reader from the cached GOP at once, or at the next keyframe when the cache
        is too old or (UDP) too big for that (see gateway.stream.joining)."""
        self.readers.add(reader)
        reader.waiting_key = True
        age = time.monotonic() - self._gop_since
        udp = reader.udp is not None
        if self._gop and self.join.from_cache(age=age, cached_bytes=self._gop_bytes, udp=udp):
            reader.waiting_key = False
            for batch in self._gop:
                self._send(reader, batch)

    def remove_reader(self, reader: Reader) -> None:
        self.readers.discard(reader)

    def kick(self, reader: Reader, reason: str) -> None:
        if reader in self.readers:
            self.readers.discard(reader)
            self.counters.readers_dropped += 1
            reader.closed = True
            reader.on_kick(reason)

    def reap(self, now: float) -> None:
        """Disconnect readers whose sockets have been backed up longer than the write timeout."""
        for reader in list(self.readers):
            since = reader.paused_since
            if since is not None and now - since > self.write_timeout:
                log.warning(
                    "path %s: reader stuck for %.1fs, disconnecting", self.name, now - since
                )
                self.kick(reader, "write timeout")

    def check_stall(self, now: float) -> None:
        if self.on_stall is not None and (event := self.stall.check(now)) is not None:
            self.on_stall(self, event)

    @property
    def gop_cached_bytes(self) -> int:
        return self._gop_bytes

    @property
    def gop_age(self) -> float | None:
        """Seconds since the cached GOP's keyframe arrived; None with nothing cached."""
        return time.monotonic() - self._gop_since if self._gop else None


class StreamHub:
    """All paths of this process, by name."""

    def __init__(
        self,
        *,
        gop_cache_bytes: int = 16 * 1024 * 1024,
        write_timeout: float = 10.0,
        stall_after: float = 3.0,
        stall_frames: int = 10,
        join: JoinPolicy | None = None,
    ):
        self.join = join or JoinPolicy()
        self.paths: dict[str, PathStream] = {}
        self.gop_cache_bytes = gop_cache_bytes
        self.write_timeout = write_timeout
        self.stall_after = stall_after
        self.stall_frames = stall_frames

    def get(self, name: str) -> PathStream | None:
        return self.paths.get(name)

    def path(self, name: str) -> PathStream:
        stream = self.paths.get(name)
        if stream is None:
            stream = PathStream(
                name,
                gop_cache_bytes=self.gop_cache_bytes,
                write_timeout=self.write_timeout,
                stall=StallDetector(stall_after=self.stall_after, stall_frames=self.stall_frames),
                join=self.join,
            )
            self.paths[name] = stream
        return stream

    async def run_reaper(self, interval: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for stream in list(self.paths.values()):
                stream.reap(now)
                stream.check_stall(now)
