"""Several worker processes sharing the RTSP port, so the relay uses every core.

Worker 0, the primary, owns every camera's source (pull ingest and publishers), the HTTP API
and the metrics. Workers 1..N-1 accept readers on the same port (SO_REUSEPORT spreads the
connections) and relay each camera they serve from the primary over a private Unix socket,
one internal reader per camera per worker, so the primary's fan-out cost grows with the number
of workers, not readers. A publisher that lands on a secondary worker is handed to the primary
with its socket (SCM_RIGHTS), so the encoder never notices.

The supervisor (the ``feedgate serve`` process itself) starts the workers, restarts one that
dies, and stops them all on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.config import Config, load_config
from gateway.protocols.rtsp import Request, format_request
from gateway.rtsp.connection import RtspConnection
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

STATS_INTERVAL = 1.0
_LEN = struct.Struct("!I")
MAX_HANDOFF = 256 * 1024


def _paths(runtime_dir: str) -> dict[str, str]:
    return {
        "internal": os.path.join(runtime_dir, "internal.sock"),
        "handoff": os.path.join(runtime_dir, "handoff.sock"),
        "stats": os.path.join(runtime_dir, "stats.sock"),
    }


# ---- publisher hand-off (secondary → primary) ------------------------------------------------


async def send_handoff(handoff_path: str, conn: RtspConnection, req: Request) -> None:
    """Pass a publisher's socket and its ANNOUNCE to the primary, then forget the connection."""
    transport = conn.transport
    if transport is None:
        return
    raw = transport.get_extra_info("socket")
    data = format_request(req.method, req.uri, req.headers.items(), req.body)
    transport.pause_reading()
    loop = asyncio.get_running_loop()
    chan = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        chan.setblocking(False)
        await loop.sock_connect(chan, handoff_path)
        chan.setblocking(True)
        payload = _LEN.pack(len(data)) + data
        # The fd rides with the first bytes; the rest follows on the same stream.
        await loop.run_in_executor(None, lambda: socket.send_fds(chan, [payload], [raw.fileno()]))
    except OSError as exc:
        log.warning("hand-off of publisher %s to the primary failed: %s", conn.peer, exc)
        conn.abort()
        return
    finally:
        chan.close()
    log.info("publisher %s of %s handed to the primary", conn.peer, req.uri.split("?")[0])
    # Our copy of the descriptor goes; the primary's keeps the connection open.
    conn.abort()


class HandoffReceiver:
    """Primary side: adopts handed-off publisher sockets into its own RTSP server."""

    def __init__(self, path: str, server_factory: Any) -> None:
        self.path = path
        self.server_factory = server_factory
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        os.chmod(self.path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        while True:
            chan, _ = await loop.sock_accept(self._sock)
            task = loop.create_task(self._adopt(chan))
            pending.add(task)
            task.add_done_callback(pending.discard)

    async def _adopt(self, chan: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            chan.setblocking(True)
            chan.settimeout(5.0)
            msg, fds, _flags, _addr = await loop.run_in_executor(
                None, lambda: socket.recv_fds(chan, MAX_HANDOFF + 4, 1)
            )
            if not fds or len(msg) < 4:
                return
            (length,) = _LEN.unpack_from(msg)
            if length > MAX_HANDOFF:
                os.close(fds[0])
                return
            data = bytearray(msg[4:])
            while len(data) < length:
                chunk = await loop.run_in_executor(None, chan.recv, length - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            log.warning("publisher hand-off failed: %s", exc)
            return
        finally:
            chan.close()
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        _t, proto = await loop.connect_accepted_socket(self.server_factory, sock)
        proto.data_received(bytes(data))

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._sock is not None:
            self._sock.close()


# ---- stats (secondary → primary) ------------------------------------------------------------


def gateway_stats(gateway: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "worker": gateway.worker,
        "paths": {
            name: {**asdict(s.counters), "readers": len(s.readers)}
            for name, s in gateway.hub.paths.items()
        },
        "connections": len(gateway.rtsp.connections),
        "sessions": len(gateway.rtsp.sessions),
        "events": dict(gateway.rtsp.counters),
    }


async def stats_sender(path: str, gateway: Any) -> None:
    """Report this worker's counters to the primary, reconnecting if it restarts."""
    while True:
        try:
            _reader, writer = await asyncio.open_unix_connection(path)
        except OSError:
            await asyncio.sleep(STATS_INTERVAL)
            continue
        try:
            while True:
                writer.write(json.dumps(gateway_stats(gateway)).encode() + b"\n")
                await writer.drain()
                await asyncio.sleep(STATS_INTERVAL)
        except (OSError, ConnectionError):
            await asyncio.sleep(STATS_INTERVAL)
        finally:
            writer.close()


class StatsReceiver:
    def __init__(self, path: str) -> None:
        self.path = path
        self.peers: dict[int, tuple[float, dict[str, Any]]] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._client, self.path, limit=1 << 22)
        os.chmod(self.path, 0o600)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    stats = json.loads(line)
                    self.peers[int(stats["worker"])] = (time.monotonic(), stats)
                except (ValueError, KeyError, TypeError):
                    continue
        except (OSError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def fresh(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [s for t, s in self.peers.values() if now - t < 5 * STATS_INTERVAL]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


# ---- one worker process ---------------------------------------------------------------------


async def run_worker(config: Config, index: int, runtime_dir: str) -> None:
    from aiohttp import web

    from gateway.core import Gateway
    from gateway.http.app import http_site, make_http_app
    from gateway.http.runner import GatewayRunner
    from gateway.memory import freeze_startup_heap

    paths = _paths(runtime_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if index == 0:
        gateway = Gateway(config, worker=0, reuse_port=True, internal_path=paths["internal"])
        handoff = HandoffReceiver(paths["handoff"], lambda: RtspConnection(gateway.rtsp))
        stats = StatsReceiver(paths["stats"])
        gateway.peer_stats = stats.fresh
        app = make_http_app(gateway)

        async def primary_extras(app: web.Application) -> AsyncIterator[None]:
            await handoff.start()
            await stats.start()
            yield
            await stats.stop()
            await handoff.stop()

        app.cleanup_ctx.append(primary_extras)
        runner = GatewayRunner(app, access_log=None)
        await runner.setup()
        site = http_site(runner, config)
        await site.start()
        freeze_startup_heap()
        log.info("worker 0 ready (primary)")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
        return

    async def hand_off(conn: RtspConnection, req: Request) -> None:
        await send_handoff(paths["handoff"], conn, req)

    gateway = Gateway(
        config,
        worker=index,
        reuse_port=True,
        upstream_unix=paths["internal"],
        handoff=hand_off,
        udp_port=config.rtsp.rtp_port + 2 * index if config.rtsp.rtp_port else 0,
    )
    await gateway.start()
    sender = loop.create_task(stats_sender(paths["stats"], gateway))
    freeze_startup_heap()
    log.info("worker %d ready", index)
    try:
        await stop.wait()
    finally:
        await cancel_and_wait(sender)
        await gateway.stop()


def _die_with_parent() -> None:
    """Linux: have the kernel SIGTERM this worker if the supervisor dies, even by SIGKILL, so
    no orphan keeps the port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def worker_entry(argv: list[str]) -> int:
    _die_with_parent()
    config_path, index, runtime_dir = argv[0] or None, int(argv[1]), argv[2]
    config = load_config(config_path)
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s w{index} %(name)s: %(message)s",
    )
    asyncio.run(run_worker(config, index, runtime_dir))
    return 0


# ---- supervisor -----------------------------------------------------------------------------


def run_supervisor(config: Config, config_path: str | None) -> int:
    runtime_dir = tempfile.mkdtemp(prefix="feedgate-")
    os.chmod(runtime_dir, 0o700)
    n = config.rtsp.workers

    def start(index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.workers", config_path or "", str(index), runtime_dir],
            stdin=subprocess.DEVNULL,
        )

    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs: dict[int, subprocess.Popen[bytes]] = {0: start(0)}
    # Secondaries relay from the primary's Unix socket: start them once it exists.
    deadline = time.monotonic() + 30
    while not os.path.exists(_paths(runtime_dir)["internal"]) and time.monotonic() < deadline:
        if procs[0].poll() is not None:
            log.error("primary worker exited during start-up")
            return 1
        time.sleep(0.05)
    for i in range(1, n):
        procs[i] = start(i)
    log.info("feedgate supervisor: %d workers (pids %s)", n, [p.pid for p in procs.values()])
    try:
        while not stopping:
            time.sleep(0.2)
            for i, p in list(procs.items()):
                if p.poll() is not None and not stopping:
                    log.warning("worker %d exited with %s; restarting", i, p.returncode)
                    procs[i] = start(i)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in _paths(runtime_dir).values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)
        with contextlib.suppress(OSError):
            os.rmdir(runtime_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(worker_entry(sys.argv[1:]))
