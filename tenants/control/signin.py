"""Signing in to the console: with a principal's password, or with a one-time sign-in link
built from a token. Either way the browser is given a session token of its own (one of ours,
naming the principal, for the console's session lifetime), never the link's token.

* **Passwords** are checked within the policy's guessing limits (``policy.guesses``, the same
  allowance RTSP Basic/Digest and the MediaMTX hook use), against the principal's scrypt hash.
  An unknown principal, a disabled one, one without a password and a wrong password all get
  the same answer after the same work and the same delay; a right one is answered at once.
* **Links** carry a token of ours naming a registered principal. A link signs in once: its
  token id is recorded (``signin_links_used``, kept until the token expires), so a link that
  leaked from an inbox or a browser's history is refused the second time.
* Every sign-in is audited (``login``, with the session token's id), and every failure goes
  through the refusal log as ``unauthenticated`` (rate-limited per source, kept out of the
  published figures).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tenants import passwords
from tenants.audit import AuditAction
from tenants.control.core import Core
from tenants.control.errors import Code, ControlError
from tenants.db import IntegrityError
from tenants.model import ID_RE, Principal, Role
from tenants.policy import BAD_CREDENTIALS, AccessRequest, Action, Decision
from tenants.refusals import source_of
from tenants.tokens import TokenError

__all__ = ["BAD_LINK", "ConsoleSession", "LinkAccount", "SignInOps"]

MIGRATIONS = [
    """
    CREATE TABLE signin_links_used (
        token_id TEXT PRIMARY KEY,
        principal TEXT NOT NULL,
        used_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX signin_links_expiry ON signin_links_used (expires_at)
    """,
]
BAD_LINK = "that sign-in link is not valid, has expired or has been used"
MAX_TOKEN = 8192


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in browser's credential: put ``token`` in its session cookie."""

    token: str
    token_id: str
    expires_at: datetime
    tenant: str
    principal: str
    method: str  # "password" or "link"
    roles: frozenset[Role]


@dataclass(frozen=True)
class LinkAccount:
    """Whose account a sign-in link opens (shown before the browser signs in)."""

    tenant: str
    principal: str
    name: str
    roles: frozenset[Role]


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SignInOps:
    def __init__(self, core: Core) -> None:
        self.core = core
        core.db.migrate("signin", MIGRATIONS)

    # ---- passwords ----------------------------------------------------------------------------

    async def password(
        self, principal_id: str, password: str, *, ttl: timedelta, peer: str, via: str
    ) -> ConsoleSession:
        core, policy = self.core, self.core.policy
        limiter, source = policy.guesses, source_of(peer)
        user = principal_id if ID_RE.match(principal_id) else "?"
        verdict = limiter.before(user, source, policy.clock())
        if not verdict.check:
            await policy.sleep(verdict.delay)
            raise await self._refused(user, "password", BAD_CREDENTIALS, peer, via, throttled=True)
        await asyncio.to_thread(policy.reload)
        principal = core.snapshot.principals.get(user)
        stored = principal.password_hash if principal is not None else None
        # The work is the same for a principal without a password, or none at all.
        right = await asyncio.to_thread(passwords.verify, password, stored)
        if not right or principal is None or principal.disabled:
            await policy.sleep(limiter.failed(user, source, policy.clock()))
            raise await self._refused(user, "password", BAD_CREDENTIALS, peer, via)
        limiter.succeeded(user, source, policy.clock())
        return await self._open(principal, principal.roles, None, None, "password", ttl, peer, via)

    # ---- links --------------------------------------------------------------------------------

    async def _link_decision(self, token: str, peer: str, via: str) -> tuple[Decision, Principal]:
        core = self.core
        if not token or len(token) > MAX_TOKEN:
            raise await self._refused(None, "link", BAD_LINK, peer, via)
        await asyncio.to_thread(core.policy.reload)
        decision = await core.policy.authorize(
            AccessRequest(Action.API, via, token=token, peer=peer)
        )
        principal = core.snapshot.principals.get(decision.principal or "")
        if not decision.allow or not decision.registered or principal is None:
            reason = decision.reason if not decision.allow else "not a principal of this gateway"
            raise await self._refused(decision.principal, "link", reason, peer, via)
        return decision, principal

    async def account(self, token: str, *, peer: str, via: str) -> LinkAccount:
        """Whose account ``token`` opens, without using it up (a link only shown, never
        followed by the form's POST, must still work once)."""
        decision, principal = await self._link_decision(token, peer, via)
        token_id = (await self.core.verifier.verify_async(token)).token_id
        if await self.core.read(lambda: self._used(token_id)):
            raise await self._refused(principal.id, "link", "link already used", peer, via)
        return LinkAccount(principal.tenant_id, principal.id, principal.name, decision.roles)

    async def link(self, token: str, *, ttl: timedelta, peer: str, via: str) -> ConsoleSession:
        decision, principal = await self._link_decision(token, peer, via)
        try:
            claims = await self.core.verifier.verify_async(token)
        except TokenError as exc:  # expired between the two checks
            raise await self._refused(principal.id, "link", exc.reason, peer, via) from None
        fresh = await self.core.read(
            lambda: self._use(claims.token_id, principal.id, claims.expires_at)
        )
        if not fresh:
            raise await self._refused(principal.id, "link", "link already used", peer, via)
        return await self._open(
            principal, decision.roles, claims.cameras, claims.purpose, "link", ttl, peer, via,
            link_id=claims.token_id,
        )  # fmt: skip

    def _used(self, token_id: str) -> bool:
        row = self.core.db.query_one(
            "SELECT 1 FROM signin_links_used WHERE token_id = ?", (token_id,)
        )
        return row is not None

    def _use(self, token_id: str, principal: str, expires_at: datetime) -> bool:
        """Record a link's first use (blocking); False when it was used before. Rows of
        expired links go: a link is refused by its expiry from then on."""
        now = datetime.now(UTC)
        db = self.core.db
        with db.transaction():
            db.execute("DELETE FROM signin_links_used WHERE expires_at < ?", (_stamp(now),))
            try:
                db.execute(
                    "INSERT INTO signin_links_used (token_id, principal, used_at, expires_at)"
                    " VALUES (?, ?, ?, ?)",
                    (token_id, principal, _stamp(now), _stamp(expires_at)),
                )
            except IntegrityError:
                return False
        return True

    # ---- the session --------------------------------------------------------------------------

    async def _open(
        self,
        principal: Principal,
        roles: frozenset[Role],
        cameras: frozenset[str] | None,
        purpose: str | None,
        method: str,
        ttl: timedelta,
        peer: str,
        via: str,
        *,
        link_id: str | None = None,
    ) -> ConsoleSession:
        """Issue the session token, then check it as every request will (a suspended tenant
        is refused here, with its reason), then audit the sign-in."""
        core = self.core
        token = core.issuer.issue(
            tenant=principal.tenant_id,
            subject=principal.id,
            ttl=ttl,
            roles=sorted(r.value for r in roles),
            cameras=None if cameras is None else sorted(cameras),
            purpose=purpose,
        )
        decision = await core.policy.authorize(
            AccessRequest(Action.API, via, token=token, peer=peer)
        )
        if not decision.allow:
            raise await self._refused(principal.id, method, decision.reason, peer, via, code=403)
        claims = core.verifier.verify(token)
        detail = {
            "op": "sign_in",
            "method": method,
            "via": via,
            "peer": peer,
            "token_id": claims.token_id,
            "expires_at": claims.expires_at.isoformat(),
            "tenants": [principal.tenant_id],
        }
        if link_id is not None:
            detail["link_token_id"] = link_id
        await core.read(
            lambda: core.audit.append(
                AuditAction.LOGIN,
                tenant=principal.tenant_id,
                principal=principal.id,
                outcome="ok",
                detail=detail,
            )
        )
        return ConsoleSession(
            token,
            claims.token_id,
            claims.expires_at,
            principal.tenant_id,
            principal.id,
            method,
            decision.roles,
        )

    async def _refused(
        self,
        principal: str | None,
        method: str,
        reason: str,
        peer: str,
        via: str,
        *,
        code: int = 401,
        throttled: bool = False,
    ) -> ControlError:
        """Audit a failed sign-in (rate-limited per source) and return the error to raise."""
        snapshot = self.core.snapshot
        known = snapshot.principals.get(principal or "")
        detail: dict[str, object] = {"op": "sign_in", "method": method}
        if throttled:
            detail["throttled"] = True
        refusals = self.core.refusals
        assert refusals is not None
        await asyncio.to_thread(
            refusals.record,
            protocol=via,
            action="sign_in",
            status=code,
            reason=reason,
            peer=peer,
            # Only a name that exists is recorded: a password typed into the name field must
            # not land in the log.
            tenant=known.tenant_id if known is not None else None,
            principal=known.id if known is not None else None,
            detail=detail,
            outcome="unauthenticated" if code == 401 else "denied",
        )
        if code == 403:
            return ControlError(Code.FORBIDDEN, reason)
        return ControlError(Code.UNAUTHENTICATED, BAD_LINK if method == "link" else reason)
