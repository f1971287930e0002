"""Server-rendered pages: one Jinja2 environment, the shared stylesheet, the headers every page
carries and the error page.

Templates live in ``gateway/http/templates/`` and extend ``base.html``; the stylesheet is
``gateway/http/static/feedgate.css``, served under ``/static/`` with a content hash in its URL.
Autoescape is on and an undefined name is an error, so a value reaches a page only as escaped
text and a typo in a template fails its test instead of rendering blank. Nothing is fetched
from anywhere else (no CDN, no web fonts), which the Content-Security-Policy enforces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aiohttp_jinja2
import jinja2
from aiohttp import web

__all__ = [
    "CONSOLE_CSP",
    "CSP",
    "STATIC_PREFIX",
    "NavItem",
    "fail",
    "page_headers",
    "render",
    "setup_pages",
]

STATIC_DIR = Path(__file__).with_name("static")
STATIC_PREFIX = "/static/"

# Pages load only this server's stylesheet and images; forms post only back to it; nobody may
# frame them. The console's pages also run this server's scripts (no inline script), which
# talk only to this server (REST, WHEP) and play what it sends.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
CONSOLE_CSP = CSP + "; script-src 'self'; connect-src 'self'; media-src 'self' blob:"


@dataclass(frozen=True)
class NavItem:
    """One entry of a page's navigation (``key`` marks the current one)."""

    key: str
    label: str
    href: str


# What base.html reads, so a page that has no navigation or signed-in user need not say so.
_BASE_CONTEXT: Mapping[str, Any] = {
    "title": "",
    "network": "",
    "section": "",
    "who": None,
    "nav": (),
    "current": "",
    "tabs": (),
    "tab": "",
    "body_class": "",
}


def setup_pages(app: web.Application) -> None:
    """Give ``app`` the template environment and the ``/static/`` route (once per app)."""
    if aiohttp_jinja2.APP_KEY in app:
        return
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("gateway.http", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app.router.add_static(STATIC_PREFIX, STATIC_DIR, name="static", append_version=True)


def page_headers(*, cache: str = "no-store", csp: str = CSP) -> dict[str, str]:
    """Headers for an HTML page (``X-Content-Type-Options`` comes from the app, for all)."""
    return {
        "Cache-Control": cache,
        # Not no-referrer: under it a browser's form posts say "Origin: null", even to the
        # page's own origin, and the CSRF check could not tell them from another site's.
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": csp,
    }


def _context(context: Mapping[str, Any]) -> dict[str, Any]:
    return {**_BASE_CONTEXT, **context}


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, _context(context), status=status)
    response.headers.update(page_headers() if headers is None else headers)
    return response


_ERRORS: dict[int, tuple[type[web.HTTPException], str]] = {
    400: (web.HTTPBadRequest, "Bad request"),
    401: (web.HTTPUnauthorized, "Sign-in required"),
    403: (web.HTTPForbidden, "Not allowed"),
    404: (web.HTTPNotFound, "Not found"),
    409: (web.HTTPConflict, "Not possible now"),
    422: (web.HTTPUnprocessableEntity, "Nothing to do"),
    429: (web.HTTPTooManyRequests, "Too many at once"),
    503: (web.HTTPServiceUnavailable, "Not available"),
}


def fail(
    request: web.Request,
    status: int,
    message: str,
    *,
    context: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> NoReturn:
    """Stop a handler with an error page. ``message`` is the server's own words: an error page
    never repeats the request's text (a reflected value is one escaping slip from a script).
    ``headers``: extra ones (a cookie to clear, say)."""
    cls, title = _ERRORS.get(status, _ERRORS[400])
    text = aiohttp_jinja2.render_string(
        "error.html",
        request,
        _context({**(context or {}), "title": title, "message": message}),
    )
    out = {**page_headers(), **(headers or {})}
    if status == 401:
        out["WWW-Authenticate"] = 'Bearer realm="feedgate"'
    raise cls(text=text, content_type="text/html", headers=out)
