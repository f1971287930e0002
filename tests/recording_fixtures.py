"""Recording fixtures: real ffmpeg-encoded H.264 as the hub would deliver it (one list of RTP
packets per access unit), and a writer recording it into an index, without a network."""

from __future__ import annotations

import functools
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg

from gateway.protocols import h264
from gateway.recording.index import RecordingIndex
from gateway.recording.writer import CameraWriter, Unit
from gateway.stream.tracks import Track

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
T0 = 1_764_583_200.0  # 2025-12-01T10:00:00Z
TRACK = Track(0, "video", "H264", 90000, 96, ("a=rtpmap:96 H264/90000",))


@functools.lru_cache(maxsize=8)
def h264_access_units(
    seconds: float = 6.0, fps: int = 25, gop: int = 50, size: str = "320x240"
) -> tuple[tuple[bytes, ...], ...]:
    """Access units (NAL units each) of a real libx264 stream, SPS/PPS in band at each IDR."""
    raw = subprocess.run(
        [FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g",
         str(gop), "-x264-params", "repeat-headers=1", "-bsf:v", "h264_mp4toannexb", "-f",
         "h264", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    units: list[tuple[bytes, ...]] = []
    cur: list[bytes] = []
    for nal in h264.split_annexb(raw):
        cur.append(nal)
        if nal[0] & 0x1F in (1, 5):
            units.append(tuple(cur))
            cur = []
    return tuple(units)


def rtp_units(
    aus: tuple[tuple[bytes, ...], ...], *, fps: int = 25, ts0: int = 0xFFFF0000, seq0: int = 0
) -> Iterator[tuple[list[tuple[int, bytes, bool]], bool, int]]:
    """(hub items, is_key, RTP time) per access unit; the RTP clock wraps early on purpose."""
    seq = seq0
    for i, au in enumerate(aus):
        ts = (ts0 + i * 90000 // fps) & 0xFFFFFFFF
        payloads = [p for nal in au for p in h264.packetize(nal)]
        items = []
        for j, p in enumerate(payloads):
            marker = 0x80 if j == len(payloads) - 1 else 0
            header = struct.pack(">BBHII", 0x80, marker | 96, seq & 0xFFFF, ts, 0x1234)
            items.append((0, header + p, False))
            seq += 1
        yield items, any(n[0] & 0x1F == 5 for n in au), ts


def feed(
    writer: CameraWriter,
    aus: tuple[tuple[bytes, ...], ...],
    *,
    start: float = T0,
    fps: int = 25,
    source: str = "src-1",
    flush: bool = True,
) -> float:
    """Feed units arriving in real time from ``start``; return the wall time after the last."""
    wall = start
    for i, (items, key, _ts) in enumerate(rtp_units(aus, fps=fps)):
        wall = start + i / fps
        writer.feed(Unit(items, key, wall, source, sum(len(p) for _, p, _ in items), (TRACK,)))
        if flush:
            writer.flush_index()
    return wall + 1 / fps


def writer(index: RecordingIndex, root: Path, **kwargs: object) -> CameraWriter:
    return CameraWriter("cam", root, index, TRACK, **kwargs)  # type: ignore[arg-type]
