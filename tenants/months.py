"""Calendar months in UTC: the unit of billing periods and of the published figures, written
``YYYY-MM``. One definition, so an invoice and a published report mean the same month."""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["month_bounds", "month_of", "previous_month"]

_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def month_bounds(period: str) -> tuple[datetime, datetime]:
    """'2026-11' -> [2026-11-01T00:00Z, 2026-12-01T00:00Z). ValueError for anything else."""
    m = _MONTH.fullmatch(period)
    if m is None:
        raise ValueError(f"period {period!r}: expected YYYY-MM")
    year, month = int(m.group(1)), int(m.group(2))
    if not 1 <= year <= 9998:
        raise ValueError(f"period {period!r}: year out of range")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def month_of(when: datetime) -> str:
    when = when.astimezone(UTC)
    return f"{when.year:04d}-{when.month:02d}"


def previous_month(when: datetime) -> str:
    """The last month that is wholly over at ``when``."""
    when = when.astimezone(UTC)
    year, month = (when.year, when.month - 1) if when.month > 1 else (when.year - 1, 12)
    return f"{year:04d}-{month:02d}"
