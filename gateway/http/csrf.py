"""Cross-site request forgery defences for browser forms.

Two checks, each enough against today's browsers, together covering older ones and privacy
tools that strip headers:

- :func:`same_origin`: the browser's own word on where a request comes from. ``Sec-Fetch-Site``
  must be ``same-origin`` and ``Origin`` must name this host, when they are sent. A sibling
  host of the same site (``same-site``) is another origin and is refused.
- :class:`FormToken`: a random value the server puts both in an HttpOnly, SameSite=Strict
  cookie and in the form it renders ("double submit"). Another site can make a browser post a
  form, but cannot read the value, and the browser sends no Strict cookie with its post.

Sign-in needs both: a login CSRF (another site signing the victim in as the attacker, so that
what the victim then does lands in the attacker's account) happens before there is any session
to bind a token to.

A signed-in browser carries its session in :data:`SESSION_COOKIE` (HttpOnly, SameSite=Strict,
path ``/``) and the double-submit value in :data:`SESSION_CSRF`'s cookie. The console's pages
render the value into their forms and for their scripts, which send it back as
:data:`CSRF_HEADER`; :func:`session_token` is how the REST API and WHEP accept the cookie: only
from this gateway's own pages, and for a request that changes anything only with the header.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from aiohttp import web

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_CSRF",
    "FormToken",
    "cookie_refusal",
    "same_origin",
    "session_token",
]

SESSION_COOKIE = "feedgate_token"
CSRF_HEADER = "X-CSRF-Token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(request: web.Request) -> bool:
    """True unless the browser says the request comes from another origin."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False  # cross-site, same-site (a sibling origin) or none (typed, never a form)
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # sent by every current browser on a POST; the form token still applies
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    # The host, not the scheme: behind a TLS-terminating proxy this server sees http while the
    # browser says https, and a page of another scheme on this very host is no attacker's.
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


class FormToken:
    """A double-submit token for the forms under ``path``, kept ``max_age`` seconds."""

    def __init__(self, cookie: str, path: str, max_age: int = 1800) -> None:
        self.cookie = cookie
        self.path = path
        self.max_age = max_age

    def issue(self, request: web.Request) -> str:
        """The value to put in the form (the browser's own, if it has one, so two tabs open on
        the form both work); :meth:`attach` gives the response its cookie."""
        value = request.cookies.get(self.cookie, "")
        return value if _well_formed(value) else self.fresh()

    @staticmethod
    def fresh() -> str:
        """A new value (at sign-in: one planted in the browser before is worth nothing)."""
        return secrets.token_urlsafe(32)

    def attach(self, request: web.Request, response: web.StreamResponse, value: str) -> None:
        response.set_cookie(
            self.cookie,
            value,
            httponly=True,
            samesite="Strict",
            path=self.path,
            secure=request.secure,
            max_age=self.max_age,
        )

    def valid(self, request: web.Request, submitted: object) -> bool:
        cookie = request.cookies.get(self.cookie, "")
        return (
            isinstance(submitted, str)
            and _well_formed(cookie)
            and hmac.compare_digest(cookie.encode(), submitted.encode())
        )

    def clear(self, response: web.StreamResponse) -> None:
        response.del_cookie(self.cookie, path=self.path)


def _well_formed(value: str) -> bool:
    return (
        32 <= len(value) <= 64
        and value.isascii()
        and value.replace("-", "").replace("_", "").isalnum()
    )


# The console's double-submit value, for every page and script of a signed-in browser (it
# outlives any session: a session is at most 24 h).
SESSION_CSRF = FormToken("feedgate_csrf", "/", max_age=86400)


def cookie_refusal(request: web.Request) -> str | None:
    """Why a request carrying the session cookie must not act as the signed-in user, or None.
    A script of another origin (or a sibling host of the same site, which the browser sends
    SameSite=Strict cookies to) cannot read the page's CSRF value to send it back."""
    if not same_origin(request):
        return "cross-site request: use this gateway's own pages"
    if request.method not in _SAFE and not SESSION_CSRF.valid(
        request, request.headers.get(CSRF_HEADER)
    ):
        return f"the console's CSRF token is missing or wrong ({CSRF_HEADER})"
    return None


def session_token(request: web.Request) -> str | None:
    """The session cookie's token when :func:`cookie_refusal` finds nothing wrong."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or cookie_refusal(request) is not None:
        return None
    return token
