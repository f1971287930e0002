"""The ICO's disclosure log: for each disclosure of footage, the date, the recipient
(organisation and person) and the reason, as CSV a spreadsheet opens safely."""

from __future__ import annotations

import csv
from datetime import datetime
from typing import TextIO

from tenants.audit.entry import DISCLOSURE_ACTIONS, format_time, parse_time, utc
from tenants.audit.rows import MIGRATIONS, PAGE
from tenants.db import Database

__all__ = ["export_disclosures"]

_CSV_HEADER = (
    "date",
    "recipient_organisation",
    "recipient_person",
    "reason",
    "camera",
    "action",
    "outcome",
    "seq",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str | None) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def export_disclosures(db: Database, start: datetime, end: datetime, out: TextIO) -> int:
    """Write the disclosures (SESSION_START, PLAYBACK, EXPORT, MASK_LIFT) with start <= time <
    end as CSV with a header row; return the number of data rows. Dates are ISO-8601 UTC."""
    db.migrate("audit", MIGRATIONS)
    lo, hi = format_time(utc(start, "start")), format_time(utc(end, "end"))
    actions = [a.value for a in DISCLOSURE_ACTIONS]
    marks = ", ".join("?" for _ in actions)
    writer = csv.writer(out)
    writer.writerow(_CSV_HEADER)
    written, nxt = 0, 0
    while True:
        rows = db.query(
            "SELECT seq, time, action, tenant, principal, camera, purpose, outcome"
            f" FROM audit_entries WHERE action IN ({marks}) AND time >= ? AND time < ?"
            " AND seq >= ? ORDER BY seq LIMIT ?",
            (*actions, lo, hi, nxt, PAGE),
        )
        for seq, time_s, action, tenant, principal, camera, purpose, outcome in rows:
            date = parse_time(time_s).strftime("%Y-%m-%dT%H:%M:%SZ")
            writer.writerow(
                (
                    date,
                    _cell(tenant),
                    _cell(principal),
                    _cell(purpose),
                    _cell(camera),
                    _cell(action),
                    _cell(outcome),
                    int(seq),
                )
            )
            written += 1
        if len(rows) < PAGE:
            return written
        nxt = int(rows[-1][0]) + 1
