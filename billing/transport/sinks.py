"""The gateway's usage sinks: batches into the ledger (DirectSink) or a Redis stream
(RedisStreamSink), spooled to disk while their store is down."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
from tenacity import AsyncRetrying, RetryCallState, wait_exponential, wait_random
from tenacity.wait import wait_base

from billing.model import UsageEvent
from billing.transport.codec import DEFAULT_STREAM, MAX_ENTRY_EVENTS, encode_entries
from billing.transport.spool import Spool, SpoolError

log = logging.getLogger(__name__)


# Sinks: the gateway's UsageSink implementations.


def backoff(initial: float, maximum: float) -> wait_base:
    """Exponential from ``initial`` up to ``maximum`` seconds, plus up to ``initial`` jitter."""
    return wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial)


class LedgerLike(Protocol):
    """What ``DirectSink`` needs of ``billing.ledger.Ledger``."""

    def record(self, events: Sequence[UsageEvent]) -> int: ...


@dataclasses.dataclass
class SinkStats:
    emitted: int = 0
    written: int = 0  # events delivered to the store (ledger or Redis), replays included
    batches: int = 0
    failures: int = 0  # failed writes to the store (each sends its batch to the spool)
    spooled: int = 0
    replayed: int = 0  # events drained from the spool into the store
    spool_full: int = 0  # batches held in memory because the spool refused them
    late: int = 0  # emitted after stop(): appended straight to the spool


class _BatchingSink:
    """``emit`` appends to a deque (never blocks, safe from any thread); a task flushes it in
    batches every ``flush_interval`` seconds or as soon as ``batch_size`` events are waiting.
    A failed write sends the batch to the spool and marks the store down; a recovery task
    probes it with exponential backoff (tenacity) and then drains the spool into it."""

    def __init__(
        self,
        spool: Spool,
        *,
        batch_size: int,
        flush_interval: float,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self.stats = SinkStats()
        self._buf: collections.deque[UsageEvent] = collections.deque()
        self._held: collections.deque[list[UsageEvent]] = collections.deque()
        self._healthy = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False

    # -- the store: subclasses

    async def _write(self, batch: list[UsageEvent]) -> None:
        raise NotImplementedError

    _has_probe = False  # True where _probe() is a real check (Redis: PING)

    async def _probe(self) -> None:
        """Raise unless the store looks usable again."""

    async def _close(self) -> None:
        """Release the store's resources after the last flush."""

    # -- public

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def buffered(self) -> int:
        return len(self._buf) + sum(len(b) for b in self._held)

    def emit(self, event: UsageEvent) -> None:
        if self._closed:
            # After stop(): nothing will flush the buffer any more, so make it durable now.
            self.spool.append([event])
            self.stats.late += 1
            return
        self._buf.append(event)
        self.stats.emitted += 1
        if len(self._buf) >= self.batch_size and self._wake is not None:
            if not self._wake.is_set():
                self._poke()

    def start(self) -> None:
        """Start the flusher on the running event loop (drains a spool left by a crash)."""
        if self._task is not None:
            raise RuntimeError("sink already started")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"{type(self).__name__}-flusher")

    async def stop(self) -> None:
        """Flush everything buffered (to the store, or to the spool if it is down), let a
        running spool drain finish (up to ``stop_timeout``), then release resources."""
        if self._closed:
            return
        self._stopping = True
        if self._task is not None:
            assert self._stop_event is not None
            self._stop_event.set()
            self._poke()
            await self._task
        recovery = self._recovery
        if recovery is not None and not recovery.done():
            if self._healthy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(recovery), self.stop_timeout)
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await recovery
        leftovers = list(self._buf) + [e for b in self._held for e in b]
        self._buf.clear()
        self._held.clear()
        if leftovers:
            try:
                await asyncio.to_thread(self.spool.append, leftovers)
                self.stats.spooled += len(leftovers)
            except SpoolError:
                log.critical(
                    "%s stopping: %d usage events could neither be stored nor spooled",
                    type(self).__name__,
                    len(leftovers),
                )
                raise
        self._closed = True
        await self._close()

    # -- internals

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def _take(self, n: int) -> list[UsageEvent]:
        pop = self._buf.popleft
        return [pop() for _ in range(n)]

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if len(self._buf) < self.batch_size and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                self._wake.clear()
            stopping = self._stopping
            n = len(self._buf)
            while n > 0:
                batch = self._take(min(n, self.batch_size))
                n -= len(batch)
                await self._deliver(batch)
            self._maybe_recover()
            if stopping:
                return

    async def _deliver(self, batch: list[UsageEvent]) -> None:
        if self._healthy:
            try:
                await self._write(batch)
            except Exception as exc:
                self._healthy = False
                self.stats.failures += 1
                log.warning(
                    "%s: store write failed, spooling: %s", type(self).__name__, exc or repr(exc)
                )
            else:
                self.stats.written += len(batch)
                self.stats.batches += 1
                return
        await self._spool(batch)

    async def _spool(self, batch: list[UsageEvent]) -> None:
        try:
            await asyncio.to_thread(self.spool.append, batch)
        except SpoolError as exc:
            self.stats.spool_full += 1
            self._held.append(batch)
            log.error(
                "%s: cannot spool %d events (%s); holding %d in memory",
                type(self).__name__,
                len(batch),
                exc,
                self.buffered,
            )
        else:
            self.stats.spooled += len(batch)

    def _maybe_recover(self) -> None:
        if self._stopping and not self._healthy:
            return
        if self._healthy and not self._held and self.spool.is_empty:
            return
        if self._recovery is None or self._recovery.done():
            assert self._loop is not None
            self._recovery = self._loop.create_task(
                self._recover(), name=f"{type(self).__name__}-recovery"
            )

    async def _backoff_sleep(self, seconds: float) -> None:
        assert self._stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    def _retry_unless_stopping(self, state: RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        if not isinstance(outcome.exception(), Exception):
            return False  # cancellation (tenacity would swallow it otherwise)
        return not (self._stopping and not self._healthy)

    async def _recover(self) -> None:
        """Probe the store with backoff, then write the held batches and drain the spool.
        The store counts as healthy again (new batches bypass the spool) after a successful
        probe, where the subclass has one, or after the first successful replayed write."""

        async def replay(events: list[UsageEvent]) -> None:
            await self._write(events)
            self._healthy = True
            self.stats.written += len(events)
            self.stats.replayed += len(events)

        async for attempt in AsyncRetrying(
            wait=backoff(self.backoff_initial, self.backoff_max),
            retry=self._retry_unless_stopping,
            sleep=self._backoff_sleep,
            reraise=True,
        ):
            with attempt:
                try:
                    if not self._healthy and self._has_probe:
                        await self._probe()
                        self._healthy = True
                    while self._held:
                        await replay(self._held[0])
                        self._held.popleft()
                    while not self.spool.is_empty:
                        if await self.spool.drain_async(replay) == 0 and not self.spool.is_empty:
                            await asyncio.sleep(self.flush_interval)  # another drain running
                    self._healthy = True
                except Exception as exc:
                    if attempt.retry_state.attempt_number == 1:
                        log.warning("%s: store still down: %s", type(self).__name__, exc)
                    self._healthy = False
                    raise
        log.info("%s: store healthy, spool drained", type(self).__name__)


class DirectSink(_BatchingSink):
    """Embedded mode: batches go straight into the ledger (``record`` runs in a worker thread).

    ``start()`` on the event loop, ``await stop()`` at shutdown."""

    def __init__(
        self,
        ledger: LedgerLike,
        spool: Spool,
        *,
        batch_size: int = 2000,
        flush_interval: float = 0.1,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            spool,
            batch_size=batch_size,
            flush_interval=flush_interval,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            stop_timeout=stop_timeout,
        )
        self.ledger = ledger
        self.new_events = 0  # what record() reported as new (the rest were duplicates)

    async def _write(self, batch: list[UsageEvent]) -> None:
        # Not `self.new_events += await ...`: that reads the counter before awaiting, and the
        # flusher and the spool replay write concurrently, so one update would be lost.
        new = await asyncio.to_thread(self.ledger.record, batch)
        self.new_events += new

    # No separate probe: the recovery's first replayed batch is the probe.


class RedisStreamSink(_BatchingSink):
    """Shared mode: each flush XADDs its batch as entries of up to ``entry_events`` events
    (field ``rows``: newline-separated :mod:`billing.usagerow` rows; ``n``: how many; ``v``:
    format version) in one pipeline.

    ``maxlen`` (approximate MAXLEN trimming) is off by default: trimming entries the consumer
    has not read would lose usage; ``LedgerConsumer`` deletes entries once acknowledged."""

    def __init__(
        self,
        redis_url: str,
        stream: str = DEFAULT_STREAM,
        spool: Spool | None = None,
        *,
        entry_events: int = 100,
        batch_size: int = 5000,
        flush_interval: float = 0.05,
        maxlen: int | None = None,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        stop_timeout: float = 10.0,
        socket_timeout: float = 5.0,
    ) -> None:
        if spool is None:
            raise ValueError("RedisStreamSink needs a Spool for when Redis is down")
        if not 1 <= entry_events <= MAX_ENTRY_EVENTS:
            raise ValueError(f"entry_events must be between 1 and {MAX_ENTRY_EVENTS}")
        super().__init__(
            spool,
            batch_size=batch_size,
            flush_interval=flush_interval,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            stop_timeout=stop_timeout,
        )
        self.redis_url = redis_url
        self.stream = stream
        self.entry_events = entry_events
        self.maxlen = maxlen
        self.entries_written = 0
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )

    async def _write(self, batch: list[UsageEvent]) -> None:
        entries = await asyncio.to_thread(encode_entries, batch, self.entry_events)
        async with self._redis.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            await pipe.execute()
        self.entries_written += len(entries)

    _has_probe = True

    async def _probe(self) -> None:
        await self._redis.ping()

    async def _close(self) -> None:
        await self._redis.aclose()
