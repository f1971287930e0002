"""The recording index: what was recorded, where it is in which file, where the gaps are, and
which ranges are held under evidence lock. It lives in the tenancy database (SQLite or
PostgreSQL, migrated as component ``recording``) and is the one thing playback, export,
retention and the published figures ask about recordings.

Model (all times aware UTC ``datetime``; stored as integer microseconds since the epoch):

- A **segment** is one fragmented-MP4 file (``Segment.path``, relative to ``recording.dir``;
  :meth:`RecordingIndex.file` makes it absolute). Bytes ``[0, init_length)`` are its
  initialisation segment (``ftyp`` + ``moov``); every fragment after it is ``moof`` + ``mdat``.
  A segment is ``open`` while its writer appends to it and ``closed`` after.
- A **fragment** is one ``moof`` + ``mdat`` pair of a segment: ``[offset, offset + length)``
  in the file, covering ``[start, end)``. ``keyframe`` means its first sample is an IDR, so a
  decoder can start there. Every keyframe starts a fragment, and no fragment is longer than
  about 1 s: playback seeks to a fragment, never inside one.
- A **gap** is a stretch with no recording and its reason: ``camera_outage`` (the source went
  away or restarted), ``gateway_restart`` (this process was not running, or crashed),
  ``writer_overrun`` (the disk was too slow and units were dropped), ``disk_full`` (recording
  stopped at the critical disk mark). Gaps are never stitched over.
- An **evidence lock** keeps the segments overlapping ``[start, end)`` of one camera past
  retention and past disk pressure until it is released or expires.

The query API (what playback and export build on):

- ``spans(camera, start, end)``: recorded time spans overlapping the window, contiguous
  segments merged (MediaMTX's ``/list``), clipped to the window; ``gaps(camera, start, end)``.
- ``fragments_from(camera, t, end=None, limit=...)``: the keyframe fragment at or before ``t``
  (within the recording that covers ``t``; if ``t`` is in a gap, the first keyframe fragment
  after it), then the fragments that follow, in time order across segments.
- ``segment(id)``, ``segments(camera, start, end)``, ``file(segment)``, ``init_segment``-bytes
  are ``[0, init_length)`` of ``file(segment)``.
- ``segments_expired(now, retention)``: closed segments past their camera's retention that no
  active lock covers (the retention sweeper deletes exactly these); ``oldest_unlocked(n)``
  (disk pressure's victims).
- ``lock(...)``, ``release(...)``, ``locks(...)``, ``is_locked(...)``: evidence locks. The
  export engineer's API and CLI call these through :class:`gateway.recording.service`'s
  ``Recorder`` (which also audits them).

Every method blocks on the database: call it from a worker thread, never on the event loop.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.recording.model import (
    EvidenceLock,
    Fragment,
    Gap,
    GapReason,
    Segment,
    Span,
    from_us,
    to_us,
)
from tenants.db import Database

__all__ = [
    "MERGE_TOLERANCE",
    "EvidenceLock",
    "Fragment",
    "Gap",
    "GapReason",
    "RecordingIndex",
    "Segment",
    "Span",
    "from_us",
    "to_us",
]

# Segments closer than this with no gap between them are one span in spans().
MERGE_TOLERANCE = timedelta(seconds=1)

MIGRATIONS: list[str] = [
    # 1: segments, fragments, gaps, evidence locks.
    """
    CREATE TABLE recording_segments (
        id TEXT PRIMARY KEY,
        camera TEXT NOT NULL,
        path TEXT NOT NULL,
        start_us BIGINT NOT NULL,
        end_us BIGINT NOT NULL,
        init_length BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        codec TEXT NOT NULL,
        status TEXT NOT NULL,
        node TEXT NOT NULL
    );
    CREATE INDEX recording_segments_camera ON recording_segments (camera, start_us);
    CREATE INDEX recording_segments_end ON recording_segments (end_us);
    CREATE TABLE recording_fragments (
        segment TEXT NOT NULL REFERENCES recording_segments (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        camera TEXT NOT NULL,
        start_us BIGINT NOT NULL,
        end_us BIGINT NOT NULL,
        byte_offset BIGINT NOT NULL,
        length BIGINT NOT NULL,
        keyframe INTEGER NOT NULL,
        PRIMARY KEY (segment, seq)
    );
    CREATE INDEX recording_fragments_camera ON recording_fragments (camera, start_us);
    CREATE TABLE recording_gaps (
        camera TEXT NOT NULL,
        start_us BIGINT NOT NULL,
        end_us BIGINT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (camera, start_us, reason)
    );
    CREATE TABLE recording_locks (
        id TEXT PRIMARY KEY,
        camera TEXT NOT NULL,
        start_us BIGINT NOT NULL,
        end_us BIGINT NOT NULL,
        reason TEXT NOT NULL,
        tenant TEXT NOT NULL,
        principal TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        expires_us BIGINT NOT NULL,
        released_us BIGINT,
        released_by TEXT
    );
    CREATE INDEX recording_locks_camera ON recording_locks (camera, start_us)
    """,
]


_SEG_COLS = "id, camera, path, start_us, end_us, init_length, bytes, codec, status, node"
_FRAG_COLS = "segment, seq, camera, start_us, end_us, byte_offset, length, keyframe"
_LOCK_COLS = (
    "id, camera, start_us, end_us, reason, tenant, principal, created_us, expires_us,"
    " released_us, released_by"
)
# An active lock of the segment's camera overlapping it.
_LOCKED = (
    "EXISTS (SELECT 1 FROM recording_locks l WHERE l.camera = s.camera"
    " AND l.released_us IS NULL AND l.expires_us > ? AND l.start_us < s.end_us"
    " AND l.end_us > s.start_us)"
)


def _segment(r: Sequence[Any]) -> Segment:
    return Segment(
        r[0], r[1], r[2], from_us(r[3]), from_us(r[4]), int(r[5]), int(r[6]), r[7],
        r[8] == "closed", r[9],
    )  # fmt: skip


def _fragment(r: Sequence[Any]) -> Fragment:
    return Fragment(
        r[0], int(r[1]), r[2], from_us(r[3]), from_us(r[4]), int(r[5]), int(r[6]), bool(r[7])
    )


def _lock(r: Sequence[Any]) -> EvidenceLock:
    return EvidenceLock(
        r[0], r[1], from_us(r[2]), from_us(r[3]), r[4], r[5], r[6], from_us(r[7]),
        from_us(r[8]), from_us(r[9]) if r[9] is not None else None, r[10],
    )  # fmt: skip


class RecordingIndex:
    """The index over one database; ``root`` is ``recording.dir`` (segment paths are relative
    to it)."""

    def __init__(self, db: Database, root: str | Path = ".") -> None:
        self.db = db
        self.root = Path(root)
        db.migrate("recording", MIGRATIONS)

    def file(self, segment: Segment) -> Path:
        return self.root / segment.path

    # -- writing (the writer, reconcile, retention)

    def add_segment(self, segment: Segment) -> None:
        self.db.execute(
            f"INSERT INTO recording_segments ({_SEG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                segment.id, segment.camera, segment.path, to_us(segment.start),
                to_us(segment.end), segment.init_length, segment.bytes, segment.codec,
                "closed" if segment.closed else "open", segment.node,
            ),
        )  # fmt: skip

    def add_fragments(self, fragments: Sequence[Fragment]) -> None:
        """Index fragments (of one or more segments) and move each segment's end and size
        along, in one transaction."""
        if not fragments:
            return
        rows = [
            (f.segment, f.seq, f.camera, to_us(f.start), to_us(f.end), f.offset, f.length,
             int(f.keyframe))
            for f in fragments
        ]  # fmt: skip
        ends: dict[str, tuple[int, int]] = {}
        for f in fragments:
            end_us, size = to_us(f.end), f.offset + f.length
            old = ends.get(f.segment)
            ends[f.segment] = (max(end_us, old[0]), max(size, old[1])) if old else (end_us, size)
        with self.db.transaction():
            self.db.executemany(
                f"INSERT INTO recording_fragments ({_FRAG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )  # fmt: skip
            for seg, (end_us, size) in ends.items():
                self.db.execute(
                    "UPDATE recording_segments SET end_us = ?, bytes = ? WHERE id = ?"
                    " AND end_us <= ?",
                    (end_us, size, seg, end_us),
                )

    def close_segment(self, segment_id: str) -> None:
        self.db.execute(
            "UPDATE recording_segments SET status = 'closed' WHERE id = ?", (segment_id,)
        )

    def add_gap(self, camera: str, start: datetime, end: datetime, reason: GapReason) -> None:
        """Record a stretch without recording (an empty or reversed one is ignored)."""
        if end <= start:
            return
        with self.db.transaction():
            self.db.execute(
                "DELETE FROM recording_gaps WHERE camera = ? AND start_us = ? AND reason = ?",
                (camera, to_us(start), reason.value),
            )
            self.db.execute(
                "INSERT INTO recording_gaps (camera, start_us, end_us, reason) VALUES (?, ?, ?, ?)",
                (camera, to_us(start), to_us(end), reason.value),
            )

    def truncate_segment(self, segment_id: str, keep: int) -> int:
        """Drop a segment's fragments from ``keep`` on (after its file was cut back); returns
        how many were dropped, and sets the segment's end and size to what is left."""
        with self.db.transaction():
            dropped = self.db.execute(
                "DELETE FROM recording_fragments WHERE segment = ? AND seq >= ?",
                (segment_id, keep),
            )
            last = self.db.query_one(
                "SELECT MAX(end_us), MAX(byte_offset + length) FROM recording_fragments"
                " WHERE segment = ?",
                (segment_id,),
            )
            if last is not None and last[0] is not None:
                self.db.execute(
                    "UPDATE recording_segments SET end_us = ?, bytes = ? WHERE id = ?",
                    (int(last[0]), int(last[1]), segment_id),
                )
            else:
                self.db.execute(
                    "UPDATE recording_segments SET end_us = start_us, bytes = init_length"
                    " WHERE id = ?",
                    (segment_id,),
                )
        return dropped

    def delete_segment(self, segment_id: str) -> bool:
        """Remove a segment and its fragments from the index (its file is the caller's)."""
        with self.db.transaction():
            self.db.execute("DELETE FROM recording_fragments WHERE segment = ?", (segment_id,))
            return self.db.execute(
                "DELETE FROM recording_segments WHERE id = ?", (segment_id,)
            ) > 0  # fmt: skip

    # -- reading

    def segment(self, segment_id: str) -> Segment | None:
        row = self.db.query_one(
            f"SELECT {_SEG_COLS} FROM recording_segments WHERE id = ?", (segment_id,)
        )
        return _segment(row) if row else None

    def segments(
        self, camera: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[Segment]:
        """Segments overlapping ``[start, end)`` (all of them without bounds), oldest first."""
        where, params = self._window("s", camera, start, end)
        rows = self.db.query(
            f"SELECT {_SEG_COLS} FROM recording_segments s{where} ORDER BY start_us, id", params
        )
        return [_segment(r) for r in rows]

    def open_segments(self, node: str | None = None) -> list[Segment]:
        sql = f"SELECT {_SEG_COLS} FROM recording_segments WHERE status = 'open'"
        params: tuple[Any, ...] = ()
        if node is not None:
            sql += " AND node = ?"
            params = (node,)
        return [_segment(r) for r in self.db.query(sql + " ORDER BY start_us", params)]

    def last_end(self, camera: str) -> datetime | None:
        """Where the camera's recording stopped last (the end of its latest segment)."""
        row = self.db.query_one(
            "SELECT MAX(end_us) FROM recording_segments WHERE camera = ?", (camera,)
        )
        return from_us(row[0]) if row and row[0] is not None else None

    def unreachable(self, segment: Segment) -> str | None:
        """Why ``segment``'s file cannot be read on this node (None: it can). In a cluster the
        files must be on storage every node shares; a segment whose file is not here is a 503
        with this reason to whoever asked, never a 500."""
        try:
            if self.file(segment).is_file():
                return None
        except OSError:
            pass
        return (
            f"the recording of {segment.camera} from {segment.start:%Y-%m-%dT%H:%M:%SZ}"
            f" (segment {segment.id}, written by node {segment.node or 'unknown'}) is not"
            " reachable from this node: recording.dir must be storage every node shares"
        )

    def latest(self, camera: str) -> Segment | None:
        """The camera's latest segment (which node wrote it, where it ends)."""
        row = self.db.query_one(
            f"SELECT {_SEG_COLS} FROM recording_segments WHERE camera = ?"
            " ORDER BY end_us DESC, id DESC LIMIT 1",
            (camera,),
        )
        return _segment(row) if row else None

    def cameras(self) -> list[str]:
        return [r[0] for r in self.db.query(
            "SELECT DISTINCT camera FROM recording_segments ORDER BY camera"
        )]  # fmt: skip

    def fragments(self, segment_id: str) -> list[Fragment]:
        rows = self.db.query(
            f"SELECT {_FRAG_COLS} FROM recording_fragments WHERE segment = ? ORDER BY seq",
            (segment_id,),
        )
        return [_fragment(r) for r in rows]

    def gaps(
        self, camera: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[Gap]:
        where, params = self._window("g", camera, start, end)
        rows = self.db.query(
            f"SELECT camera, start_us, end_us, reason FROM recording_gaps g{where}"
            " ORDER BY start_us",
            params,
        )
        return [Gap(r[0], from_us(r[1]), from_us(r[2]), GapReason(r[3])) for r in rows]

    def spans(
        self,
        camera: str,
        start: datetime,
        end: datetime,
        *,
        tolerance: timedelta = MERGE_TOLERANCE,
    ) -> list[Span]:
        """Recorded spans overlapping ``[start, end)``, clipped to it: segments closer than
        ``tolerance`` with no recorded gap between them are merged into one span."""
        segments = [s for s in self.segments(camera, start, end) if s.end > s.start]
        gap_starts = [g.start for g in self.gaps(camera, start - tolerance, end + tolerance)]
        spans: list[Span] = []
        cur_start: datetime | None = None
        cur_end: datetime | None = None
        for seg in segments:
            if cur_start is not None and cur_end is not None:
                broken = any(cur_end - tolerance <= g <= seg.start for g in gap_starts)
                if seg.start - cur_end <= tolerance and not broken:
                    cur_end = max(cur_end, seg.end)
                    continue
                spans.append(Span(cur_start, cur_end))
            cur_start, cur_end = seg.start, seg.end
        if cur_start is not None and cur_end is not None:
            spans.append(Span(cur_start, cur_end))
        return [Span(max(s.start, start), min(s.end, end)) for s in spans]

    def fragments_from(
        self, camera: str, t: datetime, end: datetime | None = None, *, limit: int = 10_000
    ) -> list[Fragment]:
        """The keyframe fragment at or before ``t`` and those after it, in time order, up to
        ``end`` (exclusive) and at most ``limit`` of them.

        The keyframe is looked for in the segment that covers ``t``; if none does (``t`` is in
        a gap, or before the first recording), the answer starts at the first keyframe
        fragment after ``t``."""
        t_us = to_us(t)
        row = self.db.query_one(
            "SELECT f.start_us FROM recording_fragments f JOIN recording_segments s"
            " ON s.id = f.segment WHERE f.camera = ? AND f.keyframe = 1 AND f.start_us <= ?"
            " AND s.start_us <= ? AND s.end_us > ? ORDER BY f.start_us DESC LIMIT 1",
            (camera, t_us, t_us, t_us),
        )
        if row is None:
            row = self.db.query_one(
                "SELECT start_us FROM recording_fragments WHERE camera = ? AND keyframe = 1"
                " AND start_us >= ? ORDER BY start_us LIMIT 1",
                (camera, t_us),
            )
            if row is None:
                return []
        first = int(row[0])
        sql = f"SELECT {_FRAG_COLS} FROM recording_fragments WHERE camera = ? AND start_us >= ?"
        params: list[Any] = [camera, first]
        if end is not None:
            sql += " AND start_us < ?"
            params.append(to_us(end))
        sql += " ORDER BY start_us, segment, seq LIMIT ?"
        params.append(max(0, int(limit)))
        return [_fragment(r) for r in self.db.query(sql, params)]

    def recorded_seconds(self, start: datetime, end: datetime) -> dict[str, float]:
        """Seconds recorded per camera within ``[start, end)`` (for the published figures)."""
        s_us, e_us = to_us(start), to_us(end)
        rows = self.db.query(
            "SELECT camera, SUM(CASE WHEN end_us < ? THEN end_us ELSE ? END"
            " - CASE WHEN start_us > ? THEN start_us ELSE ? END)"
            " FROM recording_segments WHERE start_us < ? AND end_us > ? GROUP BY camera",
            (e_us, e_us, s_us, s_us, e_us, s_us),
        )
        return {r[0]: int(r[1] or 0) / 1e6 for r in rows}

    # -- retention and disk pressure

    def segments_expired(
        self, now: datetime, retention: Callable[[str], timedelta]
    ) -> list[Segment]:
        """Closed segments that ended more than their camera's retention before ``now`` and
        that no active evidence lock covers, oldest first."""
        now_us = to_us(now)
        out: list[Segment] = []
        for camera in self.cameras():
            cutoff = to_us(now - retention(camera))
            rows = self.db.query(
                f"SELECT {_SEG_COLS} FROM recording_segments s WHERE s.camera = ?"
                f" AND s.status = 'closed' AND s.end_us <= ? AND NOT {_LOCKED}"
                " ORDER BY s.start_us",
                (camera, cutoff, now_us),
            )
            out.extend(_segment(r) for r in rows)
        out.sort(key=lambda s: (s.start, s.id))
        return out

    def oldest_unlocked(self, now: datetime, limit: int = 16) -> list[Segment]:
        """The oldest closed segments of any camera no active lock covers."""
        rows = self.db.query(
            f"SELECT {_SEG_COLS} FROM recording_segments s WHERE s.status = 'closed'"
            f" AND NOT {_LOCKED} ORDER BY s.start_us, s.id LIMIT ?",
            (to_us(now), max(0, int(limit))),
        )
        return [_segment(r) for r in rows]

    # -- evidence locks

    def lock(
        self,
        camera: str,
        start: datetime,
        end: datetime,
        *,
        reason: str,
        tenant: str,
        principal: str,
        expires: datetime,
        now: datetime | None = None,
    ) -> EvidenceLock:
        if end <= start:
            raise ValueError("a lock's end must be after its start")
        if not reason.strip():
            raise ValueError("a lock needs a reason")
        now = now or datetime.now(UTC)
        if expires <= now:
            raise ValueError("a lock's expiry must be in the future")
        lock = EvidenceLock(
            f"lock-{secrets.token_hex(8)}", camera, start, end, reason, tenant, principal,
            now, expires,
        )  # fmt: skip
        self.db.execute(
            f"INSERT INTO recording_locks ({_LOCK_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                lock.id, camera, to_us(start), to_us(end), reason, tenant, principal,
                to_us(now), to_us(expires), None, None,
            ),
        )  # fmt: skip
        return lock

    def release(self, lock_id: str, *, by: str, now: datetime | None = None) -> EvidenceLock | None:
        """Release an active lock; None if there is no such lock or it was released."""
        now = now or datetime.now(UTC)
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE recording_locks SET released_us = ?, released_by = ?"
                " WHERE id = ? AND released_us IS NULL",
                (to_us(now), by, lock_id),
            )
            if not changed:
                return None
            return self.get_lock(lock_id)

    def forget_lock(self, lock_id: str) -> None:
        """Remove a lock row outright (only for one whose audit entry could not be written)."""
        self.db.execute("DELETE FROM recording_locks WHERE id = ?", (lock_id,))

    def get_lock(self, lock_id: str) -> EvidenceLock | None:
        row = self.db.query_one(
            f"SELECT {_LOCK_COLS} FROM recording_locks WHERE id = ?", (lock_id,)
        )
        return _lock(row) if row else None

    def locks(
        self,
        camera: str | None = None,
        *,
        active_at: datetime | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[EvidenceLock]:
        """Locks (of a camera, overlapping a window), only those active at ``active_at`` if
        given, oldest first."""
        where, params = self._window("l", camera, start, end)
        if active_at is not None:
            where += (" AND" if where else " WHERE") + (
                " l.released_us IS NULL AND l.expires_us > ?"
            )
            params.append(to_us(active_at))
        rows = self.db.query(
            f"SELECT {_LOCK_COLS} FROM recording_locks l{where} ORDER BY start_us, id", params
        )
        return [_lock(r) for r in rows]

    def is_locked(self, segment: Segment, now: datetime) -> bool:
        return bool(self.locks(segment.camera, active_at=now, start=segment.start, end=segment.end))

    @staticmethod
    def _window(
        alias: str, camera: str | None, start: datetime | None, end: datetime | None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if camera is not None:
            clauses.append(f"{alias}.camera = ?")
            params.append(camera)
        if end is not None:
            clauses.append(f"{alias}.start_us < ?")
            params.append(to_us(end))
        if start is not None:
            clauses.append(f"{alias}.end_us > ?")
            params.append(to_us(start))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
