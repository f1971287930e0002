"""A real Redis server for tests: Debian's ``redis-server`` (installed by ops/install.sh) on a
free 127.0.0.1 port, data in a temp dir with ``--appendonly yes --appendfsync always`` and no
RDB snapshots, so a stop (even SIGKILL) and restart keeps every acknowledged write.

``redis_server`` is per test; ``stop()``/``kill()``/``start()``/``restart()`` keep the same port
and data for fault tests. Readiness is polled with PING up to a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

START_TIMEOUT = 15.0

__all__ = ["RedisServer", "redis_binary", "redis_server"]


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; ``url`` stays valid across stop/start."""

    def __init__(self, binary: str, datadir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.datadir = datadir
        self.port = port or _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(self.datadir),
            "--logfile",
            str(self.datadir / "redis.log"),
            "--daemonize",
            "no",
        ]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        if self.running:
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5
        )
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass  # replaying the append-only file
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass
                # Waiting on the process doubles as the poll interval and catches an early exit
                # (e.g. the port was taken).
                try:
                    rc = self.proc.wait(timeout=0.01)
                except subprocess.TimeoutExpired:
                    rc = None
                if rc is not None or time.monotonic() > deadline:
                    log_path = self.datadir / "redis.log"
                    log = log_path.read_text(errors="replace") if log_path.exists() else ""
                    raise RuntimeError(
                        f"redis-server on port {self.port} not ready (exit {rc}):\n{log[-4000:]}"
                    )
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: clean shutdown; SIGKILL: a crash) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server not found; run ops/install.sh (Debian package redis-server)")
    server = RedisServer(binary, tmp_path / "redis")
    for attempt in range(3):  # another process may take the free port in between
        try:
            server.start()
            break
        except RuntimeError:
            server.stop(signal.SIGKILL)
            if attempt == 2:
                raise
            server.port = _free_port()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)
