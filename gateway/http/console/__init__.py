"""The web console: aiohttp handlers, Jinja2 templates (``templates/console/``) and plain
JavaScript (``static/console/``), all served by the gateway, with nothing fetched from
elsewhere and no build step.

Modules: :mod:`.frame` (who is signed in, the sections their roles open, the page frame),
:mod:`.signin` (signing in and out, also for the finance view), :mod:`.cameras` (cameras,
one camera, the video wall, the map), :mod:`.admin` (masks, grants, principals, sessions,
audit), :mod:`.stills` (cameras' stills, masks burnt in), :mod:`.layouts` (the wall's layout
per principal), :mod:`.geo` (the map's projection), :mod:`.exports` (evidence exports and
locks), :mod:`.sar` (subject access requests), :mod:`.localtime` (times typed and shown in
local time). The scripts: ``static/console/player.js`` (a WHEP player that reconnects by
itself), ``wall.js`` (tiles, layouts, full screen), ``polygon.js`` (polygons drawn over a
still) for ``masks.js`` (the mask editor) and ``redact.js`` (subject access redactions),
``exports.js`` (exports' progress), ``console.js`` (REST calls with the CSRF header). No
JavaScript library is used.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.http import pages
from gateway.http.api.app import bearer
from gateway.http.console.admin import AdminPages
from gateway.http.console.cameras import CameraPages
from gateway.http.console.exports import ExportPages
from gateway.http.console.frame import LOGIN, LOGOUT, Frame
from gateway.http.console.layouts import LayoutStore
from gateway.http.console.sar import SarPages
from gateway.http.console.signin import SignIn
from gateway.http.console.stills import Stills
from gateway.http.csrf import session_token
from tenants.control.rules import FINANCE_ROLES

if TYPE_CHECKING:
    from gateway.core import Gateway

__all__ = ["STILLS", "add_console_routes", "viewer_credentials"]

STILLS = web.AppKey("console_stills", Stills)


def viewer_credentials(request: web.Request) -> str | None:
    """A WHEP viewer's credential: a bearer token, or the console's session cookie from the
    console's own pages (with the CSRF header: an offer starts a session)."""
    return bearer(request) or session_token(request)


def add_console_routes(app: web.Application, gateway: Gateway) -> None:
    service = gateway.control
    assert service is not None
    pages.setup_pages(app)
    frame = Frame(service)
    ttl = timedelta(seconds=gateway.config.console.session_ttl)
    console = SignIn(frame, ttl)
    finance = SignIn(
        frame,
        ttl,
        action="/finance/login",
        sign_out_action="/finance/logout",
        default_next="/finance",
        section="Finance",
        admits=lambda roles: bool(roles & FINANCE_ROLES),
        refused="Your account does not have the finance or admin role.",
    )
    for signin, login, logout in (
        (console, LOGIN, LOGOUT),
        (finance, "/finance/login", "/finance/logout"),
    ):
        app.router.add_get(login, signin.form)
        app.router.add_post(login, signin.sign_in)
        app.router.add_get(logout, signin.sign_out_form)
        app.router.add_post(logout, signin.sign_out)
    if not gateway.config.console.enabled:
        return
    stills = Stills(
        gateway.hub,
        known=gateway.rtsp.known_path,
        on_demand=gateway.start_on_demand,
        ttl=gateway.config.console.still_ttl,
    )
    app[STILLS] = stills
    layouts = LayoutStore(service.core.db)
    CameraPages(frame, gateway, stills, layouts).add_routes(app)
    AdminPages(frame, gateway.config.zone).add_routes(app)
    features: set[str] = set()
    if gateway.exports is not None:  # worker 0 (exports run there)
        exports = ExportPages(frame, gateway.exports, gateway.config.zone)
        exports.add_routes(app)
        features.add("exports")
        if gateway.sar is not None:
            SarPages(
                frame,
                gateway.sar,
                exports,
                gateway.config.zone,
                playback=gateway.playback is not None,
            ).add_routes(app)
            features.add("sar")
    frame.features = frozenset(features)
