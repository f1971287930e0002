"""Recorded sound without gaps, in time with the pictures (issue #13, recaudio 1): a real ffmpeg
camera whose picture flashes white and whose microphone beeps at the start of every second (the
same instant: one lavfi clock) publishes H.264 and AAC over RTSP; the recorder writes 2 s
segments. Read back with PyAV from the segment files:

- within a run the sound runs on from one segment file into the next without a gap or an
  overlap (each AAC frame follows the last one's end, also across a file boundary, within a
  millisecond);
- each segment's sound covers its pictures: it starts within one AAC frame of the first picture
  (the first segment of a run too) and ends within one frame of the last picture's end;
- the beeps are heard within 5 ms of their flashes (one picture is 40 ms), in every segment, the
  first one included: the sound is placed by the camera's own clock (its sender reports), not by
  when its packets happened to arrive (ffmpeg packs several AAC frames into one RTP packet, so
  each packet's first frame arrives late).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
from conftest import publish_argv, publishing, running_gateway, serving_http, wait_for
from test_recording import recording_config

from gateway.recording.index import RecordingIndex, Segment
from tenants.db import Database

FRAME = 1024 / 44100  # s: one AAC frame of the camera's sound
# A white picture for the first 40 ms of each second, and a 1 kHz beep for the first 40 ms of
# each second, silence between: both from lavfi's clocks, which start together.
FLASH = "color=c=black:s=320x240:r=25,drawbox=c=white:t=fill:enable='lt(mod(t\\,1)\\,0.04)'"
BEEP = "aevalsrc='if(lt(mod(t\\,1)\\,0.04)\\,0.8*sin(2*PI*1000*t)\\,0)':s=44100"


AAC = ("-c:a", "aac", "-b:a", "64k")


def flash_and_beep_argv(url: str, audio: tuple[str, ...] = AAC) -> list[str]:
    """ffmpeg as a camera that flashes and beeps together, its sound encoded with ``audio``."""
    argv = publish_argv(url)
    at = argv.index("-i")
    argv[at + 1] = FLASH
    out = argv.index("-f", argv.index("-c:v"))  # the output's format: rtsp
    audio_in = ["-re", "-f", "lavfi", "-i", BEEP]
    return [*argv[: at + 2], *audio_in, *argv[at + 2 : out], *audio, *argv[out:]]


@dataclass
class Track:
    """One track of one segment file, in UTC seconds (the segment's start plus each packet's
    presentation time): (start, end) per packet, in order."""

    packets: list[tuple[float, float]]
    onsets: list[float]  # flashes (pictures) or beeps (sound)

    @property
    def start(self) -> float:
        return self.packets[0][0]

    @property
    def end(self) -> float:
        return self.packets[-1][1]


def read_segment(path: Path, start: datetime) -> tuple[Track, Track]:
    """(the pictures, the sound) of one segment file, decoded."""
    zero = start.timestamp()
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        vp: list[tuple[float, float]] = []
        ap: list[tuple[float, float]] = []
        flashes: list[float] = []
        beeps: list[float] = []
        lit = loud = False
        for packet in c.demux(v, a):
            if not packet.size or packet.pts is None:
                continue
            tb = packet.stream.time_base
            t0 = zero + float(packet.pts * tb)
            (vp if packet.stream is v else ap).append((t0, t0 + float(packet.duration * tb)))
            for frame in packet.decode():
                ft = zero + float(frame.pts * tb)
                if packet.stream is v:
                    white = float(frame.to_ndarray(format="gray").mean()) > 128
                    if white and not lit:
                        flashes.append(ft)
                    lit = white
                else:
                    samples = frame.to_ndarray().reshape(-1)
                    if samples.dtype.kind == "i":  # 16-bit PCM (G.711 recorded as ipcm)
                        samples = samples / 32768
                    hot = np.flatnonzero(np.abs(samples) > 0.2)
                    if hot.size and not loud:
                        beeps.append(ft + hot[0] / frame.sample_rate)
                    # Silent again only after a whole quiet frame (the beep is 40 ms).
                    loud = bool(hot.size)
    vp.sort()
    ap.sort()
    return Track(vp, flashes), Track(ap, beeps)


async def record(tmp_path: Path, procs: Any, segments: int) -> tuple[list[Segment], RecordingIndex]:
    cfg = recording_config(tmp_path)
    async with running_gateway(cfg) as gw:
        index = gw.gateway.recorder.index
        await procs(flash_and_beep_argv(gw.url("cam1")))
        await publishing(gw, "cam1")

        def closed() -> list[Segment]:
            return [s for s in index.segments("cam1") if s.closed]

        await wait_for(lambda: len(closed()) >= segments, 90, what="closed segments")
        done = closed()
    return done, RecordingIndex(Database.open(cfg.database_url), cfg.recording_dir)


async def test_recorded_sound_runs_on_across_segment_files_in_time_with_the_pictures(
    tmp_path: Path, procs: Any
) -> None:
    segments, index = await record(tmp_path, procs, 6)
    read = [read_segment(index.file(s), s.start) for s in segments]
    gaps = index.gaps("cam1", segments[0].start - timedelta(hours=1), segments[-1].end)
    print("gaps:", [(g.start, g.end, g.reason) for g in gaps])
    report = []
    for i, ((video, sound), seg) in enumerate(zip(read, segments, strict=True)):
        follows = i > 0 and segments[i - 1].end == seg.start  # the same run
        lead = 1000 * (sound.start - video.start)
        line = (
            f"{seg.start:%H:%M:%S.%f} sound-pictures start {lead:6.1f}"
            f" ms, end {1000 * (sound.end - video.end):6.1f} ms"
        )
        if follows:
            line += f", from the last file {1000 * (sound.start - read[i - 1][1].end):6.2f} ms"
        steps = [b[0] - a[1] for a, b in zip(sound.packets, sound.packets[1:], strict=False)]
        line += f", inside {1000 * max(steps, key=abs):5.2f} ms"
        pairs = [min(sound.onsets, key=lambda b, f=f: abs(b - f)) - f for f in video.onsets]
        line += f", beep-flash {[round(1000 * p, 1) for p in pairs if abs(p) < 0.5]} ms"
        report.append(line)
    print("\n".join(report))
    for i, ((video, sound), seg) in enumerate(zip(read, segments, strict=True)):
        where = report[i]
        assert all(abs(s) < 0.001 for s in (
            b[0] - a[1] for a, b in zip(sound.packets, sound.packets[1:], strict=False)
        )), where  # fmt: skip
        assert 0 <= sound.start - video.start < FRAME, where
        assert abs(sound.end - video.end) < FRAME, where
        if i > 0 and segments[i - 1].end == seg.start:
            assert abs(sound.start - read[i - 1][1].end) < 0.001, where
        # A flash in a file's first AAC frames is left out: the decoder starts there, without
        # the frame before (which the last file has), so it hears a beep begun there late.
        pairs = [
            min(sound.onsets, key=lambda b, f=f: abs(b - f)) - f
            for f in video.onsets
            if f - sound.start > 2 * FRAME
        ]
        assert pairs and all(abs(p) < 0.005 for p in pairs), where


async def test_get_across_a_segment_boundary_carries_the_sound_without_a_break(
    tmp_path: Path, procs: Any
) -> None:
    """/get (MP4 and fMP4) of 3 s around a boundary between two segments: the sound's frames
    follow on from one another (within a millisecond), from the first picture (within a frame)
    to the range's end, and the beeps are heard with their flashes (within 5 ms)."""
    cfg = recording_config(tmp_path)
    async with running_gateway(cfg) as gw:
        index = gw.gateway.recorder.index
        await procs(flash_and_beep_argv(gw.url("cam1")))
        await publishing(gw, "cam1")
        await wait_for(
            lambda: sum(1 for s in index.segments("cam1") if s.closed) >= 3, 60, what="segments"
        )
        closed = [s for s in index.segments("cam1") if s.closed]
        boundary = closed[2].start
        assert closed[1].end == boundary  # one run
        async with serving_http(gw) as (server, http):
            for fmt in ("mp4", "fmp4"):
                params = {
                    "path": "cam1",
                    "start": (boundary - timedelta(seconds=1.5)).isoformat(),
                    "duration": "3",
                    "format": fmt,
                }
                async with http.get(server.make_url("/get"), params=params) as r:
                    body = await r.read()
                    assert r.status == 200, body
                got = tmp_path / f"got.{fmt}.mp4"
                got.write_bytes(body)
                video, sound = read_segment(got, datetime.fromtimestamp(0, UTC))
                steps = [b[0] - a[1] for a, b in itertools.pairwise(sound.packets)]
                worst = max(steps, key=abs)
                print(f"/get {fmt}: the sound's worst step {1000 * worst:.2f} ms, starts "
                      f"{1000 * (sound.start - video.start):.1f} ms after the pictures, ends "
                      f"{1000 * (sound.end - video.end):.1f} ms after them")  # fmt: skip
                assert abs(worst) < 0.001, (fmt, worst)
                assert abs(sound.start - video.start) < FRAME, fmt
                # The cut ends its sound at the range's end; its last picture lasts on.
                assert 0 <= video.end - sound.end < FRAME + 0.04, fmt
                pairs = [
                    min(sound.onsets, key=lambda b, f=f: abs(b - f)) - f
                    for f in video.onsets
                    if f - sound.start > 2 * FRAME
                ]
                assert pairs and all(abs(p) < 0.005 for p in pairs), (fmt, pairs)
