"""A durable local queue for audit entries that happened while the database was unreachable.

A session that ends, or a refusal, during a database outage is a fact the log must hold: it is
written here (one JSON line per entry, fsynced before the append returns), bounded by
``max_bytes``, and appended to the log in order when the database answers again
(:meth:`tenants.audit.AuditLog.flush`). Each entry keeps the time it happened as
``detail.occurred_at``; the log's own time is when it was appended, so the log's times stay in
order across nodes.

Progress is kept in a second file (the byte offset of the first entry not yet appended), also
fsynced after each append. A crash between an append's commit and that write drains the entry
again on the next run; the log holds each ``spool_id`` at most once (a unique column), so that
second append finds the first and adds nothing.

Full (``max_bytes`` not yet appended): :meth:`AuditSpool.put` raises :class:`SpoolFull` and
counts the entry in ``dropped``; the node reports itself degraded for as long as it has dropped
entries it could not keep (nothing is admitted meanwhile: a new session's start must be
appended to the database itself, so with the database down every new session is refused).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["AuditSpool", "Lost", "SpoolFull", "Spooled"]

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024


class SpoolFull(RuntimeError):
    """The spool holds ``max_bytes`` already: the entry was not kept."""


@dataclass(frozen=True)
class Lost:
    """Entries the spool could not keep: how many, and when the first and last happened."""

    count: int
    first: str
    last: str
    id: str  # the log's spool_id of its audit_gap entry, so it is recorded once


@dataclass(frozen=True)
class Spooled:
    offset: int  # of the line after this one
    fields: dict[str, Any]


class AuditSpool:
    """One process's spool directory (``entries.jsonl`` and ``offset``). Thread-safe."""

    def __init__(self, directory: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, mode=0o700, exist_ok=True)
        self._entries = self.directory / "entries.jsonl"
        self._offset = self.directory / "offset"
        self._lost = self.directory / "lost"  # a Lost not yet recorded in the log, as JSON
        self._entries.touch(mode=0o600, exist_ok=True)
        self.spooled = 0  # entries written by this process
        self.dropped = 0  # entries refused because the spool was full
        # Kept in memory (no disk on the caller's thread to ask): left by a previous run, or put.
        self.pending = self._entries.stat().st_size > self._read_offset()
        self._lost_now = self._read_lost()  # a loss the log has not recorded yet

    def put(self, fields: Mapping[str, Any]) -> str:
        """Keep one entry (``action``, ``tenant``, ..., ``detail``, ``occurred_at``) durably;
        its spool id. Full: the loss is counted durably (:meth:`lost`) and SpoolFull raised."""
        spool_id = uuid.uuid4().hex
        line = (json.dumps({**fields, "spool_id": spool_id}, separators=(",", ":")) + "\n").encode()
        with self._lock:
            size = self._entries.stat().st_size
            if size - self._read_offset() + len(line) > self.max_bytes:
                self.dropped += 1
                self._count_lost(str(fields.get("occurred_at") or ""))
                raise SpoolFull(f"audit spool {self.directory} is full ({self.max_bytes} bytes)")
            fd = os.open(self._entries, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.spooled += 1
            self.pending = True
        return spool_id

    def entries(self) -> Iterator[Spooled]:
        """The entries not yet appended, in order (a torn last line is skipped: it was never
        acknowledged)."""
        start = self._read_offset()
        with open(self._entries, "rb") as f:
            f.seek(start)
            offset = start
            for raw in f:
                offset += len(raw)
                if not raw.endswith(b"\n"):
                    return
                try:
                    fields = json.loads(raw)
                except ValueError:
                    continue  # never written by us whole; nothing to append
                yield Spooled(offset, fields)

    def done(self, offset: int) -> None:
        """Everything before ``offset`` is in the log; when all is, the files start over."""
        with self._lock:
            if offset >= self._entries.stat().st_size:
                with open(self._entries, "wb") as f:
                    os.fsync(f.fileno())
                offset = 0
                self.pending = False
            tmp = self._offset.with_suffix(".tmp")
            with open(tmp, "w") as f:
                f.write(str(offset))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._offset)

    @property
    def has_lost(self) -> bool:
        return self._lost_now is not None

    def lost(self) -> Lost | None:
        """What could not be kept and is not yet recorded in the log (this run's or a previous
        one's), or None. In memory: no disk read."""
        return self._lost_now

    def _read_lost(self) -> Lost | None:
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
            raw = json.loads(self._lost.read_text())
            return Lost(int(raw["count"]), str(raw["first"]), str(raw["last"]), str(raw["id"]))
        return None

    def lost_recorded(self, lost: Lost) -> None:
        """The log holds ``lost`` now; losses counted since stay for the next record."""
        with self._lock:
            now = self.lost()
            if now is None or now.count <= lost.count:
                self._lost.unlink(missing_ok=True)
                self._lost_now = None
            else:
                self._write_lost(Lost(now.count - lost.count, lost.last, now.last, _new_id()))

    def _count_lost(self, when: str) -> None:
        before = self.lost()
        if before is None:
            self._write_lost(Lost(1, when, when, _new_id()))
        else:
            self._write_lost(Lost(before.count + 1, before.first, when, before.id))

    def _write_lost(self, lost: Lost) -> None:
        tmp = self._lost.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(lost), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._lost)
        self._lost_now = lost

    def _read_offset(self) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self._offset.read_text() or 0)
        return 0


def _new_id() -> str:
    return f"gap-{uuid.uuid4().hex}"
