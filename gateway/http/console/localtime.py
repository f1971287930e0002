"""Times as people type and read them in the console's forms: the deployment's local time
(``datetime-local`` inputs, to the second), stored and passed on in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

__all__ = ["INPUT", "for_input", "parse_local", "shown"]

INPUT = "%Y-%m-%dT%H:%M:%S"  # what a datetime-local input with step="1" sends and shows
_SHOWN = "%d %b %Y %H:%M:%S"
MAX_INPUT = 40


def parse_local(raw: str, zone: ZoneInfo) -> datetime | None:
    """A typed time: local when it has no offset (``2026-12-02T09:30[:15]``), or RFC 3339 with
    one (a link from the timeline). None for anything else."""
    raw = raw.strip()
    if not raw or len(raw) > MAX_INPUT:
        return None
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    # A wall-clock time that occurs twice (the autumn change) is its first occurrence.
    return t.replace(tzinfo=zone) if t.tzinfo is None else t.astimezone(UTC)


def for_input(t: datetime | None, zone: ZoneInfo) -> str:
    """A time as a datetime-local input's value, in local time."""
    return "" if t is None else t.astimezone(zone).strftime(INPUT)


def shown(t: datetime | None, zone: ZoneInfo) -> str:
    return "" if t is None else t.astimezone(zone).strftime(_SHOWN)
