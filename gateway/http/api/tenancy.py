"""REST routes of the tenancy objects: tenants, principals, cameras, masks, grants, tokens."""

from __future__ import annotations

from pydantic import BaseModel

from gateway.http.api.routes import Call, PageQuery, Route
from tenants.control.onvif import OnvifBody, OnvifView
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


async def revoke_grant(c: Call) -> BaseModel:
    return await c.service.grants.revoke(c.caller, c.path["id"], c.body)


async def set_onvif(c: Call) -> BaseModel:
    return await c.service.onvif.set(c.caller, c.path["id"], c.body)


async def get_onvif(c: Call) -> BaseModel:
    return await c.service.onvif.get(c.caller, c.path["id"])


async def clear_onvif(c: Call) -> None:
    await c.service.onvif.clear(c.caller, c.path["id"])


async def issue_token(c: Call) -> BaseModel:
    return await c.service.tokens.issue(c.caller, c.body)


def _crud(
    tag: str,
    noun: str,
    view: type[BaseModel],
    body: type[BaseModel],
    query: type[PageQuery],
    *,
    delete: bool = True,
) -> list[Route]:
    """List, get, put (create or update) and delete of one resource, each calling the control
    service's operations of the same name on ``service.<tag>`` (the list with the query's
    filters, in the order they are declared, as its arguments)."""
    filters = [f for f in query.model_fields if f not in PageQuery.model_fields]

    async def lister(c: Call) -> BaseModel:
        found = await getattr(c.service, tag).list(
            c.caller, *(getattr(c.query, f) for f in filters)
        )
        return page(view, found, c.query.offset, c.query.limit)

    async def getter(c: Call) -> BaseModel:
        found: BaseModel = await getattr(c.service, tag).get(c.caller, c.path["id"])
        return found

    async def putter(c: Call) -> BaseModel:
        done: BaseModel = await getattr(c.service, tag).put(c.caller, c.body)
        return done

    async def deleter(c: Call) -> None:
        await getattr(c.service, tag).delete(c.caller, c.path["id"])

    plural = f"/v1/{tag}"
    name = noun.capitalize()
    rows = [
        Route("GET", plural, f"List{name}s", f"List the {noun}s you may see", lister, tag,
              page_of(view), query=query),
        Route("GET", f"{plural}/{{id}}", f"Get{name}", f"Show a {noun}", getter, tag, view),
        Route("PUT", f"{plural}/{{id}}", f"Put{name}", f"Create or update a {noun}", putter,
              tag, view, body=body),
    ]  # fmt: skip
    if delete:
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
    *_crud("principals", "principal", PrincipalView, PrincipalBody, PrincipalQuery),
    *_crud("cameras", "camera", CameraView, CameraBody, CameraQuery),
    Route("PUT", "/v1/cameras/{id}/onvif", "SetCameraOnvif",
          "Set how the gateway steers a camera over ONVIF (the password is write-only)",
          set_onvif, "cameras", OnvifView, body=OnvifBody),
    Route("GET", "/v1/cameras/{id}/onvif", "GetCameraOnvif",
          "Show a camera's ONVIF settings (never the password)", get_onvif, "cameras",
          OnvifView),
    Route("DELETE", "/v1/cameras/{id}/onvif", "ClearCameraOnvif",
          "Forget a camera's ONVIF settings", clear_onvif, "cameras"),
    *_crud("masks", "mask", MaskView, MaskBody, MaskQuery),
    *_crud("grants", "grant", GrantView, GrantBody, GrantQuery, delete=False),
    Route("POST", "/v1/grants/{id}/revoke", "RevokeGrant", "Revoke a grant (its owner)",
          revoke_grant, "grants", GrantView, body=RevokeBody),
    Route("POST", "/v1/tokens", "IssueToken", "Issue a bearer token for a principal",
          issue_token, "tokens", TokenView, body=TokenBody, status=201),
]  # fmt: skip
