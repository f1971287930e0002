"""Processes the benchmarks start and what /proc says about them; ports, waits, probes,
Prometheus scrapes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


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

    def stop(self, p: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM one process group, SIGKILL what is left after ``grace`` seconds."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(2)
        self.running = [(n, q) for n, q in self.running if q is not p]

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
