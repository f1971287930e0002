"""Recording cost (issue #13): N cameras of 4 Mbit/s 1080p recorded at once, against ffmpeg
``-c copy -f segment`` recording the same streams in the same run.

feedgate. N hub paths are fed the clip's RTP packets as an ingest would (``PathStream.on_rtp``:
rewriting, access units, GOP cache) with the recorder attached, its writer threads
depacketizing, muxing fragmented MP4 (1 s fragments, 60 s segments) and indexing into SQLite.
Time is simulated (the recorder's clock follows the media), so the run goes as fast as the
writers allow; the feeder waits whenever the writers' queue passes 8 MiB, so nothing is
dropped. The same feeding without the recorder is measured first and subtracted: what is left
is the cost of recording. CPU is the process's user + system time.

ffmpeg. N processes, each ``ffmpeg -f h264 -r 25 -i clip.h264 -c copy -f segment
-segment_time 60 -segment_format mp4`` with the same fragmented-MP4 flags, run at once, as fast
as they go; CPU is their rusage. (Its input is an Annex B file, ours RTP packets: ffmpeg is
spared depacketization.)

Figures: CPU-seconds per camera-hour, bytes written against bytes received (overhead %), and
the most cameras one core records in real time (media seconds per CPU second).

    flock /work/tools/bench.lock python3 ops/bench/bench_recording.py --cameras 8 --seconds 60 \
        --rounds 5

On a shared machine one round's ratio moves by more than the difference being measured: take
several rounds (feedgate and ffmpeg alternate) and read the medians. Or count instructions,
which load does not move: ``--only hub`` and ``--only recorder`` run just feedgate's feeding,
without and with the recorder, once each under callgrind; the difference of the two
"Collected" counts is the recording's (user space only: the kernel's file writes are not in
it)::

    PY=$(python3 -c 'import sys; print(sys.executable)')
    for only in hub recorder; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        $PY ops/bench/bench_recording.py --cameras 4 --seconds 20 --only $only; done
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "protos")]

import imageio_ffmpeg  # noqa: E402

from gateway.config import CameraConfig, Config, RecordingConfig  # noqa: E402
from gateway.protocols import h264  # noqa: E402
from gateway.recording.service import Recorder  # noqa: E402
from gateway.stream.hub import StreamHub  # noqa: E402
from gateway.stream.tracks import Track  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FPS = 25
TRACK = Track(0, "video", "H264", 90000, 96, ("a=rtpmap:96 H264/90000",))
T0 = 1_764_583_200.0


def clip(seconds: int, cache: Path) -> Path:
    """A 1080p, 4 Mbit/s, 25 fps, 2 s GOP H.264 clip without B-frames (cached)."""
    path = cache / f"rec-1080p-4M-{seconds}s.h264"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [FFMPEG, "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=size=1920x1080:rate={FPS}", "-t", str(seconds), "-c:v", "libx264",
             "-preset", "ultrafast", "-bf", "0", "-g", str(2 * FPS), "-b:v", "4M", "-maxrate",
             "4M", "-bufsize", "8M", "-x264-params", "repeat-headers=1", "-f", "h264",
             str(path)],
            check=True,
        )  # fmt: skip
    return path


def rtp_frames(path: Path) -> list[list[bytes]]:
    """The clip as RTP packets, one list per access unit (FU-A at 1,400 bytes)."""
    units: list[list[bytes]] = []
    cur: list[bytes] = []
    for nal in h264.split_annexb(path.read_bytes()):
        cur.append(nal)
        if nal[0] & 0x1F in (1, 5):
            units.append(cur)
            cur = []
    frames = []
    seq = 0
    for i, au in enumerate(units):
        ts = i * 90000 // FPS
        payloads = [p for nal in au for p in h264.packetize(nal, 1400)]
        packets = []
        for j, p in enumerate(payloads):
            marker = 0x80 if j == len(payloads) - 1 else 0
            packets.append(struct.pack(">BBHII", 0x80, marker | 96, seq & 0xFFFF, ts, 7) + p)
            seq += 1
        frames.append(packets)
    return frames


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def feed(frames: list[list[bytes]], cameras: int, recorder: Recorder | None,
               hub: StreamHub, clock: list[float]) -> tuple[float, float, int]:  # fmt: skip
    """(CPU seconds, wall seconds, RTP bytes fed) for every camera's whole clip."""
    streams = [hub.path(f"cam{i}") for i in range(cameras)]
    for i, s in enumerate(streams):
        s.attach_source(f"src{i}", (TRACK,))
    if recorder is not None:
        await recorder.start()
    fed = 0
    c0, w0 = cpu(), time.perf_counter()
    for n, packets in enumerate(frames):
        clock[0] = T0 + n / FPS
        for s in streams:
            for p in packets:
                s.on_rtp(0, p)
                fed += len(p)
        if recorder is not None and n % 5 == 0:
            while recorder.queued_bytes() > 8 << 20:  # noqa: ASYNC110 - another thread drains
                await asyncio.sleep(0.002)
        if n % 25 == 0:
            await asyncio.sleep(0)
    if recorder is not None:
        while recorder.queued_bytes():  # noqa: ASYNC110 - the writer threads drain it
            await asyncio.sleep(0.002)
        await recorder.stop()  # closes the last segments
    return cpu() - c0, time.perf_counter() - w0, fed


async def run_feedgate(frames: list[list[bytes]], cameras: int, out: Path) -> dict[str, float]:
    base_cpu, _w, fed = await feed(frames, cameras, None, StreamHub(), [T0])
    clock = [T0]
    cams = tuple(CameraConfig(id=f"cam{i}", record=True) for i in range(cameras))
    cfg = dataclasses.replace(Config(cameras=cams), data_dir=str(out),
                              recording=RecordingConfig(low_water="0%", critical="0%"))  # fmt: skip
    hub = StreamHub()
    rec = Recorder(cfg, hub, clock=lambda: clock[0])
    rec_cpu, wall, fed = await feed(frames, cameras, rec, hub, clock)
    written = sum(p.stat().st_size for p in cfg.recording_dir.rglob("*.mp4"))
    dropped = sum(rec.dropped().values())
    return {"cpu": rec_cpu - base_cpu, "feed_cpu": base_cpu, "wall": wall, "in": fed,
            "out": written, "dropped": dropped}  # fmt: skip


async def feed_once(frames: list[list[bytes]], cameras: int, out: Path, record: bool) -> None:
    """One feeding, recorded or not, for an instruction count (``--only``)."""
    clock = [T0]
    cams = tuple(CameraConfig(id=f"cam{i}", record=True) for i in range(cameras))
    cfg = dataclasses.replace(Config(cameras=cams), data_dir=str(out),
                              recording=RecordingConfig(low_water="0%", critical="0%"))  # fmt: skip
    hub = StreamHub()
    rec = Recorder(cfg, hub, clock=lambda: clock[0]) if record else None
    cpu_s, _wall, _fed = await feed(frames, cameras, rec, hub, clock)
    print(f"{'recorded' if record else 'hub alone'}: {cpu_s:.2f} CPU-s")


def run_ffmpeg(path: Path, cameras: int, out: Path) -> dict[str, float]:
    procs = []
    t0 = time.perf_counter()
    for i in range(cameras):
        d = out / f"cam{i}"
        d.mkdir(parents=True)
        procs.append(subprocess.Popen(
            [FFMPEG, "-loglevel", "error", "-nostdin", "-f", "h264", "-r", str(FPS), "-i",
             str(path), "-c", "copy", "-f", "segment", "-segment_time", "60",
             "-segment_format", "mp4", "-segment_format_options",
             "movflags=frag_keyframe+empty_moov+default_base_moof:frag_duration=1000000",
             str(d / "%05d.mp4")],
        ))  # fmt: skip
    total = 0.0
    for p in procs:
        _pid, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            raise SystemExit(f"ffmpeg failed ({p.returncode})")
        total += usage.ru_utime + usage.ru_stime
    wall = time.perf_counter() - t0
    written = sum(p.stat().st_size for p in out.rglob("*.mp4"))
    return {"cpu": total, "wall": wall, "in": path.stat().st_size * cameras, "out": written}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=60, help="length of each camera's clip")
    ap.add_argument(
        "--rounds", type=int, default=1, help="alternate feedgate and ffmpeg; report medians"
    )
    ap.add_argument("--cache", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument(
        "--only", choices=("hub", "recorder"), help="feed once, hub alone or recorded; no peer"
    )
    args = ap.parse_args()
    path = clip(args.seconds, args.cache)
    frames = rtp_frames(path)
    if args.only is not None:
        with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
            asyncio.run(feed_once(frames, args.cameras, Path(tmp), args.only == "recorder"))
        return
    media = len(frames) / FPS * args.cameras  # camera-seconds
    load = os.getloadavg()[0]
    rounds: list[tuple[dict[str, float], dict[str, float]]] = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
            ours = asyncio.run(run_feedgate(frames, args.cameras, Path(tmp) / "feedgate"))
            theirs = run_ffmpeg(path, args.cameras, Path(tmp) / "ffmpeg")
            shutil.rmtree(tmp, ignore_errors=True)
        rounds.append((ours, theirs))
        if args.rounds > 1:
            print(f"round {len(rounds)}: feedgate {ours['cpu'] / media * 3600:.2f}, ffmpeg "
                  f"{theirs['cpu'] / media * 3600:.2f} CPU-s/camera-hour, ratio "
                  f"{ours['cpu'] / theirs['cpu']:.2f}x")  # fmt: skip
    print(f"{args.cameras} cameras x {len(frames) / FPS:.0f} s of 1080p H.264 at "
          f"{path.stat().st_size * 8 / (len(frames) / FPS) / 1e6:.2f} Mbit/s "
          f"({media:.0f} camera-seconds); load before: {load:.2f}, after: "
          f"{os.getloadavg()[0]:.2f}; {args.rounds} round(s), medians")  # fmt: skip
    ours = {k: statistics.median(r[0][k] for r in rounds) for k in rounds[0][0]}
    theirs = {k: statistics.median(r[1][k] for r in rounds) for k in rounds[0][1]}
    ratio = statistics.median(a["cpu"] / b["cpu"] for a, b in rounds)
    rows = []
    for name, r in (("feedgate", ours), ("ffmpeg -c copy -f segment", theirs)):
        per_hour = r["cpu"] / media * 3600
        rows.append((name, per_hour, media / r["cpu"], (r["out"] / r["in"] - 1) * 100, r))
    es = path.stat().st_size * args.cameras
    print(f"{'':28} {'CPU-s/camera-hour':>18} {'cameras/core':>13} {'overhead %':>11}"
          f" {'vs H.264 %':>11}")  # fmt: skip
    for name, per_hour, per_core, overhead, r in rows:
        print(f"{name:28} {per_hour:18.2f} {per_core:13.0f} {overhead:11.2f}"
              f" {(r['out'] / es - 1) * 100:11.2f}")  # fmt: skip
    print(f"feedgate/ffmpeg CPU ratio: {ratio:.2f}x (median of the rounds' ratios)")
    print(f"feedgate: feeding the hub alone cost {ours['feed_cpu']:.2f} CPU-s (subtracted); "
          f"units dropped: {ours['dropped']:.0f}; overhead is against RTP bytes received, "
          f"ffmpeg's against its Annex B input")  # fmt: skip


if __name__ == "__main__":
    main()
