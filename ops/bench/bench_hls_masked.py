#!/usr/bin/env python3
"""Masked playback's first picture: a masked HLS segment burnt in on demand, against the /get
cut of the clip the console used to ask for (which is burnt in whole before its first byte).

    flock /work/tools/bench.lock python ops/bench/bench_hls_masked.py [--size 1920x1080]
        [--bitrate 4M] [--clip 60] [--rounds 3]

1. Generates (cached in --cache-dir) one recording segment of --clip seconds the way the
   recorder writes them: H.264 (testsrc2 with temporal noise, 25 fps, libx264 veryfast at
   --bitrate, GOP 1 s, no B-frames), fragmented MP4 with one keyframe fragment a second, and
   indexes it in a fresh recording index (SQLite).
2. Each round: ``gateway.playback.hls_masked.burn`` of the file's first masked segment (what a
   masked player waits for before its first picture), then ``export_cut.cut`` of the whole
   clip with the same zone (what ``/get`` does for a masked tenant before it answers). One
   zone, a quarter of the picture. Wall and CPU seconds (this process's time.process_time;
   libx264's threads are this process's too).

Prints every command it runs and one line per round.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from export_fixtures import index_segment  # noqa: E402

from gateway.masking.zones import Zone  # noqa: E402
from gateway.playback.hls_masked import burn, groups  # noqa: E402
from gateway.recording.export_cut import TimedZone, cut  # noqa: E402
from gateway.recording.index import RecordingIndex  # noqa: E402
from ops.bench.bench_export import segment as recorded_segment  # noqa: E402
from tenants.db import Database  # noqa: E402

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
QUARTER = Zone("quarter", ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--bitrate", default="4M")
    ap.add_argument("--clip", type=int, default=60, help="seconds /get cuts (the console: 300)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "feedgate-bench"
    )
    args = ap.parse_args()
    source = recorded_segment(args.cache_dir, args.size, args.bitrate, args.clip)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / source.name).symlink_to(source)
        index = RecordingIndex(Database.open(f"sqlite:///{root}/index.sqlite"), root)
        segment = index_segment(index, "cam", "seg", root / source.name, T0)
        first = groups(index.fragments("seg"))[0]
        end = T0 + timedelta(seconds=args.clip)
        print(
            f"{args.size} {args.bitrate}: first masked segment {first.seconds:.1f} s "
            f"(fragments {first.first}-{first.last}); /get clip {args.clip} s",
            flush=True,
        )
        for n in range(1, args.rounds + 1):
            wall, cpu = time.perf_counter(), time.process_time()
            burnt = burn(index, segment, first, (QUARTER,), root / "hls.mp4")
            hls_wall, hls_cpu = time.perf_counter() - wall, time.process_time() - cpu
            wall, cpu = time.perf_counter(), time.process_time()
            cut(index, "cam", T0, end, root / "get.mp4", zones=(TimedZone(QUARTER),))
            get_wall, get_cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"round {n}: masked HLS first segment {hls_wall:.2f} s wall "
                f"({hls_cpu:.2f} CPU-s, {burnt.size / 1e6:.2f} MB); "
                f"masked /get of {args.clip} s {get_wall:.2f} s wall ({get_cpu:.2f} CPU-s); "
                f"ratio {get_wall / hls_wall:.1f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
