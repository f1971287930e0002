"""The HTTP server: health, metrics, sessions, JWKS, the MediaMTX hook, finance pages and the
published figures, behind one bearer-token middleware that asks the tenant policy."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import Config
from gateway.core import Gateway
from gateway.http.api.app import API_PREFIX, add_api_routes, api_problems
from gateway.http.keys import DECISION_KEY, GATEWAY_KEY
from gateway.http.metrics import _GatewayCollector, health_detail
from gateway.webrtc.whep import add_whep_routes, is_whep_path

log = logging.getLogger(__name__)


# Reachable without a token: liveness, public keys, the published anonymised figures
# (/transparency...), the pages' stylesheet (/static/...), and endpoints that check their own
# credentials (MediaMTX's auth hook carries the client's; Stripe signs its webhooks).
PUBLIC_HTTP = frozenset(
    {
        "/healthz",
        "/healthz/detail",
        "/metrics",
        "/.well-known/jwks.json",
        "/mediamtx/auth",
        "/stripe/webhook",
        "/finance/login",
        "/finance/logout",
    }
)


def _bearer_middleware(gateway: Gateway) -> Any:
    """With tenancy on, every other HTTP endpoint asks the one policy decision."""
    from tenants.policy import AccessRequest, Action

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if (
            gateway.tenancy is None
            or request.path in PUBLIC_HTTP
            # The REST API authenticates through the control service itself (and audits).
            or (gateway.control is not None and request.path.startswith(API_PREFIX))
            # WHEP asks the policy for a viewer's decision itself (and audits refusals).
            or (gateway.webrtc is not None and is_whep_path(request.path))
            # The ONVIF facade checks each request's WS-Security digest itself (and audits).
            or (gateway.ptz is not None and request.path.startswith("/onvif/"))
            # The console signs its users in and judges them through the control service.
            or (gateway.control is not None and request.path.startswith("/console"))
            or request.path == "/transparency"
            # Playback asks the policy for a playback decision itself (and audits refusals).
            or (gateway.playback is not None and is_playback_path(request.path))
            or request.path.startswith(("/transparency/", "/static/"))
        ):
            return await handler(request)  # type: ignore[no-any-return]
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
        token = token or request.cookies.get("feedgate_token", "")
        action = Action.METRICS if request.path == "/metrics" else Action.API
        decision = await gateway.tenancy.policy.authorize(
            AccessRequest(action, "http", token=token or None, peer=request.remote or "")
        )
        if not decision.allow:
            await _audit_refusal(gateway, decision, request, action.value)
            headers = {"WWW-Authenticate": 'Bearer realm="feedgate"'}
            raise (
                web.HTTPUnauthorized(text=decision.reason, headers=headers)
                if decision.status == 401
                else web.HTTPForbidden(text=decision.reason)
            )
        request[DECISION_KEY] = decision
        return await handler(request)  # type: ignore[no-any-return]

    return middleware


async def _audit_refusal(
    gateway: Gateway, decision: Any, request: web.Request, action: str
) -> None:
    """Through the one refusal log (rate-limited per source), on the database thread."""
    tenancy = gateway.tenancy
    assert tenancy is not None
    try:
        await tenancy.blocking(
            tenancy.refusals.decision,
            decision,
            protocol="http",
            action=action,
            peer=request.remote or "",
            detail={"path": request.path},
        )
    except Exception as exc:
        log.error("could not audit a refusal from %s: %s", request.remote, exc)


async def _metrics_allowed(request: web.Request, gateway: Gateway) -> None:
    """/metrics: the configured scrape credential, or a platform admin's or operator's token
    (tenancy off: open, like everything else on a lab relay). Refusals are audited."""
    from tenants.control.errors import Code, ControlError, denied
    from tenants.model import Role

    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    token = value.strip() if scheme.lower() == "bearer" else ""
    scrape = gateway.config.http.metrics_token
    if scrape and hmac.compare_digest(token.encode(), scrape.encode()):
        return
    if gateway.control is None:
        if scrape:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="feedgate"'})
        return
    service = gateway.control
    try:
        caller = await service.authenticate(token or None, via="http", peer=request.remote or "")
        if not (caller.platform and caller.has((Role.ADMIN, Role.OPERATOR))):
            error = denied(
                "metrics need the platform's admin or operator role, or the scrape token"
            )
            await service.core.refused(caller, "Metrics", error)
            raise error
    except ControlError as exc:
        if exc.code == Code.UNAUTHENTICATED:
            raise web.HTTPUnauthorized(
                text=str(exc), headers={"WWW-Authenticate": 'Bearer realm="feedgate"'}
            ) from None
        raise web.HTTPForbidden(text=str(exc)) from None


class _RtspSessions:
    """The RTSP server's sessions in the shape of ``gateway.live.LiveSessions`` (lab mode has
    no session registry)."""

    def __init__(self, rtsp: Any) -> None:
        self.live = {sid: _LabLive(s.mode, s.path, s.conn.peer) for sid, s in rtsp.sessions.items()}


class _LabLive:
    def __init__(self, mode: str, path: str, peer: str) -> None:
        from tenants.policy import Decision

        self.protocol, self.mode, self.path, self.peer = "rtsp", mode, path, peer
        self.decision = Decision(True, 200, "open", camera=path.partition("/")[0], mask_zones=())


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, errors included, is what its Content-Type says: a browser must not
    sniff a text/plain error into a page."""
    response.headers["X-Content-Type-Options"] = "nosniff"


def _add_ptz(app: web.Application, gateway: Gateway) -> None:
    """The ONVIF facade at /onvif/{camera}/... (REST /v1/cameras/{id}/ptz/... is in the API's
    route table, gateway/http/ptz.py)."""
    from gateway.ptz.facade import OnvifFacade

    names = {c.id: c.name for c in gateway.config.cameras}
    OnvifFacade(
        gateway.ptz, camera_names=names.get, rtsp_port=lambda: gateway.rtsp.port
    ).add_routes(app)


def make_http_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        client_max_size=128 * 1024, middlewares=[api_problems, _bearer_middleware(gateway)]
    )
    app.on_response_prepare.append(_nosniff)
    app[GATEWAY_KEY] = gateway
    registry = CollectorRegistry()
    registry.register(_GatewayCollector(gateway))

    async def healthz(request: web.Request) -> web.Response:
        # Liveness only: which cameras exist and who watches them is not for the public. A
        # node whose database is down still serves its live viewers: "degraded", with why.
        reason = gateway.tenancy.degraded() if gateway.tenancy is not None else None
        if reason is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "degraded", "reason": reason})

    async def health(request: web.Request) -> web.Response:
        # Which cameras exist and how they fare: for the same callers as /metrics.
        await _metrics_allowed(request, gateway)
        return web.json_response(health_detail(gateway))

    async def lab_sessions(request: web.Request) -> web.Response:
        """Tenancy off (an open lab relay): this process's sessions, as /v1/sessions lists
        them with tenancy on."""
        from gateway.control import GatewayMedia
        from tenants.control.views import SessionView

        gw = request.app[GATEWAY_KEY]
        rtsp_only = _RtspSessions(gw.rtsp)
        items = [SessionView.of(x).model_dump(mode="json") for x in
                 GatewayMedia(gw.config, rtsp_only, gw.rtsp).sessions()]  # fmt: skip
        return web.json_response({"items": items, "next_offset": None})

    async def metrics(request: web.Request) -> web.Response:
        await _metrics_allowed(request, gateway)
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/healthz/detail", health)
    app.router.add_get("/metrics", metrics)
    if gateway.webrtc is not None:
        if gateway.control is not None:
            from gateway.http.console import viewer_credentials

            add_whep_routes(app, gateway, credentials=viewer_credentials)
        else:
            add_whep_routes(app, gateway)
    if gateway.tenancy is not None and gateway.access is not None:
        from gateway.http.mediamtx import mediamtx_handler

        tenancy = gateway.tenancy

        async def jwks(request: web.Request) -> web.Response:
            return web.json_response(
                tenancy.jwks(), headers={"Cache-Control": "public, max-age=300"}
            )

        app.router.add_get("/.well-known/jwks.json", jwks)
        app.router.add_post(
            "/mediamtx/auth",
            mediamtx_handler(gateway.tenancy, secret=gateway.config.http.mediamtx_secret),
        )
    if gateway.control is not None:
        from gateway.http.console import add_console_routes

        add_api_routes(app, gateway.control, services=(gateway.exports, gateway.sar, gateway.ptz))
        add_console_routes(app, gateway)  # sign-in always; the console's pages if enabled
        if gateway.ptz is not None:
            _add_ptz(app, gateway)
    else:
        app.router.add_get("/v1/sessions", lab_sessions)

    bc = gateway.config.billing
    if gateway.metering is not None and bc.stripe_webhook_secret and bc.stripe_api_key:
        from billing.stripe_sync import StripeSync, webhook_handler

        sync = StripeSync(
            gateway.metering.db, api_key=bc.stripe_api_key, api_base=bc.stripe_api_base or None
        )
        app.router.add_post(
            "/stripe/webhook",
            webhook_handler(bc.stripe_webhook_secret, sync, gateway.metering.invoices),
        )
    if gateway.tenancy is not None and gateway.metering is not None:
        from gateway.http.finance import add_finance_routes

        fin_tenancy = gateway.tenancy
        add_finance_routes(
            app,
            ledger=gateway.metering.ledger,
            invoices=gateway.metering.invoices,
            platform_tenant=gateway.config.grpc.platform_tenant,
            tenant_names=lambda: {
                t.id: t.name for t in fin_tenancy.policy.snapshot.tenants.values()
            },
        )
    if gateway.tenancy is not None:
        from gateway.http.transparency import add_transparency_routes

        add_transparency_routes(
            app,
            db=gateway.tenancy.db,
            viewing_ms=gateway.metering.ledger.viewing_by_tenant if gateway.metering else None,
            zone=gateway.config.zone,
        )
    if gateway.playback is not None:
        _add_playback(app, gateway)
    app.cleanup_ctx.append(lifecycle)
    return app


def is_playback_path(path: str) -> bool:
    from gateway.playback.hls import HLS_PREFIX
    from gateway.playback.http import PLAYBACK_PATHS

    return path in PLAYBACK_PATHS or path.startswith(HLS_PREFIX)


def _add_playback(app: web.Application, gateway: Gateway) -> None:
    """MediaMTX's /list and /get, and HLS VOD, over this gateway's recordings."""
    from pathlib import Path

    from gateway.playback.hls import add_hls_routes
    from gateway.playback.http import add_playback_routes, viewer_credential

    add_playback_routes(
        app,
        gateway.playback,
        tmp_dir=Path(gateway.config.data_dir).resolve() / "playback",
        credentials=viewer_credential,
    )
    add_hls_routes(
        app,
        gateway.playback,
        viewer_credential,
        tmp_dir=Path(gateway.config.data_dir).resolve() / "playback",
        settings=gateway.config.recording,
    )


def http_site(runner: web.AppRunner, config: Config) -> web.TCPSite:
    """The HTTP listener: HTTPS when ``http.tls_cert`` is set."""
    ssl_context = None
    if config.http.tls_cert:
        from gateway.tls import server_ssl_context

        ssl_context = server_ssl_context(config.http.tls_cert, config.http.tls_key)
    return web.TCPSite(
        runner, config.http.host, config.http.port, reuse_address=True, ssl_context=ssl_context
    )
