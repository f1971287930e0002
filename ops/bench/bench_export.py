#!/usr/bin/env python3
"""Evidence export: seconds to export one hour of one camera, unmasked and masked, against the
ffmpeg command line doing the same work on the same files in the same run.

    flock /work/tools/bench.lock python ops/bench/bench_export.py [--minutes 60]
        [--masked-minutes 5] [--size 1920x1080] [--bitrate 4M]

1. Generates (cached in --cache-dir) one 60 s recording segment the way the recorder writes
   them: H.264 (testsrc2 with temporal noise, 25 fps, libx264 veryfast at --bitrate, GOP 1 s,
   no B-frames) in fragmented MP4 with one keyframe fragment a second.
2. Indexes that file --minutes times end to end in a fresh recording index (SQLite), so the
   export reads one hour of recording: 3,600 fragments in 60 segments.
3. Unmasked: ``gateway.recording.export_cut.cut`` over the hour (remux, no re-encoding); the
   peer is ``ffmpeg -f concat -i <the 60 segments> -c copy -f mp4``. Wall and CPU seconds
   (ours: this process's time.process_time; ffmpeg: getrusage of the child).
4. Masked: ``cut`` with one zone (a quarter of the picture) over --masked-minutes (decode, fill,
   libx264 veryfast crf 18); the peer is ffmpeg decode -> drawbox t=fill -> the same libx264
   options over the same segments. The hour's figure is extrapolated from the minutes
   measured (the work is per frame), and says so.

Prints one line per measurement and every command it runs.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import imageio_ffmpeg  # noqa: E402
from export_fixtures import index_segment  # noqa: E402

from gateway.masking.zones import Zone  # noqa: E402
from gateway.recording.export_cut import ENCODER_OPTIONS, TimedZone, cut  # noqa: E402
from gateway.recording.index import RecordingIndex  # noqa: E402
from tenants.db import Database  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
QUARTER = Zone("quarter", ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)))


def run(argv: list[str]) -> float:
    """Run a child; its CPU seconds (user + sys)."""
    print("$", shlex.join(argv), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def segment(cache: Path, size: str, bitrate: str, seconds: int = 60) -> Path:
    """A recorded segment as the recorder writes them (1 s keyframe fragments), cached."""
    path = cache / f"export-seg-{size}-{bitrate}-{seconds}.mp4"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        run([
            FFMPEG, "-v", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=size={size}:rate=25,noise=alls=12:allf=t", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-b:v", bitrate, "-maxrate", bitrate,
            "-bufsize", bitrate, "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
            "-bf", "0", "-pix_fmt", "yuv420p",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", str(path),
        ])  # fmt: skip
    return path


def timed(fn: object, *args: object, **kw: object) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kw)  # type: ignore[operator]
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--masked-minutes", type=int, default=5)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--bitrate", default="4M")
    ap.add_argument("--cache-dir", default=str(ROOT / "var" / "bench-cache"))
    args = ap.parse_args()
    seg = segment(Path(args.cache_dir), args.size, args.bitrate)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        index = RecordingIndex(Database.open(f"sqlite:///{tmp}/index.db"), seg.parent)
        for i in range(args.minutes):
            index_segment(index, "cam", f"s{i}", seg, T0 + timedelta(minutes=i))
        listing = tmp / "concat.txt"
        listing.write_text("".join(f"file '{seg}'\n" for _ in range(args.minutes)))
        recorded = seg.stat().st_size * args.minutes
        print(f"recording: {args.minutes} min of {args.size} at {args.bitrate}bit/s,"
              f" {recorded / 1e9:.2f} GB", flush=True)  # fmt: skip

        end = T0 + timedelta(minutes=args.minutes)
        wall, cpu, result = timed(cut, index, "cam", T0, end, tmp / "plain.mp4")
        peer_cpu_t0 = time.perf_counter()
        peer_cpu = run([
            FFMPEG, "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
            "-c", "copy", "-f", "mp4", str(tmp / "peer.mp4"),
        ])  # fmt: skip
        peer_wall = time.perf_counter() - peer_cpu_t0
        scale = 60 / args.minutes
        print(
            f"unmasked {args.minutes} min: feedgate {wall:.1f} s wall, {cpu:.1f} CPU-s"
            f" ({result.frames} frames);"  # type: ignore[attr-defined]
            f" ffmpeg -c copy {peer_wall:.1f} s wall, {peer_cpu:.1f} CPU-s;"
            f" per hour: feedgate {wall * scale:.1f} s, ffmpeg {peer_wall * scale:.1f} s;"
            f" CPU ratio feedgate/ffmpeg {cpu / peer_cpu:.2f}",
            flush=True,
        )

        minutes = args.masked_minutes
        end = T0 + timedelta(minutes=minutes)
        zones = [TimedZone(QUARTER)]
        wall, cpu, result = timed(cut, index, "cam", T0, end, tmp / "masked.mp4", zones=zones)
        frames = result.frames  # type: ignore[attr-defined]
        w, h = (int(v) for v in args.size.split("x"))
        short = tmp / "short.txt"
        short.write_text("".join(f"file '{seg}'\n" for _ in range(minutes)))
        t = time.perf_counter()
        peer_cpu = run([
            FFMPEG, "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(short),
            "-vf", f"drawbox=x=0:y=0:w={w // 2}:h={h // 2}:color=black:t=fill",
            "-c:v", "libx264", "-preset", ENCODER_OPTIONS["preset"],
            "-crf", ENCODER_OPTIONS["crf"], "-f", "mp4", str(tmp / "peer-masked.mp4"),
        ])  # fmt: skip
        peer_wall = time.perf_counter() - t
        scale = 60 / minutes
        print(
            f"masked {minutes} min: feedgate {wall:.1f} s wall, {cpu:.1f} CPU-s, {frames} frames"
            f" ({frames / cpu:.1f} frames/CPU-s); ffmpeg drawbox+libx264 {peer_wall:.1f} s wall,"
            f" {peer_cpu:.1f} CPU-s ({frames / peer_cpu:.1f} frames/CPU-s);"
            f" per hour (extrapolated from {minutes} min): feedgate {wall * scale / 60:.1f} min,"
            f" ffmpeg {peer_wall * scale / 60:.1f} min; CPU ratio feedgate/ffmpeg"
            f" {cpu / peer_cpu:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
