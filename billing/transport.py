"""Moving usage events from the gateway into the ledger without losing or double-counting any.

Two ways in, one guarantee:

* ``DirectSink`` (embedded mode) batches events in memory and writes them into the ledger from a
  background task; when the store is down, batches go to a local disk ``Spool`` and are replayed
  when it works again.
* ``RedisStreamSink`` (shared mode) batches events into Redis stream entries (up to
  ``entry_events`` events per entry, as :mod:`billing.usagerow` text, pipelined); when Redis is
  down, batches go to the spool and are replayed when Redis is back. ``LedgerConsumer`` reads
  the stream in a consumer group, checks every row, hands the checked text to the ledger
  (``record_rows``: PostgreSQL ``COPY``s it as it is) and acknowledges an entry only after the
  ledger committed its events.

Every hop is at-least-once (a replay, a retried pipeline, a re-read pending entry may deliver an
event twice); exactly-once comes from the ledger, whose ``record`` inserts each ``event_id`` once
and reports how many were new. This module never imports ``gateway``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from tenacity import AsyncRetrying, RetryCallState, wait_exponential, wait_random
from tenacity.wait import wait_base

from billing.model import UsageEvent, UsageKind
from billing.usagerow import RowError, check_rows, encode_row, encode_rows

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STREAM = "feedgate:usage"
# Stream entry formats: "2" is {"v", "n", "rows"} with rows in billing.usagerow form (written
# now); "1" is {"v", "n", "events"} with a JSON list of event objects (still read, so entries
# left in the stream by an older gateway are not lost in an upgrade).
FORMAT_VERSION = b"2"
_JSON_FORMAT_VERSION = b"1"
# Bounds on what the consumer will look at. A real entry holds at most MAX_ENTRY_EVENTS rows of
# a few hundred bytes; anything bigger was not written by a sink and is dead-lettered unread,
# with at most DEAD_LETTER_FIELD_BYTES of each field kept for inspection.
MAX_ENTRY_EVENTS = 1000
MAX_ENTRY_BYTES = 1 << 20
DEAD_LETTER_FIELD_BYTES = 64 * 1024

# ---------------------------------------------------------------------------------------------
# Event (de)serialisation: compact JSON objects keyed by field name; times are ISO 8601 with
# their UTC offset, so decode(encode(e)) == e field for field.

_FIELDS = frozenset(f.name for f in dataclasses.fields(UsageEvent))


class DecodeError(ValueError):
    """Bytes that are not a usage event (or a list of them) in this module's format."""


def event_to_dict(event: UsageEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "session_id": event.session_id,
        "seq": event.seq,
        "tenant": event.tenant,
        "principal": event.principal,
        "camera": event.camera,
        "camera_owner": event.camera_owner,
        "kind": event.kind.value,
        "protocol": event.protocol,
        "variant": event.variant,
        "start": event.start.isoformat(),
        "end": event.end.isoformat(),
        "duration_ms": event.duration_ms,
        "bytes_sent": event.bytes_sent,
        "final": event.final,
    }


def _str(value: Any, name: str) -> str:
    if type(value) is not str:
        raise DecodeError(f"{name}: expected a string, got {type(value).__name__}")
    return value


def _int(value: Any, name: str) -> int:
    if type(value) is not int:
        raise DecodeError(f"{name}: expected an integer, got {type(value).__name__}")
    return value


def event_from_dict(data: Any) -> UsageEvent:
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object, got {type(data).__name__}")
    if data.keys() != _FIELDS:
        missing, extra = sorted(_FIELDS - data.keys()), sorted(data.keys() - _FIELDS)
        raise DecodeError(f"fields do not match UsageEvent: missing {missing}, unknown {extra}")
    principal = data["principal"]
    final = data["final"]
    if type(final) is not bool:
        raise DecodeError("final: expected a boolean")
    try:
        return UsageEvent(
            event_id=_str(data["event_id"], "event_id"),
            session_id=_str(data["session_id"], "session_id"),
            seq=_int(data["seq"], "seq"),
            tenant=_str(data["tenant"], "tenant"),
            principal=None if principal is None else _str(principal, "principal"),
            camera=_str(data["camera"], "camera"),
            camera_owner=_str(data["camera_owner"], "camera_owner"),
            kind=UsageKind(_str(data["kind"], "kind")),
            protocol=_str(data["protocol"], "protocol"),
            variant=_str(data["variant"], "variant"),
            start=datetime.fromisoformat(_str(data["start"], "start")),
            end=datetime.fromisoformat(_str(data["end"], "end")),
            duration_ms=_int(data["duration_ms"], "duration_ms"),
            bytes_sent=_int(data["bytes_sent"], "bytes_sent"),
            final=final,
        )
    except DecodeError:
        raise
    except (ValueError, TypeError) as exc:  # BillingError is a ValueError
        raise DecodeError(str(exc)) from None


_dumps = json.JSONEncoder(separators=(",", ":")).encode


def encode_event(event: UsageEvent) -> str:
    return _dumps(event_to_dict(event))


def decode_event(data: str | bytes) -> UsageEvent:
    try:
        obj = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DecodeError(f"not JSON: {exc}") from None
    return event_from_dict(obj)


def encode_events(events: Sequence[UsageEvent]) -> bytes:
    return _dumps([event_to_dict(e) for e in events]).encode()


def decode_events(data: str | bytes) -> list[UsageEvent]:
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(obj, list):
        raise DecodeError(f"expected a JSON list, got {type(obj).__name__}")
    return [event_from_dict(item) for item in obj]


# ---------------------------------------------------------------------------------------------
# The local disk spool.


class SpoolError(RuntimeError):
    """The spool cannot take or give back events (locked by another process, disk error)."""


class SpoolFull(SpoolError):
    """Appending would take the spool past ``max_bytes``; nothing was written."""


@dataclasses.dataclass
class SpoolStats:
    appended_events: int = 0
    appended_batches: int = 0
    replayed_events: int = 0
    segments_removed: int = 0
    torn_lines: int = 0  # an unterminated, undecodable last line (a crash mid-append)
    corrupt_lines: int = 0  # a complete line that does not decode: copied to quarantine.jsonl
    full_rejections: int = 0  # appends refused because the spool was full


_SEGMENT_PREFIX, _SEGMENT_SUFFIX = "seg-", ".jsonl"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """An append-only directory of segment files, one JSON event per line.

    ``append`` writes a batch with one ``write`` and fsyncs it before returning; ``drain``
    replays whole segments oldest first and deletes a segment only after the callback accepted
    every event in it (so a failure or a crash mid-drain replays it again: the ledger dedupes).
    A process always appends to a fresh segment, so a torn line (a crash mid-append) can only be
    the last line of a segment; it is ignored and counted. The directory is locked (flock) so two
    processes never share one spool. All methods block: call them from a worker thread when on
    an event loop (the sinks do)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 8 << 20,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.stats = SpoolStats()
        self._lock = threading.Lock()  # the write side and the byte count
        self._drain_lock = threading.Lock()  # one drain at a time
        self._lockfile = open(self.directory / "LOCK", "a+b")  # held (flocked) while open
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockfile.close()
            raise SpoolError(f"spool {self.directory} is in use by another process") from None
        self._fd: int | None = None
        self._segment_size = 0
        self._torn_seen: set[str] = set()
        existing = self._segments()
        self._next = self._number(existing[-1]) + 1 if existing else 1
        self._bytes = sum(p.stat().st_size for p in existing)

    # -- inspection

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    @property
    def is_empty(self) -> bool:
        return self._bytes == 0

    def segments(self) -> list[Path]:
        return self._segments()

    def _segments(self) -> list[Path]:
        return sorted(
            p
            for p in self.directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}")
            if p.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)].isdigit()
        )

    @staticmethod
    def _number(path: Path) -> int:
        return int(path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)])

    # -- writing

    def append(self, events: Sequence[UsageEvent]) -> None:
        """Write ``events`` durably (fsync) or raise; ``SpoolFull`` when over ``max_bytes``."""
        if not events:
            return
        data = "".join([encode_event(e) + "\n" for e in events]).encode()
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                self.stats.full_rejections += 1
                raise SpoolFull(
                    f"spool {self.directory} full: {self._bytes} + {len(data)} bytes"
                    f" > max_bytes {self.max_bytes}"
                )
            if self._fd is None:
                self._open_segment()
            assert self._fd is not None
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                os.fsync(self._fd)
            except OSError as exc:
                # Whatever part was written is now the torn tail of a sealed segment.
                with contextlib.suppress(OSError):
                    self._bytes += os.fstat(self._fd).st_size - self._segment_size
                self._seal()
                raise SpoolError(f"spool {self.directory}: write failed: {exc}") from None
            self._bytes += len(data)
            self._segment_size += len(data)
            self.stats.appended_events += len(events)
            self.stats.appended_batches += 1
            if self._segment_size >= self.segment_bytes:
                self._seal()

    def _open_segment(self) -> None:
        path = self.directory / f"{_SEGMENT_PREFIX}{self._next:016d}{_SEGMENT_SUFFIX}"
        self._next += 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._segment_size = 0
        _fsync_dir(self.directory)

    def _seal(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def seal(self) -> None:
        """Close the segment being appended to: later appends start a new one."""
        with self._lock:
            self._seal()

    # -- reading back

    def load(self, path: Path) -> list[UsageEvent]:
        """The events of one segment; a torn last line is skipped and counted, a corrupt
        complete line is copied to ``quarantine.jsonl`` and counted."""
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the segment ends with a newline
        events: list[UsageEvent] = []
        for line in lines:
            if not line:
                continue
            try:
                events.append(decode_event(line))
            except DecodeError as exc:
                self.stats.corrupt_lines += 1
                log.error("spool %s: corrupt line quarantined: %s", path.name, exc)
                with open(self.directory / "quarantine.jsonl", "ab") as q:
                    q.write(line + b"\n")
                    q.flush()
                    os.fsync(q.fileno())
        if tail:
            try:
                events.append(decode_event(tail))  # complete but for its newline: keep it
            except DecodeError:
                if path.name not in self._torn_seen:
                    self._torn_seen.add(path.name)
                    self.stats.torn_lines += 1
                    log.warning(
                        "spool %s: ignoring a torn last line (%d bytes)", path.name, len(tail)
                    )
        return events

    def remove(self, path: Path) -> None:
        size = path.stat().st_size
        path.unlink()
        _fsync_dir(self.directory)
        with self._lock:
            self._bytes -= size
        self.stats.segments_removed += 1
        self._torn_seen.discard(path.name)

    def drain(self, callback: Callable[[list[UsageEvent]], object], chunk: int = 5000) -> int:
        """Replay every sealed-so-far segment through ``callback`` (in chunks), deleting each
        segment once all its events were accepted. Returns how many events were replayed; an
        exception from ``callback`` propagates and leaves that segment in place."""
        with self._drain_lock:
            self.seal()
            total = 0
            for path in self._segments():
                events = self.load(path)
                for i in range(0, len(events), chunk):
                    callback(events[i : i + chunk])
                self.remove(path)
                total += len(events)
                self.stats.replayed_events += len(events)
            return total

    async def drain_async(
        self, callback: Callable[[list[UsageEvent]], Awaitable[object]], chunk: int = 5000
    ) -> int:
        """``drain`` for an async callback; file work runs in worker threads. Returns 0 at once
        when another drain is running."""
        if not self._drain_lock.acquire(blocking=False):
            return 0
        try:
            await asyncio.to_thread(self.seal)
            total = 0
            for path in await asyncio.to_thread(self._segments):
                events = await asyncio.to_thread(self.load, path)
                for i in range(0, len(events), chunk):
                    await callback(events[i : i + chunk])
                await asyncio.to_thread(self.remove, path)
                total += len(events)
                self.stats.replayed_events += len(events)
            return total
        finally:
            self._drain_lock.release()

    def close(self) -> None:
        with self._lock:
            self._seal()
        if not self._lockfile.closed:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)
            self._lockfile.close()


# ---------------------------------------------------------------------------------------------
# Sinks: the gateway's UsageSink implementations.


def _backoff(initial: float, maximum: float) -> wait_base:
    """Exponential from ``initial`` up to ``maximum`` seconds, plus up to ``initial`` jitter."""
    return wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial)


class LedgerLike(Protocol):
    """What ``DirectSink`` needs of ``billing.ledger.Ledger``."""

    def record(self, events: Sequence[UsageEvent]) -> int: ...


class RowLedgerLike(Protocol):
    """What ``LedgerConsumer`` needs of ``billing.ledger.Ledger``."""

    def record_rows(self, rows: Sequence[str]) -> int: ...


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
            wait=_backoff(self.backoff_initial, self.backoff_max),
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

    def _entries(self, batch: list[UsageEvent]) -> list[dict[Any, Any]]:
        n = self.entry_events
        return [
            {"v": FORMAT_VERSION, "n": str(len(chunk)), "rows": encode_rows(chunk)}
            for chunk in (batch[i : i + n] for i in range(0, len(batch), n))
        ]

    async def _write(self, batch: list[UsageEvent]) -> None:
        entries = await asyncio.to_thread(self._entries, batch)
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


# ---------------------------------------------------------------------------------------------
# The consumer: Redis stream -> ledger, acknowledging only what the ledger committed.


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
        self.consumer = consumer or socket.gethostname()
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
        good_ids, rows, poison = await asyncio.to_thread(_decode_entries, entries)
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
                wait=_backoff(self.backoff_initial, self.backoff_max),
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


def _field(fields: dict[Any, Any], name: str) -> Any:
    return fields.get(name.encode(), fields.get(name))


def _decode_entries(
    entries: list[Any],
) -> tuple[list[Any], list[str], list[tuple[Any, dict[Any, Any], str]]]:
    """Stream entries -> (ids of good entries, their checked rows, bad entries with why)."""
    good_ids: list[Any] = []
    rows: list[str] = []
    poison: list[tuple[Any, dict[Any, Any], str]] = []
    for entry_id, fields in entries:
        try:
            size = sum(len(v) for v in fields.values() if isinstance(v, bytes | str))
            if size > MAX_ENTRY_BYTES:
                raise DecodeError(f"entry of {size} bytes is over the {MAX_ENTRY_BYTES} limit")
            version = _field(fields, "v")
            if isinstance(version, str):
                version = version.encode()
            if version == FORMAT_VERSION:
                payload = _field(fields, "rows")
                if payload is None:
                    raise DecodeError("no 'rows' field")
                text = payload.decode() if isinstance(payload, bytes) else str(payload)
                decoded = check_rows(text)
            elif version == _JSON_FORMAT_VERSION:
                payload = _field(fields, "events")
                if payload is None:
                    raise DecodeError("no 'events' field")
                decoded = [encode_row(e) for e in decode_events(payload)]
            else:
                raise DecodeError(f"unknown format version {version!r}")
            n = _field(fields, "n")
            if n is not None and int(n) != len(decoded):
                raise DecodeError(f"entry says {int(n)} events, holds {len(decoded)}")
        except (DecodeError, RowError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            poison.append((entry_id, fields, f"{type(exc).__name__}: {exc}"))
            continue
        good_ids.append(entry_id)
        rows.extend(decoded)
    return good_ids, rows, poison
