"""Concurrency caps in Redis when clustered (issue #15.3): the shared lease table of
:class:`tenants.leases.StreamCaps`, kept in Redis instead of the database.

Each capped grant is a set ``cap:{tenant}:{grant}`` of ``holder|lease`` members, where the
holder is the node incarnation that admitted the stream. Taking a slot is one script: it
drops the members whose holder's heartbeat (``alive:{holder}``) has lapsed, counts the rest
and adds ours if there is room. So a node that dies frees its partners' slots as soon as its
heartbeat expires (``cluster.heartbeat_ttl``, a few seconds), with no lease to renew per
stream: the node's heartbeat renews them all.

The interface is :class:`tenants.leases.LeaseStore`'s, blocking (a synchronous client):
StreamCaps calls it on the tenancy's database thread, never on the event loop.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta
from typing import Any

import redis

from gateway.cluster.keys import Keys

_TAKE = """
local live = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local holder = string.match(m, '^(.*)|[^|]*$')
  if holder and redis.call('EXISTS', ARGV[3] .. holder) == 1 then
    live = live + 1
  else
    redis.call('SREM', KEYS[1], m)
  end
end
if live >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

_COUNT = """
local live = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local holder = string.match(m, '^(.*)|[^|]*$')
  if holder and redis.call('EXISTS', ARGV[1] .. holder) == 1 then live = live + 1 end
end
return live
"""


class RedisStreamLeases:
    """Stream leases of one node incarnation (``holder``, as its heartbeat names it)."""

    def __init__(self, url: str, keys: Keys, holder: str, heartbeat_ttl: float, timeout: float):
        self.client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.keys = keys
        self.holder = holder
        # Nothing to renew per stream; StreamCaps' owner asks every third of this anyway.
        self.ttl = timedelta(seconds=heartbeat_ttl)
        self.voided = 0
        self._take = self.client.register_script(_TAKE)
        self._count = self.client.register_script(_COUNT)
        self._held: dict[str, str] = {}  # lease id -> its set
        self._unreleased: list[tuple[str, str]] = []  # (set, lease id) Redis missed
        self._lock = threading.Lock()

    def _key(self, key: str) -> str:
        return f"{self.keys.prefix}:cap:{key}"

    def acquire(self, key: str, cap: int, now: datetime | None = None) -> str | None:
        self.renew()  # first, any release Redis missed: it may be the slot wanted now
        lease_id = secrets.token_hex(12)
        member = f"{self.holder}|{lease_id}"
        ok = self._take(keys=[self._key(key)], args=[member, cap, self.keys.alive("")])
        if not int(ok):
            return None
        with self._lock:
            self._held[lease_id] = key
        return lease_id

    def release(self, lease_id: str) -> None:
        with self._lock:
            key = self._held.pop(lease_id, None)
        if key is None:
            return
        try:
            self.client.srem(self._key(key), f"{self.holder}|{lease_id}")
        except redis.RedisError:
            # Redis is down: the slot would stay taken while this node lives. Retried before
            # the next acquire and at every renewal.
            with self._lock:
                self._unreleased.append((key, lease_id))
            raise

    def renew(self, now: datetime | None = None) -> int:
        """Nothing to renew per stream (the heartbeat does); releases Redis missed are
        retried here."""
        with self._lock:
            pending, self._unreleased = self._unreleased, []
            held = len(self._held)
        for i, (key, lease_id) in enumerate(pending):
            try:
                self.client.srem(self._key(key), f"{self.holder}|{lease_id}")
            except redis.RedisError:
                with self._lock:
                    self._unreleased.extend(pending[i:])
                break
        return held

    def count(self, key: str, now: datetime | None = None) -> int:
        return int(self._count(keys=[self._key(key)], args=[self.keys.alive("")]))

    def close(self) -> None:
        self.client.close()
