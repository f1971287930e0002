"""Playback's one place for policy, audit and metering, whatever the protocol (RTSP, HTTP).

- **Policy**: every playback asks the one ``Policy.authorize`` with ``Action.PLAYBACK`` and the
  footage's age, so the grant's ``playback`` right, its ``max_playback_age_s``, its time
  windows and a required purpose hold; refusals go through the one refusal log (audited).
- **Audit**: every playback is an ``AuditAction.PLAYBACK`` entry naming the range, the purpose
  or incident reference and the protocol (the published figures count these as playbacks).
- **Metering**: what was served is ``UsageKind.PLAYBACK`` usage through the gateway's one
  usage interface: seconds of recording delivered, and bytes.

It also owns the worker threads every recording read runs on (never the event loop).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from billing.model import UsageEvent, UsageKind
from gateway.live import Refusal
from gateway.playback.recorded import RecordedSource
from gateway.recording.index import RecordingIndex
from tenants.audit import AuditAction
from tenants.policy import AccessRequest, Action, Decision

if TYPE_CHECKING:
    from gateway.live import LiveSessions
    from gateway.metering import UsageMeter
    from gateway.playback.hls_masked import MaskedSegments
    from gateway.tenancy import Tenancy

__all__ = ["PlaybackService", "Viewer"]

log = logging.getLogger(__name__)
T = TypeVar("T")
READ_THREADS = 4


@dataclass(frozen=True)
class Viewer:
    """Who asks to play back, as an entry point read them."""

    protocol: str  # rtsp, http
    peer: str
    token: str | None = None
    purpose: str | None = None
    unmasked: bool = False


class PlaybackService:
    def __init__(
        self,
        index: RecordingIndex,
        *,
        tenancy: Tenancy | None = None,
        live: LiveSessions | None = None,
        meter: UsageMeter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        threads: int = READ_THREADS,
    ) -> None:
        self.index = index
        self.tenancy = tenancy
        self.live = live
        self.meter = meter
        self.clock = clock
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="playback")
        self.served_seconds = 0.0  # recording seconds delivered by this process, all protocols
        # Masked HLS's bounds and figures (set by the HTTP app that serves it; /metrics).
        self.masked_hls: MaskedSegments | None = None

    def source(self, camera: str) -> RecordedSource:
        return RecordedSource(self.index, camera, self.executor)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    # ---- policy ----------------------------------------------------------------------------

    async def authorize(
        self, viewer: Viewer, camera: str, start: datetime | None
    ) -> Decision | None:
        """The decision to play ``camera`` back from ``start`` (None: open access, tenancy
        off). A refusal is audited and raised as :class:`Refusal`."""
        if self.tenancy is None:
            return None
        age = None if start is None else max(0.0, (self.clock() - start).total_seconds())
        req = AccessRequest(
            Action.PLAYBACK,
            viewer.protocol,
            camera=camera,
            token=viewer.token,
            purpose=viewer.purpose[:200] if viewer.purpose else None,
            unmasked=viewer.unmasked,
            playback_age_s=age,
            peer=viewer.peer,
        )
        decision = await self.tenancy.policy.authorize(req)
        if decision.allow:
            return decision
        await self.refused(decision, viewer, camera)
        if decision.status == 401:
            raise Refusal(401, decision.reason, {"WWW-Authenticate": 'Bearer realm="feedgate"'})
        raise Refusal(decision.status if decision.status in (403, 404) else 403, decision.reason)

    async def refused(
        self,
        decision: Decision,
        viewer: Viewer,
        camera: str,
        *,
        status: int | None = None,
        reason: str | None = None,
    ) -> None:
        if self.live is None:
            return
        await self.live.refused(
            decision,
            protocol=viewer.protocol,
            action=Action.PLAYBACK.value,
            camera=camera,
            purpose=viewer.purpose,
            peer=viewer.peer,
            status=status,
            reason=reason,
        )

    def max_age(self, decision: Decision | None) -> timedelta | None:
        """How far back this decision's grant reaches (None: no limit, or the owner)."""
        if decision is None or decision.grant_id is None or self.tenancy is None:
            return None
        for grant in self.tenancy.policy.snapshot.grants:
            if grant.id == decision.grant_id:
                age = grant.constraints.max_playback_age_s
                return None if age is None else timedelta(seconds=age)
        return None

    def earliest(self, decision: Decision | None) -> datetime | None:
        age = self.max_age(decision)
        return None if age is None else self.clock() - age

    # ---- audit and metering ----------------------------------------------------------------

    async def audit(self, decision: Decision | None, detail: dict[str, Any]) -> None:
        """One playback, stored before media flows (raises if it cannot be)."""
        if decision is None or self.tenancy is None:
            return
        await self.tenancy.blocking(
            self.tenancy.audit.append,
            AuditAction.PLAYBACK,
            tenant=decision.tenant,
            principal=decision.principal,
            camera=decision.camera,
            purpose=decision.purpose,
            detail=detail,
        )

    def metered(
        self,
        decision: Decision | None,
        session_id: str,
        *,
        protocol: str,
        seconds: float,
        bytes_sent: int,
        seq: int = 0,
        final: bool = True,
    ) -> None:
        """Usage for ``seconds`` of recording served (and ``bytes_sent``), as one event."""
        self.served_seconds += max(0.0, seconds)
        if self.meter is None or decision is None or not decision.tenant:
            return
        camera = (
            self.tenancy.policy.snapshot.cameras.get(decision.camera or "")
            if self.tenancy
            else None
        )
        now = self.clock()
        duration_ms = max(0, round(seconds * 1000))
        event = UsageEvent(
            event_id=UsageEvent.make_id(session_id, seq),
            session_id=session_id,
            seq=seq,
            tenant=decision.tenant,
            principal=decision.principal,
            camera=decision.camera or "",
            camera_owner=camera.owner_tenant if camera else "",
            kind=UsageKind.PLAYBACK,
            protocol=protocol,
            variant=decision.variant,
            start=now - timedelta(milliseconds=duration_ms),
            end=now,
            duration_ms=duration_ms,
            bytes_sent=max(0, bytes_sent),
            final=final,
        )
        try:
            self.meter.sink.emit(event)
            self.meter.events_emitted += 1
        except Exception:
            log.exception("playback usage %s could not be emitted", event.event_id)

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self.executor.shutdown, wait=True, cancel_futures=True)
        )
