"""Live sessions of every protocol under the tenant policy.

A protocol adapter (``gateway/rtsp/access.py`` for RTSP, ``gateway/webrtc/`` for WHEP) turns its
request into an ``AccessRequest`` and the policy's ``Decision`` into a session. From there the
life of a session is the same whatever the protocol, and lives here:

decision → **admitted** (counted against the tenant's concurrency cap, its masked variant held)
→ **started** (its start recorded in the audit log; only then metered, from that instant, once
its reader exists) → **re-checked** every ``recheck_interval`` (ended
within a second of its credential expiring, its grant being revoked or its tenant suspended) →
**ended** (cap released, audited, the last usage interval reported).

How a session is actually stopped (closing an RTSP connection, tearing down a peer connection) is
the adapter's: it hands ``admit`` a ``stop`` callback, which the re-check calls with the reason,
and which must end up calling ``end``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from billing.model import UsageKind
from gateway.masking.variants import VariantManager
from gateway.metering import UsageMeter
from gateway.stream.hub import Reader
from gateway.tasks import cancel_and_wait
from gateway.tenancy import Tenancy
from tenants.audit import AuditAction
from tenants.leases import Lease
from tenants.model import Quality
from tenants.policy import Action, Decision

log = logging.getLogger(__name__)


def camera_of(path: str) -> tuple[str, Quality]:
    """'cam1' -> (cam1, main); 'cam1/sub' -> (cam1, sub)."""
    cam, _, rest = path.partition("/")
    return cam, Quality.SUB if rest == "sub" else Quality.MAIN


class Refusal(Exception):
    """A request an entry point refuses, whatever its protocol (WHEP, playback, exports): the
    status, the reason a person reads, the headers to answer with (WWW-Authenticate,
    Retry-After), a stable ``code`` for problem documents and any ``extra`` members of
    theirs."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Mapping[str, str] | None = None,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})
        self.code = code or _CODES.get(status, "refused")
        # Facts a client may act on beside the reason (a PTZ lock's holder kind and end).
        self.extra = dict(extra or {})


_CODES = {400: "invalid_argument", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
          409: "conflict", 413: "too_large", 415: "unsupported", 429: "too_many",
          503: "unavailable"}  # fmt: skip


class MaskingUnavailable(Exception):
    """The decision needs a masked variant and this process cannot make one."""


@dataclass(frozen=True)
class Refused:
    """Why a session was not admitted or started; nothing of it is left held or metered."""

    status: int  # 453: at the concurrency cap; 503: the store cannot record it (come back)
    reason: str
    retry_after: int | None = None


# How soon a client refused because the store could not record its session should retry.
RETRY_AFTER_S = 5


@dataclass(eq=False)
class Live:
    """One admitted session, whatever its protocol."""

    id: str
    protocol: str
    mode: str  # "play" or "record"
    decision: Decision
    path: str  # the hub path served: the camera's own, or its masked variant
    peer: str
    stop: Callable[[str], None]
    lease: Lease | None
    admitted: float  # monotonic
    started: float | None = None  # monotonic, once media flows
    held_variant: bool = False
    metered: bool = False
    # A playback's: what its audit entries add (its ranges) and the seconds of recording it
    # has served, metered instead of wall time (at Scale 4 a minute serves four).
    detail: dict[str, Any] = field(default_factory=dict)
    media_clock: Callable[[], float] | None = None

    @property
    def playback(self) -> bool:
        return self.decision.action == Action.PLAYBACK


class LiveSessions:
    """The admitted sessions of this process, of every protocol, with their one re-check."""

    def __init__(
        self,
        tenancy: Tenancy,
        *,
        recheck_interval: float = 0.25,
        meter: UsageMeter | None = None,
        variants: VariantManager | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.tenancy = tenancy
        # The wall clock live sessions are re-checked against (tests drive it).
        self.clock = clock
        self.policy = tenancy.policy
        self.caps = tenancy.caps
        self.audit = tenancy.audit
        self.meter = meter
        self.variants = variants
        self.recheck_interval = recheck_interval
        self.live: dict[str, Live] = {}
        # Shared stream leases expire unless renewed: renew three times in their lifetime.
        shared = tenancy.caps.shared
        self._renew_every = shared.ttl.total_seconds() / 3 if shared is not None else 10.0
        self._task: asyncio.Task[None] | None = None

    # ---- audit ---------------------------------------------------------------------------------

    def _entry(
        self,
        action: AuditAction,
        d: Decision,
        detail: dict[str, Any],
        outcome: str = "ok",
        *,
        spool: bool = False,
    ) -> Callable[[], object]:
        """An audit entry about a decision's tenant, principal, camera and purpose, as blocking
        work for the tenancy's database thread (never run on the event loop). ``spool``: a
        fact that has happened (a session's end) waits in the audit spool if the database is
        down, rather than being lost."""
        return functools.partial(
            self.audit.append_or_spool if spool else self.audit.append,
            action,
            tenant=d.tenant,
            principal=d.principal,
            camera=d.camera,
            purpose=d.purpose,
            outcome=outcome,
            detail=detail,
        )

    async def _audit(
        self, action: AuditAction, d: Decision, detail: dict[str, Any], outcome: str = "ok"
    ) -> None:
        """Append the entry and wait until it is stored (raises if it cannot be)."""
        await self.tenancy.blocking(self._entry(action, d, detail, outcome))

    async def refused(
        self,
        decision: Decision,
        *,
        protocol: str,
        action: str,
        camera: str | None,
        purpose: str | None,
        peer: str,
        status: int | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Audit a refusal through the one refusal log (rate-limited per source, on the
        database thread): of presented credentials, or (``status``, ``reason``) of an allowed
        decision the session cannot have. A failed sign-in is marked ``unauthenticated``."""
        try:
            await self.tenancy.blocking(
                functools.partial(
                    self.tenancy.refusals.decision,
                    decision,
                    protocol=protocol,
                    action=action,
                    peer=peer,
                    camera=camera,
                    purpose=purpose,
                    status=status,
                    reason=reason,
                    detail=detail,
                )
            )
        except Exception as exc:
            log.error("could not audit a refusal from %s: %s", peer, exc)

    # ---- admission -----------------------------------------------------------------------------

    def serve_path(self, path: str, decision: Decision) -> str:
        """The hub path a viewer with this decision gets: the shared masked variant when its
        decision names mask zones, never the original whatever it asked for."""
        if not decision.mask_zones:
            return path
        if self.variants is None:
            raise MaskingUnavailable("masking is required for this viewer but not available")
        return self.variants.ensure(path, decision.variant, decision.mask_zones)

    async def admit(
        self,
        session_id: str,
        decision: Decision,
        *,
        protocol: str,
        mode: str,
        path: str,
        peer: str,
        stop: Callable[[str], None],
        detail: dict[str, Any] | None = None,
        media_clock: Callable[[], float] | None = None,
    ) -> Live | Refused:
        """Count the session against its tenant's cap (playing sessions only) and hold its
        masked variant. Returns the admitted session, or why it is refused (audited)."""
        if not self.tenancy.db.available:
            # Its start could not be recorded: refuse now (503, Retry-After), before a WHEP
            # answer or an RTSP SETUP promises media, rather than after ICE or at PLAY.
            self.tenancy.submit(
                functools.partial(
                    self.tenancy.refusals.decision,
                    decision,
                    protocol=protocol,
                    action=mode,
                    peer=peer,
                    status=503,
                    reason="the tenancy database is unreachable",
                ),
                what="audit a refusal",
            )
            return self._unrecorded(session_id, decision, "anything (database unreachable)")
        lease = None
        if mode == "play":
            try:
                lease = await self._acquire(decision)
            except Exception as exc:
                return self._unrecorded(session_id, decision, f"its stream lease: {exc}")
            if lease is None:
                return await self._at_cap(decision, protocol, peer)
        live = Live(session_id, protocol, mode, decision, path, peer, stop, lease, time.monotonic())
        if detail is not None:
            live.detail = detail  # the same dict: what the session adds later is in its end
        live.media_clock = media_clock
        self.live[session_id] = live
        if self.variants is not None and decision.mask_zones:
            self.variants.hold(path)
            live.held_variant = True
        self._ensure_watcher()
        return live

    async def _acquire(self, decision: Decision) -> Lease | None:
        if decision.max_concurrent is None or self.caps.shared is None:
            return self.caps.acquire(decision)  # counted in memory
        # A shared lease is a database transaction: on the database thread. If the caller is
        # cancelled meanwhile (its client left), the lease it was taking is released.
        taking = asyncio.ensure_future(self.tenancy.blocking(self.caps.acquire, decision))

        def orphaned(done: asyncio.Future[Lease | None]) -> None:
            lease = None if done.cancelled() or done.exception() else done.result()
            if lease is not None:
                self.tenancy.submit(self.caps.release, lease, what="release a stream lease")

        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(orphaned)
            raise

    async def _at_cap(self, decision: Decision, protocol: str, peer: str) -> Refused:
        refused = Refused(
            453,
            f"tenant {decision.tenant} is at its limit of "
            f"{decision.max_concurrent} concurrent streams",
        )
        await self.refused(
            decision,
            protocol=protocol,
            action=decision.action.value,
            camera=decision.camera,
            purpose=decision.purpose,
            peer=peer,
            status=refused.status,
            reason=refused.reason,
            detail={"limit": decision.max_concurrent},
        )
        return refused

    @staticmethod
    def _unrecorded(session_id: str, decision: Decision, what: str) -> Refused:
        log.error(
            "session %s of %s on %s refused: could not record %s",
            session_id,
            decision.tenant,
            decision.camera,
            what,
        )
        return Refused(503, "the session could not be recorded; try again", RETRY_AFTER_S)

    async def start(self, live: Live, reader: Reader | None) -> Refused | None:
        """Media is about to flow: record the start (and any mask lift) in the audit log, then
        meter from here (now, or once its reader exists). If the start cannot be recorded the
        session is dropped (cap and variant released, nothing metered) and refused."""
        if live.started is not None or live.id not in self.live:
            return None
        decision = live.decision
        try:
            if decision.lifted:
                await self._audit(
                    AuditAction.MASK_LIFT,
                    decision,
                    {
                        "session": live.id,
                        "zones": list(decision.lifted),
                        "until": decision.lift_expires_at.isoformat()
                        if decision.lift_expires_at
                        else None,
                    },
                )
            # A playback is audited as one (the published figures count playbacks apart).
            await self._audit(
                AuditAction.PLAYBACK if live.playback else AuditAction.SESSION_START,
                decision,
                {
                    "session": live.id,
                    "mode": live.mode,
                    "protocol": live.protocol,
                    "variant": decision.variant,
                    "quality": decision.quality.value,
                    "grant": decision.grant_id,
                    "peer": live.peer,
                    **live.detail,
                },
            )
        except Exception as exc:
            self.end(live.id, "its start could not be recorded")
            # The refusal is a use of the network too: audited (spooled if the database is
            # the reason), like every refusal.
            self.tenancy.submit(
                functools.partial(
                    self.tenancy.refusals.decision,
                    decision,
                    protocol=live.protocol,
                    action="playback" if live.playback else "live",
                    peer=live.peer,
                    status=503,
                    reason="the session could not be recorded",
                ),
                what="audit a refusal",
            )
            return self._unrecorded(live.id, decision, f"its start: {exc}")
        live.started = time.monotonic()
        if live.id not in self.live:
            # It ended (its client left) while its start was being stored: record the end too,
            # and meter nothing.
            self.tenancy.submit(
                self._end_entry(live, "ended while starting", 0), what="audit a session end"
            )
            return None
        if reader is not None:
            self._meter(live, reader)
        return None

    def _meter(self, live: Live, reader: Reader) -> None:
        decision = live.decision
        if self.meter is None or live.mode != "play" or not decision.tenant:
            return
        camera = self.policy.snapshot.cameras.get(decision.camera or "")
        self.meter.start(
            session_id=live.id,
            tenant=decision.tenant,
            principal=decision.principal,
            camera=decision.camera or live.path,
            camera_owner=camera.owner_tenant if camera else "",
            variant=decision.variant,
            reader=reader,
            protocol=live.protocol,
            kind=UsageKind.PLAYBACK if live.playback else UsageKind.LIVE,
            media_clock=live.media_clock,
            since=live.started,
        )
        live.metered = True

    def attach(self, session_id: str, reader: Reader) -> None:
        """The session's hub reader exists now (RTSP creates it after the PLAY reply, again
        after a PAUSE): a started session is metered, from its recorded start the first time
        (so billed and audited seconds are one span), from here after a PAUSE."""
        live = self.live.get(session_id)
        if self.meter is None or live is None or live.started is None:
            return
        if live.metered:
            self.meter.attach_reader(session_id, reader)
        else:
            self._meter(live, reader)

    def pause(self, session_id: str) -> None:
        if self.meter is not None:
            self.meter.pause(session_id)

    def end(self, session_id: str, reason: str, *, bytes_sent: int = 0) -> None:
        """The session is over: report its last interval, release its cap and variant, and
        audit its end (only for a session that started: one that never delivered anything
        was not a use)."""
        live = self.live.pop(session_id, None)
        if live is None:
            return
        if self.meter is not None:
            self.meter.end(session_id)
        if live.held_variant and self.variants is not None:
            self.variants.release(live.path)
        if live.lease is not None:
            # The row expires with its lifetime if this fails: this process stops renewing it.
            self.tenancy.submit(self.caps.release, live.lease, what="release a stream lease")
        if live.started is None:
            return
        self.tenancy.submit(self._end_entry(live, reason, bytes_sent), what="audit a session end")

    def _end_entry(self, live: Live, reason: str, bytes_sent: int) -> Callable[[], object]:
        started = live.started if live.started is not None else time.monotonic()
        return self._entry(
            AuditAction.SESSION_END,
            live.decision,
            {
                "session": live.id,
                "reason": reason,
                "seconds": round(time.monotonic() - started, 3),
                "bytes": bytes_sent,
                **live.detail,
            },
            spool=True,
        )

    # ---- the re-check --------------------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="recheck")

    async def _watch(self) -> None:
        """End live sessions within the re-check interval of their credential expiring, their
        grant being revoked, their tenant being suspended or their principal being deleted,
        disabled or narrowed (the tenancy keeps the policy's snapshot current)."""
        renewed = time.monotonic()
        while self.live:
            await asyncio.sleep(self.recheck_interval)
            if time.monotonic() - renewed > self._renew_every:
                renewed = time.monotonic()
                await self._renew()
            self.recheck(self.clock())

    async def _renew(self) -> None:
        try:
            renewed, held = await self.tenancy.blocking(self.caps.renew)
        except Exception as exc:
            log.warning("stream leases not renewed: %s", exc)
            return
        if renewed < held and self.caps.shared is not None:
            log.error(
                "%d of this process's %d stream leases were dropped by another process holding "
                "as %s: give each node its own node_id",
                held - renewed,
                held,
                self.caps.shared.holder,
            )

    def recheck(self, now: datetime) -> int:
        """End every live session the policy no longer allows at ``now``; how many ended."""
        ended = 0
        for sid, live in list(self.live.items()):
            why = self.policy.revalidate(live.decision, now)
            if why is None:
                continue
            log.info(
                "ending %s session %s of %s on %s: %s",
                live.protocol,
                sid,
                live.decision.tenant,
                live.decision.camera,
                why,
            )
            try:
                live.stop(why)
            except Exception:
                log.exception("stopping session %s failed", sid)
            # A stop that could not reach its session still frees the cap and audits.
            self.end(sid, why)
            ended += 1
        return ended

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
