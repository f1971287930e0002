"""Signing in to the console (and the finance view), and out.

``GET /console/login`` shows the form: a principal's name and password, or, opened from a
sign-in link (``?token=...``), whose account the link opens and one button. Opening a link
changes nothing; only the form's POST from this gateway's own page (``Sec-Fetch-Site``/
``Origin`` and the double-submit form token: see :mod:`gateway.http.csrf`) signs the browser
in, so another site can neither sign a browser in as someone else (login CSRF) nor spend a
link by sending the browser to it. The control service (``tenants/control/signin.py``)
checks the password or the link, audits the sign-in and gives a session token of our own; it
goes into the session cookie (HttpOnly, SameSite=Strict, path ``/``, Secure under HTTPS, for
the session's lifetime), and the CSRF value is replaced. Failed sign-ins are rate-limited and
audited there.

``/finance/login`` is the same sign-in, landing in the finance view, and refusing an account
without the finance or admin role.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from aiohttp import web

from gateway.http import pages
from gateway.http.console.frame import LOGIN, LOGOUT, Frame, safe_next
from gateway.http.csrf import SESSION_COOKIE, SESSION_CSRF, same_origin
from tenants.control import Code, ControlError
from tenants.control.signin import BAD_LINK, ConsoleSession
from tenants.model import Role

__all__ = ["SignIn"]

_CROSS_SITE = "Sign in from this gateway's own sign-in page."
_BAD_LINK = f"{BAD_LINK[0].upper()}{BAD_LINK[1:]}."
_MAX_FIELD = 8192


class SignIn:
    """The sign-in and sign-out handlers at ``action`` (``/console/login`` or
    ``/finance/login``). ``admits``: whether an account with these roles may sign in here."""

    def __init__(
        self,
        frame: Frame,
        ttl: timedelta,
        *,
        action: str = LOGIN,
        sign_out_action: str = LOGOUT,
        default_next: str = "/console",
        section: str = "Console",
        admits: Callable[[frozenset[Role]], bool] = lambda roles: True,
        refused: str = "",
    ) -> None:
        self.frame = frame
        self.service = frame.service
        self.ttl = ttl
        self.action = action
        self.sign_out_action = sign_out_action
        self.default_next = default_next
        self.section = section
        self.admits = admits
        self.refused = refused

    def _context(self, **more: Any) -> dict[str, Any]:
        return {"network": self.frame.network(), "section": self.section, **more}

    def _fail(self, request: web.Request, status: int, message: str) -> NoReturn:
        pages.fail(request, status, message, context=self._context())

    def _form(
        self, request: web.Request, *, status: int = 200, error: str = "", **more: Any
    ) -> web.Response:
        csrf = SESSION_CSRF.issue(request)
        context = {
            "title": "Sign in",
            "action": self.action,
            "next": safe_next(request.query.get("next"), self.default_next),
            "csrf": csrf,
            "error": error,
            "account": None,
            "token": "",
            "principal": "",
            **more,
        }
        response = pages.render(request, "signin.html", self._context(**context), status=status)
        SESSION_CSRF.attach(request, response, csrf)
        return response

    async def form(self, request: web.Request) -> web.StreamResponse:
        """GET: the form; with a link's token, whose account it opens (nothing is used up)."""
        token = request.query.get("token", "").strip()
        if not token:
            return self._form(request)
        try:
            account = await self.service.signin.account(
                token[:_MAX_FIELD], peer=request.remote or "", via="console"
            )
        except ControlError:
            self._fail(request, 401, _BAD_LINK)
        if not self.admits(account.roles):
            self._fail(request, 403, self.refused)
        names = self.frame.names()
        shown = {
            "principal": account.principal,
            "name": account.name,
            "tenant": account.tenant,
            "tenant_name": names.get(account.tenant, account.tenant),
        }
        return self._form(request, account=shown, token=token)

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        """POST from the form: where it comes from first, then the password or the link."""
        if not same_origin(request):
            self._fail(request, 403, _CROSS_SITE)
        form = await request.post()
        if not SESSION_CSRF.valid(request, form.get("csrf")):
            self._fail(request, 403, _CROSS_SITE)
        fields = {k: v[:_MAX_FIELD] for k, v in form.items() if isinstance(v, str)}
        peer = request.remote or ""
        signin = self.service.signin
        try:
            if fields.get("token", "").strip():
                session = await signin.link(
                    fields["token"].strip(), ttl=self.ttl, peer=peer, via="console"
                )
            else:
                session = await signin.password(
                    fields.get("principal", "").strip(),
                    fields.get("password", ""),
                    ttl=self.ttl,
                    peer=peer,
                    via="console",
                )
        except ControlError as exc:
            link = bool(fields.get("token", "").strip())
            if exc.code == Code.FORBIDDEN:  # the right credentials, but e.g. a suspended tenant
                status, message = 403, str(exc)
            elif link:
                status, message = 401, _BAD_LINK
            else:
                status, message = 401, "That name and password do not match."
            principal = "" if link else fields.get("principal", "")[:64]
            return self._form(request, status=status, error=message, principal=principal)
        if not self.admits(session.roles):
            self._fail(request, 403, self.refused)
        return self._signed_in(request, session, safe_next(fields.get("next"), self.default_next))

    def _signed_in(self, request: web.Request, session: ConsoleSession, target: str) -> NoReturn:
        response = web.HTTPSeeOther(target, headers=pages.page_headers())
        left = int((session.expires_at - datetime.now(UTC)).total_seconds())
        response.set_cookie(
            SESSION_COOKIE,
            session.token,
            httponly=True,
            samesite="Strict",
            path="/",
            secure=request.secure,
            max_age=max(left, 1),
        )
        # A new CSRF value for the new session: one planted before sign-in is worth nothing.
        SESSION_CSRF.attach(request, response, SESSION_CSRF.fresh())
        raise response

    async def sign_out_form(self, request: web.Request) -> web.StreamResponse:
        """GET: a button (a GET changes nothing, so a link from elsewhere cannot sign out)."""
        csrf = SESSION_CSRF.issue(request)
        response = pages.render(
            request,
            "signout.html",
            self._context(title="Sign out", done=False, action=self.sign_out_action, csrf=csrf),
        )
        SESSION_CSRF.attach(request, response, csrf)
        return response

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            self._fail(request, 403, "Sign out from this gateway's own pages.")
        response = pages.render(
            request,
            "signout.html",
            self._context(title="Signed out", done=True, action=self.sign_out_action, csrf=""),
        )
        response.del_cookie(SESSION_COOKIE, path="/")
        SESSION_CSRF.clear(response)
        return response
