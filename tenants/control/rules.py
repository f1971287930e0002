"""Who may manage what: the control plane's rules, in one place, for every adapter.

These are pure functions of the caller and the tenancy objects (no I/O), so gRPC, REST, the
CLI and the finance pages all apply the same rules:

* the platform tenant (``[grpc] platform_tenant``) runs the network: its admins manage every
  tenant, and its operators see every live session;
* a tenant's admins manage their own principals, cameras (and the cameras' masks) and the
  grants their tenant owns; they read the grants their tenant receives, the cameras those
  cover and those cameras' masks;
* the platform tenant cannot be suspended, and no tenant may use the gateway's own token
  issuer or another tenant's;
* a camera the gateway has a configured source for is registered (and re-owned) by platform
  admins only: its ownership comes from the register the platform controls, never from the
  first tenant to write its id;
* finance (usage, invoices): the finance and admin roles, for their own tenant (platform: all);
* auditors read the audit log's entries about their own tenant (platform auditors: all).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tenants.model import Camera, Grant, Role, Tenant

# The roles that read usage and invoices (the finance pages and /v1/usage, /v1/invoices).
FINANCE_ROLES = frozenset({Role.FINANCE, Role.ADMIN})
# The roles that list (and kick) live sessions.
SESSION_ROLES = frozenset({Role.ADMIN, Role.OPERATOR})
# The roles that see cameras (the console lists what its principal may watch).
CAMERA_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.INVESTIGATOR})


@dataclass(frozen=True)
class Caller:
    """Who is calling: the verified credential's tenant and subject, its effective roles, and
    where the call came from (for the audit log)."""

    tenant: str
    subject: str
    roles: frozenset[Role]
    platform: bool  # the tenant is the platform tenant
    via: str = "api"  # grpc, http, cli
    peer: str = ""

    def has(self, roles: Iterable[Role]) -> bool:
        return bool(self.roles & frozenset(roles))

    @property
    def platform_admin(self) -> bool:
        return self.platform and Role.ADMIN in self.roles

    def admin_of(self, tenant: str) -> bool:
        """May manage ``tenant``'s principals, cameras, masks, grants and tokens."""
        return Role.ADMIN in self.roles and (self.platform or tenant == self.tenant)

    @property
    def auditor(self) -> bool:
        return Role.AUDITOR in self.roles or self.platform_admin

    def finance_of(self, tenant: str | None) -> bool:
        """May read ``tenant``'s usage and invoices (None: every tenant's)."""
        if not self.has(FINANCE_ROLES):
            return False
        return self.platform or tenant == self.tenant

    def sessions_of(self, tenant: str | None, camera_owner: str | None = None) -> bool:
        """May see (and kick) a live session of ``tenant`` on a camera of ``camera_owner``:
        the platform's admins and operators, the session's own tenant's, and the camera
        owner's admins (the owner answers for its cameras)."""
        if not self.has(SESSION_ROLES):
            return False
        if self.platform or (tenant is not None and tenant == self.tenant):
            return True
        return camera_owner is not None and self.admin_of(camera_owner)


def finance_allowed(
    roles: Iterable[Role], tenant: str, platform_tenant: str, of_tenant: str | None
) -> bool:
    """The finance rule for callers known only by a policy decision (the finance pages)."""
    caller = Caller(tenant, "", frozenset(roles), tenant == platform_tenant)
    return caller.finance_of(of_tenant)


def camera_visible(caller: Caller, camera: Camera, grants: Iterable[Grant]) -> bool:
    """The caller's tenant owns the camera, or has an active grant covering it (and the
    caller holds a role that watches or manages cameras)."""
    if caller.admin_of(camera.owner_tenant):
        return True
    if not caller.has(CAMERA_ROLES):
        return False
    if camera.owner_tenant == caller.tenant:
        return True
    return any(g.active and g.grantee_tenant == caller.tenant and g.covers(camera) for g in grants)


def grant_visible(caller: Caller, grant: Grant) -> bool:
    return caller.admin_of(grant.owner_tenant) or caller.admin_of(grant.grantee_tenant)


def tenant_visible(caller: Caller, tenant: Tenant, grants: Iterable[Grant]) -> bool:
    """A tenant's admins and auditors see their own tenant and the tenants they have active
    grants with (either way); the platform's see every tenant."""
    if not caller.has((Role.ADMIN, Role.AUDITOR)):
        return False
    if caller.platform or tenant.id == caller.tenant:
        return True
    return any(
        g.active and {g.owner_tenant, g.grantee_tenant} == {caller.tenant, tenant.id}
        for g in grants
    )


def platform_status_ok(tenant_id: str, active: bool, platform_tenant: str) -> str | None:
    """Why this status is not allowed, or None."""
    if tenant_id == platform_tenant and not active:
        return "the platform tenant cannot be suspended"
    return None


def issuer_conflict(tenant: Tenant, own_issuer: str, others: Iterable[Tenant]) -> str | None:
    """Why this tenant's identity provider issuer cannot be used, or None."""
    if tenant.issuer is None:
        return None
    if tenant.issuer == own_issuer:
        return "is the gateway's own issuer"
    for other in others:
        if other.id != tenant.id and other.issuer == tenant.issuer:
            return f"already used by tenant {other.id}"
    return None


def may_register_camera(
    caller: Caller, camera_id: str, existing: Camera | None, configured: frozenset[str]
) -> bool:
    """Creating a camera record, or moving it to another owner, for an id the gateway has a
    source for is the platform's to do: whoever writes such an id first must not own it."""
    if camera_id not in configured or caller.platform_admin:
        return True
    return existing is not None and caller.admin_of(existing.owner_tenant)


__all__ = [
    "CAMERA_ROLES",
    "FINANCE_ROLES",
    "SESSION_ROLES",
    "Caller",
    "camera_visible",
    "finance_allowed",
    "grant_visible",
    "issuer_conflict",
    "may_register_camera",
    "platform_status_ok",
    "tenant_visible",
]
