"""Recordings for the playback tests: fragmented MP4 written by real ffmpeg in the recorder's
layout (one fragment per key frame, frag_keyframe+empty_moov+default_base_moof), indexed in a
real tenancy database through the recorder's own RecordingIndex, as its writer indexes them."""

from __future__ import annotations

import struct
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import av
from conftest import FFMPEG

from gateway.recording.index import Fragment, RecordingIndex, Segment


def write_fmp4(
    path: Path,
    *,
    seconds: float = 10,
    gop: int = 25,
    fps: int = 25,
    size: str = "320x240",
    pattern: str = "testsrc2",
    codec: str = "libx264",
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"{pattern}=size={size}:rate={fps}", "-t", str(seconds), "-c:v", codec,
            "-preset", "ultrafast", "-g", str(gop), "-bf", "0", "-pix_fmt", "yuv420p",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    return path


def _boxes(data: bytes) -> list[tuple[str, int, int]]:
    out = []
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size < 8:
            break
        out.append((kind.decode("latin-1"), pos, size))
        pos += size
    return out


def index_fmp4(
    index: RecordingIndex, camera: str, rel: str, start: datetime, *, closed: bool = True
) -> Segment:
    """Index one recorded file as the writer would: its init length, and each moof+mdat with
    its byte range and capture times (the file's timeline placed at ``start``)."""
    path = index.root / rel
    data = path.read_bytes()
    boxes = _boxes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base or 0)
        pts = sorted(
            (int(p.pts), bool(p.is_keyframe))
            for p in container.demux(stream)
            if p.size and p.pts is not None
        )
    keys = [t for t, key in pts if key]
    frame = (pts[1][0] - pts[0][0]) if len(pts) > 1 else 0
    origin = pts[0][0]
    ends = [*keys[1:], pts[-1][0] + frame]
    moofs = [(pos, size) for kind, pos, size in boxes if kind == "moof"]
    mdats = [(pos, size) for kind, pos, size in boxes if kind == "mdat"]
    assert len(moofs) == len(keys) == len(mdats), "one fragment per key frame"
    init_length = moofs[0][0]
    seg_id = f"{camera}-{int(start.timestamp())}"
    at = lambda t: start + timedelta(seconds=(t - origin) * tb)  # noqa: E731
    index.add_segment(
        Segment(seg_id, camera, rel, start, start, init_length, init_length, "H264", False)
    )
    index.add_fragments(
        [
            Fragment(seg_id, i, camera, at(k), at(e), m[0], d[0] + d[1] - m[0], True)
            for i, (k, e, m, d) in enumerate(zip(keys, ends, moofs, mdats, strict=True))
        ]
    )
    if closed:
        index.close_segment(seg_id)
    got = index.segment(seg_id)
    assert got is not None
    return got
