"""What every console page shares: who is signed in (the session cookie, judged by the control
service like any REST call, refusals audited), the sections their roles open, the CSRF value
their forms and scripts send back, and the page frame.

Pages are rendered from the control service's own answers for the signed-in caller, so a page
shows exactly what the REST API would give that caller, and a section their roles do not open
is refused by the same rule (a 403 page), not merely left out of the navigation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlencode

from aiohttp import web

from gateway.http import pages
from gateway.http.csrf import SESSION_COOKIE, SESSION_CSRF, same_origin
from gateway.http.pages import NavItem
from tenants.control import Caller, Code, ControlError, ControlService
from tenants.control.errors import denied
from tenants.control.rules import CAMERA_ROLES, FINANCE_ROLES, SESSION_ROLES
from tenants.model import Role

__all__ = ["EXPORT_ROLES", "LOGIN", "LOGOUT", "SAR_ROLES", "Frame", "Signed", "safe_next"]

LOGIN = "/console/login"
LOGOUT = "/console/logout"
_NEXT = re.compile(r"^/(console|finance)(/[A-Za-z0-9._~-]+)*/?(\?[A-Za-z0-9=&._~%,-]*)?$")
# Who the Exports page is for (investigators and admins export; auditors read the list), and
# who handles subject access requests (gateway.sar.service says the same: operators open them,
# oversight reads them). Each action is decided again by the export or SAR service.
EXPORT_ROLES = frozenset({Role.INVESTIGATOR, Role.ADMIN, Role.AUDITOR})
SAR_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.INVESTIGATOR, Role.AUDITOR})
_STATUS = {
    Code.INVALID: 400,
    Code.FORBIDDEN: 403,
    Code.NOT_FOUND: 404,
    Code.CONFLICT: 409,
    Code.PRECONDITION: 409,
}


def safe_next(raw: object, default: str = "/console") -> str:
    """Where sign-in may send the browser: a path of the console or the finance view only."""
    if not isinstance(raw, str) or not _NEXT.match(raw) or "//" in raw or ".." in raw:
        return default
    return raw


@dataclass(frozen=True)
class Signed:
    """The signed-in caller of one request, and the CSRF value its page hands out."""

    caller: Caller
    csrf: str
    token: str = ""  # the session token (for the policy's decisions about cameras)

    def has(self, roles: frozenset[Role]) -> bool:
        return self.caller.has(roles)


def sections(caller: Caller, features: frozenset[str] = frozenset()) -> tuple[NavItem, ...]:
    """The console's sections the caller's roles open (each is checked again on its page);
    ``features``: the optional sections this process serves (``exports``, ``sar``)."""
    items: list[NavItem] = []
    if caller.has(CAMERA_ROLES):
        items += [
            NavItem("cameras", "Cameras", "/console"),
            NavItem("wall", "Wall", "/console/wall"),
            NavItem("map", "Map", "/console/map"),
        ]
    if Role.ADMIN in caller.roles:
        items += [
            NavItem("masks", "Masks", "/console/masks"),
            NavItem("grants", "Grants", "/console/grants"),
            NavItem("principals", "Principals", "/console/principals"),
        ]
    if caller.has(SESSION_ROLES):
        items.append(NavItem("sessions", "Sessions", "/console/sessions"))
    if "exports" in features and caller.has(EXPORT_ROLES):
        items.append(NavItem("exports", "Exports", "/console/exports"))
    if "sar" in features and caller.has(SAR_ROLES):
        items.append(NavItem("sar", "Subject access", "/console/sar"))
    if caller.auditor:
        items.append(NavItem("audit", "Audit", "/console/audit"))
    if caller.has(FINANCE_ROLES):
        items.append(NavItem("finance", "Finance", "/finance"))
    items.append(NavItem("figures", "Public figures", "/transparency"))
    return tuple(items)


class Frame:
    """Sign-in state and page rendering for the console's handlers."""

    def __init__(self, service: ControlService) -> None:
        self.service = service
        self.features: frozenset[str] = frozenset()  # optional sections served (see sections)

    def names(self) -> dict[str, str]:
        return {t.id: t.name for t in self.service.core.snapshot.tenants.values()}

    def network(self) -> str:
        platform = self.service.platform_tenant
        return self.names().get(platform, platform)

    def fail(self, request: web.Request, status: int, message: str) -> NoReturn:
        pages.fail(
            request, status, message, context={"network": self.network(), "section": "Console"}
        )

    def refuse(self, request: web.Request, error: ControlError) -> NoReturn:
        """A control error as an error page (the control service's own words)."""
        if error.code == Code.UNAUTHENTICATED:
            self.to_sign_in(request)
        message = str(error)
        if error.code in (Code.FORBIDDEN, Code.NOT_FOUND) and message.startswith("no "):
            # "no camera 'x' that you may see": the id came from the request; say it plainly.
            message = "There is nothing here that you may see."
        self.fail(request, _STATUS.get(error.code, 503), message)

    async def forbid(
        self, request: web.Request, who: Signed, section: str, message: str
    ) -> NoReturn:
        """A section the caller's roles do not open: audited like the control service's own
        refusals, then a 403 page."""
        await self.service.core.refused(who.caller, section, denied(message))
        self.fail(request, 403, message)

    def to_sign_in(self, request: web.Request) -> NoReturn:
        target = safe_next(request.path_qs, "/console")
        response = web.HTTPSeeOther(
            f"{LOGIN}?{urlencode({'next': target})}", headers=pages.page_headers()
        )
        if request.cookies.get(SESSION_COOKIE):
            response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    async def signed(self, request: web.Request) -> Signed:
        """The caller signed in with this request's session cookie, or off to the sign-in."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            self.to_sign_in(request)
        try:
            caller = await self.service.authenticate(
                token, via="console", peer=request.remote or ""
            )
        except ControlError as exc:
            self.refuse(request, exc)
        return Signed(caller, SESSION_CSRF.issue(request), token)

    def check_form(self, request: web.Request, submitted: object) -> None:
        """A form POST of a signed-in page: from this gateway, with the page's CSRF value."""
        if not same_origin(request) or not SESSION_CSRF.valid(request, submitted):
            self.fail(request, 403, "Send this from the console's own pages.")

    def render(
        self,
        request: web.Request,
        who: Signed,
        template: str,
        current: str,
        context: Mapping[str, Any],
        *,
        body_class: str = "",
        status: int = 200,
    ) -> web.Response:
        caller = who.caller
        names = self.names()
        title = context.get("title", "Console")
        response = pages.render(
            request,
            template,
            {
                **context,
                "title": f"{title} · {self.network()} console",
                "network": self.network(),
                "section": "Console",
                "who": {
                    "principal": caller.subject,
                    "tenant": caller.tenant,
                    "tenant_name": names.get(caller.tenant, caller.tenant),
                    "sign_out": LOGOUT,
                    "csrf": who.csrf,
                },
                "nav": sections(caller, self.features),
                "current": current,
                "body_class": body_class,
                "csrf": who.csrf,
            },
            status=status,
            headers=pages.page_headers(csp=pages.CONSOLE_CSP),
        )
        SESSION_CSRF.attach(request, response, who.csrf)
        return response
