#!/usr/bin/env python3
"""WebRTC (WHEP) fan-out: N WebRTC viewers of one camera against N RTSP readers of the same
camera from the same gateway, in one run.

    flock /work/tools/bench.lock python ops/bench/bench_webrtc.py --viewers 100,150 --duration 20

One ``feedgate serve`` (no tenancy: open access, so only the media path is measured) with one
pushed camera: ffmpeg playing a cached 1280x720, 2 Mbit/s, 2 s GOP H.264 clip in real time with
``-c copy``. For each N it runs, one after the other, ``whep_load.py webrtc`` (N aiortc WHEP
viewers opened from a separate process, counting packets without decoding) and ``whep_load.py
rtsp`` (N RTSP readers over TCP), and prints per phase: the gateway's CPU per viewer-second and
as % of one core (its process tree, /proc), delivered / expected bytes, media seconds per wall
second and lost packets on the sampled viewers, and the first frame p50/p95 (WebRTC: from the
POST to the first complete frame; RTSP: from the connect to the first keyframe), then the
WebRTC / RTSP ratio of CPU per viewer-second.

``--baseline`` adds, on a second gateway with ``webrtc.sender = "aiortc"``, the same WebRTC
phase with aiortc's own ``RTCRtpSender`` packing and encrypting for each viewer: what sharing
the packetiser per camera saves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from benchkit.clip import make_clip  # noqa: E402
from benchkit.env import ensure_ffmpeg  # noqa: E402
from benchkit.procs import (  # noqa: E402
    Procs,
    machine_cpu,
    pick_port,
    probe_stream,
    tree_cpu_rss,
    wait_log_line,
)
from benchkit.reader import pct  # noqa: E402


def gateway_config(d: Path, rtsp: int, http: int, sender: str) -> Path:
    cfg = d / f"feedgate-{sender}.toml"
    cfg.write_text(
        f'data_dir = "{d / ("var-" + sender)}"\n'
        f'[rtsp]\nhost = "127.0.0.1"\nport = {rtsp}\nrtp_port = 0\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n'
        f'[webrtc]\nhost_addresses = ["127.0.0.1"]\nudp_port_min = 0\nudp_port_max = 0\n'
        f'sender = "{sender}"\nmax_pending = 256\nmax_pending_per_tenant = 256\n'
        '[[cameras]]\nid = "cam"\nsource = "push"\n'
    )
    return cfg


def phase(kind: str, url: str, n: int, gw_pid: int, args: argparse.Namespace, clip_mbps: float,
          logs: Path) -> dict[str, Any]:  # fmt: skip
    """``n`` viewers over ``args.procs`` load processes, measured over one shared window."""
    print(f"-- {kind}, {n} viewers", flush=True)
    k = max(1, min(args.procs, n))
    loads = []
    for j in range(k):
        cmd = [sys.executable, str(HERE / "whep_load.py"), kind, url, "--coordinated"]
        cmd += ["--viewers", str(n // k + (j < n % k)), "--duration", str(args.duration)]
        cmd += ["--ramp-rate", f"{args.ramp_rate / k:g}"]
        loads.append(subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True))  # fmt: skip
    for p in loads:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "READY":
            for q in loads:
                q.kill()
            return {"kind": kind, "viewers": n, "error": "a load process failed"}
    cpu0 = tree_cpu_rss(gw_pid)[0]
    mach0 = machine_cpu()
    t0 = time.monotonic()
    for p in loads:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    time.sleep(args.duration)
    cpu1, rss, _ = tree_cpu_rss(gw_pid)
    mach1 = machine_cpu()
    win = time.monotonic() - t0
    parts = []
    for p in loads:
        out, _ = p.communicate(timeout=120)
        parts.append(json.loads(out.strip().splitlines()[-1]))
    (logs / f"{kind}-{n}.json").write_text(json.dumps(parts))
    first = [t for part in parts for t in part["first_frames"]]
    sampled = sum(part["sampled_viewers"] for part in parts)
    bits = sum(part["delivered_bits"] for part in parts)
    errors: dict[str, int] = {}
    for part in parts:
        for e, c in part["errors"].items():
            errors[e] = errors.get(e, 0) + c
    cpu = cpu1 - cpu0
    return {
        "kind": kind,
        "viewers": n,
        "load_processes": k,
        "window_s": round(win, 2),
        "answered": sum(part["answered"] for part in parts),
        "connected_at_end": sum(part["connected_at_end"] for part in parts),
        "delivered_mbps": round(bits / win / 1e6, 1),
        "expected_mbps": round(clip_mbps * n, 1),
        "delivered_ratio": round(bits / win / 1e6 / (clip_mbps * n), 3),
        "sampled_viewers": sampled,
        "sampled_lost_packets": sum(part["sampled_lost_packets"] for part in parts),
        "sampled_media_s_per_wall_s": round(
            sum(part["sampled_media_s"] for part in parts) / (sampled * win), 3
        ) if sampled else None,
        "server_cpu_s": round(cpu, 2),
        "server_cpu_pct_of_one_core": round(100 * cpu / win, 1),
        "server_cpu_ms_per_viewer_s": round(1000 * cpu / (n * win), 3),
        "server_rss_mib": round(rss / 2**20, 1),
        "with_first_frame": len(first),
        "first_frame_is_keyframe": sum(part["first_frame_is_keyframe"] for part in parts),
        "first_frame_p50_s": pct(first, 50),
        "first_frame_p95_s": pct(first, 95),
        "first_frame_max_s": max(first) if first else None,
        **_steps(parts),
        "loadgen_cpu_pct_of_one_core": round(
            100 * sum(part["loadgen_cpu_s"] for part in parts) / win, 1
        ),
        "machine_cpu_busy_pct": round(
            100 * (1 - (mach1[1] - mach0[1]) / max(1e-9, mach1[0] - mach0[0])), 1
        ),
        "errors": errors,
    }  # fmt: skip


def _steps(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95 of each step to a WebRTC viewer's first frame (RTSP has none of these)."""
    out: dict[str, Any] = {}
    for key in ("answers", "handshakes", "first_after_connect"):
        values = [t for part in parts for t in part.get(key, [])]
        if values:
            out[f"{key}_p50_s"], out[f"{key}_p95_s"] = pct(values, 50), pct(values, 95)
    return out


def _breakdown(r: dict[str, Any]) -> str:
    if "answers_p50_s" not in r:
        return "-"
    keys = ("answers", "handshakes", "first_after_connect")
    return " + ".join(f"{_ms(r.get(k + '_p50_s'))}/{_ms(r.get(k + '_p95_s'))}" for k in keys)


def start_gateway(
    procs: Procs, d: Path, sender: str, ffmpeg: str, clip: Path
) -> tuple[Any, int, int]:
    rtsp, http = pick_port(18554), pick_port(18080)
    cfg = gateway_config(d, rtsp, http, sender)
    name = f"feedgate-{sender}"
    gw = procs.start(name, [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
                     cwd=REPO)  # fmt: skip
    if not wait_log_line(procs.logfile(name), "feedgate listening", 60, gw):
        sys.exit(procs.logfile(name).read_text()[-3000:])
    procs.start(
        f"camera-{sender}",
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
         "-i", str(clip), "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp",
         f"rtsp://127.0.0.1:{rtsp}/cam"],
    )  # fmt: skip
    if not wait_log_line(procs.logfile(name), "publishing cam", 30, gw):
        sys.exit("the camera never published")
    ok, what = probe_stream(ffmpeg, f"rtsp://127.0.0.1:{rtsp}/cam")
    print(f"probe: {'ok' if ok else 'FAILED'} {what}", flush=True)
    return gw, rtsp, http


def _answered(r: dict[str, Any]) -> str:
    return f"{r.get('answered')} / {r.get('connected_at_end')}"


def _delivered(r: dict[str, Any]) -> str:
    got, want, ratio = r.get("delivered_mbps"), r.get("expected_mbps"), r.get("delivered_ratio")
    return f"{got} / {want} Mbit/s ({ratio})"


def _lost(r: dict[str, Any]) -> str:
    return f"{r.get('sampled_lost_packets')} ({r.get('sampled_viewers')} viewers)"


def _first(r: dict[str, Any]) -> str:
    keys = ("first_frame_p50_s", "first_frame_p95_s", "first_frame_max_s")
    return " / ".join(_ms(r.get(k)) for k in keys)


def _keyframes(r: dict[str, Any]) -> str:
    return f"{r.get('first_frame_is_keyframe')} of {r.get('with_first_frame')}"


def _loads(r: dict[str, Any]) -> str:
    return f"{r.get('load_processes')} / {r.get('loadgen_cpu_pct_of_one_core')}"


def _key(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r.get(name)


ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("viewers answered / connected at the end", _answered),
    ("delivered / expected", _delivered),
    ("media s per wall s (sampled)", _key("sampled_media_s_per_wall_s")),
    ("lost packets (sampled)", _lost),
    ("gateway CPU, % of one core", _key("server_cpu_pct_of_one_core")),
    ("gateway CPU ms per viewer-second", _key("server_cpu_ms_per_viewer_s")),
    ("gateway RSS MiB", _key("server_rss_mib")),
    ("first frame p50 / p95 / max s", _first),
    ("POST->answer + ICE/DTLS + ->first frame, p50/p95 s", _breakdown),
    ("first frame is a keyframe", _keyframes),
    ("load processes / their CPU, % of one core", _loads),
    ("machine busy %", _key("machine_cpu_busy_pct")),
    ("errors", lambda r: r.get("errors") or r.get("error") or "none"),
]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def print_table(n: int, results: list[tuple[str, dict[str, Any]]]) -> None:
    print(f"\n## {n} viewers")
    print("| | " + " | ".join(label for label, _ in results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for name, get in ROWS:
        print(f"| {name} | " + " | ".join(str(get(r)) for _, r in results) + " |")
    by = dict(results)
    rtsp = by.get("RTSP", {}).get("server_cpu_ms_per_viewer_s")
    for label, r in results:
        v = r.get("server_cpu_ms_per_viewer_s")
        if label != "RTSP" and v and rtsp:
            print(f"{label} / RTSP gateway CPU per viewer-second: x{v / rtsp:.2f}")
    shared, base = by.get("WebRTC (shared)", {}), by.get("WebRTC (aiortc sender)", {})
    if shared.get("server_cpu_ms_per_viewer_s") and base.get("server_cpu_ms_per_viewer_s"):
        ratio = shared["server_cpu_ms_per_viewer_s"] / base["server_cpu_ms_per_viewer_s"]
        print(f"shared / aiortc sender gateway CPU per viewer-second: x{ratio:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--viewers", default="100,150", help="comma-separated viewer counts")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--ramp-rate", type=float, default=10.0, help="new viewers per second")
    ap.add_argument("--procs", type=int, default=2, help="load processes sharing the viewers")
    ap.add_argument("--bitrate", default="2M")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--gop-seconds", type=float, default=2.0)
    ap.add_argument("--clip-seconds", type=int, default=20)
    ap.add_argument("--baseline", action="store_true", help="also aiortc's per-viewer sender")
    ap.add_argument("--no-rtsp", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    counts = [int(x) for x in args.viewers.split(",") if x.strip()]
    print("command:", " ".join(["ops/bench/bench_webrtc.py", *sys.argv[1:]]))
    print(
        f"cpus: {os.cpu_count()}, started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
    )
    ffmpeg = ensure_ffmpeg()
    cache = Path(tempfile.gettempdir()) / "feedgate-bench"
    cache.mkdir(exist_ok=True)
    clip = make_clip(ffmpeg, cache, args)
    clip_mbps = clip.bitrate_bps / 1e6
    print(f"clip: {clip.size}, {clip_mbps:.2f} Mbit/s, GOP {clip.gop_frames} frames")
    table: dict[int, list[tuple[str, dict[str, Any]]]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="bench-webrtc-") as tmp:
        d = Path(tmp)
        (d / "logs").mkdir()
        procs = Procs(d / "logs")
        try:
            senders = ["shared", "aiortc"] if args.baseline else ["shared"]
            for sender in senders:
                gw, rtsp, http = start_gateway(procs, d, sender, ffmpeg, clip.path)
                whep = f"http://127.0.0.1:{http}/whep/cam"
                label = "WebRTC (shared)" if sender == "shared" else "WebRTC (aiortc sender)"
                for n in counts:
                    table[n].append(
                        (label, phase("webrtc", whep, n, gw.pid, args, clip_mbps, d / "logs"))
                    )
                    if sender == "shared" and not args.no_rtsp:
                        url = f"rtsp://127.0.0.1:{rtsp}/cam"
                        table[n].append(
                            ("RTSP", phase("rtsp", url, n, gw.pid, args, clip_mbps, d / "logs"))
                        )
                procs.stop_all()
        finally:
            procs.stop_all()
            kept = cache / "webrtc-logs"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(d / "logs", kept)
            print(f"logs: {kept}")
    for n in counts:
        print_table(n, table[n])
    if args.json:
        Path(args.json).write_text(
            json.dumps({str(n): dict(v) for n, v in table.items()}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
