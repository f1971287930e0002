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
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["FormToken", "same_origin"]


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
        return value if _well_formed(value) else secrets.token_urlsafe(32)

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
