"""Database fixtures: a fresh SQLite file or a fresh database on a private PostgreSQL cluster.

``postgres_server`` starts one real cluster per test session from Debian's ``postgresql``
binaries (installed by ops/install.sh) in a temp dir, listening on a free 127.0.0.1 port with
trust auth, and stops it at the end. initdb refuses root, so as root the cluster runs as the
``postgres`` system user. ``db_url``/``db`` are parametrized over both backends.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    bindir: Path
    datadir: Path

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement on the maintenance database (autocommit: CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin); run ops/install.sh")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as 'postgres'")
    # Under /tmp (world-traversable) rather than pytest's 0700 root-owned basetemp.
    base = Path(tempfile.mkdtemp(prefix="feedgate-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    datadir, logfile = base / "data", base / "postgres.log"
    user = "postgres"
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            user,
            "--auth=trust",
            "--no-sync",
            "--no-locale",
            "-E",
            "UTF8",
        ],
        "initdb",
    )
    started = False
    try:
        for attempt in range(3):  # another process may take the free port in between
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                # -w: pg_ctl polls the postmaster until it accepts connections (or exits,
                # e.g. port taken), up to -t seconds.
                _run(
                    [
                        str(bindir / "pg_ctl"),
                        "start",
                        "-D",
                        str(datadir),
                        "-l",
                        str(logfile),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        str(int(START_TIMEOUT)),
                    ],
                    "pg_ctl start",
                )
            except RuntimeError as exc:
                if attempt == 2:
                    log = logfile.read_text(errors="replace") if logfile.exists() else ""
                    raise RuntimeError(f"{exc}\n{log}") from None
                continue
            started = True
            _wait_ready(bindir, port, logfile)
            break
        yield PostgresServer("127.0.0.1", port, user, bindir, datadir)
    finally:
        if started:
            _run(
                [str(bindir / "pg_ctl"), "stop", "-D", str(datadir), "-m", "fast", "-w"],
                "pg_ctl stop",
            )
        shutil.rmtree(base, ignore_errors=True)


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
