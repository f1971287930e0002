"""The local disk spool: where usage waits while its store is down."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from billing.model import UsageEvent
from billing.transport.codec import DecodeError, decode_event, encode_event

log = logging.getLogger(__name__)


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
