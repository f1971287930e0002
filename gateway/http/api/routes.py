"""The REST API's route table: one ``Route`` row per operation declares its method, path,
parameters, body and response types. The aiohttp handlers and the OpenAPI document are both
generated from the rows, so they cannot drift apart.

Most rows call the ControlService (``Call.service``). A row may call another of the process's
services instead (the exports, subject access requests): it names that service's type in
``service``, its handler gets it with ``Call.use``, and the row is served (and documented) only
by a process that has the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from tenants.control import Caller, Code, ControlError, ControlService
from tenants.control.views import DEFAULT_PAGE, MAX_PAGE

_S = TypeVar("_S")


EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


def _instant(t: datetime) -> datetime:
    """In UTC, and within years the recordings and the database's microseconds can hold
    (0001-01-01T00:00:00+05:00 is a valid RFC 3339 time with no UTC datetime at all)."""
    try:
        utc = t.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"must be from {EARLIEST.year} to {LATEST.year - 1} (UTC)")
    return utc


Instant = Annotated[
    AwareDatetime,
    AfterValidator(_instant),
    Field(description="RFC 3339 with an offset, 1970-2199"),
]


class NoQuery(BaseModel):
    """A route without query parameters."""


class PageQuery(BaseModel):
    """Pagination: every list takes these."""

    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)


class Services:
    """The services of this process that routes may call besides the ControlService, one
    per type."""

    def __init__(self, *services: object) -> None:
        self._by_type = {type(s): s for s in services if s is not None}

    def has(self, kind: type[Any]) -> bool:
        return any(issubclass(t, kind) for t in self._by_type)

    def get(self, kind: type[_S]) -> _S:
        for t, s in self._by_type.items():
            if issubclass(t, kind):
                return s  # type: ignore[return-value]
        raise ControlError(Code.UNAVAILABLE, f"this gateway has no {kind.__name__}")


@dataclass(frozen=True)
class Call:
    """What a handler gets: the authenticated caller, the path parameters, the validated query
    and body; for services that decide per object themselves, the credential it presented
    (``token``; where from is ``caller.peer``)."""

    service: ControlService
    caller: Caller
    path: dict[str, str]
    query: Any
    body: Any
    token: str | None = None
    services: Services = field(default_factory=Services)
    # For a handler that streams its answer itself (Server-Sent Events): it prepares it.
    request: web.Request | None = None

    def use(self, kind: type[_S]) -> _S:
        """The process's service of type ``kind`` (the route's ``service``)."""
        return self.services.get(kind)


Handler = Callable[[Call], Awaitable[BaseModel | web.StreamResponse | None]]


@dataclass(frozen=True)
class Binary:
    """A response that is not JSON (a file, a signed manifest as its exact bytes): the handler
    returns its own ``web.StreamResponse``; the document declares the media type."""

    media_type: str
    description: str
    ranges: bool = False  # HTTP Range requests answered (206, 416)
    schema: type[BaseModel] | None = None  # a JSON document's declared shape


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "/v1/cameras/{id}"; path parameters are ids
    operation: str  # the OpenAPI operationId, and the control service's operation name
    summary: str
    handler: Handler
    tag: str
    response: type[BaseModel] | Binary | None = None  # None: 204 No Content
    body: type[BaseModel] | None = None
    query: type[BaseModel] = NoQuery
    status: int = 200
    public: bool = False  # no token needed
    # Path parameters are ids (tenants.control.schemas.ID_PATTERN) unless given here.
    patterns: tuple[tuple[str, str], ...] = ()
    errors: tuple[int, ...] = field(default=(400, 401, 403, 404, 409, 503))
    # The service the handler calls besides the ControlService (Call.use); None: only that.
    service: type[Any] | None = None
    # A Location header made from the response's fields: "/v1/exports/{id}".
    location: str | None = None
    max_body: int | None = None  # bytes; None: the app's limit


__all__ = ["Binary", "Call", "Handler", "Instant", "NoQuery", "PageQuery", "Route", "Services"]
