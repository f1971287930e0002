"""Pull ingest: keep one camera's RTSP source flowing into its hub path, reconnecting with
exponential backoff and jitter while readers stay attached."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from gateway.protocols.rtp import has_goodbye
from gateway.sources.rtsp_client import RtspClient, RtspClientError
from gateway.stream.hub import PathStream
from gateway.stream.tracks import TrackError, tracks_from_sdp
from gateway.stream.udp_reorder import UdpReorder
from gateway.tasks import raise_if_cancelling

log = logging.getLogger(__name__)

# A session that ran this long counts as healthy: the next failure starts backoff afresh.
HEALTHY_AFTER = 10.0


class PullIngest:
    """Owns the pull loop of one path. ``run()`` is the long-lived task; cancel it to stop."""

    def __init__(
        self,
        stream: PathStream,
        url: str,
        *,
        transport: str = "tcp",
        username: str | None = None,
        password: str | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stall_timeout: float = 10.0,
        unix_path: str | None = None,
        reorder_window: float = 0.05,
        reorder_packets: int = 512,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.ssl_context = ssl_context  # TLS to the source (the cluster's relays)
        self.server_hostname = server_hostname
        # UDP only: TCP (and the worker relay's Unix socket) deliver in order.
        self.reorder_window = reorder_window if transport == "udp" else 0.0
        self.reorder_packets = reorder_packets
        self.unix_path = unix_path
        self.stall_timeout = stall_timeout
        self.stream = stream
        self.url = url
        self.transport = transport
        self.username = username
        self.password = password
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connects = 0
        self.failures = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        # Python 3.11's asyncio.wait_for returns the inner result (or raises its error) when a
        # cancellation arrives just as the inner operation completes, swallowing the cancel; a
        # refused connect during shutdown then looked like one more source failure and the loop
        # retried until the shutdown watchdog fired. The client no longer uses wait_for, and a
        # failure seen while this task is being cancelled ends the loop whatever raised it.
        while True:
            retrying = AsyncRetrying(
                wait=wait_exponential_jitter(multiplier=self.backoff_initial, max=self.backoff_max),
                retry=retry_if_exception_type((RtspClientError, TrackError, OSError)),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    started = time.monotonic()
                    try:
                        await self._session()
                    except (RtspClientError, TrackError, OSError) as exc:
                        raise_if_cancelling()
                        self.failures += 1
                        self.last_error = str(exc)
                        log.warning("path %s: source failed: %s", self.stream.name, exc)
                        if time.monotonic() - started < HEALTHY_AFTER:
                            raise
                    # Healthy run that ended (or failed late): restart with fresh backoff.
                    break

    async def _session(self) -> None:
        stream = self.stream
        client: RtspClient | None = None
        reorder: UdpReorder | None = None

        said_bye: set[int] = set()  # tracks whose RTCP said BYE

        def on_packet(channel: int, payload: bytes) -> None:
            # Only while this session is the path's source: a pull being stopped (an edge
            # relay whose owner moved) can still be receiving while its successor attached,
            # and two feeds on one output clock interleave their sequence numbers.
            if stream.source_id is not source_id:
                return
            if channel & 1:
                if has_goodbye(payload):
                    # The source's stream ended though its connection may stay open (a camera
                    # stopping; feedgate upstream after a codec change): DESCRIBE again now
                    # rather than after the stall timeout.
                    said_bye.add(channel >> 1)
                    if len(said_bye) >= len(stream.tracks) and client is not None:
                        client.end_of_stream("the source ended its stream (RTCP BYE)")
                stream.on_rtcp(channel >> 1, payload)
            elif reorder is not None:
                reorder.push(channel >> 1, payload)
            else:
                stream.on_rtp(channel >> 1, payload)

        source_id = f"pull:{self.url.split('@')[-1]}#{self.connects}"
        client = RtspClient(
            self.url,
            on_packet=on_packet,
            username=self.username,
            password=self.password,
            unix_path=self.unix_path,
            ssl_context=self.ssl_context,
            server_hostname=self.server_hostname,
        )
        try:
            await client.connect()
            described = await client.describe()
            tracks, sd = tracks_from_sdp(described.sdp)
            for track in tracks:
                await client.setup(described.base_url, track.control, track.index, self.transport)
            self.connects += 1
            attrs = tuple(
                f"a={k}:{v}" if v is not None else f"a={k}"
                for k, v in sd.attributes
                if k.lower() not in ("control", "range", "tool")
            )
            if self.reorder_window > 0:
                reorder = UdpReorder(
                    stream,
                    len(tracks),
                    window=self.reorder_window,
                    max_packets=self.reorder_packets,
                    source_id=source_id,
                )
            stream.attach_source(source_id, tracks, attrs)
            await client.play()
            await self._watch(client)
        finally:
            if reorder is not None:
                reorder.close()
            stream.detach_source(source_id)
            await client.close()

    async def _watch(self, client: RtspClient) -> None:
        """Return never; raise when the source closes or stops sending media (a camera can keep
        its control connection open while its encoder has died)."""
        assert client.closed is not None
        last = -1
        while True:
            try:
                async with asyncio.timeout(self.stall_timeout):
                    exc = await asyncio.shield(client.closed)
            except TimeoutError:
                now = self.stream.counters.packets_in
                if now == last:
                    raise RtspClientError(f"no media for {self.stall_timeout:.0f}s") from None
                last = now
                continue
            if isinstance(exc, RtspClientError):
                raise exc
            raise RtspClientError(f"source closed the connection ({exc or 'EOF'})")
