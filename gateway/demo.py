"""``feedgate demo``: the gateway with a demo borough's cameras, simulated.

Two kinds of simulated camera, as in a real borough:
- pulled cameras: a camera simulator (a second, internal gateway on its own port, fed by ffmpeg
  test patterns) plays the part of the IP cameras; the gateway pulls from it over RTSP;
- pushed cameras: ffmpeg publishes straight into the gateway with ANNOUNCE/RECORD, as an
  encoder or a partner's camera would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from urllib.parse import urlsplit

import imageio_ffmpeg

from gateway.app import run_gateway
from gateway.config import CameraConfig, Config, HttpConfig, RtspConfig

log = logging.getLogger(__name__)

PATTERNS = ("testsrc2", "smptehdbars", "testsrc", "rgbtestsrc", "smptebars", "yuvtestsrc")
SIMULATOR_PORT = 8654
SIMULATOR_RTP_PORT = 8100


def publisher_command(url: str, pattern: str, *, size: str = "640x360", fps: int = 15) -> list[str]:
    """An ffmpeg that encodes a test pattern in real time and publishes it over RTSP/TCP."""
    return [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"{pattern}=size={size}:rate={fps}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(fps * 2),
        "-bf",
        "0",
        "-b:v",
        "600k",
        "-f",
        "rtsp",
        "-rtsp_transport",
        "tcp",
        url,
    ]


async def supervise_publisher(url: str, pattern: str, stop: asyncio.Event) -> None:
    """Keep one simulated camera publishing; restart it if ffmpeg exits."""
    cmd = publisher_command(url, pattern)
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
        )
        try:
            waiter = asyncio.ensure_future(proc.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            elif not stop.is_set():
                log.warning("simulated camera %s exited (%s); restarting", url, proc.returncode)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def _simulated(config: Config) -> tuple[list[str], list[tuple[str, str]]]:
    """(paths the simulator must serve, (push URL, pattern) publishers)."""
    sim_paths: list[str] = []
    publishers: list[tuple[str, str]] = []
    for i, cam in enumerate(config.cameras):
        pattern = PATTERNS[i % len(PATTERNS)]
        if cam.is_push:
            url = f"rtsp://127.0.0.1:{config.rtsp.port}/{cam.id}"
            publishers.append((url, pattern))
            continue
        parts = urlsplit(cam.source)
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port == SIMULATOR_PORT:
            path = parts.path.strip("/")
            sim_paths.append(path)
            publishers.append((f"rtsp://127.0.0.1:{SIMULATOR_PORT}/{path}", pattern))
    return sim_paths, publishers


async def _started(task: asyncio.Task[None], ready: asyncio.Event, stop: asyncio.Event) -> None:
    """Wait for a gateway to listen; if it dies instead (a port in use), stop everything and
    raise its error rather than waiting forever."""
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        waiter.cancel()
        stop.set()
        exc = task.exception() if task.done() else None
        raise SystemExit(f"feedgate demo: gateway failed to start: {exc}")


async def run_demo(config: Config, duration: float | None = None) -> None:
    sim_paths, publishers = _simulated(config)
    sim_config = Config(
        rtsp=RtspConfig(host="127.0.0.1", port=SIMULATOR_PORT, rtp_port=SIMULATOR_RTP_PORT),
        http=HttpConfig(host="127.0.0.1", port=0),
        cameras=tuple(CameraConfig(id=p, name=f"simulated {p}") for p in sim_paths),
        log_level=config.log_level,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sim_ready, gw_ready = asyncio.Event(), asyncio.Event()
    tasks = []
    if sim_paths:
        tasks.append(asyncio.create_task(run_gateway(sim_config, ready=sim_ready, stop=stop)))
        await _started(tasks[-1], sim_ready, stop)
    tasks.append(asyncio.create_task(run_gateway(config, ready=gw_ready, stop=stop)))
    await _started(tasks[-1], gw_ready, stop)
    # Cameras stop before the gateways, so shutdown is not reported as a camera failure.
    cameras_stop = asyncio.Event()
    cameras = [asyncio.create_task(supervise_publisher(u, p, cameras_stop)) for u, p in publishers]
    host = "127.0.0.1" if config.rtsp.host in ("0.0.0.0", "::") else config.rtsp.host
    lines = ["", "feedgate demo borough is running. Open any of these in ffplay or VLC:"]
    for cam in config.cameras:
        url = f"rtsp://{host}:{config.rtsp.port}/{cam.id}"
        kind = "pushed by its encoder" if cam.is_push else "pulled from its camera"
        lines.append(f"  {url:<50} {cam.name} ({kind})")
    lines += [
        "",
        f"  e.g.  ffplay -rtsp_transport tcp rtsp://{host}:{config.rtsp.port}/"
        f"{config.cameras[0].id if config.cameras else 'CAMERA'}",
        f"  health: http://{host}:{config.http.port}/healthz   "
        f"metrics: http://{host}:{config.http.port}/metrics",
        "  Ctrl-C stops the demo.",
        "",
    ]
    print("\n".join(lines), flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)
    cameras_stop.set()
    await asyncio.gather(*cameras, return_exceptions=True)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
