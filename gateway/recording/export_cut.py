"""Cut a camera's recorded time range to one MP4 file: the engine under every export.

The recording index (:mod:`gateway.recording.index`) says which fragments (``moof`` +
``mdat``) of which segment files cover the range, and the UTC instant each one starts. Each
fragment is demuxed on its own with PyAV from its segment's initialisation bytes and its own
bytes, so memory stays at one fragment however long the range, and every packet's capture
time is its fragment's start plus its offset inside the fragment, whatever timestamps the
writer chose.

* **No zones** (a requester whose decision has no masks): the camera's own packets are
  remuxed, not re-encoded. The file starts at the keyframe at or before ``start`` (a decoder
  can start nowhere else), which the result reports as ``media_start``.
* **Zones** (the requester's masks, or a subject access request's redactions, each with its
  own time range): every frame from that keyframe on is decoded, frames before ``start`` are
  dropped, the zones active at the frame's time are filled black
  (:class:`gateway.masking.zones.MaskRaster`) and libx264 encodes the rest. The original
  pixels never reach the file.

Gaps inside the range stay gaps: timestamps follow capture times, so a player holds the last
picture across one, and the manifest lists them.

Blocking (disk and codecs): run :func:`cut` in a worker thread. ``progress`` is called with a
fraction from 0 to 1 after each fragment; setting ``cancel`` stops the cut at the next fragment
(:class:`Cancelled`), and the partial file is removed.
"""

from __future__ import annotations

import bisect
import io
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from gateway.masking.zones import MaskRaster, Zone
from gateway.recording.index import Fragment, RecordingIndex

__all__ = ["Cancelled", "CutError", "CutResult", "TimedZone", "cut"]

OUT_TIME_BASE = Fraction(1, 90_000)
_PAGE = 2_000  # fragments read from the index at a time
# The moov describes the track: no need to decode frames to learn it.
_PROBE = {"analyzeduration": "0", "fpsprobesize": "0"}
# Masked exports: libx264 at a constant quality. Evidence wants detail more than a small file.
ENCODER_OPTIONS = {"preset": "veryfast", "crf": "18"}


class CutError(Exception):
    """Nothing to export (no recording in the range), or the recording cannot be read."""


class Unreachable(CutError):
    """A segment in the range whose file this node cannot reach (another node's disk): the
    reason says which and why, for a 503."""


class Cancelled(Exception):
    """The cut was cancelled; nothing is left behind."""


@dataclass(frozen=True)
class TimedZone:
    """A zone burnt in while ``start <= t < end`` (None: always)."""

    zone: Zone
    start: datetime | None = None
    end: datetime | None = None

    def active(self, t: datetime) -> bool:
        return (self.start is None or self.start <= t) and (self.end is None or t < self.end)


@dataclass
class CutResult:
    media_start: datetime  # capture time of the file's first frame
    media_end: datetime  # capture time just after its last frame
    frames: int
    reencoded: bool
    codec: str
    width: int = 0
    height: int = 0
    gaps: list[tuple[datetime, datetime]] = field(default_factory=list)


def _fragments(
    index: RecordingIndex, camera: str, start: datetime, end: datetime
) -> Iterator[Fragment]:
    at = start
    seen: set[tuple[str, int]] = set()
    while True:
        page = index.fragments_from(camera, at, end, limit=_PAGE)
        fresh = [f for f in page if (f.segment, f.seq) not in seen]
        if not fresh:
            return
        for f in fresh:
            seen.add((f.segment, f.seq))
            yield f
        if len(page) < _PAGE:
            return
        # Resume after the last fragment; fragments_from starts at a keyframe at or before
        # its time, so the overlap is skipped by ``seen``.
        at = fresh[-1].start
        seen = {(f.segment, f.seq) for f in fresh if f.start >= at}


class _RunFile(io.RawIOBase):
    """One segment's initialisation bytes followed by a run of its fragments, as one seekable
    file, read from disk as the demuxer asks (never held whole in memory)."""

    def __init__(self, fh: Any, init_length: int, start: int, end: int) -> None:
        super().__init__()
        self._fh = fh
        self._init = init_length
        self._start = start  # the run's first byte in the segment file
        self._size = init_length + (end - start)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf: Any) -> int:
        want = min(len(buf), self._size - self._pos)
        if want <= 0:
            return 0
        if self._pos < self._init:
            want = min(want, self._init - self._pos)
            self._fh.seek(self._pos)
        else:
            self._fh.seek(self._start + self._pos - self._init)
        data = self._fh.read(want)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _runs(fragments: Iterator[Fragment]) -> Iterator[list[Fragment]]:
    """Fragments grouped into runs that lie end to end in one segment file."""
    run: list[Fragment] = []
    for f in fragments:
        if run and (f.segment != run[-1].segment or f.offset != run[-1].offset + run[-1].length):
            yield run
            run = []
        run.append(f)
    if run:
        yield run


@dataclass
class _Packet:
    packet: Any  # av.Packet, valid while its run's container is open
    t: datetime  # capture (presentation) time
    dts_t: datetime  # decode time
    key: bool
    fragment: Fragment
    audio: bool = False  # the camera's audio (remuxed, masked or not), timed like its video


def _packets(
    index: RecordingIndex, run: list[Fragment], on_stream: Callable[[Any, Any], None] | None
) -> Iterator[_Packet]:
    """The video packets of a run of fragments, each timed in UTC from its own fragment's
    start (the packet's byte position says which fragment holds it), and its audio packets,
    timed on the same segment timeline as the video last placed it. ``on_stream`` sees the
    input video and audio (or None) streams while their container is open (a template must
    not outlive it)."""
    seg = index.segment(run[0].segment)
    if seg is None:
        raise CutError(f"segment {run[0].segment} is no longer in the index")
    first, last = run[0], run[-1]
    path = index.file(seg)
    try:
        fh = path.open("rb")
    except OSError as exc:
        reason = index.unreachable(seg)
        if reason is not None:
            raise Unreachable(reason) from None
        raise CutError(f"segment {seg.id}: {exc.strerror}") from None
    with fh:
        if path.stat().st_size < last.offset + last.length:
            raise CutError(f"segment {seg.id}: fragment {last.seq} is cut short on disk")
        run_file = _RunFile(fh, seg.init_length, first.offset, last.offset + last.length)
        # Starts: where each fragment begins in the run's virtual file.
        starts = [seg.init_length + f.offset - first.offset for f in run]
        container: Any = av.open(io.BufferedReader(run_file, 1 << 20), format="mp4", options=_PROBE)
        with container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise CutError("recording has no video track")
            sound = next((s for s in container.streams if s.type == "audio"), None)
            if on_stream is not None:
                on_stream(stream, sound)
            tb = stream.time_base or Fraction(1, 90_000)
            base: dict[int, int] = {}  # fragment number -> its first packet's dts
            at = 0
            origin: datetime | None = None  # UTC of the segment timeline's zero
            for pkt in container.demux(*(s for s in (stream, sound) if s is not None)):
                if pkt.size == 0 or pkt.dts is None:
                    continue
                if pkt.pos is not None and pkt.pos >= 0:
                    at = max(0, bisect.bisect_right(starts, pkt.pos) - 1)
                frag = run[at]
                pts = pkt.pts if pkt.pts is not None else pkt.dts
                if sound is not None and pkt.stream.index == sound.index:
                    if origin is not None:  # audio before the run's first picture is left out
                        t = origin + timedelta(seconds=float(pts * sound.time_base))
                        yield _Packet(pkt, t, t, True, frag, audio=True)
                    continue
                zero = base.setdefault(at, pkt.dts)
                origin = frag.start - timedelta(seconds=float(zero * tb))
                yield _Packet(
                    pkt,
                    frag.start + timedelta(seconds=float((pts - zero) * tb)),
                    frag.start + timedelta(seconds=float((pkt.dts - zero) * tb)),
                    bool(pkt.is_keyframe),
                    frag,
                )


def _ticks(t: datetime, origin: datetime) -> int:
    return round((t - origin).total_seconds() / OUT_TIME_BASE)


def cut(
    index: RecordingIndex,
    camera: str,
    start: datetime,
    end: datetime,
    out_path: Path,
    *,
    zones: Sequence[TimedZone] = (),
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    fragmented: bool = False,
    timeline: datetime | None = None,
) -> CutResult:
    """Write ``[start, end)`` of ``camera`` to ``out_path`` (MP4); see the module docstring.
    ``fragmented``: one ``moof`` per key frame (what HTTP playback's ``format=fmp4`` asks)
    rather than one ``moov`` at the front. ``timeline`` (masked and fragmented only): the
    instant the output's time zero stands for, instead of the first frame's; masked HLS
    segments of one recorded file share one, so each carries on where the last one ended (its
    ``tfdt``) and a player needs no discontinuity between them. It must lie far enough before
    ``start`` that the encoder's first decode time (B-frames) is not negative."""
    if end <= start:
        raise CutError("the range's end must be after its start")
    if timeline is not None and not (zones and fragmented and timeline <= start):
        raise CutError("a timeline is for masked fragmented cuts, at or before their start")
    tmp = out_path.with_name(out_path.name + ".part")
    try:
        result = _cut(index, camera, start, end, tmp, zones, progress, cancel, fragmented, timeline)
        tmp.replace(out_path)
        return result
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cut(
    index: RecordingIndex,
    camera: str,
    start: datetime,
    end: datetime,
    tmp: Path,
    zones: Sequence[TimedZone],
    progress: Callable[[float], None] | None,
    cancel: threading.Event | None,
    fragmented: bool = False,
    timeline: datetime | None = None,
) -> CutResult:
    total = (end - start).total_seconds()
    masked = bool(zones)
    flags = "frag_keyframe+empty_moov+default_base_moof" if fragmented else "+faststart"
    options = {"movflags": flags}
    if timeline is not None:
        # Keep the first decode time as the first tfdt: without these the muxer moves the
        # track back to zero (its moov, written empty first, can hold no edit list).
        options = {
            "movflags": flags + "+frag_discont",
            "use_editlist": "0",
            "avoid_negative_ts": "disabled",
        }
    origin = start if timeline is None else timeline
    out = av.open(str(tmp), mode="w", format="mp4", options=options)
    result: CutResult | None = None
    # "out": the output stream, "dec": the masked decoder, "audio": the audio output stream
    streams: dict[str, Any] = {}
    rasters: dict[frozenset[str], MaskRaster] = {}
    last_end: datetime | None = None
    last_dts = last_audio = -1
    try:
        for run in _runs(_fragments(index, camera, start, end)):
            setup = None if streams else (lambda v, a: _open_output(out, v, a, masked, streams))
            current: Fragment | None = None
            for p in _packets(index, run, setup):
                if p.audio:
                    if result is not None and "audio" in streams and p.t < end:
                        zero = origin if masked else result.media_start
                        last_audio = _remux_audio(out, streams["audio"], p, zero, last_audio)
                    continue
                ostream: Any = streams["out"]
                decoder: Any = streams.get("dec")
                if p.fragment is not current:
                    # A new fragment: the moment to cancel, report progress, see a gap.
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    if current is not None and progress is not None:
                        progress(min(1.0, max(0.0, (current.end - start).total_seconds() / total)))
                    if last_end is not None and p.fragment.start - last_end > timedelta(seconds=1):
                        if result is not None:
                            result.gaps.append((last_end, p.fragment.start))
                    current = p.fragment
                    last_end = current.end
                if result is None:
                    cc = ostream.codec_context
                    result = CutResult(p.t, p.t, 0, masked, streams["codec"], cc.width, cc.height)
                if p.t >= end:
                    continue
                if masked:
                    _masked(decoder, out, ostream, p, (origin, start, end), zones, rasters, result)
                else:
                    last_dts = _remux(out, ostream, p, result.media_start, last_dts)
                    result.frames += 1
                result.media_end = max(result.media_end, p.t)
            if current is not None and progress is not None:
                progress(min(1.0, max(0.0, (current.end - start).total_seconds() / total)))
        if result is None:
            raise CutError(f"no recording of {camera} between {start} and {end}")
        if masked:
            decoder, ostream = streams["dec"], streams["out"]
            # Frames the decoder still holds (reordering, threads): those inside the range.
            for frame in decoder.decode(None):
                _burn(frame, out, ostream, (origin, start, end), zones, rasters, result)
            for pkt in ostream.encode(None):
                out.mux(pkt)
        # The last frame lasts until the next one would have come: one frame interval.
        result.media_end = min(end, result.media_end + timedelta(seconds=1 / 25))
    finally:
        out.close()
    if progress is not None:
        progress(1.0)
    return result


def _open_output(
    out: Any, template: Any, sound: Any, masked: bool, streams: dict[str, Any]
) -> None:
    cc = template.codec_context
    streams["codec"] = cc.name
    if sound is not None:
        # After the video's: the output's first track is the video, as in the recording.
        streams["audio_template"] = sound
    if not masked:
        ostream = out.add_stream_from_template(template)
        ostream.time_base = OUT_TIME_BASE
        streams["out"] = ostream
        _open_audio(out, streams)
        return
    decoder = av.CodecContext.create(cc.name, "r")
    decoder.extradata = cc.extradata
    # Frame threads: a camera's stream has one slice per picture, so slice threads (the
    # default) leave decoding on one core. Frames come out in order either way.
    decoder.thread_type = "AUTO"
    rate = template.average_rate or template.guessed_rate or 25
    ostream = out.add_stream("libx264", rate=rate)
    ostream.width, ostream.height = cc.width, cc.height
    ostream.pix_fmt = "yuv420p"
    ostream.time_base = OUT_TIME_BASE
    ostream.codec_context.time_base = OUT_TIME_BASE
    ostream.codec_context.options = dict(ENCODER_OPTIONS)
    streams["out"], streams["dec"] = ostream, decoder
    _open_audio(out, streams)


def _open_audio(out: Any, streams: dict[str, Any]) -> None:
    sound = streams.pop("audio_template", None)
    if sound is not None:
        astream = out.add_stream_from_template(sound)
        astream.time_base = sound.time_base
        streams["audio"] = astream


def _remux_audio(out: Any, astream: Any, p: _Packet, origin: datetime, last_dts: int) -> int:
    """One audio packet, on the output's timeline; none before its first picture."""
    ticks = _ticks(p.t, origin)
    if ticks < 0 or ticks <= last_dts:
        return last_dts
    pkt = p.packet
    pkt.pts = pkt.dts = ticks
    pkt.time_base = OUT_TIME_BASE
    pkt.stream = astream
    out.mux(pkt)
    return ticks


def _remux(out: Any, ostream: Any, p: _Packet, origin: datetime, last_dts: int) -> int:
    pkt = p.packet
    dts = max(_ticks(p.dts_t, origin), last_dts + 1)  # strictly rising, as MP4 needs
    pkt.dts = dts
    pkt.pts = max(_ticks(p.t, origin), dts)
    pkt.time_base = OUT_TIME_BASE
    pkt.is_keyframe = p.key
    pkt.stream = ostream
    out.mux(pkt)
    return dts


def _masked(
    decoder: Any,
    out: Any,
    ostream: Any,
    p: _Packet,
    span: tuple[datetime, datetime, datetime],
    zones: Sequence[TimedZone],
    rasters: dict[frozenset[str], MaskRaster],
    result: CutResult,
) -> None:
    pkt = p.packet
    pkt.pts = _ticks(p.t, span[0])
    pkt.dts = _ticks(p.dts_t, span[0])
    pkt.time_base = OUT_TIME_BASE
    for frame in decoder.decode(pkt):
        _burn(frame, out, ostream, span, zones, rasters, result)


def _burn(
    frame: Any,
    out: Any,
    ostream: Any,
    span: tuple[datetime, datetime, datetime],
    zones: Sequence[TimedZone],
    rasters: dict[frozenset[str], MaskRaster],
    result: CutResult,
) -> None:
    """Burn one decoded frame in and encode it. ``span``: (the output's time zero, the
    range's start, its end)."""
    if frame.pts is None:
        return
    origin, start, end = span
    t = origin + timedelta(seconds=float(frame.pts * OUT_TIME_BASE))
    if not start <= t < end:
        return  # decoded from the keyframe before the range only to reach it
    if result.frames == 0:
        result.media_start = t
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    active = [z.zone for z in zones if z.active(t)]
    key = frozenset(z.id for z in active)
    raster = rasters.get(key)
    if raster is None:
        raster = rasters[key] = MaskRaster(tuple(active), block=8)
    raster.apply(frame)
    frame.pts = _ticks(t, origin)
    frame.time_base = OUT_TIME_BASE
    frame.pict_type = av.video.frame.PictureType.NONE
    for opkt in ostream.encode(frame):
        out.mux(opkt)
    result.frames += 1
