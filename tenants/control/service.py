"""The control service: one object every adapter (gRPC, REST, the CLI, pages) calls."""

from __future__ import annotations

import asyncio

from tenants.control.audit import AuditOps
from tenants.control.cameras import CameraOps, MaskOps
from tenants.control.core import Core
from tenants.control.errors import Code, ControlError
from tenants.control.grants import GrantOps
from tenants.control.nodes import NodeOps
from tenants.control.onvif import OnvifOps
from tenants.control.rules import Caller
from tenants.control.sessions import BillingOps, SessionOps
from tenants.control.signin import SignInOps
from tenants.control.tenants import PrincipalOps, TenantOps
from tenants.control.tokens import TokenOps
from tenants.policy import AccessRequest, Action


class ControlService:
    """Tenants, principals, cameras, masks, grants, tokens, the audit log, live sessions, the
    cluster's nodes, usage and invoices, behind one set of rules (``tenants.control.rules``)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.tenants = TenantOps(core)
        self.principals = PrincipalOps(core)
        self.cameras = CameraOps(core)
        self.masks = MaskOps(core, self.cameras)
        self.onvif = OnvifOps(core, self.cameras)
        self.grants = GrantOps(core)
        self.tokens = TokenOps(core)
        self.audit = AuditOps(core)
        self.sessions = SessionOps(core)
        self.nodes = NodeOps(core)
        self.billing = BillingOps(core)
        self.signin = SignInOps(core)

    @property
    def platform_tenant(self) -> str:
        return self.core.platform_tenant

    async def authenticate(self, token: str | None, *, via: str, peer: str = "") -> Caller:
        """Who is calling, from a bearer token: the one policy decision every entry point
        asks (identity, tenant status, roles). A refusal is audited and raised."""
        anonymous = Caller("", "", frozenset(), False, via, peer)
        if not token:
            error = ControlError(
                Code.UNAUTHENTICATED, "missing credentials: authorization: Bearer <jwt>"
            )
            await self.core.refused(anonymous, "authenticate", error)
            raise error
        policy = self.core.policy
        await asyncio.to_thread(policy.reload)
        decision = await policy.authorize(AccessRequest(Action.API, via, token=token, peer=peer))
        if not decision.allow:
            code = Code.UNAUTHENTICATED if decision.status == 401 else Code.FORBIDDEN
            error = ControlError(code, decision.reason)
            who = Caller(
                decision.tenant or "", decision.principal or "", frozenset(), False, via, peer
            )
            await self.core.refused(who, "authenticate", error)
            raise error
        assert decision.tenant is not None and decision.principal is not None
        return Caller(
            decision.tenant,
            decision.principal,
            decision.roles,
            decision.tenant == self.core.platform_tenant,
            via,
            peer,
        )


__all__ = ["ControlService"]
