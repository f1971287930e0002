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
import importlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
GST_SERVER_SCRIPT = HERE / "gst_rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
APT_PACKAGES = [
    "gir1.2-gst-rtsp-server-1.0",
    "python3-gi",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
    "gstreamer1.0-tools",
]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
FPS = 25
HOST = "127.0.0.1"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Dependencies
# --------------------------------------------------------------------------------------------


def _pip_install(*pkgs: str) -> bool:
    log(f"pip install {' '.join(pkgs)}")
    rc = subprocess.call(
        [sys.executable, "-m", "pip", "install", "-q", *pkgs],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    importlib.invalidate_caches()
    return rc == 0


def ensure_ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        if not _pip_install("imageio-ffmpeg"):
            sys.exit("cannot install imageio-ffmpeg (pip install imageio-ffmpeg)")
        import imageio_ffmpeg
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def ensure_uvloop(allow: bool) -> Any:
    if not allow:
        return None
    try:
        import uvloop
    except ImportError:
        if not _pip_install("uvloop"):
            log("uvloop not available: using the default asyncio loop")
            return None
        try:
            import uvloop
        except ImportError:
            return None
    return uvloop


def _missing_apt_packages() -> list[str]:
    missing = []
    for pkg in APT_PACKAGES:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        ).stdout
        if "install ok installed" not in out:
            missing.append(pkg)
    return missing


def ensure_gstreamer() -> None:
    if not Path(SYSTEM_PYTHON).exists() or not shutil.which("dpkg-query"):
        sys.exit(f"GStreamer target needs Debian's {SYSTEM_PYTHON} and apt")
    missing = _missing_apt_packages()
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        log(f"apt-get install {' '.join(missing)}")
        if subprocess.call(cmd, env=env, stdout=subprocess.DEVNULL) != 0:
            log("apt-get install failed; running apt-get update and retrying")
            subprocess.call(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
            if subprocess.call(cmd, env=env, stdout=subprocess.DEVNULL) != 0:
                sys.exit("apt-get install of the GStreamer packages failed")
    check = (
        "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "assert Gst.ElementFactory.find('udpsrc'), 'udpsrc missing'"
    )
    r = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"GStreamer RTSP server bindings unusable:\n{r.stderr}")


def feedgate_command() -> tuple[list[str] | None, str]:
    """Return (argv prefix for `feedgate`, reason if unavailable)."""
    candidates: list[list[str]] = []
    exe = shutil.which("feedgate")
    if exe:
        candidates.append([exe])
    if (REPO / "gateway" / "cli" / "main.py").exists():
        candidates.append([sys.executable, "-m", "gateway.cli"])
    if not candidates:
        return None, "no `feedgate` on PATH and no gateway/cli/main.py yet"
    reason = ""
    for cmd in candidates:
        try:
            r = subprocess.run(
                [*cmd, "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd="/tmp",
                env=_feedgate_env(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"`{' '.join(cmd)} --help` failed: {exc}"
            continue
        if r.returncode == 0 and "serve" in r.stdout + r.stderr:
            return cmd, ""
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        reason = f"`feedgate --help` exited {r.returncode}, no `serve` command ({tail[0][:200]})"
    return None, reason


def _feedgate_env() -> dict[str, str]:
    # FEEDGATE_* variables would override the generated config: leave them out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


# --------------------------------------------------------------------------------------------
# Clip
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class Procs:
    """Every subprocess started, each in its own process group, killed on the way out."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        logf = open(self.log_dir / f"{name}.log", "wb")
        logf.write((" ".join(cmd) + "\n\n").encode())
        logf.flush()
        p = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kw,
        )
        logf.close()
        self.running.append((name, p))
        return p

    def logfile(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def stop_all(self) -> None:
        for _name, p in reversed(self.running):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _name, p in reversed(self.running):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Kill whatever is left of the group, also grandchildren that outlived the leader.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2)
        self.running.clear()


def _read_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split()  # fields from #3 (state) on


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _read_stat(int(entry))
            if st:
                children.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu_rss(root: int) -> tuple[float, int, int]:
    """(user+sys CPU seconds incl. reaped children, RSS bytes, process count) of a tree."""
    ticks = rss = n = 0
    for pid in tree_pids(root):
        st = _read_stat(pid)
        if st:
            ticks += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
            rss += int(st[21]) * PAGE_SIZE
            n += 1
    return ticks / CLK_TCK, rss, n


def machine_cpu() -> tuple[float, float, float]:
    """(total, idle+iowait+steal, irq+softirq) CPU-seconds over all CPUs since boot."""
    with open("/proc/stat") as f:
        # user nice system idle iowait irq softirq steal
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) / CLK_TCK, (v[3] + v[4] + v[7]) / CLK_TCK, (v[5] + v[6]) / CLK_TCK


def port_free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, kind: int = socket.SOCK_STREAM, span: int = 1) -> int:
    """`preferred` if it (and the next span-1 ports) are free on 127.0.0.1, else a free one."""
    for _ in range(50):
        if all(port_free(preferred + i, kind) for i in range(span)):
            return preferred
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((HOST, 0))
            preferred = s.getsockname()[1] & ~1  # even, so RTP/RTCP pairs line up
    raise RuntimeError(f"no free port run of {span} found")


def wait_tcp(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return True
        time.sleep(0.2)
    return False


def wait_log_line(path: Path, text: str, timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def probe_stream(ffmpeg: str, url: str, timeout: float = 30) -> tuple[bool, str]:
    """Read ~2 s of the stream with an ffmpeg RTSP client (stands in for ffprobe)."""
    cmd = [ffmpeg, "-hide_banner", "-rtsp_transport", "tcp", "-i", url]
    cmd += ["-t", "2", "-c", "copy", "-f", "null", "-"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "ffmpeg probe timed out"
    lines = [ln.strip() for ln in r.stderr.splitlines() if "Video:" in ln]
    ok = r.returncode == 0 and bool(lines) and "x" in lines[0]
    return ok, (lines[0] if lines else r.stderr.strip()[-300:])


def fetch_metrics(port: int) -> dict[str, float]:
    """Sum every sample of each Prometheus metric family (labels merged)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=3) as r:
            text = r.read().decode(errors="replace")
    except (OSError, urllib.error.URLError):
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            name_labels, value = line.rsplit(None, 1)[0], float(line.rsplit(None, 1)[1])
        except (ValueError, IndexError):
            continue
        if " " in name_labels and "}" not in name_labels:  # "name value timestamp"
            name_labels = name_labels.split()[0]
        name = name_labels.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + value
    return out


# --------------------------------------------------------------------------------------------
# Load generator: minimal RTSP-over-TCP reader
# --------------------------------------------------------------------------------------------

PARSE, COUNT = 0, 1
_SINK = memoryview(bytearray(256 * 1024))  # shared scratch buffer for byte-counting sessions
_RTSP = b"RTSP/"


class RtspError(Exception):
    pass


class Reader(asyncio.BufferedProtocol):
    """One RTSP session. Parses everything until the first keyframe (and for its whole life
    when `sampled`), then only counts bytes, reading into a shared scratch buffer."""

    def __init__(self, idx: int, sampled: bool, rcvlowat: int) -> None:
        self.idx = idx
        self.sampled = sampled
        self.rcvlowat = rcvlowat
        self.mode = PARSE
        self.rxv: memoryview = memoryview(bytearray(64 * 1024))
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.nbytes = 0
        self.cseq = 0
        self.waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self.closed = False
        self.session = ""
        self.playing = False
        self.t_connect = 0.0
        self.t_play = 0.0
        self.t_keyframe = 0.0
        self.t_first_pkt = 0.0
        self.last_seq = -1
        self.pkts = 0
        self.lost = 0
        self.desync = 0
        self.ts_last = -1
        self.media_ticks = 0  # RTP clock ticks received (90 kHz), sampled sessions only
        self.next_keepalive = 0.0
        self.keepalive_every = 20.0
        self.url = ""

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SINK if self.mode == COUNT else self.rxv

    def buffer_updated(self, nbytes: int) -> None:
        self.nbytes += nbytes
        if self.mode == COUNT:
            return
        self.buf += self.rxv[:nbytes]
        self._drain()

    def eof_received(self) -> bool:
        return False

    # parsing
    def _drain(self) -> None:
        buf = self.buf
        n = len(buf)
        pos = 0
        while pos < n and self.mode == PARSE:
            c = buf[pos]
            if c == 0x24:  # '$' interleaved frame
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                end = pos + 4 + ln
                if end > n:
                    break
                if buf[pos + 1] == 0 and ln >= 13:
                    self._rtp(buf, pos + 4, ln)
                pos = end
            elif c == 0x52:  # 'R' of RTSP/1.0
                if n - pos < 5:
                    break
                if buf[pos : pos + 5] != _RTSP:
                    pos = self._resync(buf, pos)
                    continue
                hend = buf.find(b"\r\n\r\n", pos)
                if hend < 0:
                    break
                head = bytes(buf[pos:hend]).decode("latin-1")
                lines = head.split("\r\n")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                blen = int(headers.get("content-length", "0") or 0)
                if hend + 4 + blen > n:
                    break
                body = bytes(buf[hend + 4 : hend + 4 + blen])
                pos = hend + 4 + blen
                try:
                    status = int(lines[0].split()[1])
                except (IndexError, ValueError):
                    status = 0
                if self.waiter and not self.waiter.done():
                    self.waiter.set_result((status, headers, body))
            else:
                pos = self._resync(buf, pos)
        del buf[:pos]

    def _resync(self, buf: bytearray, pos: int) -> int:
        self.desync += 1
        j = buf.find(b"$", pos + 1)
        return j if j >= 0 else len(buf)

    def _rtp(self, buf: bytearray, off: int, ln: int) -> None:
        b0 = buf[off]
        if b0 >> 6 != 2:
            return
        self.pkts += 1
        if not self.t_first_pkt:
            self.t_first_pkt = time.monotonic()
        seq = (buf[off + 2] << 8) | buf[off + 3]
        if self.last_seq >= 0:
            gap = (seq - self.last_seq - 1) & 0xFFFF
            if gap >= 0x8000:  # duplicate / reordered: keep the highest
                return
            self.lost += gap
        self.last_seq = seq
        ts = (buf[off + 4] << 24) | (buf[off + 5] << 16) | (buf[off + 6] << 8) | buf[off + 7]
        if self.ts_last >= 0:
            dts = (ts - self.ts_last) & 0xFFFFFFFF
            if dts < 0x80000000:
                self.media_ticks += dts
                self.ts_last = ts
        else:
            self.ts_last = ts
        if self.t_keyframe:
            return
        h = off + 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension
            if h + 4 > off + ln:
                return
            h += 4 + 4 * ((buf[h + 2] << 8) | buf[h + 3])
        if h + 4 > off + ln:
            return
        nal = buf[h] & 0x1F
        if nal == 24:  # STAP-A: look at the first aggregated NAL
            nal = buf[h + 3] & 0x1F
        elif nal == 28:  # FU-A: start fragment of an IDR
            nal = buf[h + 1] & 0x1F if buf[h + 1] & 0x80 else 0
        if nal in (5, 7):  # IDR slice or SPS (which precedes every IDR in this clip)
            self.t_keyframe = time.monotonic()
            self._after_keyframe()

    def _after_keyframe(self) -> None:
        """Cut the per-session cost: unsampled sessions only count bytes from now on, read
        into a shared buffer; SO_RCVLOWAT makes the kernel wake us per ~64 KiB instead of per
        packet (TTFK is already measured, so the coarser wake-up does not bias it)."""
        lowat = self.rcvlowat // 4 if self.sampled else self.rcvlowat
        if lowat > 0 and self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
        if not self.sampled:
            self.mode = COUNT
            self.buf = bytearray()

    # requests
    def send(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: feedgate-bench"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def request(
        self, method: str, url: str, headers: dict[str, str], limit: float
    ) -> tuple[int, dict[str, str], bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.send(method, url, headers)
        try:
            return await asyncio.wait_for(self.waiter, limit)
        finally:
            self.waiter = None


def _resolve(base: str, control: str) -> str:
    if not control or control == "*":
        return base
    if control.startswith("rtsp://"):
        return control
    return base.rstrip("/") + "/" + control


def sdp_video_control(sdp: str) -> str:
    in_video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_video = line.startswith("m=video")
        elif in_video and line.startswith("a=control:"):
            return line[len("a=control:") :].strip()
    return ""


@dataclass
class LoadGen:
    url: str
    readers: int
    sample_every: int
    ramp_rate: float
    rcvlowat: int
    timeout: float = 15.0
    sessions: list[Reader] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)

    async def session(self, idx: int) -> None:
        r = Reader(idx, idx % self.sample_every == 0, self.rcvlowat)
        self.sessions.append(r)
        loop = asyncio.get_running_loop()
        step = "connect"
        r.t_connect = time.monotonic()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: r, HOST, int(self.url.split(":")[2].split("/")[0])),
                self.timeout,
            )
            step = "DESCRIBE"
            st, hdrs, body = await r.request(
                "DESCRIBE", self.url, {"Accept": "application/sdp"}, self.timeout
            )
            if st != 200:
                raise RtspError(f"DESCRIBE {st}")
            base = hdrs.get("content-base") or hdrs.get("content-location") or self.url
            step = "SETUP"
            track = _resolve(base, sdp_video_control(body.decode(errors="replace")))
            st, hdrs, _ = await r.request(
                "SETUP", track, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"}, self.timeout
            )
            if st != 200 or "session" not in hdrs:
                raise RtspError(f"SETUP {st}")
            sess = hdrs["session"].split(";")
            r.session = sess[0].strip()
            for part in sess[1:]:
                k, _, v = part.strip().partition("=")
                if k.lower() == "timeout" and v.strip().isdigit():
                    r.keepalive_every = min(20.0, max(2.0, int(v) / 3))
            step = "PLAY"
            r.url = base
            r.t_play = time.monotonic()
            st, _, _ = await r.request("PLAY", base, {"Range": "npt=0.000-"}, self.timeout)
            if st != 200:
                raise RtspError(f"PLAY {st}")
            r.playing = True
            r.next_keepalive = time.monotonic() + r.keepalive_every
        except RtspError as exc:
            self.failures[str(exc)] += 1
            self._close(r)
        except TimeoutError:
            self.failures[f"{step} timeout"] += 1
            self._close(r)
        except (ConnectionError, OSError) as exc:
            self.failures[f"{step}: {type(exc).__name__}"] += 1
            self._close(r)

    @staticmethod
    def _close(r: Reader) -> None:
        if r.transport is not None:
            r.transport.abort()
        r.closed = True

    async def ramp(self) -> None:
        t0 = time.monotonic()
        tasks = []
        for i in range(self.readers):
            delay = t0 + i / self.ramp_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.session(i)))
        await asyncio.gather(*tasks)

    async def keepalive(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            for r in self.sessions:
                if r.playing and not r.closed and now >= r.next_keepalive:
                    r.next_keepalive = now + r.keepalive_every
                    with contextlib.suppress(Exception):
                        r.send("GET_PARAMETER", r.url, {})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def total_bytes(self) -> int:
        return sum(r.nbytes for r in self.sessions)

    def close_all(self) -> None:
        for r in self.sessions:
            if r.transport is not None and not r.closed:
                r.transport.abort()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


# --------------------------------------------------------------------------------------------
# One target
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
                env=_feedgate_env(),
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
# Report
# --------------------------------------------------------------------------------------------

ROWS: list[tuple[str, str]] = [
    ("sessions requested", "sessions_requested"),
    ("sessions reached PLAY", "sessions_playing"),
    ("sessions alive at end", "sessions_alive_end"),
    ("measuring window (s)", "window_s"),
    ("delivered Mbit/s (aggregate)", "delivered_mbps"),
    ("expected Mbit/s (clip x PLAYing)", "expected_mbps"),
    ("delivered / expected (%)", "delivered_pct_of_expected"),
    ("delivered Mbit/s per reader", "per_reader_mbps"),
    ("server CPU-s in window", "server_cpu_s"),
    ("server CPU (% of one core)", "server_cpu_pct_of_one_core"),
    ("server CPU-s per delivered Gbit", "server_cpu_s_per_gbit"),
    ("server CPU ms per reader-second", "server_cpu_ms_per_reader_s"),
    ("server peak RSS (MiB, tree)", "server_peak_rss_mib"),
    ("PLAY -> 1st keyframe p50 (s)", "ttfk_p50_s"),
    ("PLAY -> 1st keyframe p95 (s)", "ttfk_p95_s"),
    ("PLAY -> 1st keyframe max (s)", "ttfk_max_s"),
    ("connect -> 1st keyframe p50 (s)", "ttfk_from_connect_p50_s"),
    ("connect -> 1st keyframe p95 (s)", "ttfk_from_connect_p95_s"),
    ("connect -> 1st keyframe max (s)", "ttfk_from_connect_max_s"),
    ("sessions with a keyframe", "ttfk_n"),
    ("PLAY -> 1st RTP packet p50 (s)", "first_packet_p50_s"),
    ("PLAY -> 1st RTP packet p95 (s)", "first_packet_p95_s"),
    ("sampled sessions (full parse)", "sampled_sessions"),
    ("lost pkts, sampled, window", "sampled_lost_window"),
    ("pkts parsed, sampled, window", "sampled_packets_window"),
    ("lost pkts, sampled, whole run", "sampled_lost_total"),
    ("media s per wall s, sampled", "sampled_media_s_per_wall_s"),
    ("server dropped-packet counter", "server_dropped_packets"),
    ("server-reported Mbit/s sent", "server_bytes_sent_mbps"),
    ("source ffmpeg CPU-s", "source_cpu_s"),
    ("load generator CPU-s", "loadgen_cpu_s"),
    ("load generator (% of one core)", "loadgen_cpu_pct_of_one_core"),
    ("machine busy before start (%)", "machine_busy_before_pct"),
    ("machine CPU busy (% of all cores)", "machine_cpu_busy_pct"),
    ("kernel irq+softirq CPU-s", "irq_softirq_cpu_s"),
    ("other processes CPU-s", "other_processes_cpu_s"),
]


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(results: list[dict[str, Any]]) -> None:
    names = [r["target"] for r in results]
    has_ratio = set(names) >= {"feedgate", "gstreamer"}
    w0 = max(len(label) for label, _ in ROWS) + 2
    cols = [*names, *(["feedgate/gst"] if has_ratio else [])]
    print("".ljust(w0) + "".join(c.rjust(15) for c in cols))
    print("-" * (w0 + 15 * len(cols)))
    by = {r["target"]: r for r in results}
    for label, key in ROWS:
        cells = [fmt(r.get(key)) for r in results]
        if has_ratio:
            a, b = by["feedgate"].get(key), by["gstreamer"].get(key)
            ratio = (
                f"{a / b:.2f}x"
                if isinstance(a, int | float) and isinstance(b, int | float) and b
                else ""
            )
            cells.append(ratio)
        print(label.ljust(w0) + "".join(c.rjust(15) for c in cells))
    for r in results:
        print(f"\n{r['target']}: fed by {r.get('feed', 'n/a')}")
        if r.get("probe"):
            print(f"  probe: {r['probe']}")
        if r.get("failures"):
            print(f"  session failures: {r['failures']}")
        if r.get("error"):
            print(f"  ERROR: {r['error']}")


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
