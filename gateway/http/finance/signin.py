"""Signing in to the finance view, and out.

A finance user is given a sign-in link, ``/finance/login?token=...``. Opening it changes
nothing: the page checks the token and shows whose account it is, with a button. Only the
POST of that form, from this site (see :mod:`gateway.http.csrf`), sets the session cookie, so
another site cannot sign a browser in as someone else (login CSRF). The cookie holds the token,
HttpOnly, SameSite=Strict, scoped to ``/finance``, for as long as the token lives; the token is
never logged, and never repeated back except into that one form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiohttp import web

from gateway.http import pages
from gateway.http.csrf import FormToken, same_origin
from gateway.http.keys import GATEWAY_KEY
from tenants.control.rules import finance_allowed
from tenants.policy import AccessRequest, Action, Decision

__all__ = ["COOKIE", "COOKIE_PATH", "SignIn"]

COOKIE = "feedgate_token"
COOKIE_PATH = "/finance"
FORM_TOKEN = FormToken("feedgate_csrf", COOKIE_PATH)

# Where sign-in may send the browser afterwards: a path inside the finance view, nothing else.
_NEXT = re.compile(r"^/finance(/[A-Za-z0-9._~-]+)*/?(\?[A-Za-z0-9=&._~%-]*)?$")
_MAX_TOKEN = 8192
_CROSS_SITE = "Sign in from this gateway's own sign-in page."


def _next(raw: object) -> str:
    if not isinstance(raw, str) or not _NEXT.match(raw) or "//" in raw or ".." in raw:
        return "/finance"
    return raw


class SignIn:
    """The sign-in and sign-out handlers (``names``: tenant id -> name)."""

    def __init__(self, names: Callable[[], dict[str, str]], platform_tenant: str) -> None:
        self._names = names
        self._platform = platform_tenant

    def _context(self, **more: Any) -> dict[str, Any]:
        network = self._names().get(self._platform, self._platform)
        return {"network": network, "section": "Finance", **more}

    def _fail(self, request: web.Request, status: int, message: str) -> NoReturn:
        pages.fail(request, status, message, context=self._context())

    async def _check(self, request: web.Request, token: str) -> Decision:
        """The policy's decision on ``token``, or an error page."""
        gateway = request.app.get(GATEWAY_KEY)
        tenancy = gateway.tenancy if gateway is not None else None
        if tenancy is None:
            self._fail(request, 401, "Sign-in is not available: tenancy is not enabled here.")
        if len(token) > _MAX_TOKEN:
            self._fail(request, 401, "That sign-in link is not valid or has expired.")
        decision = await tenancy.policy.authorize(
            AccessRequest(Action.API, "http", token=token, peer=request.remote or "")
        )
        if not decision.allow:
            self._fail(request, 401, "That sign-in link is not valid or has expired.")
        tenant = decision.tenant or ""
        if not finance_allowed(decision.roles, tenant, self._platform, tenant):
            self._fail(request, 403, "Your account does not have the finance or admin role.")
        return decision

    async def form(self, request: web.Request) -> web.StreamResponse:
        """GET: the sign-in form; with a link's token, whose account it opens."""
        token = request.query.get("token", "").strip()
        account: dict[str, str] | None = None
        if token:
            decision = await self._check(request, token)
            tenant = decision.tenant or ""
            account = {
                "principal": decision.principal or "",
                "tenant": tenant,
                "tenant_name": self._names().get(tenant, tenant),
            }
        csrf = FORM_TOKEN.issue(request)
        response = pages.render(
            request,
            "finance/signin.html",
            self._context(
                title="Sign in",
                account=account,
                token=token,
                next=_next(request.query.get("next")),
                csrf=csrf,
            ),
        )
        FORM_TOKEN.attach(request, response, csrf)
        return response

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        """POST from the form: check where it comes from, then the token; set the cookie."""
        if not same_origin(request):
            self._fail(request, 403, _CROSS_SITE)
        form = await request.post()
        if not FORM_TOKEN.valid(request, form.get("csrf")):
            self._fail(request, 403, _CROSS_SITE)
        token = form.get("token")
        if not isinstance(token, str) or not token.strip():
            self._fail(request, 401, "Paste the token from your sign-in link.")
        decision = await self._check(request, token.strip())
        response = web.HTTPSeeOther(_next(form.get("next")), headers=pages.page_headers())
        max_age: int | None = None
        if decision.expires_at is not None:
            left = int((decision.expires_at - datetime.now(UTC)).total_seconds())
            max_age = max(left, 1)
        response.set_cookie(
            COOKIE,
            token.strip(),
            httponly=True,
            samesite="Strict",
            path=COOKIE_PATH,
            secure=request.secure,
            max_age=max_age,
        )
        FORM_TOKEN.clear(response)
        raise response

    async def sign_out_form(self, request: web.Request) -> web.StreamResponse:
        """GET: a button (a GET changes nothing, so a link from elsewhere cannot sign out)."""
        return pages.render(
            request, "finance/signout.html", self._context(title="Sign out", done=False)
        )

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            self._fail(request, 403, "Sign out from this gateway's own pages.")
        response = pages.render(
            request, "finance/signout.html", self._context(title="Signed out", done=True)
        )
        response.del_cookie(COOKIE, path=COOKIE_PATH)
        return response
