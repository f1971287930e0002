"""Subject access requests (UK GDPR art. 15; the ICO's guidance for CCTV): the register of
requests, their due dates and outcomes, and the search of the audit log for every use of
footage that touches one.

A request names the subject (a description to find them by, kept here and nowhere else: the
audit log records only the request's id), how to reach them, the cameras (or a map area, as
a bounding box of latitude and longitude, read off the register of cameras) and the time
window. It is due one calendar month after it is opened, in the deployment's local time (the
ICO's rule: the same day next month, or the month's last day when there is none).

States: ``open`` → ``fulfilled`` (a copy went to the subject), ``refused`` (with the reason,
e.g. manifestly unfounded) or ``withdrawn``. Each change is audited as ``sar``.

:func:`disclosures` lists every view, playback, export, still and mask lift whose footage
overlaps the window on the request's cameras, from the audit log: live sessions by when they
ran (start to end), playbacks and exports by the range of footage they served.

Blocking (database): call from a worker thread. Imports no other project package.
"""

from __future__ import annotations

import calendar
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any

from tenants.audit import MIGRATIONS as AUDIT_MIGRATIONS
from tenants.audit import AuditAction
from tenants.audit.entry import format_time, parse_time
from tenants.db import Database
from tenants.model import Camera
from tenants.months import DEFAULT_ZONE

__all__ = [
    "Area",
    "SarError",
    "SarState",
    "SarStore",
    "SubjectAccessRequest",
    "Touch",
    "cameras_in",
    "disclosures",
    "due_date",
]

MAX_TEXT = 512
MAX_CAMERAS = 256
# A live session found by its start: looked for this long before the window (the longest a
# session is expected to run); its end entry says whether it reached the window.
SESSION_LOOKBACK = timedelta(hours=24)
_PAGE = 5000
_LIVE = (AuditAction.SESSION_START, AuditAction.STILL, AuditAction.MASK_LIFT)
_RANGED = (AuditAction.PLAYBACK, AuditAction.EXPORT)
_RANGED_NAMES = frozenset(a.value for a in _RANGED)
_LIVE_NAMES = frozenset(a.value for a in _LIVE)

MIGRATIONS: list[str] = [
    """
    CREATE TABLE sar_requests (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        subject TEXT NOT NULL,
        contact TEXT NOT NULL,
        cameras TEXT NOT NULL,
        area TEXT,
        start_time TEXT NOT NULL,
        end_time TEXT NOT NULL,
        opened TEXT NOT NULL,
        opened_by TEXT NOT NULL,
        due TEXT NOT NULL,
        state TEXT NOT NULL,
        outcome TEXT,
        closed TEXT
    );
    CREATE INDEX sar_requests_opened ON sar_requests (opened)
    """,
]


class SarError(ValueError):
    """A request that cannot be recorded as given."""


class SarState(StrEnum):
    OPEN = "open"
    FULFILLED = "fulfilled"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class Area:
    """A bounding box: south-west and north-east corners (degrees)."""

    south: float
    west: float
    north: float
    east: float

    def __post_init__(self) -> None:
        if not (-90 <= self.south <= self.north <= 90 and -180 <= self.west <= self.east <= 180):
            raise SarError("area: south <= north in -90..90 and west <= east in -180..180")

    def contains(self, lat: float, lon: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lon <= self.east

    def text(self) -> str:
        return f"{self.south},{self.west},{self.north},{self.east}"

    @classmethod
    def parse(cls, text: str) -> Area:
        try:
            s, w, n, e = (float(v) for v in text.split(","))
        except ValueError:
            raise SarError("area: south,west,north,east in degrees") from None
        return cls(s, w, n, e)


def cameras_in(area: Area, cameras: Iterable[Camera]) -> list[str]:
    """The cameras of the register positioned inside ``area``."""
    return sorted(
        c.id
        for c in cameras
        if c.latitude is not None
        and c.longitude is not None
        and area.contains(c.latitude, c.longitude)
    )


def due_date(opened: datetime, zone: tzinfo = DEFAULT_ZONE) -> date:
    """One calendar month after ``opened``, in local time: the same day next month, or that
    month's last day when it has no such day (31 January → 28 or 29 February)."""
    local = opened.astimezone(zone).date()
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    day = min(local.day, calendar.monthrange(year, month)[1])
    return date(year, month, day)


@dataclass(frozen=True)
class SubjectAccessRequest:
    id: str
    tenant: str  # the controller answering it (the organisation that opened it)
    subject: str
    contact: str
    cameras: tuple[str, ...]
    area: Area | None
    start: datetime
    end: datetime
    opened: datetime
    opened_by: str
    due: date
    state: SarState = SarState.OPEN
    outcome: str | None = None
    closed: datetime | None = None

    def overdue(self, now: datetime, zone: tzinfo = DEFAULT_ZONE) -> bool:
        return self.state == SarState.OPEN and now.astimezone(zone).date() > self.due


def _text(name: str, value: str, *, required: bool = True) -> str:
    value = value.strip()
    if required and not value:
        raise SarError(f"{name} is required")
    if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        raise SarError(f"{name}: at most {MAX_TEXT} printable characters")
    return value


_COLS = (
    "id, tenant, subject, contact, cameras, area, start_time, end_time, opened, opened_by,"
    " due, state, outcome, closed"
)


def _row(r: SubjectAccessRequest) -> tuple[Any, ...]:
    return (
        r.id, r.tenant, r.subject, r.contact, json.dumps(list(r.cameras)),
        r.area.text() if r.area else None, format_time(r.start), format_time(r.end),
        format_time(r.opened), r.opened_by, r.due.isoformat(), r.state.value, r.outcome,
        format_time(r.closed) if r.closed else None,
    )  # fmt: skip


def _request(r: Sequence[Any]) -> SubjectAccessRequest:
    return SubjectAccessRequest(
        id=r[0], tenant=r[1], subject=r[2], contact=r[3], cameras=tuple(json.loads(r[4])),
        area=Area.parse(r[5]) if r[5] else None, start=parse_time(r[6]), end=parse_time(r[7]),
        opened=parse_time(r[8]), opened_by=r[9], due=date.fromisoformat(r[10]),
        state=SarState(r[11]), outcome=r[12], closed=parse_time(r[13]) if r[13] else None,
    )  # fmt: skip


class SarStore:
    def __init__(self, db: Database, zone: tzinfo = DEFAULT_ZONE) -> None:
        self.db = db
        self.zone = zone
        db.migrate("sar", MIGRATIONS)

    def open(
        self,
        *,
        tenant: str,
        opened_by: str,
        subject: str,
        contact: str,
        start: datetime,
        end: datetime,
        cameras: Sequence[str] = (),
        area: Area | None = None,
        register: Iterable[Camera] = (),
        now: datetime | None = None,
    ) -> SubjectAccessRequest:
        """Record a new request. ``register``: the cameras, to resolve ``area`` and to check
        that every named camera exists."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        if start.tzinfo is None or end.tzinfo is None:
            raise SarError("start and end must carry a time zone")
        if end <= start:
            raise SarError("the window's end must be after its start")
        known = {c.id: c for c in register}
        chosen = set(cameras)
        unknown = sorted(chosen - set(known))
        if unknown:
            raise SarError(f"no camera {unknown[0]!r}")
        if area is not None:
            chosen |= set(cameras_in(area, known.values()))
        if not chosen:
            raise SarError("name cameras, or an area that holds some")
        if len(chosen) > MAX_CAMERAS:
            raise SarError(f"at most {MAX_CAMERAS} cameras per request")
        request = SubjectAccessRequest(
            id=f"sar-{secrets.token_hex(6)}",
            tenant=tenant,
            subject=_text("subject", subject),
            contact=_text("contact", contact),
            cameras=tuple(sorted(chosen)),
            area=area,
            start=start.astimezone(UTC),
            end=end.astimezone(UTC),
            opened=now,
            opened_by=opened_by,
            due=due_date(now, self.zone),
        )
        marks = ", ".join("?" for _ in range(14))
        self.db.execute(f"INSERT INTO sar_requests ({_COLS}) VALUES ({marks})", _row(request))
        return request

    def get(self, sar_id: str) -> SubjectAccessRequest | None:
        row = self.db.query_one(f"SELECT {_COLS} FROM sar_requests WHERE id = ?", (sar_id,))
        return _request(row) if row else None

    def find(
        self, *, tenant: str | None = None, state: SarState | None = None, limit: int = 100,
        offset: int = 0,
    ) -> list[SubjectAccessRequest]:  # fmt: skip
        """Newest first."""
        clauses, params = [], []
        if tenant is not None:
            clauses.append("tenant = ?")
            params.append(tenant)
        if state is not None:
            clauses.append("state = ?")
            params.append(state.value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.db.query(
            f"SELECT {_COLS} FROM sar_requests{where} ORDER BY opened DESC, id LIMIT ? OFFSET ?",
            (*params, max(1, limit), max(0, offset)),
        )
        return [_request(r) for r in rows]

    def close(
        self, sar_id: str, state: SarState, outcome: str, *, now: datetime | None = None
    ) -> SubjectAccessRequest | None:
        """Close an open request; None if there is none open with that id."""
        if state == SarState.OPEN:
            raise SarError("a request is closed as fulfilled, refused or withdrawn")
        found = self.get(sar_id)
        if found is None or found.state != SarState.OPEN:
            return None
        closed = replace(
            found, state=state, outcome=_text("outcome", outcome),
            closed=(now or datetime.now(UTC)).astimezone(UTC),
        )  # fmt: skip
        self.db.execute(
            "UPDATE sar_requests SET state = ?, outcome = ?, closed = ? WHERE id = ?"
            " AND state = ?",
            (closed.state.value, closed.outcome, format_time(closed.closed or found.opened),
             sar_id, SarState.OPEN.value),
        )  # fmt: skip
        return closed

    def figures(self, start: datetime, end: datetime, now: datetime) -> dict[str, int]:
        """For the published figures: requests opened and closed (by outcome) in
        ``[start, end)``, and those open past their due date at ``now``."""
        lo, hi = format_time(start), format_time(end)
        out = {"opened": 0, "fulfilled": 0, "refused": 0, "withdrawn": 0, "overdue": 0}
        row = self.db.query_one(
            "SELECT COUNT(*) FROM sar_requests WHERE opened >= ? AND opened < ?", (lo, hi)
        )
        out["opened"] = int(row[0]) if row else 0
        for state, n in self.db.query(
            "SELECT state, COUNT(*) FROM sar_requests WHERE closed >= ? AND closed < ?"
            " GROUP BY state",
            (lo, hi),
        ):
            out[str(state)] = int(n)
        today = now.astimezone(self.zone).date().isoformat()
        row = self.db.query_one(
            "SELECT COUNT(*) FROM sar_requests WHERE state = ? AND due < ?",
            (SarState.OPEN.value, today),
        )
        out["overdue"] = int(row[0]) if row else 0
        return out


@dataclass(frozen=True)
class Touch:
    """One use of footage that touches a request: who, when, what, and which footage."""

    seq: int
    time: datetime
    action: str
    tenant: str | None
    principal: str | None
    camera: str
    purpose: str | None
    footage_start: datetime
    footage_end: datetime | None  # None: a live session still running, or no end recorded
    detail: dict[str, Any]


def _when(detail: dict[str, Any], *names: str) -> datetime | None:
    for name in names:
        value = detail.get(name)
        if isinstance(value, str):
            try:
                t = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if t.tzinfo is not None:
                return t.astimezone(UTC)
    return None


def disclosures(db: Database, request: SubjectAccessRequest) -> list[Touch]:
    """Every use of footage of the request's cameras overlapping its window (see the module
    docstring), oldest first."""
    db.migrate("audit", AUDIT_MIGRATIONS)
    cams = list(request.cameras)
    cam_marks = ", ".join("?" for _ in cams)
    actions = [a.value for a in (*_LIVE, *_RANGED, AuditAction.SESSION_END)]
    act_marks = ", ".join("?" for _ in actions)
    lo = format_time(request.start - SESSION_LOOKBACK)
    out: list[Touch] = []
    starts: dict[str, Touch] = {}
    nxt = 0
    while True:
        # Playbacks and exports of the window may come any time after it: no upper bound.
        rows = db.query(
            "SELECT seq, time, action, tenant, principal, camera, purpose, outcome, detail"
            f" FROM audit_entries WHERE camera IN ({cam_marks}) AND action IN ({act_marks})"
            " AND time >= ? AND seq >= ? ORDER BY seq LIMIT ?",
            (*cams, *actions, lo, nxt, _PAGE),
        )
        for seq, time_s, action, tenant, principal, camera, purpose, outcome, detail_s in rows:
            if outcome == "denied":
                continue
            at = parse_time(time_s)
            detail = json.loads(detail_s)
            if action == AuditAction.SESSION_END.value:
                begun = starts.pop(str(detail.get("session")), None)
                if begun is not None:
                    out.remove(begun)
                    if at > request.start:
                        out.append(replace(begun, footage_end=at))
                continue
            ranged = action in _RANGED_NAMES
            if ranged:
                f_start = _when(detail, "from", "start") or at
                f_end = _when(detail, "to", "end") or f_start
            else:
                f_start, f_end = at, at
            if f_start >= request.end or (ranged and f_end <= request.start):
                continue
            touch = Touch(
                int(seq), at, str(action), tenant, principal, str(camera), purpose, f_start,
                None if action == AuditAction.SESSION_START.value else f_end, detail,
            )  # fmt: skip
            if action == AuditAction.SESSION_START.value:
                if detail.get("mode", "play") != "play":
                    continue  # a camera publishing is not someone viewing
                starts[str(detail.get("session"))] = touch
            elif f_start < request.start and action in _LIVE_NAMES:
                continue  # a still or lift before the window
            out.append(touch)
        if len(rows) < _PAGE:
            break
        nxt = int(rows[-1][0]) + 1
    # A session begun before the window with no end entry may still be running: it stays.
    return sorted(out, key=lambda t: t.seq)
