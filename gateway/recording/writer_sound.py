"""A camera's sound as the recorder writes it beside the pictures (the half of
:class:`~gateway.recording.writer.CameraWriter` that is about audio; it runs on the same recorder
thread).

A run places its sound against its pictures once, at its first sound: by the two tracks' RTCP
sender reports (the camera's own clock) when the source sent them, else by each track's arrival
anchor (``anchor = min(arrival - media time)``). From there the sound follows its own clock
sample by sample, as one timeline for the whole run in samples from the run's first picture
("run samples"), so consecutive segments' sound follows on without a gap or an overlap
(segments start at their first picture's RTP time on the same line, rounded to a sample).

Each AAC frame goes into the segment its capture time falls in, not the one that was open when
it arrived: a camera's sound and pictures are not sent in step (ffmpeg, for one, packs up to
0.7 s of AAC frames into one RTP packet, so a packet's first frame arrives long after it was
captured, while a camera's encoder may hold its pictures back instead).

- Sound that came before a run's first key frame is kept (``MAX_EARLY`` packets) for it.
- Sound captured after the segment's length, which may belong to the next segment, is held
  until the key frame that starts it (``MAX_HELD`` frames; past that it is written where it is).
- At a boundary, sound captured before the key frame that has not yet arrived is waited for: the
  segment stays open and the next one's first pictures are held, until a frame from after the
  key frame comes, at most ``SWITCH_WAIT`` of pictures (a camera whose sound stopped
  ``AUDIO_QUIET`` ago is not waited for).

Camera clocks drift: a run's sound is placed once and then followed by its own sample clock,
so over a long run a camera whose audio clock runs apart from its video clock drifts by as
much (tens of ppm: some tens of milliseconds an hour); a new run (a camera outage, a restart)
places it again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av

from gateway.protocols.rtp import RtpError, SenderReport, payload_of, rtp_header
from gateway.recording import fmp4
from gateway.recording.audio import (
    AudioError,
    AudioFormat,
    frames_of,
    report_of,
    reported_offset,
)
from gateway.recording.segment_file import SegmentFile
from gateway.stream.tracks import Track

if TYPE_CHECKING:
    from gateway.recording.writer import WriterCounters

__all__ = ["AudioClock", "Run", "SoundWriter", "Unit"]

CLOCK = 90_000
# Audio packets kept from before a run's first key frame: sound captured after that picture often
# arrives before it (bounded; what is older than the picture is then left out).
MAX_EARLY = 64
# AAC frames held for the next segment, captured after this one's length (bounded: a camera
# without key frames for a while gets them written into the segment it has).
MAX_HELD = 256
# s of pictures held at a segment boundary while the sound captured before it is still coming.
SWITCH_WAIT = 0.5
# s: a camera whose sound has not come for this long is not waited for at a boundary.
AUDIO_QUIET = 1.0
# s: sender reports that place the sound further than this from where it arrives are not believed
# (a camera with a broken clock on one track); the arrival anchors place it.
MAX_REPORT_SKEW = 2.0


@dataclass(slots=True)
class Unit:
    """One access unit as the hub delivered it, handed from the loop to a recorder thread."""

    items: list[tuple[int, bytes, bool]]  # (track, RTP packet, is_rtcp): the hub's own list
    is_key: bool
    wall: float  # when it arrived (time.time()), or when it was captured for a GOP replay
    source: str | None
    size: int
    tracks: tuple[Track, ...] = ()  # the path's tracks when it arrived


@dataclass
class Run:
    """One unbroken stretch of one source."""

    source: str | None
    anchor: float  # UTC seconds = anchor + media seconds
    base_ts: int  # unwrapped RTP time of the run's first unit
    last_raw: int
    last_ts: int  # unwrapped
    last_wall: float
    segments: int = 0
    chain: tuple[float, int] | None = None  # (UTC seconds, RTP time) its segments follow on
    audio: AudioClock | None = None


@dataclass
class AudioClock:
    """A run's audio timeline: unwrapped RTP time, mapped to UTC like the video's."""

    base: int
    last_raw: int
    last: int
    anchor: float  # UTC seconds = anchor + (ts - base) / rate
    last_wall: float = 0.0
    # The run's sound timeline: run samples (from the run's first picture) = ts - base + shift;
    # fixed at the run's first sound written.
    shift: int | None = None

    def unwrap(self, raw: int) -> int:
        delta = (raw - self.last_raw) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32
        self.last_raw = raw
        self.last += delta
        return self.last


class SoundWriter:
    """The audio half of a camera writer (see the module's docstring); the writer holds the
    state named here and does the video."""

    audio: tuple[Track, AudioFormat] | None
    track: Track
    segment_seconds: float
    counters: WriterCounters
    _file: SegmentFile | None
    _run: Run | None
    _seg_run: Run
    # The open segment's first picture, in run samples.
    _seg_s0: int
    # The latest sender report of each track (with its source).
    _reports: dict[int, tuple[str | None, SenderReport]]
    # Audio packets from before the run's first key frame: (RTP time, frames, arrival, source).
    _early: deque[tuple[int, list[tuple[bytes, int]], float, str | None]]
    # Audio frames held for the next segment: (run samples, frame, samples it lasts).
    _held: list[tuple[int, bytes, int]]
    # A boundary waiting for the sound: the next segment's first pictures (sample, NAL types,
    # RTP time, key).
    _switch: list[tuple[bytes, list[int], int, bool]] | None

    def _sound_state(self) -> None:
        self._seg_s0 = 0
        self._reports = {}
        self._early = deque(maxlen=MAX_EARLY)
        self._held = []
        self._switch = None

    # The video half's, called from here.
    def _indexed(self, file: SegmentFile, done: list[tuple[fmp4.FragmentBox, fmp4.Moof]]) -> None:
        raise NotImplementedError

    def _write_failed(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _close_segment(self) -> None:
        raise NotImplementedError

    def _mux_video(self, run: Run, au: bytes, types: list[int], ts: int, is_key: bool) -> None:
        raise NotImplementedError

    def _take_reports(self, unit: Unit) -> None:
        for index, packet, is_rtcp in unit.items:
            if is_rtcp and (report := report_of(packet)) is not None:
                self._reports[index] = (unit.source, report)

    def _keep_early(self, unit: Unit, track: Track, fmt: AudioFormat) -> None:
        for index, packet, is_rtcp in unit.items:
            if is_rtcp or index != track.index:
                continue
            try:
                frames = frames_of(payload_of(packet), fmt)
                self._early.append((rtp_header(packet)[3], frames, unit.wall, unit.source))
            except (RtpError, AudioError):
                self.counters.bad_audio += 1

    def _feed_audio(self, unit: Unit, run: Run, track: Track, fmt: AudioFormat) -> None:
        for index, packet, is_rtcp in unit.items:
            if is_rtcp or index != track.index:
                continue
            try:
                raw = rtp_header(packet)[3]
                aus = frames_of(payload_of(packet), fmt)
            except (RtpError, AudioError):
                self.counters.bad_audio += 1
                continue
            self._place_audio(run, raw, aus, unit.wall, fmt)
            if self._run is not run:
                return  # a write failed

    def _place_audio(
        self, run: Run, raw: int, aus: list[tuple[bytes, int]], wall: float, fmt: AudioFormat
    ) -> None:
        clock = run.audio
        if clock is None:
            clock = run.audio = AudioClock(raw, raw, raw, wall)
        ts = clock.unwrap(raw)
        clock.anchor = min(clock.anchor, wall - (ts - clock.base) / fmt.sample_rate)
        clock.last_wall = wall
        if self._file is None:
            return
        if clock.shift is None:
            clock.shift = round(self._sound_after_pictures(run, clock, fmt) * fmt.sample_rate)
        at = ts - clock.base + clock.shift
        for au, samples in aus:
            self._route_audio(at, au, samples)
            if self._file is None:
                return
            at += samples

    def _sound_after_pictures(self, run: Run, clock: AudioClock, fmt: AudioFormat) -> float:
        """Seconds from the run's first picture to its first sound's first sample: by the
        tracks' sender reports if the source sent both, else by their arrival anchors."""
        by_arrival = clock.anchor - run.anchor
        assert self.audio is not None
        video = self._reports.get(self.track.index)
        audio = self._reports.get(self.audio[0].index)
        if video is None or audio is None or video[0] != run.source or audio[0] != run.source:
            return by_arrival
        base_raw = (run.last_raw - (run.last_ts - run.base_ts)) & 0xFFFFFFFF
        by_clock = reported_offset(video[1], base_raw, audio[1], clock.base & 0xFFFFFFFF,
                                   fmt.sample_rate)  # fmt: skip
        return by_clock if abs(by_clock - by_arrival) <= MAX_REPORT_SKEW else by_arrival

    def _route_audio(self, at: int, au: bytes, samples: int) -> None:
        """One AAC frame at ``at`` run samples into the segment its capture time falls in."""
        assert self.audio is not None
        rate = self.audio[1].sample_rate
        if self._switch is not None:
            if at >= self._samples(self._switch[0][2]):
                # The sound has reached the next segment: all that belongs to this one is in.
                self._held.append((at, au, samples))
                assert self._run is not None
                self._finish_switch(self._run)
                return
        elif at >= self._seg_s0 + round(self.segment_seconds * rate) and len(self._held) < MAX_HELD:
            self._held.append((at, au, samples))  # perhaps the next segment's
            return
        self._mux_audio(at, au, samples)

    def _mux_audio(self, at: int, au: bytes, samples: int) -> None:
        file = self._file
        if file is None or at < self._seg_s0:
            return  # captured before the segment's first picture
        try:
            done = file.mux_audio(au, at - self._seg_s0, samples)
        except (OSError, av.FFmpegError) as exc:
            self._write_failed(exc)
            return
        self.counters.audio_units += 1
        self._indexed(file, done)

    def _samples(self, ts: int) -> int:
        """A video RTP time of the run in run samples (the sound's timeline)."""
        assert self.audio is not None
        return round((ts - self._seg_run.base_ts) * self.audio[1].sample_rate / CLOCK)

    def _begin_switch(self, run: Run, au: bytes, types: list[int], ts: int) -> None:
        """A key frame starts the next segment. The sound held for it that was captured before
        it goes into this one; if the sound has not yet reached it (it arrives late), this
        segment stays open for it and the next one's pictures wait (``SWITCH_WAIT``)."""
        self._switch = [(au, types, ts, True)]
        if self.audio is None:
            self._finish_switch(run)
            return
        start = self._samples(ts)
        held, self._held = self._held, []
        for at, frame, samples in held:
            if at < start:
                self._mux_audio(at, frame, samples)
            else:
                self._held.append((at, frame, samples))
        clock = run.audio
        if (
            self._held
            or clock is None
            or clock.shift is None
            or run.last_wall - clock.last_wall > AUDIO_QUIET
        ):
            self._finish_switch(run)

    def _finish_switch(self, run: Run) -> None:
        pictures, self._switch = self._switch, None
        if not pictures:
            return
        self._close_segment()
        for au, types, ts, key in pictures:
            self._mux_video(run, au, types, ts, key)
            if self._file is None:
                return
        held, self._held = self._held, []
        for at, frame, samples in held:
            self._route_audio(at, frame, samples)
