"""Camera ownership leases and node heartbeats, against a real Redis server."""

from __future__ import annotations

import time

import pytest
import redis
import redis.asyncio as aioredis

from gateway.cluster.caps import RedisStreamLeases
from gateway.cluster.keys import Keys
from gateway.cluster.leases import Held, Leases, Owner
from gateway.cluster.nodes import NodeRecord, beat, leave, list_nodes
from tenants.leases import StreamCaps
from tenants.policy import Decision

KEYS = Keys("t")


def leases(r: aioredis.Redis, holder: str, ttl: float = 5.0) -> Leases:
    return Leases(r, KEYS, holder, ttl)


async def alive(r: aioredis.Redis, holder: str) -> None:
    node, _, inc = holder.partition("/")
    await beat(r, KEYS, NodeRecord(node, inc, time.time(), "127.0.0.1:1"), 5.0)


async def test_one_holder_at_a_time_and_every_new_owner_a_larger_token(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    a, b = leases(r, "a/1"), leases(r, "b/1")
    await alive(r, "a/1")
    got = await a.acquire("cam", time.monotonic())
    assert isinstance(got, Held) and got.owner == Owner("a/1", 1)
    # b cannot take it while a holds it and beats; it is told who does.
    assert await b.acquire("cam", time.monotonic()) == Owner("a/1", 1)
    assert await a.renew(got, time.monotonic())
    # a's publisher moved to b: b takes over with a newer token, and a's renewal fails.
    taken = await b.take_over("cam", time.monotonic())
    assert taken.owner == Owner("b/1", 2)
    assert not await a.renew(got, time.monotonic())
    assert await b.current("cam", 2) and not await a.current("cam", 1)
    assert await b.release(taken) and await b.owner("cam") is None
    await r.aclose()


async def test_a_dead_holders_lease_moves_before_its_ttl(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    a, b = leases(r, "a/1", ttl=60.0), leases(r, "b/1", ttl=60.0)
    await alive(r, "a/1")
    held = await a.acquire("cam", time.monotonic())
    assert isinstance(held, Held)
    assert isinstance(await b.acquire("cam", time.monotonic()), Owner)
    await leave(r, KEYS, "a", "1")  # a's heartbeat is gone (as if it lapsed)
    moved = await b.acquire("cam", time.monotonic())
    assert isinstance(moved, Held) and moved.owner == Owner("b/1", 2)
    # a, paused all along, wakes: its renewal is refused, so it stops.
    assert not await a.renew(held, time.monotonic())
    await r.aclose()


async def test_a_lease_that_lapsed_expires_and_renewal_puts_back_only_if_unclaimed(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    a, b = leases(r, "a/1", ttl=1.0), leases(r, "b/1", ttl=1.0)
    held = await a.acquire("cam", time.monotonic())
    assert isinstance(held, Held)
    await r.delete(KEYS.owner("cam"))  # a Redis restart outlived the TTL
    assert await a.renew(held, time.monotonic())  # nobody took a newer token: put back
    assert await a.owner("cam") == held.owner
    await r.delete(KEYS.owner("cam"))
    other = await b.acquire("cam", time.monotonic())
    assert isinstance(other, Held)
    assert not await a.renew(held, time.monotonic())  # b's now: a must stop
    await r.aclose()


async def test_a_lease_is_valid_locally_only_until_its_last_renewal_was_sent_plus_ttl():
    h = Held("cam", Owner("a/1", 3), valid_until=10.0)
    assert h.valid(9.99) and not h.valid(10.0)
    h.renewed(sent=8.0, ttl=5.0)
    assert h.valid(12.9) and not h.valid(13.0)
    h.renewed(sent=1.0, ttl=5.0)  # a late answer to an old renewal never shortens it
    assert h.valid(12.9)


async def test_nodes_list_the_live_ones_first_and_the_gone_as_down(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    now = time.time()
    for node in ("n2", "n1", "n3"):
        await beat(r, KEYS, NodeRecord(node, "x", now, f"10.0.0.{node[1]}:8555", sessions=2), 5)
    await leave(r, KEYS, "n2", "x")
    nodes = await list_nodes(r, KEYS)
    assert [(n.node, n.alive) for n in nodes] == [("n1", True), ("n3", True), ("n2", False)]
    assert nodes[0].record is not None and nodes[0].record.relay == "10.0.0.1:8555"
    # Nodes gone for more than an hour are forgotten.
    assert [n.node for n in await list_nodes(r, KEYS, now=now + 7200)] == []
    await r.aclose()


async def test_a_node_record_that_does_not_parse_is_not_a_node():
    assert NodeRecord.decode(b"{nonsense") is None
    assert NodeRecord.decode(b'{"node": "a"}') is None
    rec = NodeRecord("a", "1", 1.0, "h:1", owned=("cam",))
    assert NodeRecord.decode(rec.encode()) == rec


# ---- concurrency caps in Redis -----------------------------------------------------------


def capped(tenant: str = "shop", cap: int = 2) -> Decision:
    return Decision(
        allow=True, status=200, reason="ok", tenant=tenant, camera="yard", grant_id="g1",
        max_concurrent=cap,
    )  # fmt: skip


async def test_a_cap_holds_across_nodes_and_a_dead_nodes_slots_free_with_its_heartbeat(
    redis_server,
):
    r = aioredis.Redis.from_url(redis_server.url)
    for holder in ("a/1", "b/1"):
        await alive(r, holder)
    a = StreamCaps(RedisStreamLeases(redis_server.url, KEYS, "a/1", 3.0, 1.0))
    b = StreamCaps(RedisStreamLeases(redis_server.url, KEYS, "b/1", 3.0, 1.0))
    first, second = a.acquire(capped()), a.acquire(capped())
    assert first is not None and second is not None
    assert b.acquire(capped()) is None  # two streams on a: the shop's cap of 2 is reached
    assert b.acquire(capped("police")) is not None  # another tenant's grant, its own count
    a.release(first)
    third = b.acquire(capped())
    assert third is not None and b.acquire(capped()) is None
    # a dies (kill -9): no release, but its heartbeat lapses; its slot frees at once.
    await leave(r, KEYS, "a", "1")
    assert b.acquire(capped()) is not None
    assert b.shared is not None and b.shared.count("shop:g1") == 2
    assert b.renew() == (3, 3)  # nothing per stream to renew: the heartbeat keeps them
    await r.aclose()


async def test_a_release_redis_missed_is_retried_so_no_slot_leaks(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    await alive(r, "a/1")
    store = RedisStreamLeases(redis_server.url, KEYS, "a/1", 60.0, 0.5)
    caps = StreamCaps(store)
    lease = caps.acquire(capped(cap=1))
    assert lease is not None
    redis_server.kill()
    with pytest.raises(redis.RedisError):
        caps.release(lease)  # logged by the caller; the slot must not stay taken
    redis_server.start()
    await r.aclose()
    r = aioredis.Redis.from_url(redis_server.url)
    await alive(r, "a/1")
    assert store.count("shop:g1") == 1  # still taken: the release never arrived
    # The next viewer of the grant gets the slot: the missed release goes first.
    assert caps.acquire(capped(cap=1)) is not None
    assert store.count("shop:g1") == 1
    store.close()
    await r.aclose()
