"""The recording's part of the published figures: hours recorded in the month, segments
deleted by retention (and by disk pressure), and the retention actually applied.

The recorder (``gateway.recording``) keeps its index in the tenancy database; this module only
reads its ``recording_segments`` table and the audit log's ``recording_deleted`` entries, so
``tenants`` still imports nothing outside itself. A database without recordings gives zeros.

Nothing here names a camera: the retention applied is given as how many cameras had footage
deleted at each retention (days), and the age of the oldest footage still kept, which oversight
can hold against the longest retention the council has set.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from tenants.audit import AuditAction
from tenants.audit.entry import format_time
from tenants.db import Database, DatabaseError

__all__ = ["recording_figures"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    return int((t - _EPOCH).total_seconds() * 1_000_000)


def recording_figures(
    db: Database, start: datetime, end: datetime, now: datetime
) -> dict[str, Any]:
    recorded_us = 0
    oldest: int | None = None
    try:
        s_us, e_us = _us(start), _us(end)
        row = db.query_one(
            "SELECT SUM(CASE WHEN end_us < ? THEN end_us ELSE ? END"
            " - CASE WHEN start_us > ? THEN start_us ELSE ? END)"
            " FROM recording_segments WHERE start_us < ? AND end_us > ?",
            (e_us, e_us, s_us, s_us, e_us, s_us),
        )
        recorded_us = int(row[0] or 0) if row else 0
        first = db.query_one("SELECT MIN(start_us) FROM recording_segments")
        oldest = int(first[0]) if first and first[0] is not None else None
    except DatabaseError:
        pass  # no recording here
    deleted: Counter[str] = Counter()
    applied: dict[str, int] = {}
    rows = db.query(
        "SELECT camera, purpose, detail FROM audit_entries WHERE action = ? AND time >= ?"
        " AND time < ? ORDER BY seq",
        (AuditAction.RECORDING_DELETED.value, format_time(start), format_time(end)),
    )
    for camera, purpose, detail in rows:
        deleted[str(purpose)] += 1
        try:
            days = json.loads(detail).get("retention_days")
        except (TypeError, ValueError, AttributeError):
            days = None
        if isinstance(days, int) and camera:
            applied[str(camera)] = days  # the latest applied to that camera
    by_days = Counter(applied.values())
    return {
        "recorded_hours": round(recorded_us / 3.6e9, 1),
        "segments_deleted_by_retention": deleted.get("retention", 0),
        "segments_deleted_by_disk_pressure": deleted.get("disk_pressure", 0),
        "cameras_by_retention_days_applied": {str(d): n for d, n in sorted(by_days.items())},
        "oldest_footage_kept_days": (
            round((_us(now) - oldest) / 8.64e10, 1) if oldest is not None else None
        ),
    }
