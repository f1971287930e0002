"""feedgate.v1.GrantService and TokenService: sharing cameras, and bearer tokens."""

from __future__ import annotations

from feedgate.v1 import common_pb2, grants_pb2, tokens_pb2

from gateway.grpc import converters as c
from tenants.control import Caller, ControlService
from tenants.control.errors import invalid
from tenants.control.schemas import RevokeBody, parse

DESCRIPTOR = grants_pb2.DESCRIPTOR.services_by_name["GrantService"]
TOKEN_DESCRIPTOR = tokens_pb2.DESCRIPTOR.services_by_name["TokenService"]


class GrantService:
    def __init__(self, service: ControlService) -> None:
        self.grants = service.grants

    async def PutGrant(self, req: grants_pb2.PutGrantRequest, caller: Caller) -> common_pb2.Grant:
        if not req.HasField("grant"):
            raise invalid("grant", "required")
        return c.grant_pb(await self.grants.put(caller, c.grant_body(req.grant)))

    async def GetGrant(self, req: grants_pb2.GetGrantRequest, caller: Caller) -> common_pb2.Grant:
        return c.grant_pb(await self.grants.get(caller, c.ident("id", req.id)))

    async def ListGrants(
        self, req: grants_pb2.ListGrantsRequest, caller: Caller
    ) -> grants_pb2.ListGrantsResponse:
        owner = c.optional_ident("owner_tenant", req.owner_tenant)
        grantee = c.optional_ident("grantee_tenant", req.grantee_tenant)
        found = await self.grants.list(caller, owner, grantee, req.include_revoked)
        return grants_pb2.ListGrantsResponse(grants=[c.grant_pb(g) for g in found])

    async def RevokeGrant(
        self, req: grants_pb2.RevokeGrantRequest, caller: Caller
    ) -> common_pb2.Grant:
        gid = c.ident("id", req.id)
        body = parse(RevokeBody, {"reason": req.reason})
        return c.grant_pb(await self.grants.revoke(caller, gid, body))


class TokenService:
    PUBLIC = frozenset({"GetJwks"})

    def __init__(self, service: ControlService) -> None:
        self.tokens = service.tokens

    async def IssueToken(
        self, req: tokens_pb2.IssueTokenRequest, caller: Caller
    ) -> tokens_pb2.IssueTokenResponse:
        return c.token_pb(await self.tokens.issue(caller, c.token_body(req)))

    async def GetJwks(
        self, req: tokens_pb2.GetJwksRequest, caller: Caller
    ) -> tokens_pb2.GetJwksResponse:
        return tokens_pb2.GetJwksResponse(jwks_json=self.tokens.jwks_json())
