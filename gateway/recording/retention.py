"""Retention and disk pressure: which segments go, in which order, and the record of each.

:class:`Housekeeper` is synchronous (the recorder runs it on a worker thread) and takes its
clock and its view of free space as arguments, so tests drive it without sleeping or filling a
disk.

- :meth:`Housekeeper.sweep` deletes exactly the closed segments past their camera's retention
  that no active evidence lock covers.
- :meth:`Housekeeper.relieve` deletes the oldest unlocked segments, any camera, while free
  space is below the low-water mark; locked segments stay whatever the pressure.

A deletion removes the file, then the index rows, then is audited (``recording_deleted``,
with the segment, its times and why). A crash between the first two leaves rows without a file,
which the reconciler drops at the next start.

Retention applied to a camera (:class:`Retention`): its ``record_purpose``'s days if it names
one, else the register's ``retention_days`` for it, else ``recording.retention_days``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gateway.recording.disk import Mark, Pressure, Space, assess
from gateway.recording.index import RecordingIndex, Segment

log = logging.getLogger(__name__)

__all__ = ["Deletion", "Housekeeper", "Relief", "Retention"]


@dataclass(frozen=True, slots=True)
class Retention:
    """How long one camera's footage is kept, and where that figure came from."""

    days: int
    source: str  # "purpose:<name>", "register" or "default"

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.days)


@dataclass(frozen=True, slots=True)
class Deletion:
    segment: Segment
    reason: str  # "retention" or "disk_pressure"
    retention: Retention | None


@dataclass(frozen=True, slots=True)
class Relief:
    pressure: Pressure  # after deleting
    deleted: list[Segment]
    space: Space


class Housekeeper:
    def __init__(
        self,
        index: RecordingIndex,
        retention: Callable[[str], Retention],
        *,
        on_delete: Callable[[Deletion], None] = lambda d: None,
        low_water: Mark,
        critical: Mark,
        free_space: Callable[[], Space],
    ) -> None:
        self.index = index
        self.retention = retention
        self.on_delete = on_delete
        self.low_water = low_water
        self.critical = critical
        self.free_space = free_space
        self.deleted_retention = 0
        self.deleted_pressure = 0

    def sweep(self, now: datetime) -> list[Segment]:
        """Delete every segment past retention that no lock covers; return them."""
        cache: dict[str, Retention] = {}

        def period(camera: str) -> timedelta:
            if camera not in cache:
                cache[camera] = self.retention(camera)
            return cache[camera].period

        done = []
        for seg in self.index.segments_expired(now, period):
            if self._delete(Deletion(seg, "retention", cache.get(seg.camera))):
                self.deleted_retention += 1
                done.append(seg)
        return done

    def relieve(self, now: datetime, *, batch: int = 16) -> Relief:
        """While free space is below the low-water mark, delete the oldest unlocked segments."""
        deleted: list[Segment] = []
        space = self.free_space()
        pressure = assess(space, self.low_water, self.critical)
        while pressure is not Pressure.OK:
            victims = self.index.oldest_unlocked(now, batch)
            if not victims:
                break  # everything left is locked or being written
            for seg in victims:
                if self._delete(Deletion(seg, "disk_pressure", None)):
                    self.deleted_pressure += 1
                    deleted.append(seg)
                space = self.free_space()
                pressure = assess(space, self.low_water, self.critical)
                if pressure is Pressure.OK:
                    break
        return Relief(pressure, deleted, space)

    def _delete(self, deletion: Deletion) -> bool:
        seg = deletion.segment
        path: Path = self.index.file(seg)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("recording: cannot delete %s: %s", path, exc)
            return False
        _prune_dirs(path.parent, self.index.root)
        if not self.index.delete_segment(seg.id):
            return False  # someone else deleted it first
        try:
            self.on_delete(deletion)
        except Exception:
            log.exception("recording: deletion of %s not audited", seg.id)
        return True


def _prune_dirs(directory: Path, root: Path) -> None:
    """Remove now-empty day and camera directories up to (not including) the root."""
    try:
        root = root.resolve()
        directory = directory.resolve()
        while directory != root and root in directory.parents:
            directory.rmdir()
            directory = directory.parent
    except OSError:
        pass  # not empty (or already gone)
