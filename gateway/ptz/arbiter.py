"""Who may steer one camera now: a sans-I/O state machine per camera.

ONVIF has no arbitration between users, so feedgate brokers it (as Milestone's priorities and
reserved sessions and Genetec's user levels do inside one organisation):

- the first mover takes the lock; it lapses ``idle_release`` seconds (5, as Genetec) after the
  holder's last move, or after a continuous move's own timeout;
- a strictly higher priority preempts the holder, who is told why; an equal or lower one is
  refused, naming the holder's tenant kind and the lock's end, never the person;
- a reservation (an incident: reason and expiry) locks the camera to one tenant; everyone
  else is refused whatever their priority, until it is released or expires;
- moves are rate-limited per principal (a token bucket);
- when nobody has steered the camera for ``return_after`` seconds it goes home, or walks a
  preset tour.

Every input carries ``now`` (seconds since the epoch) and every transition returns a
:class:`Verdict` with the :class:`Effect` s the caller must carry out (audit, notify, move the
camera home). Nothing here sleeps, reads a clock or does I/O; :meth:`CameraArbiter.deadline`
says when the next timed transition is due. The transitions are one table, ``_TABLE``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

MAX_BUCKETS = 64  # principals rate-limited at once on one camera


class LockState(StrEnum):
    FREE = "free"
    HELD = "held"
    RESERVED = "reserved"


class Event(StrEnum):
    CLAIM = "claim"  # a move (or preset change) wants control
    RELEASE = "release"  # the holder (or the reservation's tenant) lets go
    RESERVE = "reserve"
    FAIL = "fail"  # the camera did not answer: nobody holds a camera nobody can steer
    TICK = "tick"


class EffectKind(StrEnum):
    TAKEN = "taken"
    PREEMPTED = "preempted"
    RELEASED = "released"
    RESERVED = "reserved"
    RESERVATION_ENDED = "reservation_ended"
    RETURN_HOME = "return_home"
    TOUR_STEP = "tour_step"


class IdleAction(StrEnum):
    NONE = "none"
    HOME = "home"
    TOUR = "tour"


@dataclass(frozen=True)
class Claimant:
    tenant: str
    tenant_kind: str
    principal: str
    priority: int
    purpose: str | None = None

    def same(self, other: Claimant | None) -> bool:
        return other is not None and (self.tenant, self.principal) == (
            other.tenant,
            other.principal,
        )


@dataclass(frozen=True)
class Reservation:
    claimant: Claimant
    reason: str
    until: float


@dataclass(frozen=True)
class Effect:
    kind: EffectKind
    camera: str
    claimant: Claimant | None = None  # who took, lost or released control
    by: Claimant | None = None  # who caused it (the preempting claimant)
    reason: str = ""
    until: float | None = None
    preset: str | None = None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    code: str = "ok"  # ok, ptz_locked, rate_limited, forbidden
    reason: str = ""
    holder_kind: str | None = None
    until: float | None = None
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class LockView:
    """What anyone with a right on the camera may see: never the person."""

    camera: str
    state: LockState
    holder_kind: str | None = None
    holder_tenant: str | None = None
    priority: int = 0
    until: float | None = None
    reason: str = ""  # a reservation's reason


@dataclass(frozen=True)
class ArbiterSettings:
    idle_release: float = 5.0
    return_after: float = 120.0  # 0: never
    idle_action: IdleAction = IdleAction.HOME
    tour: tuple[str, ...] = ()
    tour_dwell: float = 20.0
    move_rate: float = 10.0  # moves per second per principal, sustained
    move_burst: int = 20
    max_reservation: float = 4 * 3600.0


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class CameraArbiter:
    camera: str
    settings: ArbiterSettings = field(default_factory=ArbiterSettings)
    state: LockState = LockState.FREE
    holder: Claimant | None = None
    expires_at: float = 0.0
    reservation: Reservation | None = None
    last_activity: float | None = None  # None: nobody has steered it since start
    parked: bool = True  # the idle action was carried out since the last activity
    tour_index: int = 0
    next_tour_at: float = 0.0
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    # ---- the one entry point -----------------------------------------------------------------

    def handle(self, event: Event, now: float, **kw: object) -> Verdict:
        """Apply one event. Timed transitions due by ``now`` happen first, so a lapsed lock
        or reservation never refuses anyone, however late the caller's ticker runs."""
        due: tuple[Effect, ...] = ()
        if event != Event.TICK:
            d = self.deadline()
            if d is not None and d <= now and self.state != LockState.FREE:
                due = self.tick(now).effects
        verdict = _TABLE[(self.state, event)](self, now, **kw)
        return replace(verdict, effects=due + verdict.effects) if due else verdict

    def claim(self, claimant: Claimant, now: float, hold: float = 0.0) -> Verdict:
        return self.handle(Event.CLAIM, now, claimant=claimant, hold=hold)

    def release(self, claimant: Claimant, now: float) -> Verdict:
        return self.handle(Event.RELEASE, now, claimant=claimant)

    def reserve(self, claimant: Claimant, reason: str, until: float, now: float) -> Verdict:
        return self.handle(Event.RESERVE, now, claimant=claimant, reason=reason, until=until)

    def fail(self, now: float) -> Verdict:
        return self.handle(Event.FAIL, now)

    def tick(self, now: float) -> Verdict:
        return self.handle(Event.TICK, now)

    def view(self) -> LockView:
        if self.state == LockState.RESERVED and self.reservation is not None:
            r = self.reservation.claimant
            return LockView(
                self.camera,
                self.state,
                r.tenant_kind,
                r.tenant,
                r.priority,
                self.reservation.until,
                self.reservation.reason,
            )
        if self.state == LockState.HELD and self.holder is not None:
            h = self.holder
            return LockView(
                self.camera, self.state, h.tenant_kind, h.tenant, h.priority, self.expires_at
            )
        return LockView(self.camera, self.state)

    def deadline(self) -> float | None:
        """When the next timed transition is due (lock lapse, reservation end, idle action)."""
        if self.state == LockState.HELD:
            return self.expires_at
        if self.state == LockState.RESERVED and self.reservation is not None:
            return self.reservation.until
        s = self.settings
        if s.idle_action == IdleAction.NONE or s.return_after <= 0 or self.last_activity is None:
            return None
        if not self.parked:
            return self.last_activity + s.return_after
        if s.idle_action == IdleAction.TOUR and s.tour:
            return self.next_tour_at
        return None

    # ---- transitions -------------------------------------------------------------------------

    def _take(self, now: float, claimant: Claimant, hold: float) -> Verdict:
        self._buckets.clear()
        limited = self._spend(claimant, now)
        if limited is not None:
            return limited
        self.state = LockState.HELD
        self.holder = claimant
        self._touch(now, hold, reset=True)
        return Verdict(
            True,
            until=self.expires_at,
            effects=(Effect(EffectKind.TAKEN, self.camera, claimant, until=self.expires_at),),
        )

    def _contend(self, now: float, claimant: Claimant, hold: float) -> Verdict:
        holder = self.holder
        assert holder is not None
        if claimant.same(holder):
            limited = self._spend(claimant, now)
            if limited is not None:
                return limited
            self._touch(now, hold)
            return Verdict(True, until=self.expires_at)
        if claimant.priority > holder.priority:
            taken = self._take(now, claimant, hold)
            if not taken.allowed:
                return taken
            lost = Effect(
                EffectKind.PREEMPTED,
                self.camera,
                holder,
                by=claimant,
                reason=f"preempted by a higher priority ({claimant.tenant_kind})",
            )
            return replace(taken, effects=(lost, *taken.effects))
        return self._refuse_held(holder)

    def _refuse_held(self, holder: Claimant) -> Verdict:
        return Verdict(
            False,
            "ptz_locked",
            f"camera is controlled by {holder.tenant_kind} (priority {holder.priority}) until"
            " its lock lapses",
            holder.tenant_kind,
            self.expires_at,
        )

    def _claim_reserved(self, now: float, claimant: Claimant, hold: float) -> Verdict:
        r = self.reservation
        assert r is not None
        if claimant.tenant != r.claimant.tenant:
            return Verdict(
                False,
                "ptz_locked",
                f"camera is reserved by {r.claimant.tenant_kind} for an incident",
                r.claimant.tenant_kind,
                r.until,
            )
        limited = self._spend(claimant, now)
        if limited is not None:
            return limited
        self.holder = claimant
        self._touch(now, hold)
        return Verdict(True, until=r.until)

    def _release(self, now: float, claimant: Claimant) -> Verdict:
        holder = self.holder
        if not claimant.same(holder):
            return Verdict(False, "forbidden", "only the holder releases the lock")
        return Verdict(True, effects=(self._free(now, "released"),))

    def _release_reserved(self, now: float, claimant: Claimant) -> Verdict:
        r = self.reservation
        assert r is not None
        if claimant.tenant != r.claimant.tenant:
            return Verdict(
                False,
                "forbidden",
                "only the reserving tenant ends a reservation",
                r.claimant.tenant_kind,
                r.until,
            )
        return Verdict(True, effects=(self._end_reservation(now, "released", by=claimant),))

    def _release_free(self, now: float, claimant: Claimant) -> Verdict:
        return Verdict(True)

    def _reserve(self, now: float, claimant: Claimant, reason: str, until: float) -> Verdict:
        if until <= now:
            return Verdict(False, "bad_request", "a reservation must end in the future")
        if until - now > self.settings.max_reservation:
            return Verdict(
                False,
                "bad_request",
                f"a reservation lasts at most {self.settings.max_reservation:.0f} s",
            )
        r = self.reservation
        if self.state == LockState.RESERVED and r is not None:
            if claimant.tenant != r.claimant.tenant:
                return Verdict(
                    False,
                    "ptz_locked",
                    f"camera is already reserved by {r.claimant.tenant_kind}",
                    r.claimant.tenant_kind,
                    r.until,
                )
        effects: list[Effect] = []
        holder = self.holder
        if self.state == LockState.HELD and holder is not None and holder.tenant != claimant.tenant:
            effects.append(
                Effect(
                    EffectKind.PREEMPTED,
                    self.camera,
                    holder,
                    by=claimant,
                    reason=f"camera reserved for an incident by {claimant.tenant_kind}",
                )
            )
        self.state = LockState.RESERVED
        self.reservation = Reservation(claimant, reason, until)
        self.holder = None
        self._buckets.clear()
        self._touch(now, 0.0, reset=True)
        effects.append(
            Effect(EffectKind.RESERVED, self.camera, claimant, reason=reason, until=until)
        )
        return Verdict(True, until=until, effects=tuple(effects))

    def _fail(self, now: float) -> Verdict:
        return Verdict(True, effects=(self._free(now, "camera unreachable"),))

    def _fail_reserved(self, now: float) -> Verdict:
        # The incident still stands: the reservation outlives a camera outage.
        self.holder = None
        return Verdict(True)

    def _nothing(self, now: float, **_: object) -> Verdict:
        return Verdict(True)

    def _tick_held(self, now: float) -> Verdict:
        if now < self.expires_at:
            return Verdict(True)
        return Verdict(True, effects=(self._free(now, "idle"),))

    def _tick_reserved(self, now: float) -> Verdict:
        r = self.reservation
        assert r is not None
        if now < r.until:
            return Verdict(True)
        return Verdict(True, effects=(self._end_reservation(now, "expired"),))

    def _tick_free(self, now: float) -> Verdict:
        due = self.deadline()
        if due is None or now < due:
            return Verdict(True)
        s = self.settings
        if s.idle_action == IdleAction.TOUR and s.tour:
            preset = s.tour[self.tour_index % len(s.tour)]
            self.tour_index += 1
            self.parked = True
            self.next_tour_at = now + s.tour_dwell
            return Verdict(
                True, effects=(Effect(EffectKind.TOUR_STEP, self.camera, preset=preset),)
            )
        self.parked = True
        return Verdict(True, effects=(Effect(EffectKind.RETURN_HOME, self.camera),))

    # ---- helpers -----------------------------------------------------------------------------

    def _touch(self, now: float, hold: float, *, reset: bool = False) -> None:
        end = now + hold + self.settings.idle_release
        self.expires_at = end if reset else max(self.expires_at, end)
        self.last_activity = max(now + hold, self.last_activity or 0.0)
        self.parked = False
        self.tour_index = 0

    def _free(self, now: float, reason: str) -> Effect:
        holder = self.holder
        self.state = LockState.FREE
        self.holder = None
        self._buckets.clear()
        return Effect(EffectKind.RELEASED, self.camera, holder, reason=reason)

    def _end_reservation(self, now: float, reason: str, by: Claimant | None = None) -> Effect:
        r = self.reservation
        self.state = LockState.FREE
        self.reservation = None
        self.holder = None
        self._buckets.clear()
        self.last_activity = max(now, self.last_activity or 0.0)
        self.parked = False
        return Effect(
            EffectKind.RESERVATION_ENDED,
            self.camera,
            r.claimant if r else None,
            by=by,
            reason=reason,
        )

    def _spend(self, claimant: Claimant, now: float) -> Verdict | None:
        """Take one move from the principal's bucket; a Verdict if it is empty."""
        s = self.settings
        b = self._buckets.get(claimant.principal)
        if b is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            b = self._buckets[claimant.principal] = _Bucket(float(s.move_burst), now)
        b.tokens = min(float(s.move_burst), b.tokens + max(0.0, now - b.at) * s.move_rate)
        b.at = now
        if b.tokens < 1.0:
            return Verdict(
                False,
                "rate_limited",
                f"more than {s.move_rate:g} moves per second",
                until=now + (1.0 - b.tokens) / s.move_rate,
            )
        b.tokens -= 1.0
        return None


_Handler = Callable[..., Verdict]

_TABLE: dict[tuple[LockState, Event], _Handler] = {
    (LockState.FREE, Event.CLAIM): CameraArbiter._take,
    (LockState.HELD, Event.CLAIM): CameraArbiter._contend,
    (LockState.RESERVED, Event.CLAIM): CameraArbiter._claim_reserved,
    (LockState.FREE, Event.RELEASE): CameraArbiter._release_free,
    (LockState.HELD, Event.RELEASE): CameraArbiter._release,
    (LockState.RESERVED, Event.RELEASE): CameraArbiter._release_reserved,
    (LockState.FREE, Event.RESERVE): CameraArbiter._reserve,
    (LockState.HELD, Event.RESERVE): CameraArbiter._reserve,
    (LockState.RESERVED, Event.RESERVE): CameraArbiter._reserve,
    (LockState.FREE, Event.FAIL): CameraArbiter._nothing,
    (LockState.HELD, Event.FAIL): CameraArbiter._fail,
    (LockState.RESERVED, Event.FAIL): CameraArbiter._fail_reserved,
    (LockState.FREE, Event.TICK): CameraArbiter._tick_free,
    (LockState.HELD, Event.TICK): CameraArbiter._tick_held,
    (LockState.RESERVED, Event.TICK): CameraArbiter._tick_reserved,
}

__all__ = [
    "ArbiterSettings",
    "CameraArbiter",
    "Claimant",
    "Effect",
    "EffectKind",
    "Event",
    "IdleAction",
    "LockState",
    "LockView",
    "Reservation",
    "Verdict",
]
