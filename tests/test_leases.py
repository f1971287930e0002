"""A tenant's concurrent-stream cap holds across every process and node on the store."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta

from tenants.db import Database
from tenants.leases import LeaseStore


def test_cap_is_shared_and_leases_come_back(db_url: str) -> None:
    a = LeaseStore(Database.open(db_url), holder="gateway-a")
    b = LeaseStore(Database.open(db_url), holder="gateway-b")
    first = a.acquire("shop:g1", 2)
    second = b.acquire("shop:g1", 2)
    assert first and second
    assert a.acquire("shop:g1", 2) is None  # the other node's stream counts too
    assert b.acquire("shop:g1", 2) is None
    assert a.acquire("police:g2", 2) is not None  # caps are per tenant and grant
    b.release(second)
    assert a.acquire("shop:g1", 2) is not None


def test_a_dead_holders_leases_expire_and_renewal_keeps_live_ones(db_url: str) -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    live = LeaseStore(Database.open(db_url), holder="live", ttl=30)
    dead = LeaseStore(Database.open(db_url), holder="dead", ttl=30)
    assert live.acquire("t:g", 2, now) and dead.acquire("t:g", 2, now)
    later = now + timedelta(seconds=20)
    live.renew(later)  # the live gateway renews; the dead one cannot
    after = now + timedelta(seconds=40)
    assert live.count("t:g", after) == 1
    assert live.acquire("t:g", 2, after) is not None  # the dead holder's slot came back
    assert live.acquire("t:g", 2, after) is None


def _take(db_url: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = LeaseStore(Database.open(db_url))
    out.put(sum(1 for _ in range(n) if store.acquire("busy:g", 10)))


def test_processes_racing_for_the_cap_never_exceed_it(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_take, args=(db_url, 8, out)) for _ in range(4)]
    for p in procs:
        p.start()
    got = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert got == 10
    assert LeaseStore(Database.open(db_url)).count("busy:g") == 10
