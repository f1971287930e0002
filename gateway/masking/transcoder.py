"""Mask transcoder: burn privacy masks into a camera path's pixels and publish the result as a
derived hub path, shared by every viewer of that variant.

One :class:`MaskTranscoder` per (camera path, mask set). It reads the source path like any other
hub reader (interleaved ``$`` frames through a transport-like sink), reassembles H.264 access
units, and hands them to one worker thread that decodes (PyAV), fills the zones black
(:class:`gateway.masking.zones.MaskRaster`), re-encodes with libx264 (ultrafast, zerolatency,
in-band
SPS/PPS on every keyframe) and sends the RTP back to the event loop, where it enters the target
path through ``PathStream.on_rtp`` exactly like a publisher's packets.

The event loop never waits on the worker: access units go through a bounded queue, and when the
worker falls behind whole GOPs are dropped up to the next source keyframe (counted).

Keyframes follow the source: an IDR in goes out as an IDR, so viewers of the masked path join
at the same cadence as viewers of the original. Bitrate follows the source's measured byte rate.

Limits of this version: H.264 input only (an H.265 source is logged and not transcoded); only the
video track is carried, audio is dropped; input must decode to 4:2:0 8-bit (other formats are
converted to yuv420p first, at a cost).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from gateway.masking.encoding import (
    DEFAULT_FPS,
    DEFAULT_GOP,
    MAX_BITRATE,
    MIN_BITRATE,
    PAYLOAD_TYPE,
    default_bitrate,
    encoder_options,
    h264_track,
    reopen_needed,
    sprop_nals,
)
from gateway.masking.zones import MaskRaster, Zone
from gateway.protocols import h264
from gateway.protocols.rtp import RtpError, payload_of, rtp_header
from gateway.stream.hub import PathStream, Reader
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

__all__ = ["MaskTranscoder", "TranscoderCounters", "encoder_options", "h264_track", "sprop_nals"]

RTP_MTU = 1200
_TS_MOD = 1 << 32
_MAX_AU_BYTES = 8 * 1024 * 1024
_MAX_AU_PACKETS = 8192
_MAX_PARSER_BYTES = 16 * 1024 * 1024
_RTP_HEADER = struct.Struct("!BBHII")
_WAIT_KEYS = 3  # keyframes a fresh variant waits for its source's measurements, at most


@dataclass
class TranscoderCounters:
    frames_in: int = 0  # access units received from the source path
    frames_decoded: int = 0
    frames_out: int = 0  # access units published on the target path
    frames_dropped: int = 0  # access units not transcoded (queue full, corrupt, waiting for key)
    gops_dropped: int = 0  # times the worker fell behind and the rest of a GOP was skipped
    decode_errors: int = 0
    encoder_opens: int = 0
    encode_seconds: float = 0.0  # worker thread CPU time (decode + mask + encode)
    last_latency: float = 0.0  # seconds from the source AU's arrival to its masked RTP sent
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2048))


class _Sink(asyncio.WriteTransport):
    """The transport our hub reader writes to: parses ``$`` frames straight back into RTP."""

    def __init__(self, owner: MaskTranscoder, channel: int) -> None:
        super().__init__()
        self._owner = owner
        self._channel = channel
        self._buf = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        buf = self._buf
        buf += data
        at = 0
        n = len(buf)
        owner = self._owner
        while n - at >= 4:
            if buf[at] != 0x24:
                # Cannot happen with the hub's framing; resynchronise rather than stall.
                nxt = buf.find(b"$", at + 1)
                at = n if nxt < 0 else nxt
                continue
            size = (buf[at + 2] << 8) | buf[at + 3]
            if n - at - 4 < size:
                break
            if buf[at + 1] == self._channel:
                owner._on_packet(bytes(buf[at + 4 : at + 4 + size]))
            at += 4 + size
        del buf[:at]
        if len(buf) > _MAX_PARSER_BYTES:
            buf.clear()

    def is_closing(self) -> bool:
        return self._owner._stopped


@dataclass(slots=True)
class _Unit:
    data: bytes  # Annex-B access unit
    rtp_ts: int
    pts: int  # unwrapped 90 kHz timestamp
    is_key: bool
    arrival: float
    fps: float
    gop: int
    bitrate: int


class _Stop:
    pass


_STOP = _Stop()


class MaskTranscoder:
    """Decode ``source``'s H.264, mask ``zones``, re-encode, publish on ``target``."""

    def __init__(
        self,
        source: PathStream,
        target: PathStream,
        zones: tuple[Zone, ...],
        *,
        name: str,
        threads: int = 1,
        queue_size: int = 12,
        block: int = 8,
    ) -> None:
        self.source = source
        self.target = target
        self.raster = MaskRaster(zones, block=block)
        self.name = name
        self.source_id = f"mask:{name}"
        self.threads = threads
        self.counters = TranscoderCounters()
        # (width, height, gop, fps, bit rate) of each encoder opened, for tests and logs.
        self.opened_with: list[tuple[int, int, int, float, int]] = []
        self._queue: queue.Queue[_Unit | _Stop] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: asyncio.Task[None] | None = None
        self._reader: Reader | None = None
        self._stopped = False
        self._kicked = asyncio.Event()
        self._attached_sprop: tuple[bytes, bytes] | None = None
        self._replaced = False
        self._ignore_input = False
        self._sprop: list[bytes] = []  # SPS/PPS from the source SDP
        # Output RTP numbering (the target path rewrites it onto its own timeline anyway).
        self._out_seq = random.getrandbits(16)
        self._out_ssrc = random.getrandbits(32)
        self._reset_input()

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Attach to the source (now if it is publishing, else as soon as it is) and start the
        worker thread. Must be called from the event loop."""
        if self._thread is not None:
            raise RuntimeError("transcoder already started")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name=f"mask-{self.name}", daemon=True)
        self._thread.start()
        if self.source.has_source:
            self._attach()
        self._watch = self._loop.create_task(self._supervise(), name=f"mask-watch-{self.name}")

    async def stop(self) -> None:
        """Detach from both paths and wait for the worker to finish its current frame."""
        self._stopped = True
        await cancel_and_wait(self._watch)  # never swallows our own cancellation
        self._watch = None
        self._detach_reader()
        self.target.detach_source(self.source_id)
        thread = self._thread
        if thread is not None:
            # Make room for the sentinel: the worker may be behind.
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def _supervise(self) -> None:
        """Re-attach after the source restarts with a different format (the hub kicks readers
        then) or after we were attached before the source existed."""
        while not self._stopped:
            if self._reader is None:
                if not await self.source.wait_source(5.0):
                    continue
                self._attach()
                if self._reader is None:
                    await asyncio.sleep(1.0)  # no H.264 track: check again later
                    continue
            self._kicked.clear()
            await self._kicked.wait()

    def _attach(self) -> None:
        tracks = self.source.tracks
        video = next((t for t in tracks if t.is_video), None)
        if video is None or video.codec != "H264":
            log.warning(
                "mask %s: source %s has no H.264 video track (%s); not transcoding",
                self.name,
                self.source.name,
                video.codec if video else "none",
            )
            return
        self._sprop = sprop_nals(video)
        self._reset_input()
        channels = tuple(0 if t.index == video.index else None for t in tracks)
        reader = Reader(channels=channels, transport=_Sink(self, 0), on_kick=self._on_kick)
        self._reader = reader
        # The hub replays its cached GOP to a new reader at once. Transcoding that backlog
        # would leave the masked path a GOP behind real time for good, so start at the next
        # live keyframe instead.
        self._ignore_input = True
        try:
            self.source.add_reader(reader)
        finally:
            self._ignore_input = False

    def _on_kick(self, reason: str) -> None:
        log.info("mask %s: dropped by source %s: %s", self.name, self.source.name, reason)
        self._reader = None
        self._kicked.set()

    def _detach_reader(self) -> None:
        if self._reader is not None:
            self.source.remove_reader(self._reader)
            self._reader = None

    # ---- input side (event loop) ---------------------------------------------------------------

    def _reset_input(self) -> None:
        self._au: list[bytes] = []
        self._au_bytes = 0
        self._au_ts: int | None = None
        self._au_arrival = 0.0
        self._au_broken = False
        self._last_seq: int | None = None
        self._pending_params: list[bytes] = []
        self._skip_to_key = True
        self._ts_base: int | None = None
        self._ts_last = 0
        self._ts_ext = 0
        # Source measurements: keyframe spacing, frame rate, byte rate.
        self._since_key = 0
        self._gop = 0
        self._keys_waited = 0
        self._seen_key = False
        self._restarts_at_key = self.source.counters.source_restarts
        self._rate_window: deque[tuple[int, int]] = deque(maxlen=256)  # (pts, bytes)

    def _on_packet(self, packet: bytes) -> None:
        if self._stopped or self._ignore_input:
            return
        try:
            _pt, marker, seq, ts, _ssrc, _off = rtp_header(packet)
        except RtpError:
            return
        if self._last_seq is not None and seq != (self._last_seq + 1) & 0xFFFF:
            self._au_broken = True  # a lost packet: this AU cannot be decoded correctly
        self._last_seq = seq
        if self._au_ts is not None and ts != self._au_ts:
            self._finish_au()
        if self._au_ts is None:
            self._au_ts = ts
            self._au_arrival = time.monotonic()
        payload = bytes(payload_of(packet))
        self._au_bytes += len(payload)
        if self._au_bytes > _MAX_AU_BYTES or len(self._au) >= _MAX_AU_PACKETS:
            self._au_broken = True
        else:
            self._au.append(payload)
        if marker:
            self._finish_au()

    def _finish_au(self) -> None:
        payloads, ts, arrival, broken = self._au, self._au_ts, self._au_arrival, self._au_broken
        self._au = []
        self._au_bytes = 0
        self._au_ts = None
        self._au_broken = False
        if ts is None or not payloads:
            return
        counters = self.counters
        if broken:
            counters.frames_in += 1
            counters.frames_dropped += 1
            self._skip_to_key = True
            return
        try:
            nals = h264.depacketize(payloads)
        except h264.NalError:
            counters.frames_in += 1
            counters.frames_dropped += 1
            self._skip_to_key = True
            return
        types = {n[0] & 0x1F for n in nals}
        if types and types <= {h264.NAL_SPS, h264.NAL_PPS, h264.NAL_SEI, h264.NAL_AUD}:
            # Parameter sets sent as their own access unit: keep them for the next picture.
            self._pending_params.extend(
                n for n in nals if n[0] & 0x1F in (h264.NAL_SPS, h264.NAL_PPS)
            )
            del self._pending_params[:-8]
            return
        counters.frames_in += 1
        is_key = h264.NAL_IDR in types
        if self._pending_params:
            nals = self._pending_params + nals
            self._pending_params = []
            types.add(h264.NAL_SPS)
        if is_key and h264.NAL_SPS not in types:
            # Out-of-band parameter sets from the source's SDP (re-read: a restarted source
            # may have described new ones).
            video = next((t for t in self.source.tracks if t.is_video), None)
            if video is not None and video.codec == "H264":
                self._sprop = sprop_nals(video) or self._sprop
            nals = self._sprop + nals  # out-of-band parameter sets from the source's SDP
        # Unwrap the 32-bit RTP clock into a monotonic 90 kHz pts.
        if self._ts_base is None:
            self._ts_base = ts
            self._ts_last = ts
        delta = (ts - self._ts_last) % _TS_MOD
        if delta >= _TS_MOD // 2:
            delta -= _TS_MOD
        self._ts_last = ts
        self._ts_ext += delta
        pts = self._ts_ext
        size = sum(len(n) for n in nals)
        self._rate_window.append((pts, size))
        if is_key:
            # Not the part of a GOP we joined in, nor one a publisher restart cut short (no
            # new GOP length: measured, it reopened the encoder twice, a new x264 each time).
            restarts = self.source.counters.source_restarts
            if self._since_key and self._seen_key and restarts == self._restarts_at_key:
                self._gop = self._since_key
            self._restarts_at_key = restarts
            self._since_key = 0
            self._seen_key = True
        self._since_key += 1

        if self._skip_to_key and not is_key:
            counters.frames_dropped += 1
            return
        params = self._parameters(is_key)
        if params is None:
            counters.frames_dropped += 1  # the source's rate and GOP are not known yet
            return
        fps, gop, bitrate = params
        unit = _Unit(
            data=h264.annexb(nals),
            rtp_ts=ts,
            pts=pts,
            is_key=is_key,
            arrival=arrival,
            fps=fps,
            gop=gop,
            bitrate=bitrate,
        )
        try:
            self._queue.put_nowait(unit)
        except queue.Full:
            counters.frames_dropped += 1
            if not self._skip_to_key:
                counters.gops_dropped += 1
                log.warning("mask %s: worker behind, skipping to the next keyframe", self.name)
            self._skip_to_key = True
            return
        self._skip_to_key = False

    def _parameters(self, is_key: bool) -> tuple[float, int, int] | None:
        """The source's frame rate, GOP and bit rate for the encoder: our own measurements once
        we have them, until then the source path's (the hub measures every camera from its
        start), so the encoder opens right the first time. None while neither knows yet (a
        variant started with its camera): the first frames wait for the next keyframe, at
        most _WAIT_KEYS of them, then the defaults are used."""
        fps, bitrate = self._measure()
        gop = self._gop or None
        stats = self.source.video_stats
        if (fps is None or gop is None) and self._skip_to_key and not stats.ready:
            self._keys_waited += 1
            if self._keys_waited <= _WAIT_KEYS:
                return None
        if fps is None and stats.fps is not None:
            fps, bitrate = stats.fps, stats.bitrate
        gop = gop or stats.gop
        if bitrate:
            bitrate = min(MAX_BITRATE, max(MIN_BITRATE, bitrate))
        return fps or DEFAULT_FPS, gop or DEFAULT_GOP, bitrate or 0

    def _measure(self) -> tuple[float | None, int | None]:
        """Source frame rate and bit rate over our recent window (None until ~1 s seen)."""
        window = self._rate_window
        if len(window) >= 2:
            span = window[-1][0] - window[0][0]
            if span >= 90000:
                fps = (len(window) - 1) * 90000 / span
                nbytes = sum(b for _, b in window) - window[-1][1]
                return fps, int(nbytes * 8 * 90000 / span)
        return None, None

    # ---- worker thread -------------------------------------------------------------------------

    def _work(self) -> None:
        import av  # imported here: the gateway can run without masking (and without PyAV loaded)

        decoder: Any = None
        encoder: Any = None
        enc_key: tuple[int, int, int, int, str] | None = None
        meta: dict[int, _Unit] = {}  # decoder input by pts
        pending: dict[int, _Unit] = {}  # encoder input by pts
        last_pts = -(1 << 62)
        counters = self.counters
        while True:
            unit = self._queue.get()
            if isinstance(unit, _Stop):
                return
            t0 = time.thread_time()
            try:
                if decoder is None:
                    decoder = av.CodecContext.create("h264", "r")
                    decoder.thread_count = self.threads
                    decoder.thread_type = "SLICE"  # frame threads would add latency
                packet = av.Packet(unit.data)
                packet.pts = unit.pts
                packet.time_base = Fraction(1, 90000)
                meta[unit.pts] = unit
                if len(meta) > 64:
                    for k in sorted(meta)[:-32]:
                        del meta[k]
                try:
                    frames = decoder.decode(packet)
                except av.error.FFmpegError as exc:  # type: ignore[attr-defined,unused-ignore]
                    counters.decode_errors += 1
                    log.debug("mask %s: decode error: %s", self.name, exc)
                    continue
                for frame in frames:
                    counters.frames_decoded += 1
                    src = meta.pop(frame.pts, unit) if frame.pts is not None else unit
                    if frame.format.name not in ("yuv420p", "yuvj420p"):
                        frame = frame.reformat(format="yuv420p")
                    self.raster.apply(frame)
                    fmt = frame.format.name
                    want_bitrate = src.bitrate or default_bitrate(frame.width, frame.height)
                    key = (frame.width, frame.height, src.gop, want_bitrate, fmt)
                    if encoder is None or (src.is_key and reopen_needed(enc_key, key)):
                        encoder = self._open_encoder(av, frame, src, want_bitrate)
                        enc_key = key
                        last_pts = -(1 << 62)
                    # x264 wants strictly increasing pts; a source repeating a timestamp
                    # must not reset the codecs.
                    pts = src.pts if src.pts > last_pts else last_pts + 1
                    last_pts = pts
                    frame.pts = pts
                    frame.time_base = Fraction(1, 90000)
                    frame.pict_type = (
                        av.video.frame.PictureType.I
                        if src.is_key
                        else av.video.frame.PictureType.NONE
                    )
                    pending[pts] = src
                    for out in encoder.encode(frame):
                        done = pending.pop(out.pts, src) if out.pts is not None else src
                        self._emit(bytes(out), done)
                    if len(pending) > 64:
                        pending.clear()
            except Exception:
                log.exception("mask %s: transcoding failed; resetting codecs", self.name)
                decoder = encoder = None
                enc_key = None
            finally:
                counters.encode_seconds += time.thread_time() - t0

    def _open_encoder(self, av: Any, frame: Any, src: _Unit, bitrate: int) -> Any:
        enc = av.CodecContext.create("libx264", "w")
        enc.width = frame.width
        enc.height = frame.height
        enc.pix_fmt = frame.format.name
        enc.time_base = Fraction(1, 90000)
        enc.framerate = Fraction(round(src.fps * 1000), 1000)
        enc.gop_size = src.gop
        enc.max_b_frames = 0
        enc.bit_rate = bitrate
        enc.thread_count = self.threads
        enc.options = encoder_options(bitrate)
        enc.open()
        self.counters.encoder_opens += 1
        self.opened_with.append((frame.width, frame.height, src.gop, src.fps, bitrate))
        log.info(
            "mask %s: encoder %dx%d gop %d %.1f fps %d kbit/s",
            self.name,
            frame.width,
            frame.height,
            src.gop,
            src.fps,
            bitrate // 1000,
        )
        return enc

    def _emit(self, annexb_au: bytes, src: _Unit) -> None:
        """Packetize one encoded access unit and hand it to the event loop."""
        nals = [n for n in h264.split_annexb(annexb_au) if n[0] & 0x1F != h264.NAL_AUD]
        if not nals:
            return
        sps = next((n for n in nals if n[0] & 0x1F == h264.NAL_SPS), None)
        pps = next((n for n in nals if n[0] & 0x1F == h264.NAL_PPS), None)
        params = (sps, pps) if sps is not None and pps is not None else None
        payloads: list[bytes] = []
        for nal in nals:
            payloads.extend(h264.packetize(nal, RTP_MTU))
        packets = []
        seq = self._out_seq
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            header = _RTP_HEADER.pack(
                0x80,
                (0x80 if i == last else 0) | PAYLOAD_TYPE,
                seq,
                src.rtp_ts,
                self._out_ssrc,
            )
            packets.append(header + payload)
            seq = (seq + 1) & 0xFFFF
        self._out_seq = seq
        loop = self._loop
        if loop is None or self._stopped:
            return
        try:
            loop.call_soon_threadsafe(self._publish, packets, params, src.arrival)
        except RuntimeError:
            pass  # loop closed during shutdown

    # ---- output side (event loop) --------------------------------------------------------------

    def _publish(
        self, packets: list[bytes], params: tuple[bytes, bytes] | None, arrival: float
    ) -> None:
        if self._stopped or self._replaced:
            return
        target = self.target
        if params is not None and (
            params != self._attached_sprop or target.source_id != self.source_id
        ):
            # First keyframe, or new parameter sets (resolution change): (re)describe the path.
            if target.source_id == self.source_id:
                # Detach first: re-attaching over ourselves would report us as replaced.
                target.detach_source(self.source_id)
            target.attach_source(
                self.source_id, (h264_track(*params),), on_replaced=self._on_replaced
            )
            self._attached_sprop = params
        if target.source_id != self.source_id:
            return  # not attached yet (waiting for the first keyframe)
        for packet in packets:
            target.on_rtp(0, packet)
        counters = self.counters
        counters.frames_out += 1
        latency = time.monotonic() - arrival
        counters.last_latency = latency
        counters.latencies.append(latency)

    def _on_replaced(self) -> None:
        log.warning("mask %s: another publisher took %s", self.name, self.target.name)
        self._replaced = True
