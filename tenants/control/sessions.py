"""Live sessions (list, kick) and usage and invoices: the views of traffic and money, each
scoped to the caller's tenant (the platform's see all)."""

from __future__ import annotations

from tenants.audit import AuditAction
from tenants.control.core import Core, operation
from tenants.control.errors import Code, ControlError, denied
from tenants.control.ports import Billing, LiveSession
from tenants.control.rules import FINANCE_ROLES, SESSION_ROLES, Caller
from tenants.control.views import EmittedView, InvoiceView, SessionView, UsageView
from tenants.model import Role


class SessionOps:
    """A session is seen (and kicked) by its own tenant's admins and operators, by the
    admins of the camera's owner, and by the platform's admins and operators."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def _owner(self, s: LiveSession) -> str | None:
        cam = self.core.snapshot.cameras.get(s.camera.partition("/")[0])
        return cam.owner_tenant if cam is not None else None

    def _visible(self, caller: Caller) -> list[LiveSession]:
        if not caller.has(SESSION_ROLES):
            raise denied("needs the admin or operator role")
        return [
            s for s in self.core.media.sessions() if caller.sessions_of(s.tenant, self._owner(s))
        ]

    @operation("ListSessions")
    async def list(self, caller: Caller) -> list[SessionView]:
        return [SessionView.of(s) for s in sorted(self._visible(caller), key=lambda s: s.id)]

    @operation("KickSession")
    async def kick(self, caller: Caller, session_id: str, reason: str = "") -> None:
        found = next((s for s in self._visible(caller) if s.id == session_id), None)
        if found is None:
            raise self.core.missing(caller, "session", session_id, "end")
        if not self.core.media.kick(session_id, reason or f"ended by {caller.subject}"):
            raise self.core.missing(caller, "session", session_id, "end")
        await self.core.read(
            lambda: self.core.audit.append(
                AuditAction.CONFIG,
                tenant=caller.tenant,
                principal=caller.subject,
                camera=found.camera,
                detail={
                    "api": "KickSession",
                    "via": caller.via,
                    "op": "kick",
                    "session": session_id,
                    "reason": reason,
                    "tenants": sorted({t for t in (found.tenant, self._owner(found)) if t}),
                },
            )
        )


class BillingOps:
    """Usage and invoices: the finance and admin roles, of their own tenant."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def _billing(self) -> Billing:
        if self.core.billing is None:
            raise ControlError(Code.UNAVAILABLE, "billing is not enabled on this gateway")
        return self.core.billing

    def _tenants(self, caller: Caller, tenant: str | None) -> str | None:
        """The tenant to show (None: every tenant, for the platform's)."""
        if not caller.has(FINANCE_ROLES):
            raise denied("needs the finance or admin role")
        if tenant is None:
            return None if caller.platform else caller.tenant
        if not caller.finance_of(tenant):
            raise self.core.missing(caller, "tenant", tenant)
        return tenant

    @operation("ListUsage")
    async def usage(self, caller: Caller, period: str, tenant: str | None) -> list[UsageView]:
        which = self._tenants(caller, tenant)
        billing = self._billing()

        def run() -> list[UsageView]:
            names = [which] if which is not None else list(billing.tenants(period))
            return [
                UsageView(
                    tenant=u.tenant,
                    period=u.period,
                    camera=u.camera,
                    metric=u.metric,
                    quantity=u.quantity,
                )
                for name in names
                for u in billing.usage(name, period)
            ]

        return await self.core.read(run)

    @operation("ListInvoices")
    async def invoices(
        self, caller: Caller, period: str | None, tenant: str | None
    ) -> list[InvoiceView]:
        which = self._tenants(caller, tenant)
        billing = self._billing()
        found = await self.core.read(lambda: billing.invoices(which, period))
        return [InvoiceView.model_validate(i) for i in found]

    @operation("UsageEmitted")
    async def emitted(self, caller: Caller) -> EmittedView:
        """What this process's meter emitted, for every camera: the platform's reconciliation
        view (finance, admin and operator roles of the platform tenant)."""
        if not (caller.platform and caller.has({*FINANCE_ROLES, Role.OPERATOR})):
            raise denied("the platform's finance, admin or operator role is needed")
        billing = self._billing()
        return EmittedView.model_validate(billing.emitted())
