"""The tenant policy at the gateway's entry points: RTSP requests become ``AccessRequest``s, the
policy's ``Decision``s become sessions (or 401/403), live sessions are re-checked, and every
start, end and refusal goes to the audit log."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.masking.variants import VariantManager
from gateway.metering import UsageMeter
from gateway.protocols.rtsp import RtspError
from gateway.protocols.rtsp_auth import (
    BasicCredentials,
    DigestChallenger,
    DigestCredentials,
    parse_authorization,
)
from gateway.rtsp.server import AccessCheck, AccessControl, RtspReply, RtspServer, Session
from gateway.tenancy import Tenancy
from tenants.audit import AuditAction
from tenants.model import Quality
from tenants.policy import DIGEST_REALM, AccessRequest, Action, Decision, Lease

log = logging.getLogger(__name__)

# Shared stream leases live 30 s unless renewed: renew well within that.
LEASE_RENEW_EVERY = 10.0


def camera_of(path: str) -> tuple[str, Quality]:
    """'cam1' -> (cam1, main); 'cam1/sub' -> (cam1, sub)."""
    cam, _, rest = path.partition("/")
    return cam, Quality.SUB if rest == "sub" else Quality.MAIN


@dataclass
class _Live:
    session: Session
    decision: Decision
    lease: Lease | None
    started: float


class PolicyAccess(AccessControl):
    """AccessControl backed by the tenant policy, with the audit trail and live re-checks."""

    def __init__(
        self,
        tenancy: Tenancy,
        *,
        recheck_interval: float = 0.25,
        meter: UsageMeter | None = None,
        variants: VariantManager | None = None,
    ) -> None:
        super().__init__()
        self.meter = meter
        self.variants = variants
        self.tenancy = tenancy
        self.policy = tenancy.policy
        self.audit = tenancy.audit
        self.challenger = DigestChallenger()
        self.recheck_interval = recheck_interval
        self.live: dict[str, _Live] = {}
        self.server: RtspServer | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- entry checks --------------------------------------------------------------------------

    def _request(self, check: AccessCheck) -> AccessRequest | RtspReply:
        req = check.request
        camera, quality = camera_of(check.path)
        action = Action.PUBLISH if check.action == "publish" else Action.LIVE
        kwargs: dict[str, Any] = {
            "action": action,
            "protocol": "rtsp",
            "camera": camera,
            "quality": quality,
            "peer": check.peer,
            "token": check.query.get("token"),
            "purpose": check.query.get("purpose") or req.headers.get("X-Purpose"),
            "unmasked": check.query.get("unmasked") in ("1", "true", "yes"),
        }
        value = req.headers.get("Authorization")
        if value is not None:
            try:
                creds = parse_authorization(value)
            except RtspError as exc:
                return self._challenge(401, exc.reason)
            if isinstance(creds, BasicCredentials):
                kwargs["username"] = creds.username
                kwargs["password"] = creds.password
            elif isinstance(creds, DigestCredentials):
                now = time.time()
                method = req.method

                def check_ha1(ha1: str, creds: DigestCredentials = creds) -> bool:
                    return self.challenger.verify_digest(
                        creds, method, "", now, realm=DIGEST_REALM, ha1=ha1
                    )

                kwargs["digest_username"] = creds.username
                kwargs["digest_check"] = check_ha1
        return AccessRequest(**kwargs)

    def _challenge(self, status: int, reason: str) -> RtspReply:
        headers = (
            self.challenger.www_authenticate_headers(DIGEST_REALM, time.time())
            if status == 401
            else []
        )
        return RtspReply(status, reason, headers)

    async def check(self, check: AccessCheck) -> RtspReply | object:
        request = self._request(check)
        if isinstance(request, RtspReply):
            return request
        decision = await self.policy.authorize(request)
        if decision.allow:
            return decision
        if decision.status != 401 or request.token or request.username or request.digest_check:
            # A client that came without credentials and gets its 401 is the normal RTSP
            # handshake, not an event; a refusal of presented credentials is.
            self.audit.append(
                AuditAction.DENIED,
                tenant=decision.tenant,
                principal=decision.principal,
                camera=request.camera,
                purpose=request.purpose,
                outcome="denied",
                detail={
                    "reason": decision.reason,
                    "status": decision.status,
                    "protocol": "rtsp",
                    "action": request.action.value,
                    "peer": check.peer,
                },
            )
        log.info(
            "%s %s %s refused: %d %s",
            check.peer,
            check.action,
            check.path,
            decision.status,
            decision.reason,
        )
        return self._challenge(decision.status, decision.reason)

    async def route(self, path: str, grant: object) -> str:
        """A viewer whose decision names mask zones gets the shared masked variant; never the
        original, whatever URL it asked for."""
        if not isinstance(grant, Decision) or not grant.mask_zones:
            return path
        if self.variants is None:
            raise RtspReply(503, "masking is required for this viewer but not available")
        return self.variants.ensure(path, grant.variant, grant.mask_zones)

    # ---- live sessions -------------------------------------------------------------------------

    def _audit(
        self, action: AuditAction, d: Decision, detail: dict[str, Any], outcome: str = "ok"
    ) -> None:
        """An audit entry about a decision's tenant, principal, camera and purpose."""
        self.audit.append(
            action,
            tenant=d.tenant,
            principal=d.principal,
            camera=d.camera,
            purpose=d.purpose,
            outcome=outcome,
            detail=detail,
        )

    def started(self, session: Session) -> RtspReply | None:
        decision = session.grant
        if not isinstance(decision, Decision):
            return None  # internal relay or open access
        lease = None
        if session.mode == "play":
            lease = self.policy.acquire(decision)
            if lease is None:
                self._audit(
                    AuditAction.DENIED,
                    decision,
                    {"reason": "concurrent stream limit", "limit": decision.max_concurrent},
                    outcome="denied",
                )
                return RtspReply(
                    453,
                    f"tenant {decision.tenant} is at its limit of "
                    f"{decision.max_concurrent} concurrent streams",
                )
        self.live[session.id] = _Live(session, decision, lease, time.monotonic())
        if self.variants is not None and decision.mask_zones:
            self.variants.hold(session.path)
        if decision.lifted:
            self._audit(
                AuditAction.MASK_LIFT,
                decision,
                {
                    "session": session.id,
                    "zones": list(decision.lifted),
                    "until": decision.lift_expires_at.isoformat()
                    if decision.lift_expires_at
                    else None,
                },
            )
        if self.meter is not None and session.mode == "play" and decision.tenant:
            camera = self.policy.snapshot.cameras.get(decision.camera or "")
            self.meter.start(
                session_id=session.id,
                tenant=decision.tenant,
                principal=decision.principal,
                camera=decision.camera or session.path,
                camera_owner=camera.owner_tenant if camera else "",
                variant=decision.variant,
                reader=session.reader,
            )
        self._audit(
            AuditAction.SESSION_START,
            decision,
            {
                "session": session.id,
                "mode": session.mode,
                "protocol": "rtsp",
                "variant": decision.variant,
                "quality": decision.quality.value,
                "grant": decision.grant_id,
                "peer": session.conn.peer,
            },
        )
        self._ensure_watcher()
        return None

    def paused(self, session: Session) -> None:
        if self.meter is not None:
            self.meter.pause(session.id)

    def attached(self, session: Session) -> None:
        if self.meter is not None and session.reader is not None:
            self.meter.attach_reader(session.id, session.reader)

    def ended(self, session: Session, reason: str) -> None:
        live = self.live.pop(session.id, None)
        if live is None:
            return
        if self.meter is not None:
            self.meter.end(session.id)
        if self.variants is not None and live.decision.mask_zones:
            self.variants.release(session.path)
        if live.lease is not None:
            self.policy.release(live.lease)
        reader = session.reader
        d = live.decision
        self._audit(
            AuditAction.SESSION_END,
            d,
            {
                "session": session.id,
                "reason": reason,
                "seconds": round(time.monotonic() - live.started, 3),
                "bytes": reader.bytes_sent if reader else 0,
            },
        )

    def _ensure_watcher(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="recheck")

    async def _watch(self) -> None:
        """End live sessions within a second of their credential expiring, their grant being
        revoked or their tenant being suspended."""
        renewed = time.monotonic()
        while self.live:
            await asyncio.sleep(self.recheck_interval)
            try:
                self.policy.reload()
                if time.monotonic() - renewed > LEASE_RENEW_EVERY:
                    self.policy.renew_leases()
                    renewed = time.monotonic()
            except Exception:
                log.exception("policy reload failed; keeping the last snapshot")
            now = datetime.now(UTC)
            for sid, live in list(self.live.items()):
                why = self.policy.revalidate(live.decision, now)
                if why is not None:
                    log.info(
                        "ending session %s of %s on %s: %s",
                        sid,
                        live.decision.tenant,
                        live.decision.camera,
                        why,
                    )
                    conn = live.session.conn
                    if self.server is not None:
                        self.server.end_session(live.session, why)
                    conn.sessions.pop(sid, None)
                    conn.close()

    async def stop(self) -> None:
        from gateway.tasks import cancel_and_wait

        await cancel_and_wait(self._task)
