"""The REST API on the gateway's aiohttp app: ``/v1/...`` routes generated from the route
tables, bearer tokens authenticated by the control service (the same decision and the same
audit entries as gRPC), errors as problem documents, and ``/v1/openapi.json``.

Adding a resource: put ``Route`` rows in a module of this package and add its ``ROUTES`` to
``ROUTE_TABLES`` (or pass them to :func:`add_api_routes` as ``extra``). A row calling a service
other than the ControlService names its type (``Route.service``); pass the process's instance
in ``services``, and a process without it serves and documents none of its rows."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from gateway.http import exports, ptz
from gateway.http.api import oversight, tenancy
from gateway.http.api.openapi import openapi
from gateway.http.api.problems import HTTP_CODES, from_error, problem
from gateway.http.api.routes import Binary, Call, Route, Services
from gateway.http.csrf import SESSION_COOKIE, cookie_refusal
from gateway.live import Refusal
from gateway.sar import routes as sar
from tenants.control import Caller, Code, ControlError, ControlService
from tenants.control.errors import invalid
from tenants.control.schemas import ID_PATTERN, parse

log = logging.getLogger(__name__)

ROUTE_TABLES: list[list[Route]] = [
    tenancy.ROUTES, oversight.ROUTES, exports.ROUTES, sar.ROUTES, ptz.ROUTES
]  # fmt: skip
API_PREFIX = "/v1/"
OPENAPI_PATH = "/v1/openapi.json"
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_JSON_TYPES = ("application/json", "application/merge-patch+json")


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    token = value.strip() if scheme.lower() == "bearer" else ""
    return token or None


async def credential(
    request: web.Request, service: ControlService, operation: str
) -> tuple[Caller, str | None]:
    """Who is calling, and the credential they presented: a bearer token, else the console's
    session cookie, which is taken only from this gateway's own pages and, for a change, with
    the CSRF header (refused and audited otherwise)."""
    peer = request.remote or ""
    token = bearer(request)
    if token is None and request.cookies.get(SESSION_COOKIE):
        why = cookie_refusal(request)
        if why is not None:
            error = ControlError(Code.FORBIDDEN, why)
            await service.core.refused(Caller("", "", frozenset(), False, "http", peer),
                                       operation, error)  # fmt: skip
            raise error
        token = request.cookies[SESSION_COOKIE]
    return await service.authenticate(token, via="http", peer=peer), token


def _json(model: BaseModel | None, route: Route) -> web.Response:
    if model is None:
        return web.Response(status=204, headers=_HEADERS)
    headers = _HEADERS
    if route.location is not None:
        headers = {**_HEADERS, "Location": route.location.format_map(dict(model))}
    return web.Response(
        text=model.model_dump_json(),
        status=route.status,
        content_type="application/json",
        headers=headers,
    )


async def _read(request: web.Request, limit: int | None) -> bytes:
    if limit is None:
        return await request.read()  # bounded by the app's client_max_size
    length = request.content_length
    if length is not None and length > limit:
        raise web.HTTPRequestEntityTooLarge(limit, length)
    raw = bytearray()
    while chunk := await request.content.read(limit + 1 - len(raw)):
        raw += chunk
        if len(raw) > limit:
            raise web.HTTPRequestEntityTooLarge(limit, len(raw))
    return bytes(raw)


async def _body(request: web.Request, route: Route) -> Any:
    assert route.body is not None
    raw = await _read(request, route.max_body)  # too large is said first, whatever it is
    ctype = request.content_type
    if ctype not in _JSON_TYPES:
        raise invalid("body", f"expected application/json, not {ctype or 'nothing'}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("body", "is not JSON") from None
    body = parse(route.body, data)
    path_id = request.match_info.get("id")
    if path_id is not None and getattr(body, "id", path_id) != path_id:
        raise invalid("id", "does not match the id in the path")
    return body


def endpoint(
    route: Route, service: ControlService, services: Services | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of one row: who is calling, then the path, query and body checked
    against the row's types, then its handler; every refusal a problem document."""
    if services is None:
        services = Services()
    patterns = {name: re.compile(p) for name, p in route.patterns}
    id_re = re.compile(ID_PATTERN)

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            # Who is calling comes first: nothing about the request is looked at before.
            caller, token = await credential(request, service, route.operation)
            path = dict(request.match_info)
            for name, value in path.items():
                if not patterns.get(name, id_re).match(value):
                    raise invalid(name, "is not a valid id")
            query = parse(route.query, {k: request.query.getall(k)[-1] for k in request.query})
            body = await _body(request, route) if route.body is not None else None
            call = Call(service, caller, path, query, body, token, services, request)
            result = await route.handler(call)
            if isinstance(result, web.StreamResponse):
                assert isinstance(route.response, Binary), route.operation
                return result
            return _json(result, route)
        except (ControlError, Refusal) as exc:
            return from_error(exc)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("REST API: %s failed", route.operation)
            return problem(500, "internal", "internal error")

    return handle


@web.middleware
async def api_problems(request: web.Request, handler: Any) -> web.StreamResponse:
    """The HTTP layer's own refusals under /v1/ as problem documents too."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except web.HTTPException as exc:
        if not request.path.startswith(API_PREFIX) or exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "invalid_argument" if exc.status < 500 else "internal")
        return problem(exc.status, code, exc.reason)


def all_routes(extra: Iterable[Route] = (), services: Services | None = None) -> list[Route]:
    """The rows this process serves: those calling only the ControlService, and those whose
    service it has (every row when ``services`` is None: the whole API, for documents)."""
    rows = [r for table in ROUTE_TABLES for r in table] + list(extra)
    if services is None:
        return rows
    return [r for r in rows if r.service is None or services.has(r.service)]


def add_api_routes(
    app: web.Application,
    service: ControlService,
    *,
    services: Iterable[object] = (),
    extra: Iterable[Route] = (),
) -> None:
    """Serve the route tables (and ``extra``) on ``app``, calling ``service`` and, for rows
    naming another service, the one of that type among ``services``."""
    registry = Services(*services)
    routes = all_routes(extra, registry)
    document = json.dumps(openapi(routes))

    async def spec(request: web.Request) -> web.Response:
        return web.Response(text=document, content_type="application/json")

    app.router.add_get(OPENAPI_PATH, spec)
    for r in routes:
        handler = endpoint(r, service, registry)
        if r.method == "GET":  # and HEAD, as RFC 9110 has it (an export's size before its bytes)
            app.router.add_get(r.path, handler)
        else:
            app.router.add_route(r.method, r.path, handler)


__all__ = [
    "API_PREFIX",
    "OPENAPI_PATH",
    "ROUTE_TABLES",
    "add_api_routes",
    "all_routes",
    "api_problems",
]
