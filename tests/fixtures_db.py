"""Database fixtures: a fresh SQLite file or a fresh database on a private PostgreSQL cluster.

``postgres_server`` starts one real cluster per test session from Debian's ``postgresql``
binaries (installed by ops/install.sh) in a temp dir, listening on a free 127.0.0.1 port with
trust auth, and stops it at the end. initdb refuses root, so as root the cluster runs as the
``postgres`` system user. ``db_url``/``db`` are parametrized over both backends.
``private_postgres`` is a cluster of one test's own, which it may ``kill()`` (SIGKILL of the
postmaster and its backends) and ``start()`` again on the same port and data.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tenants.db import Database

START_TIMEOUT = 30.0


def _pg_bindir() -> Path | None:
    """The newest installed /usr/lib/postgresql/<major>/bin with initdb and pg_ctl."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists():
            try:
                found.append((int(bindir.parent.name.split(".")[0]), bindir))
            except ValueError:
                continue
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in ``base``; ``url()`` stays valid across ``kill()``/``start()``
    (same port, same data), so fault tests can crash the server and bring it back."""

    def __init__(
        self, bindir: Path, base: Path, user: str = "postgres", *, crash_safe: bool = False
    ) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.user = user
        self.bindir = bindir
        self.base = base
        self.datadir = base / "data"
        self.logfile = base / "postgres.log"
        # synchronous_commit=off acknowledges a COMMIT before its WAL is written: a kill -9
        # then loses the last ~200 ms of acknowledged transactions, which no production server
        # does. A cluster that tests kill -9 keeps it on (fsync may stay off: the OS page cache
        # outlives a killed process).
        self.crash_safe = crash_safe

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement on the maintenance database (autocommit: CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def init(self) -> None:
        _run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "--auth=trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
            "initdb",
        )

    def start(self) -> None:
        """Start on ``port`` (a free one the first time; the same one after a stop or kill)."""
        for attempt in range(3):  # another process may take the free port in between
            port = self.port or _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={self.base}"
                " -c fsync=off -c full_page_writes=off"
                f" -c synchronous_commit={'on' if self.crash_safe else 'off'}"
            )
            try:
                # -w: pg_ctl polls the postmaster until it accepts connections (or exits,
                # e.g. port taken), up to -t seconds.
                _run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "start",
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.logfile),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        str(int(START_TIMEOUT)),
                    ],
                    "pg_ctl start",
                )
            except RuntimeError as exc:
                if attempt == 2 or self.port:
                    log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
                    raise RuntimeError(f"{exc}\n{log[-4000:]}") from None
                continue
            self.port = port
            _wait_ready(self.bindir, port, self.logfile)
            return

    def stop(self) -> None:
        if self.running:
            _run(
                [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w"],
                "pg_ctl stop",
            )

    @property
    def pids(self) -> list[int]:
        """The postmaster and every backend it started that are alive (read from /proc; a
        zombie no one reaps is dead)."""
        try:
            master = int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        pids = [master] if not _zombie(master) else []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == master and fields[0] != "Z":
                pids.append(int(stat.split("/")[2]))
        return pids

    @property
    def running(self) -> bool:
        return bool(self.pids)

    def kill(self, timeout: float = 10.0) -> None:
        """A crash: SIGKILL the postmaster and all its backends at once, and wait until they
        are gone (so a restart does not meet their shared memory)."""
        pids = self.pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(not _zombie(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes {pids} survived SIGKILL")
            time.sleep(0.02)
        # A zombie postmaster (nothing reaps orphans in a container) still answers kill(pid, 0),
        # and PostgreSQL would take its lock files for a live server's.
        for lock in (self.datadir / "postmaster.pid", *self.base.glob(".s.PGSQL.*")):
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()

    def restart(self) -> None:
        self.kill()
        self.start()


def _zombie(pid: int) -> bool:
    """Dead, or a zombie (nothing may reap it in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _as_cluster_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(
        _as_cluster_owner(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")


def _wait_ready(bindir: Path, port: int, logfile: Path) -> None:
    """Poll with pg_isready (which itself waits up to 1 s per try) until a deadline."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        rc = subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        ).returncode
        if rc == 0:
            return
        if rc == 3 or time.monotonic() > deadline:  # 3: bad parameters, never going to work
            log = logfile.read_text(errors="replace") if logfile.exists() else ""
            raise RuntimeError(f"PostgreSQL on port {port} not ready (pg_isready {rc}):\n{log}")


@contextmanager
def postgres_cluster(*, crash_safe: bool = False) -> Iterator[PostgresServer]:
    """A new PostgreSQL cluster of its own, stopped and removed afterwards."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin); run ops/install.sh")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as 'postgres'")
    # Under /tmp (world-traversable) rather than pytest's 0700 root-owned basetemp.
    base = Path(tempfile.mkdtemp(prefix="feedgate-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    server = PostgresServer(bindir, base, crash_safe=crash_safe)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError):
            server.stop()
        if server.running:
            server.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's shared cluster (one fresh database per test: ``pg_url``). Never kill it:
    fault tests take ``private_postgres``."""
    with postgres_cluster() as server:
        yield server


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A cluster for this test alone, which it may kill -9 and restart (initdb takes < 1 s);
    an acknowledged commit survives the kill, as on any production server."""
    with postgres_cluster(crash_safe=True) as server:
        yield server


@contextmanager
def fresh_database(server: PostgresServer, prefix: str = "test") -> Iterator[str]:
    """A new, empty database on the shared cluster, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    server.admin(f"CREATE DATABASE {name}")
    try:
        yield server.url(name)
    finally:
        server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL per test, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'feedgate.db'}"
        return
    with fresh_database(request.getfixturevalue("postgres_server")) as url:
        yield url


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database URL (tests that need the shared backend)."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.open(db_url)
    try:
        yield database
    finally:
        database.close()
