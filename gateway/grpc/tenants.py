"""feedgate.v1.TenantService: tenants and their principals."""

from __future__ import annotations

from feedgate.v1 import common_pb2, tenants_pb2

from gateway.grpc import converters as c
from tenants.control import Caller, ControlService
from tenants.control.errors import invalid
from tenants.control.schemas import StatusBody, parse

DESCRIPTOR = tenants_pb2.DESCRIPTOR.services_by_name["TenantService"]


class TenantService:
    def __init__(self, service: ControlService) -> None:
        self.tenants = service.tenants
        self.principals = service.principals

    async def CreateTenant(
        self, req: tenants_pb2.PutTenantRequest, caller: Caller
    ) -> common_pb2.Tenant:
        if not req.HasField("tenant"):
            raise invalid("tenant", "required")
        return c.tenant_pb(await self.tenants.create(caller, c.tenant_body(req.tenant)))

    async def UpdateTenant(
        self, req: tenants_pb2.PutTenantRequest, caller: Caller
    ) -> common_pb2.Tenant:
        if not req.HasField("tenant"):
            raise invalid("tenant", "required")
        return c.tenant_pb(await self.tenants.update(caller, c.tenant_body(req.tenant)))

    async def GetTenant(
        self, req: tenants_pb2.GetTenantRequest, caller: Caller
    ) -> common_pb2.Tenant:
        return c.tenant_pb(await self.tenants.get(caller, c.ident("id", req.id)))

    async def ListTenants(
        self, req: tenants_pb2.ListTenantsRequest, caller: Caller
    ) -> tenants_pb2.ListTenantsResponse:
        found = await self.tenants.list(caller)
        return tenants_pb2.ListTenantsResponse(tenants=[c.tenant_pb(t) for t in found])

    async def SetTenantStatus(
        self, req: tenants_pb2.SetTenantStatusRequest, caller: Caller
    ) -> common_pb2.Tenant:
        tid = c.ident("id", req.id)
        body = parse(StatusBody, {"status": req.status, "reason": req.reason})
        return c.tenant_pb(await self.tenants.set_status(caller, tid, body))

    async def PutPrincipal(
        self, req: tenants_pb2.PutPrincipalRequest, caller: Caller
    ) -> common_pb2.Principal:
        if not req.HasField("principal"):
            raise invalid("principal", "required")
        return c.principal_pb(await self.principals.put(caller, c.principal_body(req)))

    async def ListPrincipals(
        self, req: tenants_pb2.ListPrincipalsRequest, caller: Caller
    ) -> tenants_pb2.ListPrincipalsResponse:
        tid = c.optional_ident("tenant_id", req.tenant_id)
        found = await self.principals.list(caller, tid)
        return tenants_pb2.ListPrincipalsResponse(principals=[c.principal_pb(p) for p in found])

    async def DeletePrincipal(
        self, req: tenants_pb2.DeletePrincipalRequest, caller: Caller
    ) -> tenants_pb2.DeletePrincipalResponse:
        await self.principals.delete(caller, c.ident("id", req.id))
        return tenants_pb2.DeletePrincipalResponse()
