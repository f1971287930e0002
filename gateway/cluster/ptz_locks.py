"""PTZ locks in Redis when clustered (issue #15.5): two nodes cannot both grant control of one
camera.

Each camera's :class:`~gateway.ptz.arbiter.CameraArbiter` state is one JSON value in
``{p}:ptz:{camera}``. Every operation is a check-and-set: ``WATCH`` the key, read the state,
run the sans-I/O arbiter (its timed transitions due by ``now`` first, then the operation),
and write it back in ``MULTI``/``EXEC``, retried if another node changed it meanwhile. So the
arbiter's rules (priorities, reservations, idle release, rate limits) hold across nodes, and
a timed effect (release, going home) is carried out by exactly the node whose write won.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import WatchError

from gateway.cluster.keys import Keys
from gateway.ptz.arbiter import (
    ArbiterSettings,
    CameraArbiter,
    Claimant,
    Effect,
    LockState,
    LockView,
    Reservation,
    Verdict,
    _Bucket,
)

MAX_ATTEMPTS = 50  # CAS retries under contention before giving up (an error, never a grant)
POLL = 1.0  # deadline() asks for a tick at least this often: other nodes change locks too


def _claimant(d: Any) -> Claimant | None:
    return Claimant(**d) if isinstance(d, dict) else None


def encode(a: CameraArbiter) -> str:
    def claimant(c: Claimant | None) -> dict[str, Any] | None:
        return None if c is None else c.__dict__.copy()

    res = a.reservation
    return json.dumps(
        {
            "state": str(a.state),
            "holder": claimant(a.holder),
            "expires_at": a.expires_at,
            "reservation": None
            if res is None
            else {"claimant": claimant(res.claimant), "reason": res.reason, "until": res.until},
            "last_activity": a.last_activity,
            "parked": a.parked,
            "tour_index": a.tour_index,
            "next_tour_at": a.next_tour_at,
            "buckets": {k: [b.tokens, b.at] for k, b in a._buckets.items()},
        },
        separators=(",", ":"),
    )


def decode(camera: str, settings: ArbiterSettings, raw: bytes | str | None) -> CameraArbiter:
    a = CameraArbiter(camera, settings)
    if raw is None:
        return a
    d = json.loads(raw)
    a.state = LockState(d["state"])
    a.holder = _claimant(d["holder"])
    a.expires_at = float(d["expires_at"])
    r = d.get("reservation")
    if r is not None:
        c = _claimant(r["claimant"])
        assert c is not None
        a.reservation = Reservation(c, str(r["reason"]), float(r["until"]))
    a.last_activity = d["last_activity"]
    a.parked = bool(d["parked"])
    a.tour_index = int(d["tour_index"])
    a.next_tour_at = float(d["next_tour_at"])
    a._buckets = {k: _Bucket(float(t), float(at)) for k, (t, at) in d["buckets"].items()}
    return a


class RedisLockStore:
    """The :class:`~gateway.ptz.locks.LockStore` of a cluster node."""

    def __init__(self, redis: Any, keys: Keys, settings: Callable[[str], ArbiterSettings]) -> None:
        self.redis = redis
        self.keys = keys
        self._settings = settings
        self._deadlines: dict[str, float | None] = {}  # as last seen, per camera

    def _key(self, camera: str) -> str:
        return f"{self.keys.prefix}:ptz:{camera}"

    async def _apply(
        self, camera: str, now: float, op: Callable[[CameraArbiter], Verdict] | None
    ) -> tuple[Verdict | None, list[Effect]]:
        key = self._key(camera)
        for _ in range(MAX_ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    before = await pipe.get(key)
                    a = decode(camera, self._settings(camera), before)
                    effects: list[Effect] = []
                    due = a.deadline()
                    if due is not None and due <= now:
                        effects.extend(a.tick(now).effects)
                    verdict = op(a) if op is not None else None
                    after = encode(a)
                    if verdict is not None:
                        effects.extend(verdict.effects)
                    if before is None or after != (
                        before.decode() if isinstance(before, bytes) else before
                    ):
                        pipe.multi()
                        pipe.set(key, after)
                        await pipe.execute()
                    else:
                        await pipe.unwatch()
                    self._deadlines[camera] = a.deadline()
                    return verdict, effects
                except WatchError:
                    continue
        raise RuntimeError(f"PTZ lock of {camera!r}: too much contention")

    async def _verdict(
        self, camera: str, now: float, op: Callable[[CameraArbiter], Verdict]
    ) -> Verdict:
        verdict, effects = await self._apply(camera, now, op)
        assert verdict is not None
        if len(effects) == len(verdict.effects):
            return verdict
        from dataclasses import replace

        return replace(verdict, effects=tuple(effects))

    async def claim(
        self, camera: str, claimant: Claimant, now: float, hold: float = 0.0
    ) -> Verdict:
        return await self._verdict(camera, now, lambda a: a.claim(claimant, now, hold))

    async def release(self, camera: str, claimant: Claimant, now: float) -> Verdict:
        return await self._verdict(camera, now, lambda a: a.release(claimant, now))

    async def reserve(
        self, camera: str, claimant: Claimant, reason: str, until: float, now: float
    ) -> Verdict:
        return await self._verdict(camera, now, lambda a: a.reserve(claimant, reason, until, now))

    async def fail(self, camera: str, now: float) -> Verdict:
        return await self._verdict(camera, now, lambda a: a.fail(now))

    async def tick(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        for camera, due in list(self._deadlines.items()):
            if due is not None and due <= now:
                out.extend((await self._apply(camera, now, None))[1])
        return out

    async def view(self, camera: str) -> LockView:
        a = decode(camera, self._settings(camera), await self.redis.get(self._key(camera)))
        self._deadlines[camera] = a.deadline()
        return a.view()

    def deadline(self) -> float | None:
        dues = [d for d in self._deadlines.values() if d is not None]
        if not dues:
            return None
        return min(min(dues), time.time() + POLL)
