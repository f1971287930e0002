"""Camera ownership leases in Redis: one node incarnation pulls a camera at a time.

A lease is the key ``own:{path}`` holding ``holder|token`` with a ``PX`` expiry:

- taken with ``SET NX PX`` (in a script that also ``INCR``-s the path's fencing counter, so
  every new owner gets a larger token than any before it), or from a holder whose heartbeat
  (``alive:{holder}``) has lapsed, so a dead node's cameras move after a few seconds, not
  after the whole TTL;
- renewed by a check-and-``PEXPIRE`` script every third of the TTL, which fails once anyone
  else holds the key (a key that vanished, e.g. a Redis restart that outlived the TTL, is
  put back only if no one has taken a newer token since);
- taken over unconditionally by a node where the camera's publisher lands (a push camera's
  ownership follows its publisher), with a new token;
- released by a check-and-``DEL`` when the owner stops.

The holder is ``node/incarnation``: a node that restarts is a new holder and waits for its
old lease to lapse like everyone else, because its old self may only be paused.

Fencing, so a paused owner cannot keep writing: the owner only counts its lease as held
until ``sent + ttl``, the moment it *sent* its last successful renewal (:class:`Held`), and an
edge relay names the token it expects (``?fence=``) so an owner whose token is no longer
current refuses to serve it (:meth:`Leases.current`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.cluster.keys import Keys

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder = string.match(cur, '^(.*)|%d+$')
  if holder and redis.call('EXISTS', ARGV[3] .. holder) == 1 then return {0, cur} end
end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. '|' .. token
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
"""

_TAKEOVER = """
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. '|' .. token
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not cur and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Owner:
    """Who holds a path's lease: ``node/incarnation`` and the fencing token."""

    holder: str
    token: int

    @property
    def node(self) -> str:
        return self.holder.rpartition("/")[0] or self.holder

    @property
    def value(self) -> str:
        return f"{self.holder}|{self.token}"

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Owner | None:
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        holder, sep, token = text.rpartition("|")
        if not sep or not holder or not token.isdigit():
            return None
        return cls(holder, int(token))


@dataclass
class Held:
    """A lease this process holds, and until when it may act on it: ``sent + ttl`` of the last
    renewal that succeeded (``now`` is a monotonic clock). Past that it must assume the lease
    is someone else's, whatever it last heard."""

    path: str
    owner: Owner
    valid_until: float

    def valid(self, now: float) -> bool:
        return now < self.valid_until

    def renewed(self, sent: float, ttl: float) -> None:
        self.valid_until = max(self.valid_until, sent + ttl)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Leases:
    """The lease operations on one ``redis.asyncio.Redis`` client. Every call is one round
    trip and raises the client's errors (the caller decides what an outage means)."""

    def __init__(self, redis: Any, keys: Keys, holder: str, ttl: float) -> None:
        self.redis = redis
        self.keys = keys
        self.holder = holder
        self.ttl_ms = max(1, int(ttl * 1000))
        self.ttl = ttl
        self._acquire = redis.register_script(_ACQUIRE)
        self._takeover = redis.register_script(_TAKEOVER)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, path: str) -> list[str]:
        return [self.keys.owner(path), self.keys.fence(path)]

    async def acquire(self, path: str, sent: float) -> Held | Owner | None:
        """Take ``path`` if nobody holds it: a :class:`Held` lease, else the current
        :class:`Owner` (None if its value is unreadable)."""
        args = [self.holder, self.ttl_ms, self.keys.alive("")]
        ok, value = await self._acquire(keys=self._keys(path), args=args)
        owner = Owner.parse(value)
        if int(ok) and owner is not None:
            return Held(path, owner, sent + self.ttl)
        return owner

    async def take_over(self, path: str, sent: float) -> Held:
        """Take ``path`` whoever holds it (its publisher is here now), with a new token."""
        value = await self._takeover(keys=self._keys(path), args=[self.holder, self.ttl_ms])
        owner = Owner.parse(value)
        assert owner is not None
        return Held(path, owner, sent + self.ttl)

    async def renew(self, held: Held, sent: float) -> bool:
        """Extend ``held``; False once it is no longer ours (the caller must stop at once)."""
        args = [held.owner.value, self.ttl_ms, held.owner.token]
        ok = await self._renew(keys=self._keys(held.path), args=args)
        if int(ok):
            held.renewed(sent, self.ttl)
            return True
        return False

    async def release(self, held: Held) -> bool:
        return bool(
            int(await self._release(keys=[self.keys.owner(held.path)], args=[held.owner.value]))
        )

    async def owner(self, path: str) -> Owner | None:
        return Owner.parse(await self.redis.get(self.keys.owner(path)))

    async def owners(self, paths: list[str]) -> dict[str, Owner | None]:
        if not paths:
            return {}
        values = await self.redis.mget([self.keys.owner(p) for p in paths])
        return {p: Owner.parse(v) for p, v in zip(paths, values, strict=True)}

    async def current(self, path: str, token: int) -> bool:
        """Is ``token`` still the newest fencing token of ``path``? (A write carrying an older
        one comes from an owner that lost the lease.)"""
        raw = await self.redis.get(self.keys.fence(path))
        return raw is not None and int(_text(raw)) == token
