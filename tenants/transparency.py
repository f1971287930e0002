"""The published, anonymised figures: what the council promises the public about its network.

A monthly report, built from the audit log and the register of cameras, grants and masks:

* how many cameras there are and how many carry privacy masks;
* which kinds of organisation the network is shared with (police, health, transport, ...),
  how many of each and how many grants they hold;
* by kind of organisation: live views, playbacks, exports, mask lifts and refused requests
  (of callers who were identified: failed sign-ins, audited as ``unauthenticated``, are not
  counted, so password guessing cannot inflate them);
* by kind of organisation: hours of viewing, when metering supplies them;
* subject access requests: opened and closed (fulfilled, refused, withdrawn) in the month,
  and how many open ones are past their due date.

Activity is the month's; the register figures (cameras, masks, organisations, grants) are as
the register stands when the report is built. It names no organisation, person, camera or
purpose: only kinds of organisation, which is what the public is told (the disclosure log with
names goes to oversight bodies, not here). Small counts of activity are suppressed as UK
official statistics do: a count from 1 to 4 is published as "<5", and no total is published
that would let a suppressed count be worked out from the others.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from tenants.audit import MIGRATIONS as AUDIT_MIGRATIONS
from tenants.audit import AuditAction
from tenants.audit.entry import format_time as _fmt_time
from tenants.db import Database
from tenants.months import DEFAULT_ZONE, month_bounds
from tenants.recording_figures import recording_figures
from tenants.sar import SarStore
from tenants.store import TenantStore

__all__ = ["SUPPRESS_BELOW", "Suppressed", "monthly_report", "publishable"]

SUPPRESS_BELOW = 5
UNKNOWN = "unidentified"  # a refusal before the caller was identified

# What each audit action is called in the report.
_ACTIVITY = {
    AuditAction.SESSION_START.value: "live_views",
    AuditAction.PLAYBACK.value: "playbacks",
    AuditAction.EXPORT.value: "exports",
    AuditAction.MASK_LIFT.value: "mask_lifts",
    AuditAction.DENIED.value: "refused",
}
ACTIVITIES: tuple[str, ...] = tuple(_ACTIVITY.values())
_PAGE = 5000


class Suppressed(str):
    """A published count too small to publish exactly ("<5")."""


def monthly_report(
    db: Database,
    period: str,
    *,
    viewing_ms_by_tenant: Mapping[str, int] | None = None,
    now: datetime | None = None,
    zone: tzinfo = DEFAULT_ZONE,
) -> dict[str, Any]:
    """The month's figures, exact (not yet suppressed: see :func:`publishable`); the month is
    `zone`'s (the deployment's), as the invoices' is. ``viewing_ms_by_tenant`` (metered live +
    playback milliseconds per tenant id, from billing, for the same month) adds hours of
    viewing by kind of organisation."""
    start, end = month_bounds(period, zone)
    db.migrate("audit", AUDIT_MIGRATIONS)
    store = TenantStore(db)
    kind_of = {t.id: t.kind.value for t in store.list_tenants()}
    cameras = store.list_cameras()
    masked = {m.camera_id for m in store.list_masks()}
    organisations = Counter(kind_of.values())
    grants = Counter(
        kind_of.get(g.grantee_tenant, UNKNOWN)
        for g in store.list_grants()
        if g.revoked_at is None or g.revoked_at >= start
    )

    activity: dict[str, Counter[str]] = defaultdict(Counter)
    lo, hi = _fmt_time(start), _fmt_time(end)
    actions = list(_ACTIVITY)
    marks = ", ".join("?" for _ in actions)
    nxt = 0
    while True:  # paged by seq: a busy month has millions of entries
        rows = db.query(
            f"SELECT seq, action, tenant, outcome, detail FROM audit_entries"
            f" WHERE action IN ({marks}) AND time >= ? AND time < ? AND seq >= ?"
            " ORDER BY seq LIMIT ?",
            (*actions, lo, hi, nxt, _PAGE),
        )
        for _seq, action, tenant, outcome, detail in rows:
            kind = kind_of.get(str(tenant), UNKNOWN) if tenant else UNKNOWN
            if outcome == "unauthenticated":
                continue  # a failed sign-in (a guess, say): refusals count identified callers
            if action == AuditAction.DENIED.value or outcome == "denied":
                activity[kind]["refused"] += 1
                continue
            if action == AuditAction.SESSION_START.value and _mode(detail) != "play":
                continue  # a camera publishing is not someone viewing
            activity[kind][_ACTIVITY[str(action)]] += 1
        if len(rows) < _PAGE:
            break
        nxt = int(rows[-1][0]) + 1

    kinds = sorted(set(organisations) | set(activity) | set(grants))
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        entry: dict[str, Any] = {
            "organisations": organisations.get(kind, 0),
            "grants": grants.get(kind, 0),
            **{a: activity[kind][a] for a in ACTIVITIES},
        }
        by_kind[kind] = entry
    if viewing_ms_by_tenant is not None:
        hours: Counter[str] = Counter()
        for tenant, ms in viewing_ms_by_tenant.items():
            hours[kind_of.get(tenant, UNKNOWN)] += ms
        for kind in kinds:
            by_kind[kind]["viewing_hours"] = round(hours.get(kind, 0) / 3_600_000, 1)
    return {
        "period": period,
        "generated_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"),
        "cameras": len(cameras),
        "cameras_with_privacy_masks": len({c.id for c in cameras} & masked),
        "by_organisation_kind": by_kind,
        # Hours recorded, segments deleted by retention, the retention applied.
        "recording": recording_figures(db, start, end, now or datetime.now(UTC)),
        # Subject access requests opened and closed in the month, and those overdue now.
        "subject_access_requests": SarStore(db, zone).figures(
            start, end, (now or datetime.now(UTC))
        ),
    }


def _mode(detail: Any) -> str:
    try:
        value = json.loads(detail).get("mode", "play")
    except (TypeError, ValueError, AttributeError):
        return "play"
    return str(value)


def _suppress(n: int) -> int | Suppressed:
    return Suppressed(f"<{SUPPRESS_BELOW}") if 0 < n < SUPPRESS_BELOW else n


def publishable(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report as published: every count of activity per kind of organisation from 1 to 4
    becomes "<5" (hours of viewing are shown only where the live views are not suppressed).
    Cameras, organisations and grants describe the council's own register and are published
    as they are."""
    out = dict(report)
    kinds: dict[str, dict[str, Any]] = {}
    for kind, entry in report["by_organisation_kind"].items():
        published: dict[str, Any] = {}
        for key, value in entry.items():
            if key in ACTIVITIES:
                published[key] = _suppress(int(value))
            elif key != "viewing_hours":
                published[key] = value
        if "viewing_hours" in entry:
            small = isinstance(published["live_views"], Suppressed)
            published["viewing_hours"] = (
                Suppressed("suppressed") if small else entry["viewing_hours"]
            )
        kinds[kind] = published
    out["by_organisation_kind"] = kinds
    if "subject_access_requests" in report:
        out["subject_access_requests"] = {
            k: _suppress(int(v)) for k, v in report["subject_access_requests"].items()
        }
    out["suppression"] = (
        f"activity counts from 1 to {SUPPRESS_BELOW - 1} are shown as <{SUPPRESS_BELOW};"
        " no total is given that would reveal them"
    )
    return out
