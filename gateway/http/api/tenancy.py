"""REST routes of the tenancy objects: tenants, principals, cameras, masks, grants, tokens."""

from __future__ import annotations

from pydantic import BaseModel

from gateway.http.api.routes import Call, Handler, PageQuery, Route
from tenants.control.schemas import (
    CameraBody,
    CameraView,
    GrantBody,
    GrantView,
    Id,
    MaskBody,
    MaskView,
    PrincipalBody,
    PrincipalView,
    RevokeBody,
    StatusBody,
    TenantBody,
    TenantView,
    TokenBody,
    TokenView,
)
from tenants.control.views import page, page_of


class PrincipalQuery(PageQuery):
    tenant_id: Id | None = None


class CameraQuery(PageQuery):
    owner: Id | None = None


class MaskQuery(PageQuery):
    camera_id: Id | None = None


class GrantQuery(PageQuery):
    owner: Id | None = None
    grantee: Id | None = None
    include_revoked: bool = False


# ----------------------------------------------------------------------------- handlers


async def list_tenants(c: Call) -> BaseModel:
    return page(TenantView, await c.service.tenants.list(c.caller), c.query.offset, c.query.limit)


async def create_tenant(c: Call) -> BaseModel:
    return await c.service.tenants.create(c.caller, c.body)


async def get_tenant(c: Call) -> BaseModel:
    return await c.service.tenants.get(c.caller, c.path["id"])


async def update_tenant(c: Call) -> BaseModel:
    return await c.service.tenants.update(c.caller, c.body)


async def set_tenant_status(c: Call) -> BaseModel:
    return await c.service.tenants.set_status(c.caller, c.path["id"], c.body)


async def list_principals(c: Call) -> BaseModel:
    found = await c.service.principals.list(c.caller, c.query.tenant_id)
    return page(PrincipalView, found, c.query.offset, c.query.limit)


async def get_principal(c: Call) -> BaseModel:
    return await c.service.principals.get(c.caller, c.path["id"])


async def put_principal(c: Call) -> BaseModel:
    return await c.service.principals.put(c.caller, c.body)


async def delete_principal(c: Call) -> None:
    await c.service.principals.delete(c.caller, c.path["id"])


async def list_cameras(c: Call) -> BaseModel:
    found = await c.service.cameras.list(c.caller, c.query.owner)
    return page(CameraView, found, c.query.offset, c.query.limit)


async def get_camera(c: Call) -> BaseModel:
    return await c.service.cameras.get(c.caller, c.path["id"])


async def put_camera(c: Call) -> BaseModel:
    return await c.service.cameras.put(c.caller, c.body)


async def delete_camera(c: Call) -> None:
    await c.service.cameras.delete(c.caller, c.path["id"])


async def list_masks(c: Call) -> BaseModel:
    found = await c.service.masks.list(c.caller, c.query.camera_id)
    return page(MaskView, found, c.query.offset, c.query.limit)


async def get_mask(c: Call) -> BaseModel:
    return await c.service.masks.get(c.caller, c.path["id"])


async def put_mask(c: Call) -> BaseModel:
    return await c.service.masks.put(c.caller, c.body)


async def delete_mask(c: Call) -> None:
    await c.service.masks.delete(c.caller, c.path["id"])


async def list_grants(c: Call) -> BaseModel:
    q = c.query
    found = await c.service.grants.list(c.caller, q.owner, q.grantee, q.include_revoked)
    return page(GrantView, found, q.offset, q.limit)


async def get_grant(c: Call) -> BaseModel:
    return await c.service.grants.get(c.caller, c.path["id"])


async def put_grant(c: Call) -> BaseModel:
    return await c.service.grants.put(c.caller, c.body)


async def revoke_grant(c: Call) -> BaseModel:
    return await c.service.grants.revoke(c.caller, c.path["id"], c.body)


async def issue_token(c: Call) -> BaseModel:
    return await c.service.tokens.issue(c.caller, c.body)


def _crud(
    tag: str,
    noun: str,
    view: type[BaseModel],
    body: type[BaseModel],
    query: type[BaseModel],
    handlers: tuple[Handler, Handler, Handler, Handler | None],
) -> list[Route]:
    """List, get, put (create or update) and delete of one resource."""
    plural = f"/v1/{tag}"
    lister, getter, putter, deleter = handlers
    name = noun.capitalize()
    rows = [
        Route("GET", plural, f"List{name}s", f"List the {noun}s you may see", lister, tag,
              page_of(view), query=query),
        Route("GET", f"{plural}/{{id}}", f"Get{name}", f"Show a {noun}", getter, tag, view),
        Route("PUT", f"{plural}/{{id}}", f"Put{name}", f"Create or update a {noun}", putter,
              tag, view, body=body),
    ]  # fmt: skip
    if deleter is not None:
        rows.append(
            Route("DELETE", f"{plural}/{{id}}", f"Delete{name}", f"Delete a {noun}", deleter, tag)
        )
    return rows


ROUTES: list[Route] = [
    Route("GET", "/v1/tenants", "ListTenants", "List the tenants you may see", list_tenants,
          "tenants", page_of(TenantView), query=PageQuery),
    Route("POST", "/v1/tenants", "CreateTenant", "Create a tenant (platform admins)",
          create_tenant, "tenants", TenantView, body=TenantBody, status=201),
    Route("GET", "/v1/tenants/{id}", "GetTenant", "Show a tenant", get_tenant, "tenants",
          TenantView),
    Route("PUT", "/v1/tenants/{id}", "UpdateTenant", "Update a tenant (platform admins)",
          update_tenant, "tenants", TenantView, body=TenantBody),
    Route("POST", "/v1/tenants/{id}/status", "SetTenantStatus",
          "Suspend or activate a tenant (platform admins)", set_tenant_status, "tenants",
          TenantView, body=StatusBody),
    *_crud("principals", "principal", PrincipalView, PrincipalBody, PrincipalQuery,
           (list_principals, get_principal, put_principal, delete_principal)),
    *_crud("cameras", "camera", CameraView, CameraBody, CameraQuery,
           (list_cameras, get_camera, put_camera, delete_camera)),
    *_crud("masks", "mask", MaskView, MaskBody, MaskQuery,
           (list_masks, get_mask, put_mask, delete_mask)),
    *_crud("grants", "grant", GrantView, GrantBody, GrantQuery,
           (list_grants, get_grant, put_grant, None)),
    Route("POST", "/v1/grants/{id}/revoke", "RevokeGrant", "Revoke a grant (its owner)",
          revoke_grant, "grants", GrantView, body=RevokeBody),
    Route("POST", "/v1/tokens", "IssueToken", "Issue a bearer token for a principal",
          issue_token, "tokens", TokenView, body=TokenBody, status=201),
]  # fmt: skip
