"""Run one gateway process: the media plane (:mod:`gateway.core`) hosted by the HTTP app, which
owns its lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.config import Config
from gateway.core import Gateway
from gateway.http.app import http_site, make_http_app
from gateway.http.runner import GatewayRunner
from gateway.memory import freeze_startup_heap

log = logging.getLogger(__name__)


async def run_gateway(
    config: Config,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    gateway: Gateway | None = None,
    freeze_heap: bool = False,
) -> None:
    """Run one gateway process until ``stop`` is set (or forever); ``freeze_heap``: the process
    is the gateway's own (``feedgate serve``), so its start-up heap is frozen once it is up
    (:func:`gateway.memory.freeze_startup_heap`)."""
    gateway = gateway if gateway is not None else Gateway(config)
    app = make_http_app(gateway)
    runner = GatewayRunner(app, access_log=None)
    await runner.setup()
    site = http_site(runner, config)
    try:
        await site.start()
        if gateway.cluster is not None and runner.addresses:
            # The node's heartbeat names its HTTP port (what /v1/nodes shows; it said 0).
            http_port = int(runner.addresses[0][1])
            gateway.cluster.http_port = lambda: http_port
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
        if freeze_heap:
            log.debug("froze %d start-up objects", freeze_startup_heap())
        if ready is not None:
            ready.set()
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
