"""The one PTZ service: every entry point (gRPC ``PtzService``, REST ``/v1/cameras/{id}/ptz``,
the CLI through gRPC, the ONVIF facade) asks here, so they all make the same decisions.

A command goes: ``authorize()`` (the tenant policy's one decision, action ``ptz``: the grant's
ptz right and a PTZ role) → the camera's lock (:class:`~gateway.ptz.locks.LockStore`) → the
camera (:class:`~gateway.ptz.client.OnvifClient`) → the audit log. Every move, preset change,
lock, preemption, release and reservation is appended with principal, tenant and purpose; a
refusal by the policy is appended as ``denied`` (through :class:`tenants.refusals.RefusalLog`,
rate-limited per source). Audit appends run on the tenancy's database thread, once per command.
This service owns its ticker (lock lapses, reservation ends, return home) and the idle-action
tasks, and cancels and awaits them on :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.config import Config, PtzConfig
from gateway.ptz.arbiter import Claimant, Effect, EffectKind, LockView, Verdict
from gateway.ptz.client import OnvifClient, OnvifEndpoint, load_wsdls
from gateway.ptz.events import EventHub, LockEvent, Subscription, iso
from gateway.ptz.locks import LocalLockStore, LockStore
from gateway.ptz.model import (
    MAX_PRESET_NAME,
    MAX_REASON,
    ErrorCode,
    Move,
    Preset,
    PtzError,
    Status,
    check_text,
    check_token,
    number,
    parse_priorities,
)
from gateway.ptz.motion import MotionWatch
from gateway.ptz.register import PtzCameras
from gateway.ptz.settings import PtzCamera, arbiter_settings, priority_for, ptz_cameras
from gateway.ptz.soap import SoapCodec
from gateway.tasks import cancel_and_wait
from tenants.audit import AuditAction, AuditLog
from tenants.model import ID_RE, Role
from tenants.onvif import OnvifRegister
from tenants.policy import AccessRequest, Action, Decision, Policy
from tenants.refusals import RefusalLog

if TYPE_CHECKING:
    from gateway.tenancy import Tenancy

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_STATUS_CODE = {401: ErrorCode.UNAUTHENTICATED, 404: ErrorCode.NOT_FOUND}
_VERDICT_CODE = {
    "ptz_locked": ErrorCode.LOCKED,
    "rate_limited": ErrorCode.RATE_LIMITED,
    "forbidden": ErrorCode.FORBIDDEN,
    "bad_request": ErrorCode.BAD_REQUEST,
}
_EVENT_TYPE = {
    EffectKind.TAKEN: "lock",
    EffectKind.PREEMPTED: "preempted",
    EffectKind.RELEASED: "released",
    EffectKind.RESERVED: "reserved",
    EffectKind.RESERVATION_ENDED: "reservation_ended",
}


@dataclass(frozen=True)
class Caller:
    """A principal allowed to steer one camera, as the policy decided."""

    decision: Decision
    claimant: Claimant
    camera: str
    owner: bool  # the caller's tenant owns the camera

    @property
    def roles(self) -> frozenset[Role]:
        return self.decision.roles

    @property
    def may_reserve(self) -> bool:
        """Admins, and the police, lock a camera for an incident."""
        return Role.ADMIN in self.roles or self.claimant.tenant_kind == "police"


@dataclass(frozen=True)
class _Entry:
    action: AuditAction
    tenant: str | None
    principal: str | None
    camera: str
    purpose: str | None
    outcome: str
    detail: dict[str, Any]


class PtzService:
    def __init__(
        self,
        *,
        policy: Policy,
        audit: AuditLog,
        cameras: Mapping[str, PtzCamera],
        config: PtzConfig,
        locks: LockStore | None = None,
        clock: Callable[[], float] = time.time,
        client_factory: Callable[[OnvifEndpoint], OnvifClient] | None = None,
        blocking: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
        refusals: RefusalLog | None = None,
        register: OnvifRegister | None = None,
        reader: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.policy = policy
        self.audit = audit
        self.cameras = dict(cameras)
        self.config = config
        self.priorities = parse_priorities(config.priorities)
        self.clock = clock
        # Where audit appends run: the tenancy's database thread (Tenancy.blocking).
        self.blocking = blocking or asyncio.to_thread
        # The register's ONVIF settings over the config's, read again when the tenancy changes.
        self.sources = PtzCameras(
            cameras, config, register, lambda: policy.snapshot.version, reader or asyncio.to_thread
        )
        # Policy refusals take the path every entry point's refusals take (rate-limited).
        self.refusals = refusals or RefusalLog(audit)

        def settings(camera: str) -> Any:
            cam = self.cameras.get(camera)
            return cam.arbiter if cam is not None else arbiter_settings(config, None)

        self.locks: LockStore = locks if locks is not None else LocalLockStore(settings)
        self.events = EventHub()
        self._factory = client_factory or (
            lambda ep: OnvifClient(ep, timeout=config.camera_timeout)
        )
        self._clients: dict[str, OnvifClient] = {}
        # Continuous moves feedgate stops itself if the camera does not (gateway/ptz/motion.py).
        self.motion = MotionWatch()
        # One command at a time per camera, so a watchdog's Stop and a new move never cross.
        self._command_locks: dict[str, asyncio.Lock] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._idle_tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.codec: SoapCodec | None = None

    @classmethod
    def from_config(
        cls, config: Config, tenancy: Tenancy, refusals: RefusalLog | None = None
    ) -> PtzService:
        return cls(
            policy=tenancy.policy,
            audit=tenancy.audit,
            cameras=ptz_cameras(config),
            config=config.ptz,
            blocking=tenancy.blocking,
            refusals=refusals,
            register=tenancy.onvif,
            reader=tenancy.blocking,
        )

    # ---- lifetime ----------------------------------------------------------------------------

    async def start(self, *, ticker: bool = True) -> None:
        """Load the ONVIF messages (for the facade, and the client's WSDLs; blocking, so in
        threads) and start the ticker."""
        if self.codec is None:
            self.codec = await asyncio.to_thread(SoapCodec.load)
        await self.sync()
        if self.cameras:
            await load_wsdls()
        if ticker and self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(), name="ptz")

    async def stop(self) -> None:
        await cancel_and_wait(self._ticker, *self._idle_tasks)
        self._ticker = None
        # A camera still on a continuous move is stopped now rather than left to its Timeout
        # (or, if it ignores that, moving until someone notices).
        for camera in self.motion.moving():
            with contextlib.suppress(PtzError):
                await self.client(camera).stop()
        for c in self._clients.values():
            await c.close()
        self._clients.clear()

    async def sync(self) -> None:
        """Follow the register: cameras added, changed or removed since the last look. A camera
        whose address or credentials changed gets a new connection (after its command)."""
        if not await self.sources.refresh():
            return
        current = self.sources.current
        for camera in list(self._clients):
            new = current.get(camera)
            if new is not None and new.endpoint == self.cameras[camera].endpoint:
                continue
            async with self._command_lock(camera):
                old = self._clients.pop(camera, None)
                if old is not None:
                    await old.close()
            log.info("camera %s: ONVIF settings changed; reconnecting", camera)
        if current and not self.cameras and self.codec is not None:
            await load_wsdls()  # the first PTZ camera came after start (see start())
        self.cameras = dict(current)

    def client(self, camera: str) -> OnvifClient:
        cam = self.cameras.get(camera)
        if cam is None:
            raise PtzError(ErrorCode.NO_PTZ, f"camera {camera!r} has no PTZ (no ONVIF endpoint)")
        c = self._clients.get(camera)
        if c is None:
            c = self._clients[camera] = self._factory(cam.endpoint)
        return c

    # ---- who is asking -----------------------------------------------------------------------

    async def caller(self, req: AccessRequest, op: str) -> Caller:
        """The policy's decision for action ``ptz`` on ``req.camera``; refusals are raised
        (403 and 404 audited as ``denied``)."""
        purpose = check_text("purpose", req.purpose, MAX_REASON, required=False) or None
        well_formed = isinstance(req.camera, str) and ID_RE.match(req.camera) is not None
        # Who is asking comes first; a malformed camera id is asked about as no camera at all
        # (it is never written to the audit log).
        asked = replace(
            req, action=Action.PTZ, purpose=purpose, camera=req.camera if well_formed else "-"
        )
        decision = await self.policy.authorize(asked)
        if not well_formed and decision.status in (200, 404):
            raise PtzError(ErrorCode.BAD_REQUEST, "camera: not a valid camera id")
        req = asked
        if not decision.allow:
            d = decision

            def record() -> None:
                self.refusals.record(
                    protocol=req.protocol,
                    action="ptz",
                    status=d.status,
                    reason=d.reason,
                    peer=req.peer,
                    tenant=d.tenant,
                    principal=d.principal,
                    camera=req.camera,
                    purpose=req.purpose,
                    detail={"op": op},
                )

            await self.blocking(record)
            raise PtzError(_STATUS_CODE.get(decision.status, ErrorCode.FORBIDDEN), decision.reason)
        assert decision.tenant is not None and decision.principal is not None
        camera = decision.camera or ""
        await self.sync()  # the register's settings at decision time
        if camera not in self.cameras:
            raise PtzError(ErrorCode.NO_PTZ, f"camera {camera!r} has no PTZ (no ONVIF endpoint)")
        tenant = self.policy.snapshot.tenants[decision.tenant]
        cam = self.policy.snapshot.cameras.get(camera)
        priority = priority_for(
            self.priorities,
            tenant.kind.value,
            (r.value for r in decision.roles),
            decision.ptz_priority if decision.grant_id is not None else 0,
        )
        claimant = Claimant(
            tenant.id, tenant.kind.value, decision.principal, priority, decision.purpose
        )
        owner = cam is not None and cam.owner_tenant == tenant.id
        return Caller(decision, claimant, camera, owner)

    # ---- commands that steer (need the lock) -------------------------------------------------

    async def move(self, caller: Caller, move: Move) -> LockView:
        _, view = await self._steer(
            caller, move.audit_detail(), move.timeout, lambda c: c.move(move)
        )
        return view

    async def stop_move(self, caller: Caller) -> LockView:
        _, view = await self._steer(caller, {"op": "stop"}, 0.0, lambda c: c.stop())
        return view

    async def goto_preset(self, caller: Caller, token: object) -> LockView:
        t = check_token("preset", token)
        _, view = await self._steer(
            caller, {"op": "goto_preset", "preset": t}, 0.0, lambda c: c.goto_preset(t)
        )
        return view

    async def goto_home(self, caller: Caller) -> LockView:
        _, view = await self._steer(caller, {"op": "goto_home"}, 0.0, lambda c: c.goto_home())
        return view

    async def set_preset(self, caller: Caller, name: object, token: object = None) -> str:
        """Presets are shared by everyone on the camera: its owner's principals and admins set
        them."""
        n = check_text("name", name, MAX_PRESET_NAME)
        t = check_token("token", token) if token not in (None, "") else None
        if not (caller.owner or Role.ADMIN in caller.roles):
            raise PtzError(ErrorCode.FORBIDDEN, "only the camera's owner or an admin sets presets")
        result, _ = await self._steer(
            caller,
            {"op": "set_preset", "name": n, "preset": t},
            0.0,
            lambda c: c.set_preset(n, t),
        )
        return result

    async def _steer(
        self,
        caller: Caller,
        detail: dict[str, Any],
        hold: float,
        command: Callable[[OnvifClient], Awaitable[_T]],
    ) -> tuple[_T, LockView]:
        client = self.client(caller.camera)
        verdict = await self.locks.claim(caller.camera, caller.claimant, self.clock(), hold)
        entries = self._effects(verdict.effects)
        if not verdict.allowed:
            if verdict.code != "rate_limited":  # a refused flood is counted, not logged
                entries.append(self._entry(caller, detail, f"refused: {verdict.code}"))
            await self._append(entries)
            raise self._refusal(verdict)
        self._wake.set()
        try:
            async with self._command_lock(caller.camera):
                result = await command(client)
                self.motion.sent(caller.camera, self.clock(), hold or None)
            self._wake.set()  # the ticker now has this move's Stop to watch for
        except PtzError as exc:
            # A camera that cannot be reached, or refuses our credentials, frees its lock.
            if exc.code == ErrorCode.UNREACHABLE or exc.detail.get("cause") == "credentials":
                entries += self._effects(
                    (await self.locks.fail(caller.camera, self.clock())).effects
                )
            entries.append(self._entry(caller, detail, f"failed: {exc.code.value}"))
            await self._append(entries)
            raise
        entries.append(self._entry(caller, detail, "ok"))
        await self._append(entries)
        return result, await self.locks.view(caller.camera)

    # ---- reading (no lock) -------------------------------------------------------------------

    async def presets(self, caller: Caller) -> list[Preset]:
        return await self.client(caller.camera).presets()

    async def status(self, caller: Caller) -> tuple[Status, LockView]:
        status = await self.client(caller.camera).status()
        return status, await self.locks.view(caller.camera)

    async def lock_view(self, camera: str) -> LockView:
        return await self.locks.view(camera)

    # ---- reservations and release ------------------------------------------------------------

    async def reserve(self, caller: Caller, reason: object, seconds: object) -> LockView:
        r = check_text("reason", reason, MAX_REASON)
        s = number("seconds", seconds, 1.0, self.config.max_reservation)
        detail = {"op": "reserve", "reason": r, "seconds": s}
        if not caller.may_reserve:
            await self._append([self._entry(caller, detail, "refused: forbidden")])
            raise PtzError(ErrorCode.FORBIDDEN, "only admins and the police reserve cameras")
        self.client(caller.camera)  # a camera without PTZ cannot be reserved
        now = self.clock()
        verdict = await self.locks.reserve(caller.camera, caller.claimant, r, now + s, now)
        entries = self._effects(verdict.effects)
        if not verdict.allowed:
            entries.append(self._entry(caller, detail, f"refused: {verdict.code}"))
        await self._append(entries)
        if not verdict.allowed:
            raise self._refusal(verdict)
        self._wake.set()
        return await self.locks.view(caller.camera)

    async def release(self, caller: Caller) -> LockView:
        """Let go of the lock, or end the caller's tenant's reservation."""
        self.client(caller.camera)
        verdict = await self.locks.release(caller.camera, caller.claimant, self.clock())
        entries = self._effects(verdict.effects)
        if not verdict.allowed:
            entries.append(self._entry(caller, {"op": "release"}, f"refused: {verdict.code}"))
        await self._append(entries)
        if not verdict.allowed:
            raise self._refusal(verdict)
        return await self.locks.view(caller.camera)

    def subscribe(self, camera: str) -> Subscription:
        sub = self.events.subscribe(camera)
        if sub is None:
            raise PtzError(ErrorCode.RATE_LIMITED, "too many watchers on this camera")
        return sub

    # ---- time --------------------------------------------------------------------------------

    async def tick(self) -> list[Effect]:
        """Carry out the timed transitions due now (the ticker calls this; tests too): lock
        lapses, reservation ends and idle actions, and the Stop of a continuous move whose
        Timeout ran out (sent on an owned task, as idle actions are)."""
        now = self.clock()
        for camera, generation in self.motion.due(now):
            self._system_command(
                camera, {"op": "timeout_stop"}, lambda c: c.stop(), generation=generation
            )
        effects = await self.locks.tick(now)
        if effects:
            await self._append(self._effects(effects))
        return effects

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to do."""
        dues = [d for d in (self.locks.deadline(), self.motion.deadline()) if d is not None]
        return min(dues, default=None)

    async def _tick_loop(self) -> None:
        while True:
            self._wake.clear()
            due = self.deadline()
            delay = None if due is None else due - self.clock()
            if delay is None or delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
            try:
                await self.tick()
            except Exception:
                log.exception("PTZ ticker failed; retrying in 1 s")
                await asyncio.sleep(1.0)

    # ---- effects: audit entries, events, idle actions ----------------------------------------

    def _effects(self, effects: tuple[Effect, ...] | list[Effect]) -> list[_Entry]:
        entries = []
        for e in effects:
            who = e.claimant
            detail: dict[str, Any] = {"op": f"lock_{e.kind.value}"}
            if e.reason:
                detail["reason"] = e.reason
            if e.until is not None:
                detail["until"] = iso(e.until)
            if e.by is not None:
                detail["by_tenant"] = e.by.tenant
                detail["by_principal"] = e.by.principal
            if e.preset is not None:
                detail["preset"] = e.preset
            if e.kind in (EffectKind.RETURN_HOME, EffectKind.TOUR_STEP):
                self._idle_action(e)
                continue
            entries.append(
                _Entry(
                    AuditAction.PTZ,
                    who.tenant if who else None,
                    who.principal if who else None,
                    e.camera,
                    who.purpose if who else None,
                    "ok",
                    detail,
                )
            )
            self.events.publish(
                LockEvent(
                    _EVENT_TYPE[e.kind],
                    _view_after(e),
                    e.reason,
                    e.by.tenant_kind if e.by else None,
                    (who.tenant, who.principal) if who else None,
                )
            )
        return entries

    def _idle_action(self, e: Effect) -> None:
        preset = e.preset
        detail: dict[str, Any] = {"op": "idle_" + ("preset" if preset else "home")}
        if preset:
            detail["preset"] = preset
            self._system_command(e.camera, detail, lambda c: c.goto_preset(preset))
        else:
            self._system_command(e.camera, detail, lambda c: c.goto_home())

    def _system_command(
        self,
        camera: str,
        detail: dict[str, Any],
        command: Callable[[OnvifClient], Awaitable[None]],
        *,
        generation: int | None = None,
    ) -> None:
        """A command feedgate sends on its own (principal ``feedgate``), on a task this
        service owns. With ``generation``, only if nothing was sent to the camera since."""

        async def run() -> None:
            outcome = "ok"
            try:
                async with self._command_lock(camera):
                    if generation is not None and not self.motion.current(camera, generation):
                        return  # superseded: a later command is the one that counts
                    await command(self.client(camera))
                    self.motion.sent(camera, self.clock())
            except PtzError as exc:
                outcome = f"failed: {exc.code.value}"
                log.warning("PTZ %s on %s failed: %s", detail["op"], camera, exc.message)
            await self._append(
                [_Entry(AuditAction.PTZ, None, "feedgate", camera, None, outcome, detail)]
            )

        task = asyncio.get_running_loop().create_task(run(), name=f"ptz-{detail['op']}:{camera}")
        self._idle_tasks.add(task)
        task.add_done_callback(self._idle_tasks.discard)

    def _command_lock(self, camera: str) -> asyncio.Lock:
        lock = self._command_locks.get(camera)
        if lock is None:
            lock = self._command_locks[camera] = asyncio.Lock()
        return lock

    def _entry(self, caller: Caller, detail: dict[str, Any], outcome: str) -> _Entry:
        c = caller.claimant
        return _Entry(
            AuditAction.PTZ, c.tenant, c.principal, caller.camera, c.purpose, outcome, detail
        )

    async def _append(self, entries: list[_Entry]) -> None:
        if not entries:
            return

        def write() -> None:
            for e in entries:
                self.audit.append(
                    e.action,
                    tenant=e.tenant,
                    principal=e.principal,
                    camera=e.camera,
                    purpose=e.purpose,
                    outcome=e.outcome,
                    detail=e.detail,
                )

        try:
            await self.blocking(write)
        except Exception:
            log.exception("PTZ audit append failed (%d entries)", len(entries))
            raise

    def _refusal(self, v: Verdict) -> PtzError:
        code = _VERDICT_CODE.get(v.code, ErrorCode.FORBIDDEN)
        detail: dict[str, Any] = {}
        if v.holder_kind is not None:
            detail["holder_kind"] = v.holder_kind
        if v.until is not None and code == ErrorCode.RATE_LIMITED:
            detail["retry_after"] = round(max(0.0, v.until - self.clock()), 3)
        elif v.until is not None:
            detail["until"] = iso(v.until)
        return PtzError(code, v.reason, **detail)


def _view_after(e: Effect) -> LockView:
    from gateway.ptz.arbiter import LockState

    if e.kind in (EffectKind.TAKEN, EffectKind.PREEMPTED) and e.by is not None:
        b = e.by
        return LockView(e.camera, LockState.HELD, b.tenant_kind, b.tenant, b.priority, e.until)
    if e.kind == EffectKind.TAKEN and e.claimant is not None:
        c = e.claimant
        return LockView(e.camera, LockState.HELD, c.tenant_kind, c.tenant, c.priority, e.until)
    if e.kind == EffectKind.RESERVED and e.claimant is not None:
        c = e.claimant
        return LockView(
            e.camera, LockState.RESERVED, c.tenant_kind, c.tenant, c.priority, e.until, e.reason
        )
    if e.kind == EffectKind.PREEMPTED:
        return LockView(e.camera, LockState.HELD)
    return LockView(e.camera, LockState.FREE)


__all__ = ["Caller", "PtzService"]
