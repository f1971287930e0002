"""Calendar months in the deployment's time zone: the unit of billing periods and of the
published figures, written ``YYYY-MM``. One definition, so an invoice and a published report
mean the same month.

A month is what a person there calls it: November 2026 in London runs from local midnight on
the 1st (00:00 GMT) to local midnight on 1 December. Times are stored in UTC, so the bounds are
returned as UTC instants; a month that holds a daylight-saving change is an hour shorter
(March) or longer (October) than its days suggest. The default zone is ``Europe/London``, as
the config's ``timezone`` is.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_ZONE",
    "add_months",
    "month_bounds",
    "month_days",
    "month_of",
    "previous_month",
]

#: The deployment's zone unless its config says otherwise.
DEFAULT_ZONE: tzinfo = ZoneInfo("Europe/London")

_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def _parse(period: str) -> tuple[int, int]:
    m = _MONTH.fullmatch(period)
    if m is None:
        raise ValueError(f"period {period!r}: expected YYYY-MM")
    year, month = int(m.group(1)), int(m.group(2))
    if not 1 <= year <= 9998:
        raise ValueError(f"period {period!r}: year out of range")
    return year, month


def month_days(period: str) -> tuple[date, date]:
    """'2026-11' -> (1 November 2026, 30 November 2026): the first and last calendar days, as
    a person reads them (the same in every zone). ValueError for anything else."""
    year, month = _parse(period)
    following = date(year + (month == 12), month % 12 + 1, 1)
    return date(year, month, 1), following - timedelta(days=1)


def add_months(period: str, months: int) -> str:
    """'2026-11' and 2 -> '2027-01'; -1 -> '2026-10'."""
    year, month = _parse(period)
    index = year * 12 + month - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_bounds(period: str, zone: tzinfo = DEFAULT_ZONE) -> tuple[datetime, datetime]:
    """'2026-11' -> [local midnight on 1 Nov, local midnight on 1 Dec), as UTC instants.
    ValueError for anything else."""
    year, month = _parse(period)
    # Midnight is never skipped or repeated in the zones that matter here (changes happen at
    # 01:00 UTC in Europe); fold=0 picks the first if a zone ever does.
    start = datetime(year, month, 1, tzinfo=zone).astimezone(UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=zone).astimezone(UTC)
    return start, end


def month_of(when: datetime, zone: tzinfo = DEFAULT_ZONE) -> str:
    """The local month an instant falls in."""
    when = when.astimezone(zone)
    return f"{when.year:04d}-{when.month:02d}"


def previous_month(when: datetime, zone: tzinfo = DEFAULT_ZONE) -> str:
    """The last month that is wholly over at ``when``, locally."""
    when = when.astimezone(zone)
    year, month = (when.year, when.month - 1) if when.month > 1 else (when.year - 1, 12)
    return f"{year:04d}-{month:02d}"
