"""``feedgate demo``: the gateway with a demo borough's cameras, simulated.

Two kinds of simulated camera, as in a real borough:
- pulled cameras: a camera simulator (a second, internal gateway on its own port) plays the
  part of the IP cameras; the gateway pulls from it over RTSP. A pulled camera whose ``onvif``
  address is a local port is a FAKE ONVIF PTZ camera (``ops/fakes/``): its picture, a window
  onto a larger scene that follows the fake head's position, is what the simulator serves, so
  steering it through the gateway (console, REST, gRPC, the ONVIF facade) moves the picture.
  Other pulled cameras are ffmpeg test patterns;
- pushed cameras: ffmpeg publishes straight into the gateway with ANNOUNCE/RECORD, as an
  encoder or a partner's camera would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import imageio_ffmpeg

from gateway.cli.simulator import (
    SIMULATOR_PORT,
    digest_guard,
    simulator_config,
    simulator_credentials,
)
from gateway.config import CameraConfig, Config
from gateway.core import Gateway
from gateway.serve import run_gateway
from gateway.tasks import arm_shutdown_watchdog
from tenants.audit import AuditAction

log = logging.getLogger(__name__)

PATTERNS = ("testsrc2", "smptehdbars", "testsrc", "rgbtestsrc", "smptebars", "yuvtestsrc")
# How long the demo's encoder waits, at most, between looks at a path another publisher holds.
BACKOFF_MAX = 30.0


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


async def supervise_publisher(
    url: str,
    pattern: str,
    stop: asyncio.Event,
    *,
    taken: Callable[[], bool] = lambda: False,
    backoff: float = 2.0,
) -> None:
    """Keep one simulated camera publishing; restart it if ffmpeg exits. While ``taken()``
    (another publisher holds the path, e.g. a partner replaced the demo's encoder) it waits,
    with doubling delays, instead of taking the path back: the two would flap."""
    cmd = publisher_command(url, pattern)
    delay = backoff
    while not stop.is_set():
        if taken():
            log.info("%s has another publisher; the demo's encoder waits", _safe(url))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX)
            continue
        delay = backoff
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
                log.warning("simulated camera %s exited (%s)", _safe(url), proc.returncode)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def _safe(url: str) -> str:
    """The URL without its credentials, for the log."""
    parts = urlsplit(url)
    return url.replace(f"{parts.username}:{parts.password}@", "") if parts.password else url


# What each demo partner is shown: a camera it may watch, under its own token.
DEMO_VIEWS = (
    ("council", "council-operator", "high-street-north", "owner: sees its own cameras"),
    ("met-police", "viido-vms", "station-forecourt", "watch, rewind, steer, unmask"),
    ("tfl", "tfl-control", "station-forecourt", "live, at most 4 streams"),
    ("westfield", "westfield-security", "high-street-north", "07:00-23:00, rival masked"),
    ("council", "council-operator", "market-square", "homes blacked out"),
    ("st-marys", "hospital-security", "station-forecourt", "needs &purpose=..."),
    ("riverside-homes", "riverside-encoder", "estate-block-a", "its own camera"),
)


def _demo_token(
    gateway: Gateway, tenant: str, subject: str, ttl: timedelta = timedelta(hours=12)
) -> str | None:
    tenancy = gateway.tenancy
    if tenancy is None or tenant not in tenancy.policy.snapshot.tenants:
        return None
    principal = tenancy.policy.snapshot.principals.get(subject)
    roles = sorted(r.value for r in principal.roles) if principal else []
    token = tenancy.issuer.issue(tenant=tenant, subject=subject, ttl=ttl, roles=roles)
    tenancy.audit.append(
        AuditAction.TOKEN_ISSUED,
        tenant=tenant,
        principal=subject,
        detail={"ttl_s": int(ttl.total_seconds()), "by": "feedgate demo"},
    )
    return token


# Who the demo signs in to the web console, each with a one-time sign-in link.
CONSOLE_USERS = (
    ("council", "council-operator", "a council control room operator (every council camera)"),
    ("met-police", "met-officer", "a police officer (the town centre, the estate)"),
    ("westfield", "westfield-security", "a shop's security desk (masks burnt in, 07:00-23:00)"),
)
CONSOLE_LINK_TTL = timedelta(hours=2)


def console_lines(gateway: Gateway, host: str, port: int) -> list[str]:
    """The console's sign-in links, one per demo user (each signs in once)."""
    if gateway.control is None or not gateway.config.console.enabled:
        return []
    lines = [
        f"The web console, http://{host}:{port}/console (phones, tablets, the video wall).",
        "Each link signs one browser in, once, within 2 hours:",
    ]
    for tenant, subject, what in CONSOLE_USERS:
        token = _demo_token(gateway, tenant, subject, CONSOLE_LINK_TTL)
        if token is not None:
            lines.append(f"  {what}:")
            lines.append(f"    http://{host}:{port}/console/login?token={token}")
    return lines


def first_url(gateway: Gateway, host: str, config: Config) -> str:
    cam = config.cameras[0].id if config.cameras else "CAMERA"
    token = _demo_token(gateway, "council", "council-operator")
    url = f"rtsp://{host}:{config.rtsp.port}/{cam}"
    return f"{url}?token={token}" if token else url


def demo_access_lines(gateway: Gateway, host: str, port: int) -> list[str]:
    if gateway.tenancy is None:
        return ["Tenancy is off: every camera is open."]
    lines = [
        "Each partner watches with its own token (valid 12 h); without one the gateway",
        "answers 401, and a camera outside a partner's grants gets 403:",
    ]
    for tenant, subject, camera, what in DEMO_VIEWS:
        token = _demo_token(gateway, tenant, subject)
        if token is not None:
            lines.append(f"  {tenant} ({what}):")
            lines.append(f"    rtsp://{host}:{port}/{camera}?token={token}")
    lines += [
        "VMS clients without tokens use Digest, e.g. the police VMS:",
        f"    rtsp://viido-vms:demo-police@{host}:{port}/high-street-north",
        f"Grant windows (westfield's 07:00-23:00) are in local time, {gateway.config.timezone}.",
        "st-marys must state a purpose: add &purpose=<why> to its URL, or it is refused.",
    ]
    return lines


@dataclass(frozen=True)
class FakePtz:
    """A pulled camera played by a FAKE ONVIF camera: its SOAP port and credentials, and the
    simulator URL its picture is published to."""

    camera: str
    port: int
    username: str
    password: str
    publish_url: str


def _fake_onvif_port(cam: CameraConfig) -> int | None:
    parts = urlsplit(cam.onvif) if cam.onvif else None
    if parts is None or parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
        return None
    return parts.port


def service_lines(host: str, port: int) -> list[str]:
    return [
        f"  health: http://{host}:{port}/healthz",
        f"  metrics: http://{host}:{port}/metrics needs an operator's token: "
        "-H 'Authorization: Bearer <the council-operator token above>'",
    ]


def _simulated(config: Config) -> tuple[list[str], list[tuple[str, str, str]], list[FakePtz]]:
    """(paths the simulator must serve, (pushed camera or "", URL, pattern) publishers, FAKE
    PTZ cameras). The simulator's encoders sign in with the cameras' credentials."""
    sim_paths: list[str] = []
    publishers: list[tuple[str, str, str]] = []
    fakes: list[FakePtz] = []
    sim = simulator_credentials(config)
    sim_creds = f"{sim[0]}:{sim[1]}@" if sim else ""
    for i, cam in enumerate(config.cameras):
        pattern = PATTERNS[i % len(PATTERNS)]
        if cam.is_push:
            # The housing association's encoder signs in as its own service account.
            creds = "riverside-encoder:demo-encoder@" if config.tenancy.enabled else ""
            url = f"rtsp://{creds}127.0.0.1:{config.rtsp.port}/{cam.id}"
            publishers.append((cam.id, url, pattern))
            continue
        parts = urlsplit(cam.source)
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port == SIMULATOR_PORT:
            path = parts.path.strip("/")
            sim_paths.append(path)
            url = f"rtsp://{sim_creds}127.0.0.1:{SIMULATOR_PORT}/{path}"
            port = _fake_onvif_port(cam)
            if port is not None:
                fakes.append(FakePtz(cam.id, port, cam.onvif_username, cam.onvif_password, url))
            else:
                publishers.append(("", url, pattern))
    return sim_paths, publishers, fakes


def _fakes_package() -> Any:
    """``ops.fakes`` from this checkout (the FAKE cameras are not part of the distribution),
    or None where there is none."""
    try:
        import ops.fakes.onvif_camera
    except ImportError:
        root = Path(__file__).resolve().parents[2]
        if not (root / "ops" / "fakes" / "onvif_camera.py").is_file():
            return None
        sys.path.append(str(root))
        import ops.fakes.onvif_camera
    import ops.fakes.panorama

    return ops.fakes


class FakeCameras:
    """The demo's FAKE ONVIF cameras and their pictures; owns their servers and publishers."""

    def __init__(self, fakes: list[FakePtz]) -> None:
        self.fakes = fakes
        self._running: list[tuple[Any, Any]] = []

    async def start(self) -> None:
        if not self.fakes:
            return
        package = _fakes_package()
        if package is None:
            log.warning("no ops/fakes here: the demo's PTZ cameras are test patterns, unsteerable")
            for f in self.fakes:
                self._running.append((None, _PatternOnly(f.publish_url)))
            return
        from gateway.ptz.soap import SoapCodec

        codec = await asyncio.to_thread(SoapCodec.load)
        for f in self.fakes:
            cam = package.onvif_camera.FakeOnvifCamera(
                codec, username=f.username, password=f.password, name=f.camera
            )
            await cam.start("127.0.0.1", f.port)
            picture = package.panorama.PanoramaPublisher(
                cam.head, f.publish_url, size=(640, 360), fps=15
            )
            picture.start()
            self._running.append((cam, picture))

    async def stop(self) -> None:
        running, self._running = self._running, []
        for cam, picture in running:
            await picture.stop()
            if cam is not None:
                await cam.stop()


class _PatternOnly:
    """An ffmpeg test pattern in place of a FAKE camera's picture."""

    def __init__(self, url: str) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(supervise_publisher(url, PATTERNS[0], self._stop))

    async def stop(self) -> None:
        self._stop.set()
        await self._task


def ptz_lines(gateway: Gateway, host: str, port: int, fakes: list[FakePtz]) -> list[str]:
    """How to steer the demo's FAKE PTZ cameras."""
    if gateway.ptz is None or not fakes:
        return []
    first = fakes[0].camera
    token = _demo_token(gateway, "met-police", "viido-vms")
    lines = [
        "Steerable cameras (FAKE ONVIF PTZ cameras: the picture follows the head): "
        + ", ".join(f.camera for f in fakes)
        + ".",
        "  In the console, a camera's page has a joystick (drag to pan and tilt, wheel to zoom),",
        f"  its presets and who holds control, e.g. http://{host}:{port}/console/cameras/{first}",
    ]
    if token is not None:
        lines += [
            "  Over REST as the police VMS (priority above the council's operators):",
            f"    curl -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\",
            '      -d \'{"kind": "absolute", "pan": 0.5, "tilt": 0.2, "zoom": 0.3}\' \\',
            f"      http://{host}:{port}/v1/cameras/{first}/ptz/move",
            f"  or with a VMS's ONVIF driver at http://{host}:{port}/onvif/{first}/device_service",
            "  (user viido-vms; its password: feedgate ptz onvif-password viido-vms --local",
            "  --config ops/config/demo-borough.toml).",
        ]
    return lines


def _free() -> bool:
    return False


def _taken(gateway: Gateway, camera: str) -> Callable[[], bool]:
    """Whether a pushed camera's path has a publisher (checked before the demo's starts)."""

    def taken() -> bool:
        stream = gateway.hub.get(camera)
        return stream is not None and stream.has_source

    return taken


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
    sim_paths, publishers, fakes = _simulated(config)
    sim_config = simulator_config(sim_paths, config.log_level)
    sim_creds = simulator_credentials(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sim_ready, gw_ready = asyncio.Event(), asyncio.Event()
    tasks = []
    if sim_paths:
        simulator = Gateway(sim_config, authorizer=digest_guard(*sim_creds)) if sim_creds else None
        run = run_gateway(sim_config, ready=sim_ready, stop=stop, gateway=simulator)
        tasks.append(asyncio.create_task(run))
        await _started(tasks[-1], sim_ready, stop)
    gateway = Gateway(config)
    tasks.append(
        asyncio.create_task(run_gateway(config, ready=gw_ready, stop=stop, gateway=gateway))
    )
    await _started(tasks[-1], gw_ready, stop)
    # Cameras stop before the gateways, so shutdown is not reported as a camera failure.
    cameras_stop = asyncio.Event()
    cameras = [
        asyncio.create_task(
            supervise_publisher(u, p, cameras_stop, taken=_taken(gateway, cam) if cam else _free)
        )
        for cam, u, p in publishers
    ]
    ptz_cameras = FakeCameras(fakes)
    await ptz_cameras.start()
    host = "127.0.0.1" if config.rtsp.host in ("0.0.0.0", "::") else config.rtsp.host
    lines = ["", "feedgate demo borough is running. Its cameras:"]
    for cam in config.cameras:
        url = f"rtsp://{host}:{config.rtsp.port}/{cam.id}"
        kind = "pushed by its encoder" if cam.is_push else "pulled from its camera"
        if any(f.camera == cam.id for f in fakes):
            kind = "pulled from its PTZ camera"
        lines.append(f"  {url:<50} {cam.name} ({kind})")
    lines += ["", *demo_access_lines(gateway, host, config.rtsp.port)]
    lines += ["", *console_lines(gateway, host, config.http.port)]
    lines += ["", *ptz_lines(gateway, host, config.http.port, fakes)]
    lines += [
        "",
        f"  e.g.  ffplay -rtsp_transport tcp '{first_url(gateway, host, config)}'",
        *service_lines(host, config.http.port),
    ]
    if gateway.tenancy is not None:
        lines.append(
            f"  published figures (public): http://{host}:{config.http.port}/transparency"
            f"?period={datetime.now(UTC):%Y-%m}"
        )
    lines += [
        "  Ctrl-C stops the demo.",
        "",
    ]
    print("\n".join(lines), flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)
    arm_shutdown_watchdog()
    cameras_stop.set()
    await ptz_cameras.stop()
    await asyncio.gather(*cameras, return_exceptions=True)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
