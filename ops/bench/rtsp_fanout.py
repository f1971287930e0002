#!/usr/bin/env python3
"""RTSP fan-out benchmark: feedgate's relay vs GStreamer's RTSP server, same clip, one run.

    python ops/bench/rtsp_fanout.py --readers 1000 --duration 30 [--target both]

For each target it:

1. generates (once, cached in /tmp/feedgate-bench) an H.264 clip: testsrc2 + temporal noise so
   that it really needs the requested bitrate, libx264 CBR-ish (-b:v/-maxrate, -bufsize = half),
   no B-frames, fixed GOP, SPS/PPS repeated in-band before every IDR, no audio;
2. starts the server under test in its own process group (GStreamer: ops/bench/gst_rtsp_server.py
   under Debian's /usr/bin/python3; feedgate: ``feedgate serve --config <generated toml>``);
3. feeds it with ffmpeg playing the clip in a loop in real time, ``-c copy`` (no re-encode):
   RTSP push (ANNOUNCE/RECORD over TCP) into feedgate, RTP/UDP into a ``udpsrc`` in a shared
   factory for GStreamer (re-packetized by rtph264pay by default, or relayed as sent with
   ``--gst-mode relay``); checks with an ffmpeg RTSP reader that the stream decodes;
4. opens --readers RTSP sessions (DESCRIBE, SETUP interleaved TCP, PLAY) from this one asyncio
   process at --ramp-rate connections/s, waits for them to get a keyframe, then measures for
   --duration seconds: bytes delivered, server CPU (whole process tree, /proc), RSS, time to
   first keyframe, RTP sequence gaps (on every --sample-every'th session), load-generator CPU;
5. kills everything it started (process groups, also on Ctrl-C / SIGTERM / errors).

It prints one table per target, a side-by-side table with feedgate/GStreamer ratios, and
writes --json. Only 127.0.0.1 is used. See ops/bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchkit.clip import FPS, Clip, make_clip
from benchkit.env import (
    GST_SERVER_SCRIPT,
    SYSTEM_PYTHON,
    ensure_ffmpeg,
    ensure_gstreamer,
    ensure_uvloop,
    feedgate_command,
    feedgate_env,
    log,
)
from benchkit.procs import (
    HOST,
    Procs,
    fetch_metrics,
    machine_cpu,
    pick_port,
    probe_stream,
    tree_cpu_rss,
    wait_log_line,
    wait_tcp,
)
from benchkit.reader import LoadGen, pct
from benchkit.report import print_table

# --------------------------------------------------------------------------------------------


async def measure(
    gen: LoadGen,
    server: subprocess.Popen[bytes],
    source: subprocess.Popen[bytes],
    args: argparse.Namespace,
    clip: Clip,
    metrics_port: int | None,
) -> dict[str, Any]:
    stop = asyncio.Event()
    peak = {"rss": 0, "procs": 0}

    async def rss_sampler() -> None:
        while not stop.is_set():
            _, rss, n = tree_cpu_rss(server.pid)
            peak["rss"] = max(peak["rss"], rss)
            peak["procs"] = max(peak["procs"], n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    sampler = asyncio.create_task(rss_sampler())
    keeper = asyncio.create_task(gen.keepalive(stop))
    try:
        log(f"ramping up {gen.readers} readers at {gen.ramp_rate:g}/s")
        t_ramp = time.monotonic()
        await gen.ramp()
        playing = [r for r in gen.sessions if r.playing]
        log(
            f"ramp done in {time.monotonic() - t_ramp:.1f}s: {len(playing)} playing, "
            f"failures {dict(gen.failures) or 'none'}"
        )
        # Settle: until every playing session has a keyframe (bounded by 2 GOPs + 3 s).
        settle_until = time.monotonic() + 2 * args.gop_seconds + 3
        while time.monotonic() < settle_until:
            if all(r.t_keyframe or r.closed for r in playing):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)

        loop = asyncio.get_running_loop()
        m0 = await loop.run_in_executor(None, fetch_metrics, metrics_port) if metrics_port else {}
        srv0, _, _ = tree_cpu_rss(server.pid)
        src0, _, _ = tree_cpu_rss(source.pid)
        lg0 = time.process_time()
        mach0 = machine_cpu()
        b0 = gen.total_bytes()
        lost0 = sum(r.lost for r in gen.sessions if r.sampled)
        pk0 = sum(r.pkts for r in gen.sessions if r.sampled)
        mt0 = sum(r.media_ticks for r in gen.sessions if r.sampled)
        t0 = time.monotonic()
        log(f"measuring for {args.duration}s")
        tail = min(3.0, args.duration / 3)
        await asyncio.sleep(args.duration - tail)
        snap = {r.idx: r.nbytes for r in gen.sessions}
        await asyncio.sleep(tail)
        t1 = time.monotonic()
        b1 = gen.total_bytes()
        srv1, _, _ = tree_cpu_rss(server.pid)
        src1, _, _ = tree_cpu_rss(source.pid)
        lg1 = time.process_time()
        mach1 = machine_cpu()
        lost1 = sum(r.lost for r in gen.sessions if r.sampled)
        pk1 = sum(r.pkts for r in gen.sessions if r.sampled)
        mt1 = sum(r.media_ticks for r in gen.sessions if r.sampled)
        m1 = await loop.run_in_executor(None, fetch_metrics, metrics_port) if metrics_port else {}
    finally:
        stop.set()
        await asyncio.gather(sampler, keeper, return_exceptions=True)

    win = t1 - t0
    alive = sum(1 for r in gen.sessions if r.playing and not r.closed and r.nbytes > snap[r.idx])
    n_play = sum(1 for r in gen.sessions if r.playing)
    delivered_bits = (b1 - b0) * 8
    agg_mbps = delivered_bits / win / 1e6
    clip_mbps = clip.bitrate_bps / 1e6
    srv_cpu = srv1 - srv0
    ttfk = [r.t_keyframe - r.t_play for r in gen.sessions if r.playing and r.t_keyframe]
    ttfk_c = [r.t_keyframe - r.t_connect for r in gen.sessions if r.playing and r.t_keyframe]
    ttfp = [r.t_first_pkt - r.t_play for r in gen.sessions if r.playing and r.t_first_pkt]
    sampled = [r for r in gen.sessions if r.sampled and r.playing]
    behind = [r.behind_peak for r in sampled if r.t_keyframe]
    ttle = [r.t_live - r.t_play for r in sampled if r.t_keyframe]
    mach_busy = 1 - (mach1[1] - mach0[1]) / max(1e-9, mach1[0] - mach0[0])
    busy_cpu_s = mach_busy * (mach1[0] - mach0[0])
    irq_cpu_s = mach1[2] - mach0[2]
    n_sampled_alive = sum(1 for r in sampled if not r.closed)

    def mdelta(name: str) -> float | None:
        return (m1[name] - m0.get(name, 0.0)) if name in m1 else None

    return {
        "sessions_requested": gen.readers,
        "sessions_playing": n_play,
        "sessions_alive_end": alive,
        "failures": dict(gen.failures),
        "window_s": round(win, 2),
        "delivered_mbps": round(agg_mbps, 1),
        "expected_mbps": round(clip_mbps * n_play, 1),
        "delivered_pct_of_expected": round(100 * agg_mbps / (clip_mbps * n_play), 1)
        if n_play
        else None,
        "per_reader_mbps": round(agg_mbps / n_play, 3) if n_play else None,
        "clip_mbps": round(clip_mbps, 3),
        "server_cpu_s": round(srv_cpu, 2),
        "server_cpu_pct_of_one_core": round(100 * srv_cpu / win, 1),
        "server_cpu_s_per_gbit": round(srv_cpu / (delivered_bits / 1e9), 4)
        if delivered_bits
        else None,
        "server_cpu_ms_per_reader_s": round(1000 * srv_cpu / (alive * win), 3) if alive else None,
        "server_peak_rss_mib": round(peak["rss"] / 2**20, 1),
        "server_peak_processes": peak["procs"],
        "ttfk_n": len(ttfk),
        "ttfk_from_connect_p50_s": _r(pct(ttfk_c, 50)),
        "ttfk_from_connect_p95_s": _r(pct(ttfk_c, 95)),
        "ttfk_from_connect_max_s": _r(max(ttfk_c) if ttfk_c else None),
        "first_packet_p50_s": _r(pct(ttfp, 50)),
        "first_packet_p95_s": _r(pct(ttfp, 95)),
        "ttfk_p50_s": _r(pct(ttfk, 50)),
        "ttfk_p95_s": _r(pct(ttfk, 95)),
        "ttfk_max_s": _r(max(ttfk) if ttfk else None),
        "behind_live_p50_s": _r(pct(behind, 50)),
        "behind_live_p95_s": _r(pct(behind, 95)),
        "ttle_p50_s": _r(pct(ttle, 50)),
        "ttle_p95_s": _r(pct(ttle, 95)),
        "sampled_sessions": len(sampled),
        "sampled_packets_window": pk1 - pk0,
        "sampled_lost_window": lost1 - lost0,
        "sampled_lost_total": sum(r.lost for r in sampled),
        "sampled_media_s_per_wall_s": round((mt1 - mt0) / 90000 / (n_sampled_alive * win), 3)
        if n_sampled_alive
        else None,
        "sampled_packets_total": sum(r.pkts for r in sampled),
        "desync_events": sum(r.desync for r in gen.sessions),
        "server_dropped_packets": mdelta("feedgate_dropped_packets_total"),
        "server_dropped_packets_total": m1.get("feedgate_dropped_packets_total"),
        "server_bytes_sent_mbps": round(mdelta("feedgate_bytes_sent_total") * 8 / win / 1e6, 1)
        if mdelta("feedgate_bytes_sent_total") is not None
        else None,
        "server_readers_gauge": m1.get("feedgate_readers"),
        "source_cpu_s": round(src1 - src0, 2),
        "loadgen_cpu_s": round(lg1 - lg0, 2),
        "loadgen_cpu_pct_of_one_core": round(100 * (lg1 - lg0) / win, 1),
        "machine_cpu_busy_pct": round(100 * mach_busy, 1),
        "irq_softirq_cpu_s": round(irq_cpu_s, 2),
        # Approximate (irq time may also be charged to the interrupted task): clamped at 0.
        "other_processes_cpu_s": round(
            max(0.0, busy_cpu_s - irq_cpu_s - srv_cpu - (src1 - src0) - (lg1 - lg0)), 2
        ),
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def run_target(
    target: str,
    args: argparse.Namespace,
    ffmpeg: str,
    clip: Clip,
    procs: Procs,
    uvloop: Any,
    feedgate_cmd: list[str] | None,
) -> dict[str, Any]:
    res: dict[str, Any] = {"target": target}
    metrics_port: int | None = None
    # How busy the machine is with *other* work before we start: the figures are only
    # meaningful when this is near 0 (both processes under test share the same cores).
    m0 = machine_cpu()
    time.sleep(1.0)
    m1 = machine_cpu()
    idle_busy = 100 * (1 - (m1[1] - m0[1]) / max(1e-9, m1[0] - m0[0]))
    res["machine_busy_before_pct"] = round(idle_busy, 1)
    if idle_busy > 15:
        log(f"warning: machine already {idle_busy:.0f}% busy before the run: figures are noisy")
    try:
        if target == "gstreamer":
            port = pick_port(args.gst_port)
            udp = pick_port(args.gst_udp_port, socket.SOCK_DGRAM, 2)
            url = f"rtsp://{HOST}:{port}/bench"
            gst_argv = [str(GST_SERVER_SCRIPT), str(port), str(udp), "/bench", args.gst_mode]
            server = procs.start("gstreamer-server", [SYSTEM_PYTHON, *gst_argv])
            if not wait_log_line(procs.logfile("gstreamer-server"), "READY", 30, server):
                raise RuntimeError("GStreamer server did not print READY")
            src_cmd = [ffmpeg, "-hide_banner", "-loglevel", "warning", "-nostats"]
            src_cmd += ["-re", "-stream_loop", "-1", "-i", str(clip.path), "-c", "copy"]
            src_cmd += ["-f", "rtp", "-payload_type", "96", f"rtp://{HOST}:{udp}?pkt_size=1400"]
            res["feed"] = f"ffmpeg -re -stream_loop -1 -c copy -> RTP/UDP {HOST}:{udp} -> " + (
                "udpsrc name=pay0 in a shared GstRTSPMediaFactory (packets relayed as sent)"
                if args.gst_mode == "relay"
                else "udpsrc ! rtph264depay ! rtph264pay name=pay0 (re-packetized, not re-encoded)"
            )
        else:
            if feedgate_cmd is None:
                raise RuntimeError("feedgate CLI not available")
            port, http = pick_port(args.feedgate_port), pick_port(args.feedgate_http_port)
            rtp_port = pick_port(args.feedgate_rtp_port, socket.SOCK_DGRAM, 2)
            url = f"rtsp://{HOST}:{port}/bench"
            cfg = procs.log_dir / "feedgate-bench.toml"
            workers = f"workers = {args.workers}\n" if args.workers > 1 else ""
            data_dir = args.cache_dir / "feedgate-data"
            data_dir.mkdir(exist_ok=True)
            cfg.write_text(
                f'data_dir = "{data_dir}"\n\n'
                f'[rtsp]\nhost = "{HOST}"\nport = {port}\nrtp_port = {rtp_port}\n'
                f'{workers}\n[http]\nhost = "{HOST}"\nport = {http}\n\n'
                '[[cameras]]\nid = "bench"\nname = "Bench clip"\nsource = "push"\n'
            )
            server = procs.start(
                "feedgate-server",
                [*feedgate_cmd, "serve", "--config", str(cfg)],
                cwd=args.cache_dir,
                env=feedgate_env(),
            )
            if not wait_tcp(port, 60, server):
                raise RuntimeError(
                    f"feedgate did not listen on {port} (exit {server.poll()}; "
                    f"see {procs.logfile('feedgate-server')})"
                )
            metrics_port = http
            src_cmd = [ffmpeg, "-hide_banner", "-loglevel", "warning", "-nostats"]
            src_cmd += ["-re", "-stream_loop", "-1", "-i", str(clip.path), "-c", "copy"]
            src_cmd += ["-f", "rtsp", "-rtsp_transport", "tcp", url]
            res["feed"] = (
                f"ffmpeg -re -stream_loop -1 -c copy -> RTSP push (ANNOUNCE/RECORD, TCP) to {url}"
            )
        source = procs.start(f"{target}-source", src_cmd)
        time.sleep(1.5)
        if source.poll() is not None:
            raise RuntimeError(f"source ffmpeg exited; see {procs.logfile(f'{target}-source')}")
        ok, info = probe_stream(ffmpeg, url)
        log(f"{target}: probe {'ok' if ok else 'FAILED'}: {info}")
        res["probe"] = info
        if not ok:
            raise RuntimeError(f"ffmpeg cannot read {url}: {info}")

        gen = LoadGen(url, args.readers, args.sample_every, args.ramp_rate, args.rcvlowat)

        async def main() -> dict[str, Any]:
            try:
                return await measure(gen, server, source, args, clip, metrics_port)
            finally:
                gen.close_all()

        factory = uvloop.new_event_loop if uvloop else None
        with asyncio.Runner(loop_factory=factory) as runner:
            res.update(runner.run(main()))
        if server.poll() is not None:
            res["error"] = f"server exited with {server.returncode} during the run"
    except RuntimeError as exc:
        res["error"] = str(exc)
        log(f"{target}: ERROR {exc}")
    finally:
        procs.stop_all()
    return res


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--readers", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=30, help="measuring window, seconds")
    ap.add_argument("--target", choices=["feedgate", "gstreamer", "both"], default="both")
    ap.add_argument("--workers", type=int, default=1, help="feedgate [rtsp] workers")
    ap.add_argument("--clip-seconds", type=int, default=20)
    ap.add_argument("--bitrate", default="4M")
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--gop-seconds", type=float, default=2.0)
    ap.add_argument("--ramp-rate", type=float, default=200, help="new connections per second")
    ap.add_argument("--sample-every", type=int, default=20, help="fully parse every Nth session")
    ap.add_argument(
        "--rcvlowat",
        type=int,
        default=65536,
        help="SO_RCVLOWAT for byte-counting sessions after their first keyframe (0: off)",
    )
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/feedgate-bench"))
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument(
        "--gst-mode",
        choices=["repay", "relay"],
        default="repay",
        help="GStreamer launch line: depayload and re-payload the RTP packets "
        "(udpsrc ! rtph264depay ! rtph264pay name=pay0: one buffer list, so one writev per "
        "client, per NAL unit; the default, GStreamer's fast path), or relay them as sent "
        "(udpsrc name=pay0: one write per packet per client, ~3-4x the CPU per Gbit)",
    )
    ap.add_argument("--gst-port", type=int, default=18654)
    ap.add_argument("--gst-udp-port", type=int, default=18600)
    ap.add_argument("--feedgate-port", type=int, default=18554)
    ap.add_argument("--feedgate-rtp-port", type=int, default=18000)
    ap.add_argument("--feedgate-http-port", type=int, default=18080)
    args = ap.parse_args(argv)
    if args.readers < 1 or args.duration < 3 or args.sample_every < 1:
        ap.error("need --readers >= 1, --duration >= 3, --sample-every >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < args.readers + 100:
        log(f"warning: RLIMIT_NOFILE is {nofile}, too low for {args.readers} readers")

    # SIGTERM behaves like Ctrl-C so that the finally blocks kill the subprocesses.
    def _term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored

    targets = ["gstreamer", "feedgate"] if args.target == "both" else [args.target]
    ffmpeg = ensure_ffmpeg()
    uvloop = ensure_uvloop(not args.no_uvloop)
    feedgate_cmd: list[str] | None = None
    feedgate_reason = ""
    if "feedgate" in targets:
        feedgate_cmd, feedgate_reason = feedgate_command()
        if feedgate_cmd is None:
            log(f"feedgate not runnable: {feedgate_reason}")
            if args.target == "feedgate":
                return 2
            targets.remove("feedgate")
    if "gstreamer" in targets:
        ensure_gstreamer()

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    log_dir = args.cache_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    clip = make_clip(ffmpeg, args.cache_dir, args)
    log(
        f"clip {clip.path.name}: {clip.bitrate_bps / 1e6:.3f} Mbit/s, {clip.size}, "
        f"GOP {clip.gop_frames} frames; loop: {'uvloop' if uvloop else 'asyncio'}; "
        f"RLIMIT_NOFILE {nofile}"
    )

    procs = Procs(log_dir)
    results: list[dict[str, Any]] = []
    try:
        for target in targets:
            log(f"=== {target} ===")
            res = run_target(target, args, ffmpeg, clip, procs, uvloop, feedgate_cmd)
            results.append(res)
            print_table([res])
            print(flush=True)
    except KeyboardInterrupt:
        log("interrupted: stopping subprocesses")
        return 130
    finally:
        procs.stop_all()

    rc = 0 if results and all("error" not in r for r in results) else 1
    if args.target == "both" and feedgate_cmd is None:
        results.append({"target": "feedgate", "error": f"not run: {feedgate_reason}"})
    print("\n=== side by side ===")
    print(
        f"clip: {clip.size} H.264 {clip.bitrate_bps / 1e6:.2f} Mbit/s, {FPS} fps, "
        f"GOP {clip.gop_frames / FPS:g} s; readers {args.readers}, window {args.duration:g} s, "
        f"feedgate workers {args.workers}, {os.cpu_count()} CPUs shared by server, source "
        "and load generator"
    )
    print_table(results)
    by = {r["target"]: r for r in results}
    ratio = None
    if "feedgate" in by and "gstreamer" in by:
        a = by["feedgate"].get("server_cpu_s_per_gbit")
        b = by["gstreamer"].get("server_cpu_s_per_gbit")
        if a and b:
            ratio = a / b
            print(f"\nCPU per delivered Gbit, feedgate / GStreamer: {ratio:.2f}x")
    if args.json:
        doc = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "clip": {
                "path": str(clip.path),
                "size": clip.size,
                "fps": FPS,
                "gop_frames": clip.gop_frames,
                "bitrate_bps": round(clip.bitrate_bps),
            },
            "loop": "uvloop" if uvloop else "asyncio",
            "results": results,
            "cpu_per_gbit_ratio_feedgate_over_gstreamer": ratio,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {args.json}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
