"""Tenants and their principals."""

from __future__ import annotations

from tenants.audit import AuditAction
from tenants.control.core import Change, Core, operation, require_admin
from tenants.control.core import existing as find
from tenants.control.errors import Code, ControlError, denied, invalid, precondition
from tenants.control.rules import Caller, issuer_conflict, platform_status_ok, tenant_visible
from tenants.control.schemas import (
    PrincipalBody,
    PrincipalView,
    StatusBody,
    TenantBody,
    TenantView,
)
from tenants.model import Role, TenantStatus
from tenants.store import digest_ha1


class TenantOps:
    """Platform admins create, update and suspend tenants; a tenant's admins and auditors see
    their own tenant and those they share cameras with."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def _require_platform_admin(self, caller: Caller) -> None:
        if not caller.platform_admin:
            raise denied("only platform admins manage tenants")

    async def _put(self, caller: Caller, body: TenantBody, *, create: bool) -> TenantView:
        self._require_platform_admin(caller)
        store, core = self.core.store, self.core

        def op() -> Change[TenantView]:
            existing = find(store.get_tenant, body.id)
            if create and existing is not None:
                raise ControlError(Code.CONFLICT, f"tenant {body.id!r} already exists")
            t = body.to_domain(existing)
            why = issuer_conflict(t, core.issuer.issuer, store.list_tenants())
            if why is not None:
                raise invalid("issuer", why)
            why = platform_status_ok(t.id, t.active, core.platform_tenant)
            if why is not None:
                raise precondition(why)
            store.put_tenant(t)
            return Change(
                TenantView.of(t),
                AuditAction.TENANT_CHANGED,
                [t.id],
                {
                    "op": "create" if existing is None else "update",
                    "tenant": t.id,
                    "name": t.name,
                    "kind": t.kind.value,
                    "status": t.status.value,
                    "issuer": t.issuer,
                    "jwks_url": t.jwks_url,
                },
            )

        return await core.write(caller, "CreateTenant" if create else "UpdateTenant", op)

    @operation("CreateTenant")
    async def create(self, caller: Caller, body: TenantBody) -> TenantView:
        return await self._put(caller, body, create=True)

    @operation("UpdateTenant")
    async def update(self, caller: Caller, body: TenantBody) -> TenantView:
        return await self._put(caller, body, create=False)

    def _require_reader(self, caller: Caller) -> None:
        if not caller.has((Role.ADMIN, Role.AUDITOR)):
            raise denied("needs the admin or auditor role")

    @operation("GetTenant")
    async def get(self, caller: Caller, tenant_id: str) -> TenantView:
        self._require_reader(caller)
        snap = self.core.snapshot
        t = snap.tenants.get(tenant_id)
        if t is None or not tenant_visible(caller, t, snap.grants):
            raise self.core.missing(caller, "tenant", tenant_id)
        return TenantView.of(t)

    @operation("ListTenants")
    async def list(self, caller: Caller) -> list[TenantView]:
        self._require_reader(caller)
        snap = self.core.snapshot
        return [
            TenantView.of(t)
            for _, t in sorted(snap.tenants.items())
            if tenant_visible(caller, t, snap.grants)
        ]

    @operation("SetTenantStatus")
    async def set_status(self, caller: Caller, tenant_id: str, body: StatusBody) -> TenantView:
        self._require_platform_admin(caller)
        why = platform_status_ok(
            tenant_id, body.status == TenantStatus.ACTIVE, self.core.platform_tenant
        )
        if why is not None:
            raise precondition(why)
        store = self.core.store

        def op() -> Change[TenantView]:
            t = store.set_tenant_status(tenant_id, body.status)
            return Change(
                TenantView.of(t),
                AuditAction.TENANT_CHANGED,
                [tenant_id],
                {
                    "op": "status",
                    "tenant": tenant_id,
                    "status": t.status.value,
                    "reason": body.reason,
                },
            )

        return await self.core.write(caller, "SetTenantStatus", op)


class PrincipalOps:
    """A tenant's admins manage its principals (platform admins: every tenant's)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    @operation("PutPrincipal")
    async def put(self, caller: Caller, body: PrincipalBody) -> PrincipalView:
        if not caller.admin_of(body.tenant_id):
            raise denied(f"may not manage principals of tenant {body.tenant_id}")
        store = self.core.store

        def op() -> Change[PrincipalView]:
            existing = find(store.get_principal, body.id)
            was = existing.tenant_id if existing is not None else None
            why = f"principal {body.id!r} belongs to tenant {was}; principals cannot move"
            self.core.keeps_owner(caller, "principal", body.id, was, body.tenant_id, why)
            p = body.to_domain(existing, digest_ha1)
            store.put_principal(p)
            return Change(
                PrincipalView.of(p),
                AuditAction.CONFIG,
                [p.tenant_id],
                {
                    "op": "create" if existing is None else "update",
                    "principal": p.id,
                    "roles": sorted(r.value for r in p.roles),
                    "disabled": p.disabled,
                    **body.secrets_changed(),
                },
            )

        return await self.core.write(caller, "PutPrincipal", op)

    @operation("GetPrincipal")
    async def get(self, caller: Caller, principal_id: str) -> PrincipalView:
        require_admin(caller)
        p = self.core.snapshot.principals.get(principal_id)
        if p is None or not caller.admin_of(p.tenant_id):
            raise self.core.missing(caller, "principal", principal_id)
        return PrincipalView.of(p)

    @operation("ListPrincipals")
    async def list(self, caller: Caller, tenant_id: str | None = None) -> list[PrincipalView]:
        if tenant_id is not None:
            if not caller.admin_of(tenant_id):
                raise denied(f"may not list principals of {tenant_id}")
        elif not caller.platform_admin:
            require_admin(caller)
            tenant_id = caller.tenant
        found = await self.core.read(lambda: self.core.store.list_principals(tenant_id))
        return [PrincipalView.of(p) for p in found]

    @operation("DeletePrincipal")
    async def delete(self, caller: Caller, principal_id: str) -> None:
        require_admin(caller)
        if principal_id == caller.subject:
            raise precondition("cannot delete the principal you call as")
        store = self.core.store

        def op() -> Change[None]:
            p = self.core.managed(
                caller, "principal", principal_id, store.get_principal, lambda p: p.tenant_id
            )
            store.delete_principal(principal_id)
            return Change(
                None,
                AuditAction.CONFIG,
                [p.tenant_id],
                {"op": "delete", "principal": principal_id},
            )

        await self.core.write(caller, "DeletePrincipal", op)
