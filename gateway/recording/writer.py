"""One camera's recording: the hub's access units muxed into fragmented MP4 segment files with
PyAV, never re-encoded, and indexed fragment by fragment.

Everything here runs on a recorder thread (:mod:`gateway.recording.service`), never on the
event loop. The event loop only hands over each access unit as the hub delivered it
(:class:`Unit`: its RTP packets, whether it starts a GOP, when it arrived and from which
source).

Time. A unit's capture time is its RTP timestamp on the hub's output timeline mapped to UTC
through an anchor that is the least delayed arrival seen in the current *run* (one source
connection, unbroken): ``anchor = min(arrival - media_time)``. Within a run segments are
exactly contiguous. A new source, a pause longer than ``outage_after``, dropped units (a slow
disk) or a write error end the run; the stretch until the next run starts is a gap in the
index with its reason, never stitched over.

Fragments. The muxer cuts a fragment at every keyframe and after 1 s of media
(``movflags=frag_keyframe+empty_moov+default_base_moof``, ``frag_duration=1s``) and writes it
straight through to the file; the bytes pass a :class:`~gateway.recording.fmp4.BoxTracker`, so
each fragment is indexed with its byte range and its times read from its own ``moof`` (the
same facts the reconciler reads back after a crash). A kill -9 loses the fragment being built.
The file itself is :class:`~gateway.recording.segment_file.SegmentFile`.

Audio. A camera's AAC track (:mod:`gateway.recording.audio`) is muxed beside the video, never
re-encoded, on one timeline per run, each AAC frame in the segment its capture time falls in
(:mod:`gateway.recording.writer_sound`). Fragments stay cut and timed by the video.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import av

from gateway.protocols.fragments import NalError
from gateway.protocols.rtp import RtpError, payload_of, rtp_header
from gateway.recording import fmp4
from gateway.recording.audio import AudioFormat
from gateway.recording.codecs import (
    CODECS,
    h264_items,
    h264_quick,
    picture_size,
    sprop_params,
)
from gateway.recording.index import Fragment, GapReason, RecordingIndex, Segment
from gateway.recording.segment_file import SegmentFile
from gateway.recording.writer_sound import SWITCH_WAIT, Run, SoundWriter, Unit
from gateway.stream.tracks import Track

__all__ = ["CameraWriter", "Unit", "WriterCounters"]

log = logging.getLogger(__name__)

CLOCK = 90_000
# s: the least gap between two runs, when their clocks say they touch or overlap (a source's
# first seconds arrive in a burst, pulling its anchor back before the last run's end). Above
# playback's 1 ms "touching" tolerance, so players are told of the break.
MIN_GAP = 0.01


@dataclass
class WriterCounters:
    units: int = 0
    bytes_in: int = 0
    bytes_written: int = 0
    fragments: int = 0
    segments: int = 0
    units_dropped: int = 0  # dropped before the writer (queue full) or while waiting a key
    bad_units: int = 0
    write_errors: int = 0
    gaps: int = 0
    audio_units: int = 0
    bad_audio: int = 0  # audio packets that were not the AAC their SDP said


@dataclass
class CameraWriter(SoundWriter):
    """Writes one camera. Thread-confined: only its recorder thread calls it."""

    camera: str
    root: Path
    index: RecordingIndex
    track: Track
    segment_seconds: float = 60.0
    outage_after: float = 3.0
    node: str = ""
    # The reason of the first gap: this process was not recording before it started.
    resume_reason: GapReason = GapReason.GATEWAY_RESTART
    last_end: datetime | None = None  # where this camera's recording stopped before
    counters: WriterCounters = field(default_factory=WriterCounters)
    audio: tuple[Track, AudioFormat] | None = None  # the camera's audio track, muxed beside

    def __post_init__(self) -> None:
        self.codec = CODECS[self.track.codec]
        self.params: dict[int, bytes] = sprop_params(self.track)
        self.quick = self.codec.name == "H264"
        # NAL unit types of a unit that holds no picture (parameter sets, delimiters, SEI).
        self._no_picture = frozenset(self.codec.params) | self.codec.no_picture
        self._run: Run | None = None
        self._file: SegmentFile | None = None
        self._segment: Segment | None = None
        self._seg_ts = 0  # unwrapped RTP time of the segment's first unit
        self._seq = 0
        self._segment_registered = False
        self._seg_first = True
        self._seg_params: dict[int, bytes] = {}
        self._seg_run: Run = Run(None, 0.0, 0, 0, 0, 0.0)
        self._pending: list[Fragment] = []
        self._waiting_key = True
        self._next_reason = self.resume_reason
        self._size = (0, 0)
        self._sound_state()

    # -- fed by the recorder thread

    def feed(self, unit: Unit) -> None:
        self.counters.units += 1
        self.counters.bytes_in += unit.size
        if self.audio is not None:
            self._take_reports(unit)
        self._feed_video(unit)
        if self.audio is None:
            return
        run = self._run
        if run is None:
            self._keep_early(unit, *self.audio)
            return
        if self._early:
            early = [e for e in self._early if e[3] == run.source]
            self._early.clear()
            for raw, aus, wall, _source in early:
                self._place_audio(run, raw, aus, wall, self.audio[1])
        self._feed_audio(unit, run, *self.audio)

    def _feed_video(self, unit: Unit) -> None:
        got = self._depacketize(unit)
        if got is None:
            return
        au, types, params, ts = got
        run = self._run
        if run is not None and (
            unit.source != run.source or unit.wall - run.last_wall > self.outage_after
        ):
            self._end_run(GapReason.CAMERA_OUTAGE)
            run = None
        if params:
            self.params.update(params)
        is_key = not self.codec.keyframes.isdisjoint(types)
        if run is None:
            if not is_key or not self._has_params() or self._before_last_end(unit.wall):
                self.counters.units_dropped += 1
                return
            run = self._run = Run(unit.source, unit.wall, ts, ts & 0xFFFFFFFF, ts, unit.wall)
        else:
            ts = self._unwrap(run, ts)
        media = (ts - run.base_ts) / CLOCK
        run.anchor = min(run.anchor, unit.wall - media)
        run.last_wall = unit.wall
        if self._no_picture.issuperset(types):
            return  # parameter sets alone: they go in front of the next keyframe
        if self._switch is not None:
            self._switch.append((au, types, ts, is_key))
            if (ts - self._switch[0][2]) / CLOCK >= SWITCH_WAIT:
                self._finish_switch(run)  # the sound is late or gone: not waited for longer
            return
        if (
            self._file is not None
            and is_key
            and (
                (ts - self._seg_ts) / CLOCK >= self.segment_seconds
                or self.params != self._seg_params  # new parameters need a new init segment
            )
        ):
            self._begin_switch(run, au, types, ts)
            return
        self._mux_video(run, au, types, ts, is_key)

    def _mux_video(self, run: Run, au: bytes, types: list[int], ts: int, is_key: bool) -> None:
        if self._file is None:
            if not is_key:
                self.counters.units_dropped += 1
                return
            if not self._open_segment(run, ts, types):
                return
            au = self._with_params(au, types)
        assert self._file is not None
        try:
            done = self._file.mux(au, ts - self._seg_ts, is_key)
        except (OSError, av.FFmpegError) as exc:
            self._write_failed(exc)
            return
        self._indexed(self._file, done)

    def idle(self, now: float) -> None:
        """Close the open segment of a source that went quiet (its gap is recorded when it
        comes back)."""
        run = self._run
        if run is not None and now - run.last_wall > self.outage_after:
            self._end_run(GapReason.CAMERA_OUTAGE)

    def dropped(self, reason: GapReason = GapReason.WRITER_OVERRUN) -> None:
        """Units were lost before reaching this writer: end the run, the loss is a gap."""
        self.counters.units_dropped += 1
        if self._run is not None:
            self._end_run(reason)

    def stop(self, reason: GapReason = GapReason.GATEWAY_RESTART) -> None:
        """Close the segment (recording stops: the process ends, the camera is no longer
        recorded, the disk is full)."""
        self._end_run(reason)

    def flush_index(self) -> None:
        """Index the fragments written since the last flush (one transaction)."""
        if self._pending:
            pending, self._pending = self._pending, []
            self.index.add_fragments(pending)

    @property
    def recording(self) -> bool:
        return self._file is not None

    # -- internals

    def _depacketize(self, unit: Unit) -> tuple[bytes, list[int], dict[int, bytes], int] | None:
        """(the unit as the muxer's sample, its NAL unit types, the parameter sets in it, RTP
        time)."""
        index = self.track.index
        if self.quick:
            got = h264_items(unit.items, index)
            if got is not None:
                return got
        payloads: list[memoryview] = []
        ts = -1
        try:
            for track, packet, is_rtcp in unit.items:
                if is_rtcp or track != index:
                    continue
                if ts < 0:
                    ts = rtp_header(packet)[3]
                # The common header (no CSRC, extension or padding) is skipped in place.
                payloads.append(
                    memoryview(packet)[12:] if packet[0] == 0x80 else payload_of(packet)
                )
            if ts < 0:
                return None
            quick = h264_quick(payloads) if self.quick else None
            if quick is not None:
                return (*quick, ts)
            nals = self.codec.depacketize(payloads)
        except (RtpError, NalError):
            self.counters.bad_units += 1
            return None
        if not nals:
            return None
        codec = self.codec
        types = [codec.nal_type(n) for n in nals]
        params = {t: n for n, t in zip(nals, types, strict=True) if t in codec.params}
        return codec.sample(nals), types, params, ts

    @staticmethod
    def _unwrap(run: Run, raw: int) -> int:
        delta = (raw - run.last_raw) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32  # a little back in time (B-frames, reordering)
        run.last_raw = raw
        run.last_ts += delta
        return run.last_ts

    def _before_last_end(self, wall: float) -> bool:
        """A new run never starts inside the recording before it: a GOP the hub replays to a
        new reader (a restarted recorder, a reader attached again) was captured up to a GOP
        before now, perhaps before the last run ended. The run starts at the first keyframe
        captured after it, and the stretch between is the gap."""
        return self.last_end is not None and wall <= self.last_end.timestamp()

    def _has_params(self) -> bool:
        return all(t in self.params for t in self.codec.params)

    def _with_params(self, au: bytes, types: list[int]) -> bytes:
        missing = [self.params[t] for t in self.codec.params if t not in types]
        return self.codec.sample(missing) + au if missing else au

    def _open_segment(self, run: Run, ts: int, types: list[int]) -> bool:
        # Named by where it seems to start now; indexed (below) once its first fragment is out
        # and the run's anchor has settled.
        start = datetime.fromtimestamp(run.anchor + (ts - run.base_ts) / CLOCK, UTC)
        self._seg_run = run
        self._seg_first = not run.segments
        run.segments += 1
        rel = f"{self.camera}/{start:%Y-%m-%d}/{start:%H%M%S.%f}Z.mp4"
        path = self.root / rel
        self._seg_params = dict(self.params)
        self._size = picture_size(self.codec, self.params)
        try:
            audio = self.audio[1] if self.audio is not None else None
            self._file = SegmentFile(
                path, self.codec, *self._size, audio=audio, params=self._seg_params
            )
        except (OSError, av.FFmpegError, NalError) as exc:
            self._write_failed(exc)
            return False
        self._segment = Segment(
            rel, self.camera, rel, start, start, 0, 0, self.codec.name, False, self.node
        )
        self._seg_ts = ts
        self._seq = 0
        self._segment_registered = False
        self._seg_s0 = self._samples(ts) if self.audio is not None else 0
        self.counters.segments += 1
        return True

    def _indexed(self, file: SegmentFile, done: list[tuple[fmp4.FragmentBox, fmp4.Moof]]) -> None:
        if not done or self._segment is None:
            return
        seg = self._segment
        if not self._segment_registered:
            init = file.init_length or done[0][0].offset
            start = self._registered_start()
            seg = self._segment = Segment(
                seg.id, seg.camera, seg.path, start, start, init, init, seg.codec, False,
                seg.node,
            )  # fmt: skip
            self.index.add_segment(seg)
            self._segment_registered = True
            self.counters.bytes_written += init
        scale = file.timescale
        base = seg.start.timestamp()
        for box, moof in done:
            f_start = base + moof.decode_time / scale
            f_end = f_start + moof.duration / scale
            self._pending.append(
                Fragment(
                    seg.id, self._seq, seg.camera, datetime.fromtimestamp(f_start, UTC),
                    datetime.fromtimestamp(f_end, UTC), box.offset, box.length, moof.keyframe,
                )
            )  # fmt: skip
            self._seq += 1
            self.counters.fragments += 1
            self.counters.bytes_written += box.length
            self.last_end = datetime.fromtimestamp(f_end, UTC)

    def _registered_start(self) -> datetime:
        """When the segment starts. The run's first segment: from the anchor as it stands after
        its first fragment (a source's first units often arrive late, then catch up), always
        after the camera's last recording ended, however soon (a gateway restart shorter than
        the arrival jitter is still a restart), and the gap between is recorded: runs are never
        stitched. Later segments of the run follow on from it by RTP time, so they are
        contiguous."""
        run = self._seg_run
        if run.chain is None:
            at = run.anchor + (self._seg_ts - run.base_ts) / CLOCK
            if self.last_end is not None:
                at = max(at, self.last_end.timestamp() + MIN_GAP)
            run.chain = (at, self._seg_ts)
        else:
            at = run.chain[0] + (self._seg_ts - run.chain[1]) / CLOCK
        start = datetime.fromtimestamp(at, UTC)
        if self._seg_first:
            if self.last_end is not None and start > self.last_end:
                # What came before the run was not recorded.
                self.index.add_gap(self.camera, self.last_end, start, self._next_reason)
                self.counters.gaps += 1
            self._next_reason = GapReason.CAMERA_OUTAGE
        return start

    def _close_segment(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            self._indexed(file, file.close())
        except (OSError, av.FFmpegError) as exc:
            self.counters.write_errors += 1
            log.error("recording %s: closing %s failed: %s", self.camera, file.path, exc)
        self.flush_index()
        if self._segment is not None and self._segment_registered:
            self.index.close_segment(self._segment.id)
        elif file.path.exists():
            file.path.unlink()  # nothing in it worth keeping
        self._segment = None

    def _end_run(self, reason: GapReason) -> None:
        if self._run is not None and self._switch is not None:
            self._finish_switch(self._run)  # the next segment's pictures are not lost
        held, self._held = self._held, []
        for at, frame, samples in held:
            self._mux_audio(
                at, frame, samples
            )  # the run's last sound, a little past its last picture
        self._switch = None
        self._close_segment()
        self._run = None
        self._next_reason = reason

    def _write_failed(self, exc: BaseException) -> None:
        self.counters.write_errors += 1
        log.error("recording %s: write failed: %s", self.camera, exc)
        file, self._file = self._file, None
        if file is not None:
            file.abandon()
        self.flush_index()
        if self._segment is not None and self._segment_registered:
            self.index.close_segment(self._segment.id)
        self._segment = None
        self._run = None
        self._held = []
        self._switch = None
        self._next_reason = GapReason.DISK_FULL
