"""What feedgate does for MediaMTX's own sessions: every ``interval`` it lists them through
the v3 API, decides each new one from its ``?token=`` by the same policy as every entry
point, meters each session's outbound byte delta as usage of its tenant (through the one
usage interface), and kicks a session as soon as the policy no longer allows it: its token
expired, its grant was revoked or its tenant suspended. MediaMTX checks a token only at the
handshake and never ends a session on expiry (its issue 4300); this is that missing half.

Sessions that carry no token (a VMS with a password) cannot be re-decided here and are left
to the auth hook's admission; they are counted in ``untracked``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from billing.model import UsageEvent, UsageKind, UsageSink
from gateway.mediamtx.client import SESSION_KINDS, MediaMtxApi, MediaMtxError, MtxSession
from gateway.tasks import cancel_and_wait
from tenants.policy import AccessRequest, Action, Decision

log = logging.getLogger(__name__)


@dataclass
class _Tracked:
    session: MtxSession
    decision: Decision
    seq: int
    last_bytes: int
    last_at: datetime


def _token(query: str) -> str | None:
    values = parse_qs(query.lstrip("?")).get("token")
    return values[0] if values else None


class MediaMtxSupervisor:
    def __init__(
        self,
        api: MediaMtxApi,
        policy: Any,
        *,
        sink: UsageSink | None = None,
        interval: float = 1.0,
        kinds: tuple[str, ...] = SESSION_KINDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.policy = policy
        self.sink = sink
        self.interval = interval
        self.kinds = kinds
        self.clock = clock
        self.tracked: dict[tuple[str, str], _Tracked] = {}
        self.untracked: set[tuple[str, str]] = set()
        self.kicked: list[tuple[str, str, str]] = []  # (kind, id, why)
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mediamtx")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        now = self.clock()
        for t in list(self.tracked.values()):
            self._meter(t, t.last_bytes, now, final=True)
        self.tracked.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                if self.failures:
                    log.warning("MediaMTX API answers again after %d failures", self.failures)
                    self.failures = 0
            except MediaMtxError as exc:
                self.failures += 1
                if self.failures == 1:
                    log.warning("MediaMTX API unreachable (%s); sessions carry on meanwhile", exc)
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        now = self.clock()
        listed: dict[tuple[str, str], MtxSession] = {}
        for kind in self.kinds:
            for s in await self.api.sessions(kind):
                listed[(kind, s.id)] = s
        for key, s in listed.items():
            t = self.tracked.get(key)
            if t is None:
                if key in self.untracked:
                    continue
                t = await self._admit(key, s, now)
                if t is None:
                    continue
            if s.outbound_bytes < t.last_bytes:  # MediaMTX restarted and reused the id
                t.last_bytes = 0
            self._meter(t, s.outbound_bytes, now)
            why = self.policy.revalidate(t.decision, now)
            if why is not None:
                await self._kick(s, why)
                self.tracked.pop(key, None)
                self._meter(t, t.last_bytes, now, final=True)
        for key in [k for k in self.tracked if k not in listed]:  # ended in MediaMTX
            t = self.tracked.pop(key)
            self._meter(t, t.last_bytes, now, final=True)
        self.untracked &= set(listed)

    async def _admit(self, key: tuple[str, str], s: MtxSession, now: datetime) -> _Tracked | None:
        token = _token(s.query)
        if token is None:
            self.untracked.add(key)
            return None
        decision = await self.policy.authorize(
            AccessRequest(
                action=Action.LIVE,
                protocol=f"mediamtx-{s.kind}",
                camera=s.path.partition("/")[0] or None,
                token=token,
                peer=s.remote_addr.rpartition(":")[0] or s.remote_addr,
                now=now,
            )
        )
        if not decision.allow:
            await self._kick(s, decision.reason)
            return None
        t = _Tracked(s, decision, seq=0, last_bytes=0, last_at=now)
        self.tracked[key] = t
        return t

    async def _kick(self, s: MtxSession, why: str) -> None:
        try:
            await self.api.kick(s.kind, s.id)
        except MediaMtxError as exc:
            log.warning("could not kick MediaMTX %s session %s: %s", s.kind, s.id, exc)
            return
        self.kicked.append((s.kind, s.id, why))
        log.info("kicked MediaMTX %s session %s on %s: %s", s.kind, s.id, s.path, why)

    def _meter(self, t: _Tracked, total: int, now: datetime, *, final: bool = False) -> None:
        delta = max(0, total - t.last_bytes)
        d, s = t.decision, t.session
        if self.sink is not None and d.tenant is not None and (delta or final or now > t.last_at):
            session_id = f"mediamtx-{s.kind}-{s.id}"
            camera = d.camera or s.path.partition("/")[0]
            cam = self.policy.snapshot.cameras.get(camera)
            self.sink.emit(
                UsageEvent(
                    event_id=UsageEvent.make_id(session_id, t.seq),
                    session_id=session_id,
                    seq=t.seq,
                    tenant=d.tenant,
                    principal=d.principal,
                    camera=camera,
                    camera_owner=cam.owner_tenant if cam is not None else d.tenant,
                    kind=UsageKind.LIVE,
                    protocol=f"mediamtx-{s.kind}",
                    variant="unmasked",
                    start=t.last_at,
                    end=now,
                    duration_ms=int((now - t.last_at).total_seconds() * 1000),
                    bytes_sent=delta,
                    final=final,
                )
            )
            t.seq += 1
        t.last_bytes = max(t.last_bytes, total)
        t.last_at = now
