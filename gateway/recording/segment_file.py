"""One fMP4 segment file as the recorder writes it: PyAV's muxer over the file, the bytes followed
box by box as they go out, so each completed fragment comes back with its byte range and what
its ``moof`` says (the same facts the reconciler reads back after a crash). The video is the
first track; a camera's audio, when it has one, the second: AAC or Opus as sent, G.711 as 16-bit
PCM (:mod:`gateway.recording.sound_codecs`). Runs on a recorder thread.

An H.264 track is declared with its ``avcC`` and takes its samples length-prefixed, as the file
stores them (:mod:`gateway.recording.codecs`); an H.265 track takes Annex B."""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from gateway.protocols import h264
from gateway.protocols.fragments import NalError
from gateway.recording import fmp4
from gateway.recording.audio import AacFormat, AudioFormat, add_aac_stream
from gateway.recording.codecs import Codec, avcc_record
from gateway.recording.sound_codecs import add_sound_stream

__all__ = ["AUDIO_MUX_OPTIONS", "MUX_OPTIONS", "SegmentFile"]

CLOCK = 90_000
TIME_BASE = Fraction(1, CLOCK)
# The muxer hands a whole fragment (~0.5 MB at 4 Mbit/s) to one write, not 32 KiB pieces.
AVIO_BUFFER = 1 << 20
MUX_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof+skip_trailer",
    "frag_duration": "1000000",  # µs: at most one second of media per fragment
}
# With audio: the moov waits for the first fragment, so each track keeps where it starts (audio
# rarely starts exactly at the first picture), and the muxer holds one track's samples for the
# other's at most 0.2 s (a camera whose audio stops must not hold its video back 10 s).
# A raw H.264 stream of just an SPS and a PPS (a 1080p Baseline stream's): demuxed, it gives a
# stream whose codec context PyAV copies into the output as it is (a mux-only stream cannot be
# given its avcC); the track's own avcC, width and height then replace the template's.
_H264_TEMPLATE = bytes.fromhex(
    "000000016742c028da01e0089f97011000000300100000030320f1832a0000000168ce3c80"
)
AUDIO_MUX_OPTIONS = {
    **MUX_OPTIONS,
    "movflags": MUX_OPTIONS["movflags"] + "+delay_moov",
    "max_interleave_delta": "200000",
}


class _TrackedFile(io.RawIOBase):
    """The segment file as the muxer sees it: written through, its boxes followed."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._f = open(path, "wb", buffering=0)
        self.tracker = fmp4.BoxTracker()
        self.fragments: list[fmp4.FragmentBox] = []
        self.head = bytearray()  # the initialisation segment, while it is written

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        n = len(view)
        done = 0
        while done < n:
            done += self._f.write(view[done:]) or 0
        if self.tracker.init_length is None and len(self.head) < 1 << 20:
            self.head += view
        self.fragments.extend(self.tracker.feed(view))
        return n

    def sync_close(self) -> None:
        try:
            os.fsync(self._f.fileno())
        finally:
            self._f.close()


class SegmentFile:
    """One fMP4 file being written."""

    def __init__(
        self,
        path: Path,
        codec: Codec,
        width: int = 0,
        height: int = 0,
        audio: AudioFormat | None = None,
        params: dict[int, bytes] | None = None,
    ) -> None:
        """``params``: the parameter sets by NAL unit type; an H.264 track needs its SPS and PPS
        (:class:`~gateway.protocols.fragments.NalError` if the SPS cannot be read)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = _TrackedFile(path)
        options = MUX_OPTIONS
        if audio is not None:
            # The sound's first sample rarely falls on the first picture: the muxer says where it
            # starts with an edit list in the movie's timescale, by default milliseconds, which
            # would move each segment's sound by up to a millisecond against the last one's.
            options = {**AUDIO_MUX_OPTIONS, "movie_timescale": str(audio.sample_rate)}
        self._container: Any = av.open(
            self._file, "w", format="mp4", options=options, buffer_size=AVIO_BUFFER
        )
        # The video is the first track: the index reads each fragment's times from its traf.
        if codec.name == "H264":
            self._stream: Any = _h264_stream(self._container, params or {}, width, height)
        else:
            kwargs: dict[str, Any] = {}
            if width and height:
                kwargs = {"width": width, "height": height}
            self._stream = self._container.add_mux_stream(codec.mux_name, **kwargs)
        self._stream.time_base = TIME_BASE
        self._audio: Any = None
        if isinstance(audio, AacFormat):
            self._audio = add_aac_stream(self._container, audio)
        elif audio is not None:
            self._audio = add_sound_stream(self._container, audio)
        self._audio_dts = -1
        self.timescale = CLOCK
        self._defaults = (0, 0)  # the moov's trex defaults, read from the init segment
        self._track_id: int | None = None  # the video's, from the init segment
        self._video_next = 0  # where the video's next fragment begins
        self._last_dts = -1
        self._interval = CLOCK // 25
        self.closed = False

    @property
    def init_length(self) -> int | None:
        return self._file.tracker.init_length

    def mux(self, sample: bytes, pts: int, key: bool) -> list[tuple[fmp4.FragmentBox, fmp4.Moof]]:
        """Add one access unit (as the codec's ``sample`` makes it, ``pts`` in 90 kHz from the
        segment's start); return the fragments this completed."""
        packet = av.Packet(sample)
        dts = max(pts, self._last_dts + 1)  # monotonic even if the camera's clock stutters
        if self._last_dts >= 0:
            self._interval = dts - self._last_dts
        self._last_dts = dts
        packet.pts = dts
        packet.dts = dts
        # The muxer takes a sample's duration from the next one; the last sample of a segment
        # gets the interval before it.
        packet.duration = self._interval
        packet.time_base = TIME_BASE
        packet.stream = self._stream
        packet.is_keyframe = key
        self._container.mux(packet)
        return self._take()

    def mux_audio(
        self, au: bytes, pts: int, samples: int
    ) -> list[tuple[fmp4.FragmentBox, fmp4.Moof]]:
        """Add one audio frame (an AAC access unit, an Opus packet, a G.711 packet's PCM) of
        ``samples`` samples (``pts`` in samples from the segment's start)."""
        pts = max(pts, self._audio_dts + 1)
        self._audio_dts = pts
        packet = av.Packet(au)
        packet.pts = pts
        packet.dts = pts
        packet.duration = samples
        packet.time_base = self._audio.time_base
        packet.stream = self._audio
        packet.is_keyframe = True
        self._container.mux(packet)
        return self._take()

    def close(self) -> list[tuple[fmp4.FragmentBox, fmp4.Moof]]:
        """Write the last fragment and close the file (synced to disk)."""
        if self.closed:
            return []
        self.closed = True
        try:
            self._container.close()
        finally:
            self._file.sync_close()
        return self._take()

    def abandon(self) -> None:
        """Close after a write error without writing more (what is on disk stays)."""
        self.closed = True
        try:
            self._file.sync_close()
        except OSError:
            pass

    def _take(self) -> list[tuple[fmp4.FragmentBox, fmp4.Moof]]:
        boxes = self._file.fragments
        if not boxes:
            return []
        self._file.fragments = []
        if self._defaults == (0, 0) and self._file.head:
            facts = fmp4.scan(bytes(self._file.head))
            self.timescale = facts.timescale
            self._file.head = bytearray()
            self._defaults = (facts.default_duration, facts.default_flags)
            self._track_id = facts.track_id
        dur, flags = self._defaults
        moofs = [
            fmp4.parse_moof(
                box.moof, default_duration=dur, default_flags=flags, track_id=self._track_id
            )
            for box in boxes
        ]
        moofs, self._video_next = fmp4.follow_on(moofs, self._video_next)
        return list(zip(boxes, moofs, strict=True))


def _h264_stream(container: Any, params: dict[int, bytes], width: int, height: int) -> Any:
    """An H.264 track declared with the stream's own avcC (from its SPS and PPS)."""
    sps, pps = params.get(h264.NAL_SPS), params.get(h264.NAL_PPS)
    if sps is None or pps is None:
        raise NalError("an H.264 segment needs its SPS and PPS")
    record = avcc_record(sps, pps)
    with av.open(io.BytesIO(_H264_TEMPLATE), format="h264", options={"probesize": "32"}) as tmpl:
        stream: Any = container.add_stream_from_template(tmpl.streams.video[0], opaque=True)
    ctx = stream.codec_context
    ctx.extradata = record
    ctx.width, ctx.height = width, height
    return stream
