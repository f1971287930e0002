"""The consumer: Redis stream -> ledger, acknowledging only what the ledger committed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from tenacity import AsyncRetrying, RetryCallState

from billing.transport.codec import DEAD_LETTER_FIELD_BYTES, DEFAULT_STREAM, decode_entries
from billing.transport.sinks import backoff

log = logging.getLogger(__name__)

T = TypeVar("T")


# The consumer: Redis stream -> ledger, acknowledging only what the ledger committed.


class RowLedgerLike(Protocol):
    """What ``LedgerConsumer`` needs of ``billing.ledger.Ledger``."""

    def record_rows(self, rows: Sequence[str]) -> int: ...


@dataclasses.dataclass
class ConsumerStats:
    entries: int = 0  # entries processed (committed and acknowledged)
    events: int = 0  # events in those entries
    new: int = 0  # events the ledger reported as new
    duplicates: int = 0  # events already in the ledger (or twice in one read), skipped
    claimed: int = 0  # entries taken over from idle consumers with XAUTOCLAIM
    claimed_deleted: int = 0  # pending entries whose stream entry was gone: acknowledged
    dead_lettered: int = 0  # undecodable entries moved to the dead-letter stream
    pending_reread: int = 0  # own pending entries re-read from id 0
    ledger_failures: int = 0
    redis_failures: int = 0


class _Stopping(Exception):
    """Raised inside a retry loop when stop() was asked for: leave unacknowledged."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RedisError | OSError)


class LedgerConsumer:
    """Reads ``stream`` in consumer group ``group`` and records every entry's events in the
    ledger, acknowledging (and, with ``delete_acked``, deleting) an entry only after ``record``
    returned. At start, and after any Redis error, it first re-reads its own pending entries
    (id ``0``); every ``claim_interval`` seconds it XAUTOCLAIMs entries idle longer than
    ``claim_idle_ms`` (a dead consumer's). Undecodable entries go to ``dead_letter_stream``
    with the error, then are acknowledged. Ledger failures are retried with backoff, without
    acknowledging; ``ledger_factory``, if given, reopens the ledger after a failure (a dropped
    database connection does not heal by itself).

    ``consumer`` must be stable across restarts of the same worker (default: the host name) so
    a restarted worker finds its own pending entries. ``delete_acked`` assumes this group is
    the stream's only reader; turn it off if other groups read the stream too."""

    def __init__(
        self,
        redis_url: str,
        ledger: RowLedgerLike,
        group: str = "ledger",
        consumer: str | None = None,
        *,
        stream: str = DEFAULT_STREAM,
        dead_letter_stream: str | None = None,
        claim_idle_ms: int = 60_000,
        claim_interval: float | None = None,
        count: int = 50,
        block_ms: int = 250,
        delete_acked: bool = True,
        ledger_factory: Callable[[], RowLedgerLike] | None = None,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        socket_timeout: float = 10.0,
    ) -> None:
        self.redis_url = redis_url
        self.ledger: RowLedgerLike | None = ledger
        self.group = group
        if not consumer:
            # Never the host name: two nodes on one host would be one consumer.
            raise ValueError("LedgerConsumer needs a consumer name (the node's id)")
        self.consumer = consumer
        self.stream = stream
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead"
        self.claim_idle_ms = claim_idle_ms
        self.claim_interval = (
            claim_interval if claim_interval is not None else max(claim_idle_ms / 2000, 0.05)
        )
        self.count = count
        self.block_ms = block_ms
        self.delete_acked = delete_acked
        self.ledger_factory = ledger_factory
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.socket_timeout = socket_timeout
        self.stats = ConsumerStats()
        self._stop = asyncio.Event()
        self._running = False
        self._done = asyncio.Event()
        self._redis: aioredis.Redis | None = None

    # -- lifecycle

    async def run(self) -> None:
        """Consume until ``stop()``; a long-lived task. Cancelling it is a crash: whatever was
        read but not acknowledged stays pending (re-read or claimed later)."""
        if self._running:
            raise RuntimeError("consumer already running")
        self._running = True
        self._done.clear()
        self._redis = aioredis.Redis.from_url(
            self.redis_url,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout,
        )
        try:
            await self._retry(self._ensure_group, "create group")
            reread_pending = True
            next_claim = time.monotonic()
            while not self._stop.is_set():
                try:
                    if reread_pending:
                        await self._read_own_pending()
                        reread_pending = False
                    if time.monotonic() >= next_claim:
                        await self._autoclaim()
                        next_claim = time.monotonic() + self.claim_interval
                    entries = await self._read(">", block=self.block_ms)
                    if entries:
                        await self._process(entries)
                except _Stopping:
                    break
                except (RedisError, OSError) as exc:
                    self.stats.redis_failures += 1
                    reread_pending = True
                    if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                        log.error("consumer %s: group vanished (Redis lost data?)", self.consumer)
                        with contextlib.suppress(_Stopping):
                            await self._retry(self._ensure_group, "create group")
                        continue
                    log.warning("consumer %s: Redis error: %s", self.consumer, exc)
                    await self._sleep(self._redis_backoff())
                else:
                    self._redis_errors_in_row = 0
        except _Stopping:
            pass
        finally:
            self._running = False
            redis, self._redis = self._redis, None
            with contextlib.suppress(Exception):
                await redis.aclose()
            self._done.set()

    async def stop(self) -> None:
        """Finish the entry in hand (or give up its retries, unacknowledged) and return once
        ``run()`` has returned."""
        self._stop.set()
        if self._running:
            await self._done.wait()

    # -- steps

    _redis_errors_in_row = 0

    def _redis_backoff(self) -> float:
        self._redis_errors_in_row += 1
        return float(min(self.backoff_initial * 2**self._redis_errors_in_row, self.backoff_max))

    @property
    def _r(self) -> aioredis.Redis:
        assert self._redis is not None
        return self._redis

    async def _ensure_group(self) -> None:
        try:
            await self._r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, last_id: str | bytes, block: int | None) -> list[Any]:
        resp: Any = await self._r.xreadgroup(
            self.group, self.consumer, {self.stream: last_id}, count=self.count, block=block
        )
        if not resp:
            return []
        entries: list[Any] = resp[0][1]
        return entries

    async def _read_own_pending(self) -> None:
        last: str | bytes = "0"
        while not self._stop.is_set():
            entries = await self._read(last, block=None)
            if not entries:
                return
            last = entries[-1][0]
            entries = [e for e in entries if e[1]]  # an empty dict: deleted from the stream
            self.stats.pending_reread += len(entries)
            if entries:
                await self._process(entries)

    async def _autoclaim(self) -> None:
        start: str | bytes = "0-0"
        for _ in range(1000):  # a bound on one round; the next round goes on
            resp = await self._r.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=start,
                count=self.count,
            )
            start, entries = resp[0], resp[1]
            deleted = resp[2] if len(resp) > 2 else []
            if deleted:
                await self._r.xack(self.stream, self.group, *deleted)
                self.stats.claimed_deleted += len(deleted)
            entries = [e for e in entries if e[1]]
            if entries:
                self.stats.claimed += len(entries)
                log.info("consumer %s: claimed %d idle entries", self.consumer, len(entries))
                await self._process(entries)
            if start in (b"0-0", "0-0"):
                return

    async def _process(self, entries: list[Any]) -> None:
        good_ids, rows, poison = await asyncio.to_thread(decode_entries, entries)
        for entry_id, fields, error in poison:
            await self._dead_letter(entry_id, fields, error)
        if not good_ids:
            return
        new = await self._retry(lambda: self._record(rows), "ledger record", ledger=True)
        await self._retry(lambda: self._ack(good_ids), "ack")
        self.stats.entries += len(good_ids)
        self.stats.events += len(rows)
        self.stats.new += new
        self.stats.duplicates += len(rows) - new

    async def _record(self, rows: list[str]) -> int:
        if self.ledger is None:
            assert self.ledger_factory is not None
            self.ledger = await asyncio.to_thread(self.ledger_factory)
        try:
            return await asyncio.to_thread(self.ledger.record_rows, rows)
        except Exception:
            if self.ledger_factory is not None:
                old, self.ledger = self.ledger, None
                close = getattr(old, "close", None)
                if callable(close):
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(close)
            raise

    async def _ack(self, ids: list[Any]) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, *ids)
            if self.delete_acked:
                pipe.xdel(self.stream, *ids)
            await pipe.execute()

    async def _dead_letter(self, entry_id: Any, fields: dict[Any, Any], error: str) -> None:
        record: dict[Any, Any] = {
            "dl:stream": self.stream,
            "dl:id": entry_id,
            "dl:group": self.group,
            "dl:consumer": self.consumer,
            "dl:error": error[:2000],
        }
        for key, value in fields.items():
            name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            if isinstance(value, bytes | str) and len(value) > DEAD_LETTER_FIELD_BYTES:
                record[f"dl:truncated:{name}"] = str(len(value))
                value = value[:DEAD_LETTER_FIELD_BYTES]
            record[f"orig:{name}"] = value

        async def move() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.xadd(self.dead_letter_stream, record)
                pipe.xack(self.stream, self.group, entry_id)
                if self.delete_acked:
                    pipe.xdel(self.stream, entry_id)
                await pipe.execute()

        await self._retry(move, "dead-letter")
        self.stats.dead_lettered += 1
        log.error(
            "consumer %s: entry %r dead-lettered to %s: %s",
            self.consumer,
            entry_id,
            self.dead_letter_stream,
            error,
        )

    # -- retries

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _retry(self, fn: Callable[[], Awaitable[T]], what: str, *, ledger: bool = False) -> T:
        """Run ``fn`` until it succeeds, backing off exponentially (tenacity) on failures;
        raise ``_Stopping`` if ``stop()`` is asked for meanwhile."""

        def should_retry(state: RetryCallState) -> bool:
            outcome = state.outcome
            if outcome is None or not outcome.failed:
                return False
            exc = outcome.exception()
            if isinstance(exc, _Stopping) or not isinstance(exc, Exception):
                return False  # stopping, or cancelled (tenacity would swallow that)
            if ledger:
                self.stats.ledger_failures += 1
            elif exc is not None and _retryable(exc):
                self.stats.redis_failures += 1
            else:
                return False
            log.warning(
                "consumer %s: %s failed (attempt %d): %s",
                self.consumer,
                what,
                state.attempt_number,
                exc,
            )
            return not self._stop.is_set()

        result: T | None = None
        try:
            async for attempt in AsyncRetrying(
                wait=backoff(self.backoff_initial, self.backoff_max),
                retry=should_retry,
                sleep=self._sleep,
                reraise=True,
            ):
                with attempt:
                    if self._stop.is_set() and attempt.retry_state.attempt_number > 1:
                        raise _Stopping
                    result = await fn()
        except _Stopping:
            raise
        except Exception:
            if self._stop.is_set():
                raise _Stopping from None
            raise
        return result  # type: ignore[return-value]
