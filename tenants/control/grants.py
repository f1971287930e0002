"""Grants: a camera owner lets a grantee tenant use some of its cameras."""

from __future__ import annotations

from datetime import UTC, datetime

from tenants.audit import AuditAction
from tenants.control.core import Change, Core, operation, require_admin
from tenants.control.core import existing as find
from tenants.control.errors import denied, invalid
from tenants.control.rules import Caller, grant_visible
from tenants.control.schemas import GrantBody, GrantView, RevokeBody
from tenants.model import Grant


class GrantOps:
    """The owner's admins write and revoke a grant; the grantee's admins read it."""

    def __init__(self, core: Core) -> None:
        self.core = core

    @operation("PutGrant")
    async def put(self, caller: Caller, body: GrantBody) -> GrantView:
        g = body.to_domain()
        if not caller.admin_of(g.owner_tenant):
            raise denied(f"may not manage grants of {g.owner_tenant}")
        store = self.core.store

        def op() -> Change[GrantView]:
            existing = find(store.get_grant, g.id)
            was = existing.owner_tenant if existing is not None else None
            why = f"grant {g.id!r} is owned by {was}; owners cannot change"
            self.core.keeps_owner(caller, "grant", g.id, was, g.owner_tenant, why)
            store.get_tenant(g.grantee_tenant)  # NotFound names it
            owned = {c.id for c in store.list_cameras(g.owner_tenant)}
            for cid in sorted(g.camera_ids):
                # One answer for another tenant's camera and for no camera at all.
                if cid not in owned:
                    raise invalid("camera_ids", f"{cid!r} is not a camera of {g.owner_tenant}")
            store.put_grant(g)
            return Change(
                GrantView.of(store.get_grant(g.id)),
                AuditAction.GRANT_CREATED,
                [g.owner_tenant, g.grantee_tenant],
                {
                    "op": "create" if existing is None else "update",
                    "grant": g.id,
                    "owner": g.owner_tenant,
                    "grantee": g.grantee_tenant,
                    "cameras": sorted(g.camera_ids),
                    "tags": sorted(g.camera_tags),
                    "rights": sorted(r.value for r in g.rights),
                },
            )

        return await self.core.write(caller, "PutGrant", op)

    async def _visible(self, caller: Caller, grant_id: str, verb: str = "see") -> Grant:
        try:
            g = await self.core.read(lambda: self.core.store.get_grant(grant_id))
        except Exception:
            raise self.core.missing(caller, "grant", grant_id, verb) from None
        if not grant_visible(caller, g):
            raise self.core.missing(caller, "grant", grant_id, verb)
        return g

    @operation("GetGrant")
    async def get(self, caller: Caller, grant_id: str) -> GrantView:
        require_admin(caller)
        return GrantView.of(await self._visible(caller, grant_id))

    @operation("ListGrants")
    async def list(
        self,
        caller: Caller,
        owner: str | None = None,
        grantee: str | None = None,
        include_revoked: bool = False,
    ) -> list[GrantView]:
        require_admin(caller)
        found = await self.core.read(
            lambda: self.core.store.list_grants(
                owner=owner, grantee=grantee, include_revoked=include_revoked
            )
        )
        return [GrantView.of(g) for g in found if grant_visible(caller, g)]

    @operation("RevokeGrant")
    async def revoke(self, caller: Caller, grant_id: str, body: RevokeBody) -> GrantView:
        require_admin(caller)
        g = await self._visible(caller, grant_id, "manage")
        if not caller.admin_of(g.owner_tenant):
            raise denied(f"only {g.owner_tenant}, the owner, revokes grant {grant_id}")
        store = self.core.store

        def op() -> Change[GrantView]:
            current = store.get_grant(grant_id)
            if not current.active:
                return Change(GrantView.of(current), AuditAction.GRANT_REVOKED, [], changed=False)
            done = store.revoke_grant(grant_id, datetime.now(UTC))
            return Change(
                GrantView.of(done),
                AuditAction.GRANT_REVOKED,
                [done.owner_tenant, done.grantee_tenant],
                {
                    "grant": done.id,
                    "owner": done.owner_tenant,
                    "grantee": done.grantee_tenant,
                    "reason": body.reason,
                },
            )

        return await self.core.write(caller, "RevokeGrant", op)
