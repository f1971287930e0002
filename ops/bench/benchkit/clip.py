"""The benchmarks' test clip: H.264 made once with libx264 and cached."""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchkit.env import log

FPS = 25


def parse_rate(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    return int(float(t.rstrip("kmg")) * mult)


@dataclass
class Clip:
    path: Path
    seconds: float
    bitrate_bps: float  # measured: file size * 8 / duration
    size: str
    gop_frames: int


def make_clip(ffmpeg: str, cache: Path, args: argparse.Namespace) -> Clip:
    gop = max(1, round(FPS * args.gop_seconds))
    rate = parse_rate(args.bitrate)
    name = f"clip-{args.size}-{rate}bps-g{gop}-{args.clip_seconds}s-{FPS}fps.mp4"
    path = cache / name
    if not path.exists():
        log(f"generating {path} (libx264, {args.size}, {args.bitrate}, GOP {gop} frames)")
        tmp = path.with_suffix(".tmp.mp4")
        cache.mkdir(parents=True, exist_ok=True)  # a fresh /tmp has no cache yet
        cmd = [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi",
            "-i", f"testsrc2=size={args.size}:rate={FPS},noise=alls=10:allf=t",
            "-t", str(args.clip_seconds), "-an",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-b:v", str(rate), "-maxrate", str(rate), "-bufsize", str(rate // 2),
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0",
            "-x264-params", "repeat-headers=1",
            "-movflags", "+faststart", str(tmp),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        tmp.rename(path)
    secs = float(args.clip_seconds)
    return Clip(path, secs, path.stat().st_size * 8 / secs, args.size, gop)
