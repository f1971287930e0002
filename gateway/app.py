"""The gateway process: hub, RTSP server, pull ingests and the HTTP API, with one owner for
every long-lived task (the aiohttp application's cleanup context)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.access import PolicyAccess, Tenancy
from gateway.config import Config
from gateway.hub import StreamHub
from gateway.ingest import PullIngest
from gateway.metering import Metering
from gateway.rtsp import Request
from gateway.rtspserver import Authorizer, RtspConnection, RtspServer, allow_all
from gateway.tasks import cancel_and_wait
from gateway.variants import VariantManager

log = logging.getLogger(__name__)


class Gateway:
    """Everything one gateway process runs. ``start``/``stop`` are called by the HTTP app's
    cleanup context, so the web server owns the media plane's lifetime."""

    def __init__(
        self,
        config: Config,
        *,
        authorizer: Authorizer = allow_all,
        rtsp_socket: socket.socket | None = None,
        worker: int = 0,
        reuse_port: bool = False,
        internal_path: str | None = None,
        upstream_unix: str | None = None,
        handoff: Callable[[RtspConnection, Request], Awaitable[None]] | None = None,
        udp_port: int | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        # A secondary worker relays every camera from the primary over this Unix socket.
        self.upstream_unix = upstream_unix
        self.hub = StreamHub(
            gop_cache_bytes=config.rtsp.gop_cache_bytes, write_timeout=config.rtsp.write_timeout
        )
        # The tenant policy, when tenancy is on (worker relays are internal and skip it).
        self.tenancy: Tenancy | None = None
        self.access: PolicyAccess | None = None
        self.variants: VariantManager | None = None
        self.metering: Metering | None = None
        if config.tenancy.enabled:
            self.tenancy = Tenancy.open(config)
            self.variants = VariantManager(self.hub)
            if config.billing.enabled:
                self.metering = Metering(config, self.tenancy.db, worker=worker)
            self.access = PolicyAccess(
                self.tenancy,
                recheck_interval=config.tenancy.recheck_interval,
                variants=self.variants,
                meter=self.metering.meter if self.metering else None,
            )
        self.rtsp = RtspServer(
            config,
            self.hub,
            authorizer=authorizer,
            on_demand=self._start_on_demand,
            access=self.access,
            reuse_port=reuse_port,
            internal_path=internal_path,
            handoff=handoff,
            udp_port=udp_port,
        )
        if self.access is not None:
            self.access.server = self.rtsp
        # Counters other workers report (primary only), merged into /metrics.
        self.peer_stats: Callable[[], list[dict[str, Any]]] = list
        self.ingests: dict[str, PullIngest] = {}
        self._ingest_tasks: dict[str, asyncio.Task[None]] = {}
        self._rtsp_socket = rtsp_socket
        self._checkpointer: asyncio.Task[None] | None = None
        self.grpc: Any = None  # grpc.aio.Server when the control API runs here

    def _pull_sources(self) -> Iterable[tuple[str, str, bool]]:
        if self.upstream_unix is not None:
            for cam in self.config.cameras:
                yield cam.id, f"rtsp://127.0.0.1/{cam.id}", True
                if cam.sub_source:
                    yield f"{cam.id}/sub", f"rtsp://127.0.0.1/{cam.id}/sub", True
            return
        for cam in self.config.cameras:
            if not cam.is_push:
                yield cam.id, cam.source, cam.on_demand
            if cam.sub_source:
                yield f"{cam.id}/sub", cam.sub_source, cam.on_demand

    async def start(self) -> None:
        if self.metering is not None:
            self.metering.start()  # first: it drains any spool a crash left behind
        await self.rtsp.start(self._rtsp_socket)
        if self.tenancy is not None:
            self._checkpointer = asyncio.get_running_loop().create_task(
                self._checkpoint_audit(), name="audit-checkpoints"
            )
            if self.worker == 0 and self.config.grpc.port:
                from gateway.grpcserver import start_grpc
                from gateway.tls import grpc_server_credentials

                gc = self.config.grpc
                self.grpc = await start_grpc(
                    self.tenancy,
                    gc.host,
                    gc.port,
                    platform_tenant=gc.platform_tenant,
                    credentials=(
                        grpc_server_credentials(gc.tls_cert, gc.tls_key, gc.tls_client_ca)
                        if gc.tls_cert
                        else None
                    ),
                )
        for path, url, on_demand in self._pull_sources():
            cam = self.config.camera(path.partition("/")[0])
            assert cam is not None
            if self.upstream_unix is not None:
                self.ingests[path] = PullIngest(
                    self.hub.path(path),
                    url,
                    unix_path=self.upstream_unix,
                    backoff_initial=0.1,
                    backoff_max=2.0,
                )
            else:
                self.ingests[path] = PullIngest(
                    self.hub.path(path),
                    url,
                    transport=cam.transport,
                    username=cam.username,
                    password=cam.password,
                )
            if not on_demand:
                self._start_ingest(path)

    async def _checkpoint_audit(self) -> None:
        """Sign a checkpoint of the audit log every few seconds when entries arrived, so a
        quiet log is still covered by a signature soon after its last entry."""
        assert self.tenancy is not None
        while True:
            await asyncio.sleep(5.0)
            try:
                await asyncio.to_thread(self.tenancy.audit.maybe_checkpoint)
            except Exception:
                log.exception("audit checkpoint failed")

    def _start_ingest(self, path: str) -> None:
        task = self._ingest_tasks.get(path)
        if task is None or task.done():
            self._ingest_tasks[path] = asyncio.get_running_loop().create_task(
                self.ingests[path].run(), name=f"ingest:{path}"
            )

    def _start_on_demand(self, path: str) -> None:
        if path in self.ingests:
            self._start_ingest(path)

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(1.0)
        await cancel_and_wait(*self._ingest_tasks.values(), self._checkpointer)
        self._ingest_tasks.clear()
        await self.rtsp.stop()
        if self.access is not None:
            await self.access.stop()
        if self.metering is not None:
            await self.metering.stop()
        if self.variants is not None:
            await self.variants.stop()
        if self.tenancy is not None:
            await self.tenancy.close()


class _GatewayCollector(Collector):
    """Reads the hub's counters at scrape time, so the packet path pays nothing for metrics."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        gw = self.gateway
        labels = ["path"]
        fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "bytes_received": CounterMetricFamily(
                "feedgate_bytes_received", "RTP bytes received from the source", labels=labels
            ),
            "packets_received": CounterMetricFamily(
                "feedgate_packets_received", "RTP packets received from the source", labels=labels
            ),
            "bytes_sent": CounterMetricFamily(
                "feedgate_bytes_sent", "Bytes written to readers", labels=labels
            ),
            "packets_sent": CounterMetricFamily(
                "feedgate_packets_sent", "RTP/RTCP packets written to readers", labels=labels
            ),
            "dropped_packets": CounterMetricFamily(
                "feedgate_dropped_packets",
                "Packets not sent to slow readers (skipped to the next keyframe)",
                labels=labels,
            ),
            "dropped_frames": CounterMetricFamily(
                "feedgate_dropped_frames", "Access units not sent to slow readers", labels=labels
            ),
            "readers_kicked": CounterMetricFamily(
                "feedgate_readers_disconnected",
                "Readers disconnected by the hub (write timeout, format change)",
                labels=labels,
            ),
            "restarts": CounterMetricFamily(
                "feedgate_source_restarts", "Times the source came back", labels=labels
            ),
            "bad": CounterMetricFamily(
                "feedgate_bad_packets", "Malformed packets from the source", labels=labels
            ),
            "readers": GaugeMetricFamily("feedgate_readers", "Readers playing", labels=labels),
            "up": GaugeMetricFamily("feedgate_source_up", "1 if the source is live", labels=labels),
            "gop": GaugeMetricFamily(
                "feedgate_gop_cache_bytes", "Bytes in the GOP cache", labels=labels
            ),
        }
        peers = gw.peer_stats()
        # Readers and bytes out are summed over all workers; what comes in is the primary's
        # own (the secondaries' intake is the primary's internal fan-out, not the camera's).
        out_keys = (
            "bytes_out",
            "packets_out",
            "packets_dropped",
            "frames_dropped",
            "readers_dropped",
            "readers",
        )
        for name, stream in gw.hub.paths.items():
            c = {**asdict(stream.counters), "readers": len(stream.readers)}
            for peer in peers:
                theirs = peer.get("paths", {}).get(name, {})
                for key in out_keys:
                    c[key] += int(theirs.get(key, 0))
            fams["bytes_received"].add_metric([name], c["bytes_in"])
            fams["packets_received"].add_metric([name], c["packets_in"])
            fams["bytes_sent"].add_metric([name], c["bytes_out"])
            fams["packets_sent"].add_metric([name], c["packets_out"])
            fams["dropped_packets"].add_metric([name], c["packets_dropped"])
            fams["dropped_frames"].add_metric([name], c["frames_dropped"])
            fams["readers_kicked"].add_metric([name], c["readers_dropped"])
            fams["restarts"].add_metric([name], c["source_restarts"])
            fams["bad"].add_metric([name], c["bad_packets"])
            fams["readers"].add_metric([name], c["readers"])
            fams["up"].add_metric([name], 1 if stream.has_source else 0)
            fams["gop"].add_metric([name], stream.gop_cached_bytes)
        yield from fams.values()
        yield GaugeMetricFamily(
            "feedgate_rtsp_connections",
            "Open RTSP connections",
            value=len(gw.rtsp.connections) + sum(p.get("connections", 0) for p in peers),
        )
        yield GaugeMetricFamily(
            "feedgate_rtsp_sessions",
            "Open RTSP sessions",
            value=len(gw.rtsp.sessions) + sum(p.get("sessions", 0) for p in peers),
        )
        yield GaugeMetricFamily(
            "feedgate_workers", "Worker processes reporting", value=1 + len(peers)
        )
        events: collections.Counter[str] = collections.Counter(gw.rtsp.counters)
        for peer in peers:
            events.update({k: int(v) for k, v in peer.get("events", {}).items()})
        errors = CounterMetricFamily(
            "feedgate_rtsp_events", "RTSP server events by kind", labels=["event"]
        )
        for key, value in sorted(events.items()):
            errors.add_metric([key], value)
        yield errors


GATEWAY_KEY = web.AppKey("gateway", Gateway)
# The policy decision that let an HTTP request in (who is asking, for which tenant).
DECISION_KEY: web.RequestKey[Any] = web.RequestKey("decision", object)


# Reachable without a token: liveness, public keys, the published anonymised figures
# (/transparency...), and endpoints that check their own credentials (MediaMTX's auth hook
# carries the client's; Stripe signs its webhooks).
PUBLIC_HTTP = frozenset(
    {"/healthz", "/.well-known/jwks.json", "/mediamtx/auth", "/stripe/webhook", "/finance/login"}
)


def _bearer_middleware(gateway: Gateway) -> Any:
    """With tenancy on, every other HTTP endpoint asks the one policy decision."""
    from tenants.policy import AccessRequest, Action

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if (
            gateway.tenancy is None
            or request.path in PUBLIC_HTTP
            or request.path == "/transparency"
            or request.path.startswith("/transparency/")
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
            headers = {"WWW-Authenticate": 'Bearer realm="feedgate"'}
            raise (
                web.HTTPUnauthorized(text=decision.reason, headers=headers)
                if decision.status == 401
                else web.HTTPForbidden(text=decision.reason)
            )
        request[DECISION_KEY] = decision
        return await handler(request)  # type: ignore[no-any-return]

    return middleware


def make_http_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=128 * 1024, middlewares=[_bearer_middleware(gateway)])
    app[GATEWAY_KEY] = gateway
    registry = CollectorRegistry()
    registry.register(_GatewayCollector(gateway))

    async def healthz(request: web.Request) -> web.Response:
        gw = request.app[GATEWAY_KEY]
        paths = {
            name: {"source": s.has_source, "readers": len(s.readers)}
            for name, s in sorted(gw.hub.paths.items())
        }
        return web.json_response({"status": "ok", "worker": gw.worker, "paths": paths})

    async def sessions(request: web.Request) -> web.Response:
        """This process's RTSP sessions with their counters (MediaMTX's rtspsessions/list)."""
        gw = request.app[GATEWAY_KEY]
        items = []
        for s in gw.rtsp.sessions.values():
            r = s.reader
            tcp = any(t.channels for t in s.tracks.values())
            items.append(
                {
                    "id": s.id,
                    "created": s.created,
                    "remoteAddr": s.conn.peer,
                    "state": s.state,
                    "path": s.path,
                    "transport": "tcp" if tcp else "udp",
                    "bytesSent": r.bytes_sent if r else 0,
                    "packetsSent": r.packets_sent if r else 0,
                    "packetsDropped": r.packets_dropped if r else 0,
                    "framesDropped": r.frames_dropped if r else 0,
                }
            )
        return web.json_response({"worker": gw.worker, "items": items})

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    if gateway.tenancy is not None and gateway.access is not None:
        from gateway.mediamtx import mediamtx_handler

        tenancy = gateway.tenancy

        async def jwks(request: web.Request) -> web.Response:
            return web.json_response(
                tenancy.issuer.jwks(), headers={"Cache-Control": "public, max-age=300"}
            )

        app.router.add_get("/.well-known/jwks.json", jwks)
        app.router.add_post("/mediamtx/auth", mediamtx_handler(gateway.access))
    app.router.add_get("/v1/rtsp/sessions", sessions)

    async def emitted(request: web.Request) -> web.Response:
        """What this process's meter handed to billing since it started (reconciliation)."""
        gw = request.app[GATEWAY_KEY]
        if gw.metering is None:
            raise web.HTTPNotFound(text="billing is off")
        meter = gw.metering.meter
        return web.json_response(
            {
                "since": meter.since.isoformat(),
                "events": meter.events_emitted,
                "cameras": meter.emitted,
                "sink": {"spooled": gw.metering.spool.stats.__dict__},
            }
        )

    app.router.add_get("/v1/usage/emitted", emitted)
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
        from gateway.finance import add_finance_routes

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
        from gateway.transparency import add_transparency_routes

        add_transparency_routes(
            app,
            db=gateway.tenancy.db,
            viewing_ms=gateway.metering.ledger.viewing_by_tenant if gateway.metering else None,
        )
    app.cleanup_ctx.append(lifecycle)
    return app


def http_site(runner: web.AppRunner, config: Config) -> web.TCPSite:
    """The HTTP listener: HTTPS when ``http.tls_cert`` is set."""
    ssl_context = None
    if config.http.tls_cert:
        from gateway.tls import server_ssl_context

        ssl_context = server_ssl_context(config.http.tls_cert, config.http.tls_key)
    return web.TCPSite(
        runner, config.http.host, config.http.port, reuse_address=True, ssl_context=ssl_context
    )


async def run_gateway(
    config: Config,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    gateway: Gateway | None = None,
) -> None:
    """Run one gateway process until ``stop`` is set (or forever)."""
    gateway = gateway if gateway is not None else Gateway(config)
    app = make_http_app(gateway)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = http_site(runner, config)
    try:
        await site.start()
        rtsps = gateway.rtsp.tls_port
        log.info(
            "feedgate listening: rtsp://%s:%d%s  %s://%s:%d",
            config.rtsp.host,
            gateway.rtsp.port,
            f"  rtsps://{config.rtsp.host}:{rtsps}" if rtsps else "",
            "https" if config.http.tls_cert else "http",
            config.http.host,
            config.http.port,
        )
        if ready is not None:
            ready.set()
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
