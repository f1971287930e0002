"""Errors as RFC 9457 problem documents (``application/problem+json``) with a stable
``code``: the control service's error codes, plus the HTTP layer's own (bad JSON, too large,
no such route)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from gateway.live import Refusal
from tenants.control import Code, ControlError

CONTENT_TYPE = "application/problem+json"

STATUS = {
    Code.INVALID: 400,
    Code.UNAUTHENTICATED: 401,
    Code.FORBIDDEN: 403,
    Code.NOT_FOUND: 404,
    Code.CONFLICT: 409,
    Code.PRECONDITION: 409,
    Code.UNAVAILABLE: 503,
    Code.INTERNAL: 500,
}
TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable",
    423: "Locked",
    429: "Too many requests",
    500: "Internal error",
    502: "Bad gateway",
    503: "Unavailable",
    504: "Gateway timeout",
}
# The codes of the HTTP layer's own problems (the control service's are tenants.control.Code).
HTTP_CODES = {404: "no_route", 405: "method_not_allowed", 413: "too_large", 415: "not_json"}


class Problem(BaseModel):
    """RFC 9457 problem details, with feedgate's stable ``code``."""

    type: str = Field(description="urn:feedgate:problem:<code>")
    title: str
    status: int
    detail: str
    code: str = Field(description="stable: switch on this, not on the detail text")
    field: str | None = Field(None, description="the request field at fault, if one is")


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> web.Response:
    """The problem document; ``extra`` members (RFC 9457 extensions) never replace the
    standard ones."""
    body = Problem(
        type=f"urn:feedgate:problem:{code}",
        title=TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        field=field,
    )
    sent = dict(headers or {})
    if status == 401:
        sent.setdefault("WWW-Authenticate", 'Bearer realm="feedgate"')
    return web.Response(
        text=json.dumps({**(extra or {}), **body.model_dump(exclude_none=True)}),
        status=status,
        content_type=CONTENT_TYPE,
        headers=sent or None,
    )


def from_error(exc: ControlError | Refusal) -> web.Response:
    """The problem document of a control error, or of another service's refusal (its status,
    code and headers as it gave them)."""
    if isinstance(exc, Refusal):
        return problem(exc.status, exc.code, exc.reason, headers=exc.headers, extra=exc.extra)
    return problem(STATUS[exc.code], exc.code.value, str(exc), field=exc.field)


__all__ = ["CONTENT_TYPE", "HTTP_CODES", "STATUS", "Problem", "from_error", "problem"]
