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
from gateway.recording.index import Fragment, RecordingIndex, Segment

__all__ = ["Cancelled", "CutError", "CutResult", "TimedZone", "cut"]

OUT_TIME_BASE = Fraction(1, 90_000)
_PAGE = 2_000  # fragments read from the index at a time
# Masked exports: libx264 at a constant quality. Evidence wants detail more than a small file.
ENCODER_OPTIONS = {"preset": "veryfast", "crf": "18"}


class CutError(Exception):
    """Nothing to export (no recording in the range), or the recording cannot be read."""


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


class _Reader:
    """Segment files kept open while their fragments are read, one at a time."""

    def __init__(self, index: RecordingIndex) -> None:
        self.index = index
        self._segments: dict[str, tuple[Segment, bytes, Any]] = {}

    def bytes_of(self, f: Fragment) -> tuple[Segment, bytes]:
        entry = self._segments.get(f.segment)
        if entry is None:
            for _seg, _init, fh in self._segments.values():
                fh.close()
            self._segments.clear()
            seg = self.index.segment(f.segment)
            if seg is None:
                raise CutError(f"segment {f.segment} is no longer in the index")
            try:
                fh = self.index.file(seg).open("rb")
            except OSError as exc:
                raise CutError(f"segment {seg.id}: {exc.strerror}") from None
            init = fh.read(seg.init_length)
            entry = self._segments[f.segment] = (seg, init, fh)
        seg, init, fh = entry
        fh.seek(f.offset)
        body = fh.read(f.length)
        if len(body) != f.length:
            raise CutError(f"segment {seg.id}: fragment {f.seq} is cut short on disk")
        return seg, init + body

    def close(self) -> None:
        for _seg, _init, fh in self._segments.values():
            fh.close()
        self._segments.clear()


@dataclass
class _Packet:
    data: bytes
    t: datetime  # capture (presentation) time
    dts_t: datetime  # decode time
    key: bool


def _packets(
    data: bytes, frag_start: datetime, on_stream: Callable[[Any], None] | None
) -> list[_Packet]:
    """The video packets of one fragment (init + moof + mdat), timed in UTC. ``on_stream``
    sees the input stream while its container is open (a template must not outlive it)."""
    out: list[_Packet] = []
    container: Any = av.open(io.BytesIO(data), format="mp4")
    with container:
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None:
            raise CutError("recording has no video track")
        if on_stream is not None:
            on_stream(stream)
        tb = stream.time_base or Fraction(1, 90_000)
        first: int | None = None
        for pkt in container.demux(stream):
            if pkt.size == 0 or pkt.dts is None:
                continue
            if first is None:
                first = pkt.dts
            pts = pkt.pts if pkt.pts is not None else pkt.dts
            out.append(
                _Packet(
                    bytes(pkt),
                    frag_start + timedelta(seconds=float((pts - first) * tb)),
                    frag_start + timedelta(seconds=float((pkt.dts - first) * tb)),
                    bool(pkt.is_keyframe),
                )
            )
        return out


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
) -> CutResult:
    """Write ``[start, end)`` of ``camera`` to ``out_path`` (MP4); see the module docstring.
    ``fragmented``: one ``moof`` per key frame (what HTTP playback's ``format=fmp4`` asks)
    rather than one ``moov`` at the front."""
    if end <= start:
        raise CutError("the range's end must be after its start")
    reader = _Reader(index)
    tmp = out_path.with_name(out_path.name + ".part")
    try:
        result = _cut(reader, index, camera, start, end, tmp, zones, progress, cancel, fragmented)
        tmp.replace(out_path)
        return result
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        reader.close()


def _cut(
    reader: _Reader,
    index: RecordingIndex,
    camera: str,
    start: datetime,
    end: datetime,
    tmp: Path,
    zones: Sequence[TimedZone],
    progress: Callable[[float], None] | None,
    cancel: threading.Event | None,
    fragmented: bool = False,
) -> CutResult:
    total = (end - start).total_seconds()
    masked = bool(zones)
    flags = "frag_keyframe+empty_moov+default_base_moof" if fragmented else "+faststart"
    out = av.open(str(tmp), mode="w", format="mp4", options={"movflags": flags})
    result: CutResult | None = None
    streams: dict[str, Any] = {}  # "out": the output stream, "dec": the masked decoder
    rasters: dict[frozenset[str], MaskRaster] = {}
    last_end: datetime | None = None
    last_dts = -1
    try:
        for frag in _fragments(index, camera, start, end):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            _seg, data = reader.bytes_of(frag)
            setup = None if streams else (lambda s: _open_output(out, s, masked, streams))
            packets = _packets(data, frag.start, setup)
            ostream: Any = streams.get("out")
            decoder: Any = streams.get("dec")
            if result is None:
                if not packets:
                    continue
                cc = ostream.codec_context
                result = CutResult(
                    packets[0].t, packets[0].t, 0, masked, streams["codec"], cc.width, cc.height
                )
            elif last_end is not None and frag.start - last_end > timedelta(seconds=1):
                result.gaps.append((last_end, frag.start))
            for p in packets:
                if p.t >= end:
                    break
                if masked:
                    _masked(decoder, out, ostream, p, start, end, zones, rasters, result)
                else:
                    last_dts = _remux(out, ostream, p, result.media_start, last_dts)
                    result.frames += 1
                result.media_end = max(result.media_end, p.t)
            last_end = frag.end
            if progress is not None:
                progress(min(1.0, max(0.0, (frag.end - start).total_seconds() / total)))
        if result is None:
            raise CutError(f"no recording of {camera} between {start} and {end}")
        if masked:
            decoder, ostream = streams["dec"], streams["out"]
            # Frames the decoder still holds (reordering, threads): those inside the range.
            for frame in decoder.decode(None):
                _burn(frame, out, ostream, start, end, zones, rasters, result)
            for pkt in ostream.encode(None):
                out.mux(pkt)
        # The last frame lasts until the next one would have come: one frame interval.
        result.media_end = min(end, result.media_end + timedelta(seconds=1 / 25))
    finally:
        out.close()
    if progress is not None:
        progress(1.0)
    return result


def _open_output(out: Any, template: Any, masked: bool, streams: dict[str, Any]) -> None:
    cc = template.codec_context
    streams["codec"] = cc.name
    if not masked:
        ostream = out.add_stream_from_template(template)
        ostream.time_base = OUT_TIME_BASE
        streams["out"] = ostream
        return
    decoder = av.CodecContext.create(cc.name, "r")
    decoder.extradata = cc.extradata
    rate = template.average_rate or template.guessed_rate or 25
    ostream = out.add_stream("libx264", rate=rate)
    ostream.width, ostream.height = cc.width, cc.height
    ostream.pix_fmt = "yuv420p"
    ostream.time_base = OUT_TIME_BASE
    ostream.codec_context.time_base = OUT_TIME_BASE
    ostream.codec_context.options = dict(ENCODER_OPTIONS)
    streams["out"], streams["dec"] = ostream, decoder


def _remux(out: Any, ostream: Any, p: _Packet, origin: datetime, last_dts: int) -> int:
    pkt = av.Packet(p.data)
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
    start: datetime,
    end: datetime,
    zones: Sequence[TimedZone],
    rasters: dict[frozenset[str], MaskRaster],
    result: CutResult,
) -> None:
    pkt = av.Packet(p.data)
    pkt.pts = _ticks(p.t, start)
    pkt.dts = _ticks(p.dts_t, start)
    pkt.time_base = OUT_TIME_BASE
    for frame in decoder.decode(pkt):
        _burn(frame, out, ostream, start, end, zones, rasters, result)


def _burn(
    frame: Any,
    out: Any,
    ostream: Any,
    start: datetime,
    end: datetime,
    zones: Sequence[TimedZone],
    rasters: dict[frozenset[str], MaskRaster],
    result: CutResult,
) -> None:
    if frame.pts is None:
        return
    t = start + timedelta(seconds=float(frame.pts * OUT_TIME_BASE))
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
    frame.pts = _ticks(t, start)
    frame.time_base = OUT_TIME_BASE
    frame.pict_type = av.video.frame.PictureType.NONE
    for opkt in ostream.encode(frame):
        out.mux(opkt)
    result.frames += 1
