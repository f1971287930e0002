"""PTZ locks in Redis (issue #15.5): the arbiter's rules across two nodes' stores on one real
Redis server, so two nodes cannot both grant control of one camera."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from test_ptz_arbiter import COUNCIL, PARTNER, POLICE, POLICE_2

from gateway.cluster.keys import Keys
from gateway.cluster.ptz_locks import RedisLockStore, decode, encode
from gateway.ptz.arbiter import ArbiterSettings, CameraArbiter, EffectKind, LockState

SETTINGS = ArbiterSettings(idle_release=5.0, return_after=0)


def stores(url: str) -> tuple[aioredis.Redis, RedisLockStore, RedisLockStore]:
    r = aioredis.Redis.from_url(url)
    keys = Keys("t")
    return (
        r,
        RedisLockStore(r, keys, lambda c: SETTINGS),
        RedisLockStore(r, keys, lambda c: SETTINGS),
    )


async def test_two_nodes_never_both_grant_one_camera(redis_server):
    r, a, b = stores(redis_server.url)
    # Two officers of equal priority press at once on two nodes: exactly one gets it.
    verdicts = await asyncio.gather(a.claim("cam", POLICE, 100.0), b.claim("cam", POLICE_2, 100.0))
    assert sorted(v.allowed for v in verdicts) == [False, True]
    refused = next(v for v in verdicts if not v.allowed)
    assert refused.code == "ptz_locked" and refused.holder_kind == "police"
    # A lower priority on either node is refused; the lock is the same on both.
    assert not (await b.claim("cam", PARTNER, 101.0)).allowed
    assert (await a.view("cam")).state is LockState.HELD
    assert (await b.view("cam")) == (await a.view("cam"))
    await r.aclose()


async def test_priority_preempts_across_nodes_and_the_idle_lock_lapses_once(redis_server):
    r, a, b = stores(redis_server.url)
    assert (await a.claim("cam", COUNCIL, 100.0)).allowed
    taken = await b.claim("cam", POLICE, 101.0)  # higher priority, on the other node
    assert taken.allowed and EffectKind.PREEMPTED in {e.kind for e in taken.effects}
    assert (await a.view("cam")).holder_tenant == "met-police"
    # After the idle release both nodes tick; the release happens, and is reported, once.
    effects = [*(await a.tick(200.0)), *(await b.tick(200.0))]
    assert [e.kind for e in effects].count(EffectKind.RELEASED) == 1
    assert (await b.view("cam")).state is LockState.FREE
    await r.aclose()


def test_the_arbiters_state_round_trips():
    a = CameraArbiter("cam", SETTINGS)
    a.claim(POLICE, 100.0)
    a.reserve(POLICE, "incident 42", 5000.0, 101.0)
    back = decode("cam", SETTINGS, encode(a))
    assert encode(back) == encode(a) and back.view() == a.view()
