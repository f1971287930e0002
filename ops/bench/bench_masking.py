#!/usr/bin/env python3
"""Privacy-mask transcoding: feedgate's pipeline vs the ffmpeg command line, same clip, one run.

    python ops/bench/bench_masking.py [--seconds 10] [--sizes 1920x1080,1280x720]
                                      [--latency-seconds 15] [--apply]

1. Generates (cached in --cache-dir) one H.264 clip per size with the bundled ffmpeg
   (imageio_ffmpeg): testsrc2 plus temporal noise, 25 fps, libx264 veryfast, GOP 2 s, no
   B-frames, a CCTV-like bitrate (4 Mbit/s at 1080p, 2 Mbit/s at 720p).
2. ffmpeg command line: decode -> drawbox t=fill (two boxes) -> libx264 ultrafast/zerolatency,
   ``-threads 1`` for decoder, filters and encoder, ``-f null -``; CPU seconds from
   getrusage(RUSAGE_CHILDREN), frames from its -stats line.
3. Ours: the MaskTranscoder worker (PyAV decode -> MaskRaster.apply -> libx264 with the same
   options and bitrate -> RTP packetization) over the same clip's packets (PyAV demux +
   h264_mp4toannexb), thread count 1 for decoder and encoder; CPU seconds of this process
   (time.process_time, demux included, as ffmpeg's count includes its own). Then both again with
   default threading (ffmpeg without -threads; ours with threads=0 = FFmpeg's automatic).
4. Added latency through the gateway: a gateway in this process, ffmpeg publishing the 720p clip
   in real time (-re, -c copy) into cam1, a MaskTranscoder cam1 -> cam1-masked, and two RTSP
   readers (feedgate's RtspClient, TCP) of cam1 and cam1-masked; for every access unit, arrival
   of its last packet on the masked reader minus arrival of the same frame on the plain reader
   (frames matched by RTP timestamp: the masked path carries the source's timestamps, shifted
   by its hub clock offset). p50/p95 in ms.

Prints frames per CPU-second for both, the ratio ours/ffmpeg per resolution, and every command.
``--apply`` adds a micro-benchmark of the mask fill strategies (rectangles, boolean box, flat
indices) behind the constants in gateway/masking/zones.py.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import imageio_ffmpeg  # noqa: E402
import numpy as np  # noqa: E402

from gateway.masking.transcoder import _STOP, MaskTranscoder, _Unit, encoder_options  # noqa: E402
from gateway.masking.zones import MaskRaster, PlaneMask, Zone, _rectangles  # noqa: E402
from gateway.protocols.rtp import rtp_header  # noqa: E402
from gateway.stream.hub import PathStream  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FPS = 25
GOP = 50
BOXES = ((0.10, 0.10, 0.35, 0.50), (0.60, 0.30, 0.90, 0.80))  # x0, y0, x1, y1 (normalised)
ZONES = tuple(
    Zone(f"z{i}", ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))
    for i, (x0, y0, x1, y1) in enumerate(BOXES)
)
BITRATES = {1080: 4_000_000, 720: 2_000_000}


def cmd_str(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def make_clip(cache: Path, w: int, h: int, seconds: int) -> Path:
    bitrate = BITRATES.get(h, int(w * h * FPS * 0.08))
    out = cache / f"mask-{w}x{h}-{seconds}s.mp4"
    argv = [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={FPS}",
        "-vf", "noise=alls=12:allf=t", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", str(GOP), "-keyint_min", str(GOP), "-bf", "0",
        "-b:v", str(bitrate), "-maxrate", str(bitrate), "-bufsize", str(bitrate // 2),
        str(out),
    ]  # fmt: skip
    print(f"clip {w}x{h}: {cmd_str(argv)}")
    if not out.exists():
        subprocess.run(argv, check=True)
    return out


def clip_bitrate(path: Path) -> int:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        nbytes = sum(p.size for p in c.demux(stream) if p.size)
        duration = float(stream.duration * stream.time_base) if stream.duration else 10.0
    return int(nbytes * 8 / duration)


def drawbox_filter(w: int, h: int, raster: MaskRaster) -> str:
    # The same pixels our raster fills (its 8x8-tile-grown boxes), as drawbox fills.
    luma, _ = raster.masks(w, h)
    boxes = []
    for y0, y1, x0, x1 in luma.rects:
        boxes.append(f"drawbox=x={x0}:y={y0}:w={x1 - x0}:h={y1 - y0}:color=black:t=fill")
    return ",".join(boxes)


def run_ffmpeg(clip: Path, w: int, h: int, bitrate: int, single: bool) -> dict[str, Any]:
    opts = encoder_options(bitrate)
    vf = drawbox_filter(w, h, MaskRaster(ZONES, block=8))
    argv = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-stats"]
    if single:
        argv += ["-threads", "1", "-filter_threads", "1"]
    argv += ["-i", str(clip), "-vf", vf, "-c:v", "libx264"]
    argv += ["-preset", opts["preset"], "-tune", opts["tune"], "-b:v", str(bitrate)]
    argv += ["-forced-idr", "1", "-x264-params", opts["x264-params"]]
    if single:
        argv += ["-threads", "1"]
    argv += ["-f", "null", "-"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    counts = re.findall(r"frame=\s*(\d+)", proc.stderr)
    frames = int(counts[-1]) if counts else 0
    return {"frames": frames, "cpu": cpu, "wall": wall, "cmd": cmd_str(argv)}


class _BenchTranscoder(MaskTranscoder):
    """The real worker, with its output counted instead of sent to an event loop."""

    emitted = 0

    def _emit(self, annexb_au: bytes, src: _Unit) -> None:
        super()._emit(annexb_au, src)
        self.emitted += 1


def load_units(clip: Path, bitrate: int) -> list[_Unit]:
    units = []
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
        tb = stream.time_base
        for packet in c.demux(stream):
            for p in bsf.filter(packet):
                pts = int((p.pts or 0) * tb * 90000)
                units.append(
                    _Unit(bytes(p), pts & 0xFFFFFFFF, pts, p.is_keyframe, 0.0, FPS, GOP, bitrate)
                )
    return units


def run_ours(clip: Path, bitrate: int, threads: int) -> dict[str, Any]:
    tx = _BenchTranscoder(
        PathStream("bench"), PathStream("bench-masked"), ZONES, name="bench", threads=threads,
        queue_size=64,
    )  # fmt: skip
    worker = threading.Thread(target=tx._work, name="mask-bench")
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    worker.start()
    # Demux again inside the timed region, so our count includes reading the file like ffmpeg's.
    units = load_units(clip, bitrate)
    for unit in units:
        tx._queue.put(unit)
    tx._queue.put(_STOP)
    worker.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    c = tx.counters
    return {
        "frames": tx.emitted,
        "cpu": cpu,
        "wall": wall,
        "worker_cpu": c.encode_seconds,
        "decode_errors": c.decode_errors,
    }


# ---- latency through the gateway ---------------------------------------------------------------


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure_latency(clip: Path, seconds: float) -> dict[str, Any]:
    from gateway.config import CameraConfig, Config, HttpConfig, RtspConfig
    from gateway.core import Gateway
    from gateway.sources.rtsp_client import RtspClient
    from gateway.stream.tracks import tracks_from_sdp

    rtp_port = _free_port(socket.SOCK_DGRAM) & ~1
    config = Config(
        rtsp=RtspConfig(host="127.0.0.1", port=0, rtp_port=rtp_port),
        http=HttpConfig(host="127.0.0.1", port=0),
        cameras=(CameraConfig(id="cam1", name="Camera 1"),),
    )
    gw = Gateway(config)
    await gw.start()
    port = gw.rtsp.port
    publish = [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
        "-i", str(clip), "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp",
        f"rtsp://127.0.0.1:{port}/cam1",
    ]  # fmt: skip
    print(f"latency publisher: {cmd_str(publish)}")
    pub = await asyncio.create_subprocess_exec(
        *publish, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
    )
    tx: MaskTranscoder | None = None
    clients: list[RtspClient] = []
    try:
        source = gw.hub.path("cam1")
        deadline = time.monotonic() + 20
        while not (source.has_source and source.gop_cached_bytes > 0):
            if time.monotonic() > deadline:
                raise RuntimeError("publisher did not come up")
            await asyncio.sleep(0.05)
        # "~" paths are only reachable through the policy's routing; read the variant by a
        # plain name here.
        target = gw.hub.path("cam1-masked")
        tx = MaskTranscoder(source, target, ZONES, name="cam1-masked")
        tx.start()
        while not target.has_source:
            if time.monotonic() > deadline:
                raise RuntimeError("masked path did not come up")
            await asyncio.sleep(0.05)
        arrivals: dict[str, dict[int, float]] = {"cam1": {}, "cam1-masked": {}}

        def recorder(name: str) -> Any:
            table = arrivals[name]

            def on_packet(channel: int, data: bytes) -> None:
                if channel != 0:
                    return
                _pt, marker, _seq, ts, _ssrc, _off = rtp_header(data)
                if marker:
                    table[ts] = time.monotonic()

            return on_packet

        for name in ("cam1", "cam1-masked"):
            client = RtspClient(f"rtsp://127.0.0.1:{port}/{name}", on_packet=recorder(name))
            await client.connect()
            described = await client.describe()
            tracks, _sd = tracks_from_sdp(described.sdp)
            await client.setup(described.base_url, f"trackID={tracks[0].index}", 0)
            await client.play()
            clients.append(client)
        await asyncio.sleep(seconds)
        offset = target.timeline.tracks[0].ts_offset  # the masked path's hub clock shift
        lat = []
        plain = arrivals["cam1"]
        for ts_m, t_m in arrivals["cam1-masked"].items():
            t_c = plain.get((ts_m - offset) % (1 << 32))
            if t_c is not None:
                lat.append((t_m - t_c) * 1000)
        internal = [x * 1000 for x in tx.counters.latencies]
        return {
            "matched": len(lat),
            "frames_plain": len(plain),
            "p50": statistics.median(lat) if lat else math.nan,
            "p95": float(np.percentile(lat, 95)) if lat else math.nan,
            "internal_p50": statistics.median(internal) if internal else math.nan,
            "internal_p95": float(np.percentile(internal, 95)) if internal else math.nan,
            "dropped": tx.counters.frames_dropped,
            "frames_in": tx.counters.frames_in,
        }
    finally:
        for client in clients:
            await client.close()
        if tx is not None:
            await tx.stop()
        if pub.returncode is None:
            import os
            import signal

            os.killpg(pub.pid, signal.SIGTERM)
            await pub.wait()
        await gw.stop()


# ---- fill strategies -------------------------------------------------------------------------


def bench_apply() -> None:
    frame = av.VideoFrame(1920, 1080, "yuv420p")
    plane = frame.planes[0]
    buf = np.frombuffer(plane, np.uint8)
    stride = plane.line_size
    rows = buf[: 1080 * stride].reshape(-1, stride)
    tri = Zone("t", ((0.1, 0.1), (0.9, 0.2), (0.3, 0.8)))
    for label, zones in (("2 boxes", ZONES), ("triangle", (tri,))):
        luma = MaskRaster(zones).masks(1920, 1080)[0]
        pm = PlaneMask(luma.mask)
        rects = _rectangles(luma.mask)
        ys, xs = np.nonzero(luma.mask)
        flat = (ys * stride + xs).astype(np.intp)

        def do_rects(rects: list[tuple[int, int, int, int]] = rects) -> None:
            for y0, y1, x0, x1 in rects:
                rows[y0:y1, x0:x1] = 16

        def do_flat(flat: np.ndarray = flat) -> None:
            buf[flat] = 16

        def do_bool(mask: np.ndarray = luma.mask) -> None:
            rows[:, :1920][mask] = 16

        def do_chosen(pm: PlaneMask = pm) -> None:
            pm.fill(buf, stride, 16)

        for name, fn in (
            ("rects", do_rects),
            ("flat", do_flat),
            ("bool", do_bool),
            ("chosen", do_chosen),
        ):
            fn()
            t0 = time.perf_counter()
            for _ in range(200):
                fn()
            ms = (time.perf_counter() - t0) / 200 * 1000
            print(f"  fill {label:9s} {name:7s} {ms:7.3f} ms/luma plane ({len(rects)} rects)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--sizes", default="1920x1080,1280x720")
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--cache-dir", default="/tmp/feedgate-bench")
    ap.add_argument("--apply", action="store_true", help="also time the mask fill strategies")
    ap.add_argument("--no-threaded", action="store_true", help="skip the default-threading runs")
    args = ap.parse_args()
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"ffmpeg {FFMPEG}; PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})")
    if args.apply:
        bench_apply()
    clips: dict[str, Path] = {}
    results = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        clip = clips[size] = make_clip(cache, w, h, args.seconds)
        bitrate = clip_bitrate(clip)
        print(f"\n== {w}x{h}: clip {bitrate / 1e6:.2f} Mbit/s, masked encode at the same rate")
        modes = [("threads=1", True)] + ([] if args.no_threaded else [("default threads", False)])
        for label, single in modes:
            ff = run_ffmpeg(clip, w, h, bitrate, single)
            ours = run_ours(clip, bitrate, 1 if single else 0)
            ff_rate = ff["frames"] / ff["cpu"]
            our_rate = ours["frames"] / ours["cpu"]
            print(f"  [{label}] ffmpeg command: {ff['cmd']}")
            print(
                f"  [{label}] ffmpeg CLI : {ff['frames']:4d} frames, {ff['cpu']:6.2f} CPU-s, "
                f"{ff['wall']:6.2f} s wall -> {ff_rate:6.1f} frames/CPU-s, "
                f"{ff['frames'] / ff['wall']:6.1f} fps"
            )
            print(
                f"  [{label}] feedgate   : {ours['frames']:4d} frames, {ours['cpu']:6.2f} CPU-s, "
                f"{ours['wall']:6.2f} s wall -> {our_rate:6.1f} frames/CPU-s, "
                f"{ours['frames'] / ours['wall']:6.1f} fps (worker thread {ours['worker_cpu']:.2f} "
                f"CPU-s, decode errors {ours['decode_errors']})"
            )
            print(f"  [{label}] ratio ours/ffmpeg: {our_rate / ff_rate:.2f}")
            results.append((size, label, ff_rate, our_rate))
    latency_clip = clips.get("1280x720") or next(iter(clips.values()))
    print(f"\n== added latency through the gateway ({latency_clip.name}, {args.latency_seconds}s)")
    lat = asyncio.run(measure_latency(latency_clip, args.latency_seconds))
    print(
        f"  masked - plain arrival, same frame: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms "
        f"({lat['matched']} of {lat['frames_plain']} frames matched)"
    )
    print(
        f"  transcoder internal (AU complete -> RTP to hub): p50 {lat['internal_p50']:.1f} ms, "
        f"p95 {lat['internal_p95']:.1f} ms; frames in {lat['frames_in']}, dropped {lat['dropped']}"
    )
    print("\n== summary (frames per CPU-second)")
    for size, label, ff_rate, our_rate in results:
        print(
            f"  {size:10s} {label:16s} ffmpeg {ff_rate:6.1f}  ours {our_rate:6.1f}  "
            f"ratio {our_rate / ff_rate:.2f}"
        )
    print(f"  latency p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms (target < 150 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
