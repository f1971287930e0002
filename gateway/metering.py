"""Metering: every live second and delivered byte of every session, attributed to a tenant.

Sessions report in intervals (``rtsp.report_interval``), not only at their end, so a crash
loses at most one interval. Each report is a ``UsageEvent`` whose id is derived from the session
and the interval number, so a report delivered twice is counted once by the ledger. The gateway
hands events to billing through ``UsageSink.emit`` and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from billing.invoices import InvoiceStore
from billing.ledger import Ledger
from billing.model import UsageEvent, UsageKind, UsageSink
from billing.transport import DirectSink, LedgerConsumer, RedisStreamSink, Spool
from gateway.config import Config
from gateway.stream.hub import Reader
from gateway.tasks import cancel_and_wait
from tenants.db import Database

log = logging.getLogger(__name__)


@dataclass
class _Metered:
    session_id: str
    tenant: str
    principal: str | None
    camera: str
    camera_owner: str
    kind: UsageKind
    protocol: str
    variant: str
    reader: Reader | None
    seq: int
    last_wall: datetime
    last_mono: float
    last_bytes: int
    paused: bool = False
    # Seconds of media served so far (a playback's recording): metered instead of wall time.
    media_clock: Callable[[], float] | None = None
    last_media: float = 0.0


class UsageMeter:
    """Owns the reporting clock for all metered sessions of this process."""

    def __init__(self, sink: UsageSink, *, interval: float = 5.0) -> None:
        self.sink = sink
        self.interval = interval
        self._live: dict[str, _Metered] = {}
        self._task: asyncio.Task[None] | None = None
        self.events_emitted = 0
        # What this process handed to the sink, per camera, for reconciliation with the ledger.
        self.since = datetime.now(UTC)
        self.emitted: dict[str, list[int]] = {}  # camera -> [events, duration_ms, bytes]

    def start(
        self,
        *,
        session_id: str,
        tenant: str,
        principal: str | None,
        camera: str,
        camera_owner: str,
        variant: str,
        reader: Reader | None,
        kind: UsageKind = UsageKind.LIVE,
        protocol: str = "rtsp",
        media_clock: Callable[[], float] | None = None,
        since: float | None = None,
    ) -> None:
        """Meter a started session. ``since`` is the monotonic instant its start was recorded
        in the audit log, when that was before now (an RTSP reader exists only once the PLAY
        reply is out): its first interval runs from there, so the seconds billed and the
        seconds its audited end states are one and the same span."""
        now_mono, now_wall = time.monotonic(), datetime.now(UTC)
        if since is not None and since <= now_mono:
            now_wall -= timedelta(seconds=now_mono - since)
            now_mono = since
        m = self._live[session_id] = _Metered(
            session_id,
            tenant,
            principal,
            camera,
            camera_owner,
            kind,
            protocol,
            variant,
            reader,
            0,
            now_wall,
            now_mono,
            reader.bytes_sent if reader else 0,
        )
        if media_clock is not None:
            # From 0: what went out before the reader was counted (the GOP up to the asked
            # instant) was served too.
            m.media_clock, m.last_media = media_clock, 0.0
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._tick(), name="metering")

    def attach_reader(self, session_id: str, reader: Reader) -> None:
        """PLAY creates the hub reader after the session was admitted (and again after a
        PAUSE): metering runs from here."""
        m = self._live.get(session_id)
        if m is None:
            return
        if m.paused:
            m.paused = False
            m.last_wall, m.last_mono = datetime.now(UTC), time.monotonic()
        m.reader = reader
        m.last_bytes = reader.bytes_sent

    def pause(self, session_id: str) -> None:
        """A paused session is not watching: report up to now, then stop the clock."""
        m = self._live.get(session_id)
        if m is not None and not m.paused:
            self._report(m)
            m.paused = True

    def end(self, session_id: str) -> None:
        m = self._live.pop(session_id, None)
        if m is not None:
            if m.paused:  # nothing watched since the pause: close with an empty interval
                m.last_mono = time.monotonic()
                m.last_wall = datetime.now(UTC)
            self._report(m, final=True)

    def _report(self, m: _Metered, *, final: bool = False) -> None:
        # Durations come from the monotonic clock (wall time may step); the wall clock only
        # places the interval on the calendar.
        now_mono = time.monotonic()
        duration_ms = max(0, round((now_mono - m.last_mono) * 1000))
        start = m.last_wall
        end = start + timedelta(milliseconds=duration_ms)
        if m.media_clock is not None:
            media = m.media_clock()
            # Whole milliseconds of the running total, so the intervals sum to what was served.
            duration_ms = max(0, round(media * 1000) - round(m.last_media * 1000))
            m.last_media = media
        sent = m.reader.bytes_sent if m.reader else m.last_bytes
        delta = max(0, sent - m.last_bytes)
        event = UsageEvent(
            event_id=UsageEvent.make_id(m.session_id, m.seq),
            session_id=m.session_id,
            seq=m.seq,
            tenant=m.tenant,
            principal=m.principal,
            camera=m.camera,
            camera_owner=m.camera_owner,
            kind=m.kind,
            protocol=m.protocol,
            variant=m.variant,
            start=start,
            end=end,
            duration_ms=duration_ms,
            bytes_sent=delta,
            final=final,
        )
        m.seq += 1
        m.last_wall, m.last_mono, m.last_bytes = end, now_mono, sent
        try:
            self.sink.emit(event)
            self.events_emitted += 1
            totals = self.emitted.setdefault(event.camera, [0, 0, 0])
            totals[0] += 1
            totals[1] += event.duration_ms
            totals[2] += event.bytes_sent
        except Exception:
            # The sink spools rather than fails; if even that failed, say so loudly.
            log.exception("usage event %s could not be emitted", event.event_id)

    async def _tick(self) -> None:
        while self._live:
            await asyncio.sleep(self.interval)
            for m in list(self._live.values()):
                if not m.paused:
                    self._report(m)

    async def stop(self) -> None:
        """Report every open session's last partial interval, then stop the clock."""
        for sid in list(self._live):
            self.end(sid)
        await cancel_and_wait(self._task)


class _ConsumerLedger(Ledger):
    """A ledger on a connection of its own, closed with it (a consumer's)."""

    def __init__(self, url: str) -> None:
        super().__init__(Database.open(url))

    def close(self) -> None:
        self.db.close()


class Metering:
    """Billing's side of the gateway process: the ledger, the sink the meter emits into, and
    (with Redis) the consumer that moves the stream into the ledger. Opened from the config."""

    def __init__(self, config: Config, tenancy_db: Database, *, worker: int = 0) -> None:
        bc = config.billing
        self.db = Database.open(bc.ledger) if bc.ledger else tenancy_db
        self._own_db = bool(bc.ledger)
        self.ledger = Ledger(self.db, zone=config.zone)
        self.invoices = InvoiceStore(self.db, ledger=self.ledger)
        spool_root = Path(bc.spool_dir or Path(config.data_dir) / "spool")
        self.spool = Spool(spool_root / f"w{worker}")
        self.consumers: list[LedgerConsumer] = []
        self.sink: DirectSink | RedisStreamSink
        if bc.redis_url:
            self.sink = RedisStreamSink(bc.redis_url, bc.stream, self.spool)
            if worker == 0:
                ledger_url = self.db.url
                # An in-memory database exists only on its one connection: share it.
                shared = ledger_url.endswith(":memory:")
                # Named for this node, never the host: two nodes on one host must not share
                # a consumer (each would ack and claim the other's pending entries).
                name = f"{config.node}-w{worker}"
                for i in range(bc.consumers):
                    # Each consumer its own connection (a Database serialises its users), and
                    # a fresh one after a failure: a dropped connection does not heal.
                    self.consumers.append(
                        LedgerConsumer(
                            bc.redis_url,
                            self.ledger if shared else _ConsumerLedger(ledger_url),
                            consumer=name if i == 0 else f"{name}-c{i}",
                            stream=bc.stream,
                            ledger_factory=None if shared else lambda: _ConsumerLedger(ledger_url),
                        )
                    )
        else:
            self.sink = DirectSink(self.ledger, self.spool)
        self.meter = UsageMeter(self.sink, interval=config.rtsp.report_interval)
        self._consumer_tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.sink.start()
        loop = asyncio.get_running_loop()
        self._consumer_tasks = [
            loop.create_task(c.run(), name=f"ledger-consumer-{i}")
            for i, c in enumerate(self.consumers)
        ]

    async def stop(self) -> None:
        """Last intervals of open sessions first, then flush, then stop consuming."""
        await self.meter.stop()
        await self.sink.stop()
        for consumer in self.consumers:
            await consumer.stop()
        for task in self._consumer_tasks:
            await cancel_and_wait(task)
        for consumer in self.consumers:
            close = getattr(consumer.ledger, "close", None)
            if callable(close):
                close()
        self.spool.close()
        if self._own_db:
            self.db.close()
