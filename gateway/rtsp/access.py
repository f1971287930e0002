"""The tenant policy at RTSP's entry points: RTSP requests become ``AccessRequest``s and the
policy's ``Decision``s become sessions (or 401/403/453). What happens to a session once admitted
(caps, audit, metering, the re-check) is the same for every protocol: :mod:`gateway.live`."""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.live import Live, LiveSessions, MaskingUnavailable, Refused, camera_of
from gateway.protocols.rtsp import RtspError
from gateway.protocols.rtsp_auth import (
    BasicCredentials,
    DigestChallenger,
    DigestCredentials,
    NonceStatus,
    parse_authorization,
)
from gateway.rtsp.hooks import Grant
from gateway.rtsp.server import AccessCheck, AccessControl, RtspReply, RtspServer, Session
from gateway.tenancy import Tenancy
from tenants.policy import DIGEST_REALM, AccessRequest, Action, Decision

__all__ = ["PolicyAccess", "camera_of"]

log = logging.getLogger(__name__)

STALE_NONCE = "stale nonce"
BASIC_REFUSED = "plain RTSP takes no Basic; use Digest, a token or RTSPS"


class PolicyAccess(AccessControl):
    """AccessControl backed by the tenant policy, with the audit trail and live re-checks."""

    def __init__(
        self, tenancy: Tenancy, sessions: LiveSessions, *, basic_over_plain: bool = False
    ) -> None:
        super().__init__()
        self.tenancy = tenancy
        self.policy = tenancy.policy
        self.audit = tenancy.audit
        self.challenger = DigestChallenger()
        # Basic sends the password in the clear: only inside TLS unless configured.
        self.basic_over_plain = basic_over_plain
        # Every protocol's live sessions share one admission, audit trail and re-check.
        self.sessions = sessions
        self.server: RtspServer | None = None

    # ---- entry checks --------------------------------------------------------------------------

    def _basic_ok(self, check: AccessCheck) -> bool:
        return check.secure or self.basic_over_plain

    def _request(self, check: AccessCheck) -> AccessRequest | RtspReply:
        req = check.request
        camera, quality = camera_of(check.path)
        action = {"publish": Action.PUBLISH, "playback": Action.PLAYBACK}.get(
            check.action, Action.LIVE
        )
        kwargs: dict[str, Any] = {
            "action": action,
            "protocol": "rtsp",
            "camera": camera,
            "quality": quality,
            "peer": check.peer,
            "token": check.query.get("token"),
            "purpose": check.query.get("purpose") or req.headers.get("X-Purpose"),
            "unmasked": check.query.get("unmasked") in ("1", "true", "yes"),
            "playback_age_s": check.playback_age_s,
        }
        value = req.headers.get("Authorization")
        if value is not None:
            try:
                creds = parse_authorization(value)
            except RtspError as exc:
                return self._challenge(401, exc.reason, check)
            if isinstance(creds, BasicCredentials):
                if not self._basic_ok(check):
                    # Refused unread: whether it was right is not for a cleartext channel.
                    return self._challenge(401, BASIC_REFUSED, check)
                kwargs["username"] = creds.username
                kwargs["password"] = creds.password
            elif isinstance(creds, DigestCredentials):
                now = time.time()
                status = self.challenger.nonce_status(creds.nonce, now, bind=check.connection)
                if status is NonceStatus.STALE:
                    # Ours, for this connection, just old: the client answers the new one.
                    return self._challenge(401, STALE_NONCE, check, stale=True)
                if status is NonceStatus.FOREIGN or self.challenger.replayed(creds):
                    # Not a password guess, so not counted as one: a replay (another
                    # connection's nonce, or a counter that did not rise) or a forgery.
                    return self._challenge(401, "Digest answer replayed or not ours", check)
                method = req.method

                def check_ha1(ha1: str, creds: DigestCredentials = creds) -> bool:
                    return self.challenger.verify_digest(
                        creds, method, "", now, realm=DIGEST_REALM, ha1=ha1, bind=check.connection
                    )

                kwargs["digest_username"] = creds.username
                kwargs["digest_check"] = check_ha1
        return AccessRequest(**kwargs)

    def _challenge(
        self, status: int, reason: str, check: AccessCheck, *, stale: bool = False
    ) -> RtspReply:
        headers = (
            self.challenger.www_authenticate_headers(
                DIGEST_REALM,
                time.time(),
                stale=stale,
                basic=self._basic_ok(check),
                bind=check.connection,
            )
            if status == 401
            else []
        )
        return RtspReply(status, reason, headers)

    async def check(self, check: AccessCheck) -> RtspReply | Grant:
        request = self._request(check)
        if isinstance(request, RtspReply):
            if request.reason == STALE_NONCE:
                return request  # the handshake going round again, not an event
            # Credentials were presented, if unreadable ones: a refusal like any other.
            await self.tenancy.blocking(
                self.tenancy.refusals.record,
                protocol="rtsp",
                action=check.action,
                status=request.status,
                reason=request.reason,
                peer=check.peer,
                camera=camera_of(check.path)[0],
                outcome="unauthenticated",
            )
            return request
        decision = await self.policy.authorize(request)
        if decision.allow:
            return decision
        if decision.status != 401 or request.token or request.username or request.digest_check:
            # A client that came without credentials and gets its 401 is the normal RTSP
            # handshake, not an event; a refusal of presented credentials is.
            await self.sessions.refused(
                decision,
                protocol="rtsp",
                action=request.action.value,
                camera=request.camera,
                purpose=request.purpose,
                peer=check.peer,
            )
        log.info(
            "%s %s %s refused: %d %s",
            check.peer,
            check.action,
            check.path,
            decision.status,
            decision.reason,
        )
        return self._challenge(decision.status, decision.reason, check)

    async def route(self, path: str, grant: Grant) -> str:
        """A viewer whose decision names mask zones gets the shared masked variant; never the
        original, whatever URL it asked for."""
        if not isinstance(grant, Decision):
            return path
        try:
            return self.sessions.serve_path(path, grant)
        except MaskingUnavailable as exc:
            raise RtspReply(503, str(exc)) from None

    # ---- live sessions (their life is protocol-neutral: gateway.live) --------------------------

    @property
    def live(self) -> dict[str, Live]:
        return self.sessions.live

    async def started(self, session: Session) -> RtspReply | None:
        decision = session.grant
        if not isinstance(decision, Decision):
            return None  # internal relay or open access

        def stop(why: str) -> None:
            conn = session.conn
            if self.server is not None:
                self.server.end_session(session, why)
            conn.sessions.pop(session.id, None)
            conn.close()

        live = await self.sessions.admit(
            session.id,
            decision,
            protocol="rtsp",
            mode=session.mode,
            path=session.path,
            peer=session.conn.peer,
            stop=stop,
            detail=session.detail,
            media_clock=session.media_clock,
        )
        refused = (
            live if isinstance(live, Refused) else await self.sessions.start(live, session.reader)
        )
        if refused is None:
            return None
        headers = [("Retry-After", str(refused.retry_after))] if refused.retry_after else []
        return RtspReply(refused.status, refused.reason, headers)

    def paused(self, session: Session) -> None:
        self.sessions.pause(session.id)

    def attached(self, session: Session) -> None:
        if session.reader is not None:
            self.sessions.attach(session.id, session.reader)

    def ended(self, session: Session, reason: str) -> None:
        reader = session.reader
        self.sessions.end(session.id, reason, bytes_sent=reader.bytes_sent if reader else 0)

    async def stop(self) -> None:
        await self.sessions.stop()
