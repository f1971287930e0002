"""When the tenancy or ledger database is down, reconnection attempts back off (tenacity's
exponential backoff with jitter, issue #15.4): 0.1 s doubling to at most 1 s between attempts,
every call in between refused at once, and the schedule starts again after a success. The clock
and psycopg's connect are injected; the real kill -9 and restart of PostgreSQL is
test_cluster_identity_outage::test_a_database_connection_comes_back_after_postgres_is_killed_and_restarted.
"""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest

import tenants.db as dbmod
from tenants.db import Database, DatabaseUnavailable

TICK = 0.01


class _Conn:
    def __init__(self, up: bool) -> None:
        self.closed = self.broken = not up

    def execute(self, sql: str, params: tuple[Any, ...]) -> Any:
        class Cursor:
            def fetchall(self) -> list[tuple[int]]:
                return [(1,)]

        return Cursor()


class _Server:
    def __init__(self) -> None:
        self.now = 1000.0
        self.up = False
        self.attempts: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def connect(self, url: str, **kwargs: Any) -> _Conn:
        self.attempts.append(self.now)
        if not self.up:
            raise psycopg.OperationalError("connection refused")
        return _Conn(up=True)


def _hammer(db: Database, server: _Server, seconds: float) -> int:
    """Call the database every TICK for ``seconds``; how many calls were refused."""
    refused = 0
    start = server.now
    for i in range(round(seconds / TICK)):
        server.now = start + i * TICK
        try:
            db.query_one("SELECT 1")
        except DatabaseUnavailable:
            refused += 1
    server.now = start + seconds
    return refused


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_reconnects_back_off_from_a_tenth_of_a_second_to_one_and_start_again_after_a_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = _Server()
    monkeypatch.setattr(dbmod.time, "monotonic", server.monotonic)
    monkeypatch.setattr(psycopg, "connect", server.connect)
    db = Database(_Conn(up=False), "postgres", "postgresql://db.invalid/feedgate")
    refused = _hammer(db, server, 6.0)
    assert refused == 600  # every call while it is down, at once (none waits for a reconnect)
    gaps = _gaps(server.attempts)
    assert 6 <= len(gaps) <= 9, gaps  # 0.1, 0.2, 0.4, 0.8, then every second
    for k, gap in enumerate(gaps):
        base = min(0.1 * 2**k, 1.0)
        assert base - TICK <= gap <= min(base + 0.1, 1.0) + TICK, (k, gaps)
    # Back: the next due attempt connects and the call answers; a later outage starts at 0.1 s.
    server.up = True
    server.now = server.attempts[-1] + 1.0 + TICK
    assert db.query_one("SELECT 1") == (1,)
    server.up = False
    db._conn = _Conn(up=False)  # the server went away again
    start = len(server.attempts)
    _hammer(db, server, 0.5)
    assert 0.1 - TICK <= _gaps(server.attempts[start:])[0] <= 0.2 + TICK
