"""What the benchmarks need installed, and how to start feedgate: pip/apt on demand, ffmpeg from
imageio-ffmpeg, uvloop, GStreamer's RTSP server bindings under Debian's python3."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
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


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Dependencies
# --------------------------------------------------------------------------------------------


def pip_install(*pkgs: str) -> bool:
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
        if not pip_install("imageio-ffmpeg"):
            sys.exit("cannot install imageio-ffmpeg (pip install imageio-ffmpeg)")
        import imageio_ffmpeg
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def ensure_uvloop(allow: bool) -> Any:
    if not allow:
        return None
    try:
        import uvloop
    except ImportError:
        if not pip_install("uvloop"):
            log("uvloop not available: using the default asyncio loop")
            return None
        try:
            import uvloop
        except ImportError:
            return None
    return uvloop


def missing_apt_packages() -> list[str]:
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
    missing = missing_apt_packages()
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
                env=feedgate_env(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"`{' '.join(cmd)} --help` failed: {exc}"
            continue
        if r.returncode == 0 and "serve" in r.stdout + r.stderr:
            return cmd, ""
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        reason = f"`feedgate --help` exited {r.returncode}, no `serve` command ({tail[0][:200]})"
    return None, reason


def feedgate_env() -> dict[str, str]:
    # FEEDGATE_* variables would override the generated config: leave them out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env
