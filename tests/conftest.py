"""Shared fixtures: real ffmpeg as camera and viewer, gateways on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import imageio_ffmpeg
import pytest

from gateway.config import CameraConfig, Config, GrpcConfig, HttpConfig, RtspConfig
from gateway.core import Gateway

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# Private PostgreSQL clusters and Redis servers: tests/fixtures_db.py, tests/fixtures_redis.py;
# headless Chromium (Playwright): tests/fixtures_browser.py; several `feedgate serve` nodes as
# one cluster: tests/cluster_fixtures.py.
pytest_plugins = [
    "fixtures_db",
    "fixtures_redis",
    "fixtures_browser",
    "whep_fixtures",
    "cluster_fixtures",
    "export_fixtures",
]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_pair() -> int:
    """An even UDP port whose successor is free too (RTP + RTCP)."""
    for _ in range(200):
        port = free_port(socket.SOCK_DGRAM) & ~1
        socks = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port pair")


async def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll until predicate() is true; fail the test with `what` after the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def make_config(
    cameras: tuple[CameraConfig, ...] = (CameraConfig(id="cam1", name="Camera 1"),),
    **rtsp: Any,
) -> Config:
    rtsp_kwargs: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "rtp_port": free_udp_pair(),
        **rtsp,
    }
    return Config(
        rtsp=RtspConfig(**rtsp_kwargs),
        http=HttpConfig(host="127.0.0.1", port=0),
        grpc=GrpcConfig(port=0),  # tests that want the control API start their own
        cameras=cameras,
    )


@dataclass
class RunningGateway:
    gateway: Gateway
    config: Config

    @property
    def port(self) -> int:
        return self.gateway.rtsp.port

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    @property
    def hub(self) -> Any:
        return self.gateway.hub


@contextlib.asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[RunningGateway]:
    gw = Gateway(config)
    await gw.start()
    try:
        yield RunningGateway(gw, config)
    finally:
        await gw.stop()


@contextlib.asynccontextmanager
async def serving_http(gw: RunningGateway) -> AsyncIterator[tuple[Any, Any]]:
    """The gateway's HTTP app on a loopback port, with a client: (aiohttp TestServer,
    ClientSession). The app's start-up and clean-up stay the running gateway's."""
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from gateway.http.app import make_http_app

    app = make_http_app(gw.gateway)
    app.cleanup_ctx.clear()  # running_gateway runs it
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as http:
            yield server, http
    finally:
        await server.close()


@pytest.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    async with running_gateway(make_config()) as gw:
        yield gw


@dataclass
class Proc:
    proc: asyncio.subprocess.Process
    argv: list[str]
    stderr: bytearray = field(default_factory=bytearray)  # stdout and stderr, interleaved
    _reader: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self.stderr += chunk
            if len(self.stderr) > 1_000_000:
                del self.stderr[:500_000]

    @property
    def text(self) -> str:
        return self.stderr.decode(errors="replace")

    async def wait(self, timeout: float = 30.0) -> int:
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return rc

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process and everything it started (it leads its own process group)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)


async def spawn(argv: list[str]) -> Proc:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    p = Proc(proc, argv)
    p._reader = asyncio.get_running_loop().create_task(p._pump())
    return p


def publish_argv(
    url: str,
    *,
    transport: str = "tcp",
    size: str = "320x240",
    fps: int = 25,
    gop: int = 25,
    bitrate: str = "300k",
    pattern: str = "testsrc2",
) -> list[str]:
    return [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
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
        str(gop),
        "-bf",
        "0",
        "-b:v",
        bitrate,
        "-f",
        "rtsp",
        "-rtsp_transport",
        transport,
        url,
    ]


def read_argv(
    url: str, *, transport: str = "tcp", seconds: float = 3.0, decode: bool = True
) -> list[str]:
    """ffmpeg as a viewer: decodes (or copies) `seconds` of the stream and prints frame counts."""
    argv = [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-stats",
        "-rtsp_transport",
        transport,
        "-i",
        url,
        "-t",
        str(seconds),
    ]
    argv += ["-f", "null", "-"] if decode else ["-c", "copy", "-f", "null", "-"]
    return argv


def frames_of(stderr: str) -> int:
    """The last `frame=` count ffmpeg printed."""
    counts = re.findall(r"frame=\s*(\d+)", stderr)
    return int(counts[-1]) if counts else 0


def decode_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith("frame=") and "frame=" not in line
    ]


@pytest.fixture
async def procs() -> AsyncIterator[Callable[[list[str]], Awaitable[Proc]]]:
    """Start subprocesses that are killed and reaped when the test ends."""
    started: list[Proc] = []

    async def start(argv: list[str]) -> Proc:
        p = await spawn(argv)
        started.append(p)
        return p

    yield start
    await asyncio.gather(*(_terminate(p) for p in started))


async def _terminate(p: Proc) -> None:
    """SIGTERM, then a second one, then SIGKILL. ffmpeg takes its first signal as 'stop after
    this read': a viewer whose source has already gone (the test stopped the gateway first) sits
    in that read, and only a second signal interrupts it (it used to cost a test 10 s per
    viewer here)."""
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        p.kill(sig)
        try:
            await p.wait(grace)
            return
        except TimeoutError:
            continue


async def publishing(gw: RunningGateway, path: str, timeout: float = 15.0) -> None:
    """Wait until a path has a source and has cached a keyframe."""
    await wait_for(
        lambda: (s := gw.hub.get(path)) is not None and s.has_source and s.gop_cached_bytes > 0,
        timeout,
        what=f"{path} to be published",
    )


# The modules with the longest tests (summed durations of a full run, 2026-12-03: 35-106 s
# each), run first: xdist hands tests out in collection order, so a 50 s test collected last
# keeps one worker busy after the other two have finished (about half a minute of the suite's
# tail). The order within a module is kept. test_timeline.py (3 x 19 s) is left where it falls:
# its A/V timestamps across a restart failed once (audio 9 ms back) when it ran beside the
# cluster tests at the start.
_LONGEST_FIRST = (
    "test_cluster_media_acceptance.py",
    "test_rest_schema.py",
    "test_console_browser.py",
    "test_cli_billing.py",
    "test_cluster_identity_outage.py",
    "test_cluster_recording.py",
    "test_relay.py",
    "test_grpc.py",
    "test_nodes_api.py",
    "test_reorder.py",
    "test_cluster_identity.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
