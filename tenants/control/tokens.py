"""Bearer tokens: planned (validated against the store) and issued (signed and audited)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tenants.audit import AuditAction, AuditLog
from tenants.control.core import Core, operation
from tenants.control.errors import denied, invalid, precondition
from tenants.control.rules import Caller
from tenants.control.schemas import TokenBody, TokenView
from tenants.model import Role
from tenants.store import NotFound, TenantStore
from tenants.tokens import TokenIssuer, TokenVerifier


@dataclass(frozen=True)
class TokenPlan:
    """A validated token request."""

    tenant: str
    subject: str
    cameras: frozenset[str] | None
    ttl: timedelta
    roles: frozenset[Role]
    purpose: str | None


def plan_token(store: TenantStore, body: TokenBody, caller: Caller | None) -> TokenPlan:
    """Check a token request against the store (blocking: run it in a thread).

    ``caller`` None: a local operator on the data dir (``feedgate token issue --local``)."""
    if caller is not None and not caller.admin_of(body.tenant):
        raise denied(f"may not issue tokens for tenant {body.tenant}")
    tenant = store.get_tenant(body.tenant)
    if not tenant.active:
        raise precondition(f"tenant {body.tenant} is suspended")
    try:
        principal = store.get_principal(body.subject)
    except NotFound:
        principal = None
    if principal is None or principal.tenant_id != body.tenant:
        raise invalid("subject", f"no principal {body.subject!r} in tenant {body.tenant}")
    if principal.disabled:
        raise precondition(f"principal {body.subject} is disabled")
    roles = frozenset(body.roles)
    extra = roles - principal.roles
    if extra:
        names = ", ".join(sorted(r.value for r in extra))
        raise denied(f"roles: {body.subject} does not hold {names}")
    return TokenPlan(
        body.tenant,
        body.subject,
        None if body.cameras is None else frozenset(body.cameras),
        timedelta(seconds=body.ttl_seconds),
        roles,
        body.purpose or None,
    )


def issue_token(
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    audit: AuditLog,
    plan: TokenPlan,
    *,
    actor_tenant: str | None,
    actor: str,
    via: str,
) -> TokenView:
    """Sign the token and record TOKEN_ISSUED (blocking). The token is returned only once the
    audit entry is stored."""
    token = issuer.issue(
        tenant=plan.tenant,
        subject=plan.subject,
        ttl=plan.ttl,
        cameras=None if plan.cameras is None else sorted(plan.cameras),
        roles=sorted(r.value for r in plan.roles),
        purpose=plan.purpose,
    )
    claims = verifier.verify(token)
    audit.append(
        AuditAction.TOKEN_ISSUED,
        tenant=actor_tenant,
        principal=actor,
        purpose=plan.purpose,
        detail={
            "via": via,
            "for_tenant": plan.tenant,
            "subject": plan.subject,
            "token_id": claims.token_id,
            "expires_at": claims.expires_at.isoformat(),
            "ttl_s": int(plan.ttl.total_seconds()),
            "roles": sorted(r.value for r in plan.roles),
            "cameras": None if plan.cameras is None else sorted(plan.cameras),
            "tenants": [plan.tenant],
        },
    )
    return TokenView(token=token, expires_at=claims.expires_at, token_id=claims.token_id)


class TokenOps:
    def __init__(self, core: Core) -> None:
        self.core = core

    @operation("IssueToken")
    async def issue(self, caller: Caller, body: TokenBody) -> TokenView:
        core = self.core
        if not caller.admin_of(body.tenant):
            raise denied(f"may not issue tokens for tenant {body.tenant}")

        def run() -> TokenView:
            plan = plan_token(core.store, body, caller)
            return issue_token(
                core.issuer,
                core.verifier,
                core.audit,
                plan,
                actor_tenant=caller.tenant,
                actor=caller.subject,
                via=caller.via,
            )

        return await core.read(run)

    def jwks(self) -> dict[str, Any]:
        """The gateway's public token keys (public: no caller)."""
        return self.core.issuer.jwks()

    def jwks_json(self) -> str:
        return json.dumps(self.jwks(), sort_keys=True)
