"""The REST API's route table: one ``Route`` row per operation declares its method, path,
parameters, body and response types. The aiohttp handlers and the OpenAPI document are both
generated from the rows, so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from tenants.control import Caller, ControlService
from tenants.control.views import DEFAULT_PAGE, MAX_PAGE


class NoQuery(BaseModel):
    """A route without query parameters."""


class PageQuery(BaseModel):
    """Pagination: every list takes these."""

    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)


@dataclass(frozen=True)
class Call:
    """What a handler gets: the authenticated caller, the path parameters, the validated query
    and body."""

    service: ControlService
    caller: Caller
    path: dict[str, str]
    query: Any
    body: Any


Handler = Callable[[Call], Awaitable[BaseModel | None]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "/v1/cameras/{id}"; path parameters are ids
    operation: str  # the OpenAPI operationId, and the control service's operation name
    summary: str
    handler: Handler
    tag: str
    response: type[BaseModel] | None = None  # None: 204 No Content
    body: type[BaseModel] | None = None
    query: type[BaseModel] = NoQuery
    status: int = 200
    public: bool = False  # no token needed
    # Path parameters are ids (tenants.control.schemas.ID_PATTERN) unless given here.
    patterns: tuple[tuple[str, str], ...] = ()
    errors: tuple[int, ...] = field(default=(400, 401, 403, 404, 409, 503))


__all__ = ["Call", "Handler", "NoQuery", "PageQuery", "Route"]
