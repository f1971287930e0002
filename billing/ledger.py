"""The usage ledger (exactly-once usage events) and the money ledger (balanced postings).

Usage
-----
``usage_events`` holds one row per :class:`~billing.model.UsageEvent`, keyed by its derived
``event_id``. :meth:`Ledger.record` (events) and :meth:`Ledger.record_rows` (events already
in :mod:`billing.usagerow` text form, as the Redis stream carries them) insert a batch in one
transaction so that a report that arrives twice, in the same batch or in another, is stored and
counted once; the first copy wins. SQLite uses ``INSERT ... ON CONFLICT (event_id) DO NOTHING``;
PostgreSQL ``COPY``s the rows straight into the table and, only if that hits an id already
there (a redelivered batch), goes through a staging table and ``INSERT ... ON CONFLICT``.

An event belongs to the calendar month in which it *starts*, in the ledger's ``zone`` (the
deployment's; ``Europe/London`` by default). Aggregates are returned in
**base units**, as integers:

==========================  ==========================================================
``Metric.LIVE_SECONDS``     milliseconds of live viewing (sum of ``duration_ms``)
``Metric.PLAYBACK_SECONDS`` milliseconds of recorded playback (sum of ``duration_ms``)
``Metric.PTZ_SECONDS``      milliseconds holding PTZ control (sum of ``duration_ms``)
``Metric.BYTES``            bytes delivered, all kinds (sum of ``bytes_sent``)
``Metric.EXPORTS``          clips exported (distinct export ``session_id``\\s)
==========================  ==========================================================

(The metric names say "seconds" because that is the unit the product speaks of; the ledger
keeps milliseconds so nothing is ever rounded before rating.)

Each row also carries ``recorded_at``, set here at insert time. It is strictly increasing per
batch (``max(clock(), previous + 1 µs)``), so the ledger's :meth:`Ledger.high_water` mark after
a read cleanly divides "already seen" from "arrived later": an invoice remembers the mark it was
computed at, and :meth:`Ledger.late_usage` reports what was recorded after it.

Money
-----
``postings`` is a double-entry journal in integer pence. An entry (``entry_id``) is a list of
``(account, amount_pence)`` that sums to zero (positive = debit, negative = credit);
:meth:`Ledger.post` refuses anything else and is idempotent per ``entry_id``. Accounts:
``receivable:{tenant}``, ``revenue:{metric}`` / ``revenue:platform_fee`` / ...,
``vat:output``, ``payable:contributor:{tenant}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from billing.model import BillingError, Metric, UsageEvent, check_currency, parse_period
from billing.usagerow import COLUMNS as USAGE_ROW_COLUMNS
from billing.usagerow import encode_row, format_time, parse_time, row_event_id, row_values
from tenants.db import Database, IntegrityError
from tenants.months import DEFAULT_ZONE

__all__ = [
    "MIGRATIONS",
    "USAGE_METRICS",
    "Ledger",
    "Posting",
    "empty_usage",
]

#: The metrics :meth:`Ledger.usage` reports, in this order.
USAGE_METRICS: tuple[Metric, ...] = (
    Metric.LIVE_SECONDS,
    Metric.PLAYBACK_SECONDS,
    Metric.PTZ_SECONDS,
    Metric.BYTES,
    Metric.EXPORTS,
)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE usage_events (
        event_id TEXT NOT NULL PRIMARY KEY,
        session_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        tenant TEXT NOT NULL,
        principal TEXT,
        camera TEXT NOT NULL,
        camera_owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        protocol TEXT NOT NULL,
        variant TEXT NOT NULL,
        start_at TEXT NOT NULL,
        end_at TEXT NOT NULL,
        duration_ms BIGINT NOT NULL,
        bytes_sent BIGINT NOT NULL,
        final INTEGER NOT NULL,
        recorded_at TEXT NOT NULL
    );
    CREATE INDEX usage_events_tenant_start ON usage_events (tenant, start_at);
    CREATE INDEX usage_events_owner_start ON usage_events (camera_owner, start_at);
    CREATE INDEX usage_events_recorded ON usage_events (recorded_at);
    CREATE TABLE postings (
        entry_id TEXT NOT NULL,
        line_no INTEGER NOT NULL,
        account TEXT NOT NULL,
        amount_pence BIGINT NOT NULL,
        currency TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (entry_id, line_no)
    );
    CREATE INDEX postings_account ON postings (account)
    """,
)

_COLUMNS = (
    "event_id, session_id, seq, tenant, principal, camera, camera_owner, kind, protocol,"
    " variant, start_at, end_at, duration_ms, bytes_sent, final, recorded_at"
)
_COLUMN_LIST = (*USAGE_ROW_COLUMNS, "recorded_at")
_NCOLS = len(_COLUMN_LIST)
assert _COLUMNS == ", ".join(_COLUMN_LIST)

# One pass over the rows gives every metric. Exports count distinct sessions, so an export
# reported as several intervals is still one export.
_AGGREGATES = (
    "COALESCE(SUM(CASE WHEN kind = 'live' THEN duration_ms ELSE 0 END), 0),"
    " COALESCE(SUM(CASE WHEN kind = 'playback' THEN duration_ms ELSE 0 END), 0),"
    " COALESCE(SUM(CASE WHEN kind = 'ptz' THEN duration_ms ELSE 0 END), 0),"
    " COALESCE(SUM(bytes_sent), 0),"
    " COUNT(DISTINCT CASE WHEN kind = 'export' THEN session_id END)"
)


_fmt_time = format_time
_parse_time = parse_time


def _stamped(rows: list[str], stamp: str) -> str:
    """Rows plus the ``recorded_at`` column, as one block of COPY text."""
    tail = f"\t{stamp}\n"
    return tail.join(rows) + tail


def empty_usage() -> dict[Metric, int]:
    return dict.fromkeys(USAGE_METRICS, 0)


def _usage_row(row: Sequence[Any]) -> dict[Metric, int]:
    return {m: int(v or 0) for m, v in zip(USAGE_METRICS, row, strict=True)}


@dataclass(frozen=True)
class Posting:
    entry_id: str
    line_no: int
    account: str
    amount_pence: int
    currency: str
    created_at: datetime


class Ledger:
    """Usage events and money postings on one :class:`~tenants.db.Database`."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        zone: tzinfo = DEFAULT_ZONE,
    ) -> None:
        self.db = db
        self._clock = clock
        self.zone = zone  # whose months the periods are
        db.migrate("billing_ledger", MIGRATIONS)

    # ----------------------------------------------------------------------------- usage
    def record(self, events: Sequence[UsageEvent], *, now: datetime | None = None) -> int:
        """Store the events (one transaction); return how many were new. Duplicates (same
        ``event_id``), within the batch or against earlier batches, are ignored."""
        unique: dict[str, UsageEvent] = {}
        for event in events:
            unique.setdefault(event.event_id, event)
        if not unique:
            return 0
        if self.db.dialect == "postgres":
            return self._record_pg([encode_row(unique[k]) for k in sorted(unique)], now)
        rows = [
            (
                e.event_id,
                e.session_id,
                e.seq,
                e.tenant,
                e.principal,
                e.camera,
                e.camera_owner,
                str(e.kind),
                e.protocol,
                e.variant,
                _fmt_time(e.start),
                _fmt_time(e.end),
                e.duration_ms,
                e.bytes_sent,
                int(e.final),
            )
            for e in unique.values()
        ]
        return self._record_sqlite(rows, now)

    def record_rows(self, rows: Sequence[str], *, now: datetime | None = None) -> int:
        """:meth:`record` for events already in :mod:`billing.usagerow` form, checked by
        :func:`~billing.usagerow.check_rows` (or made by ``encode_row``): on PostgreSQL the
        text goes to ``COPY`` as it is, with no Python object per event."""
        unique: dict[str, str] = {}
        for row in rows:
            unique.setdefault(row_event_id(row), row)
        if not unique:
            return 0
        if self.db.dialect == "postgres":
            return self._record_pg([unique[k] for k in sorted(unique)], now)
        return self._record_sqlite([row_values(r) for r in unique.values()], now)

    def _record_sqlite(self, rows: list[tuple[Any, ...]], now: datetime | None) -> int:
        # BEGIN IMMEDIATE: writers are serialised, so recorded_at follows commit order.
        with self.db.transaction():
            stamp = _fmt_time(self._next_recorded_at(now))
            return self.db.executemany(
                f"INSERT INTO usage_events ({_COLUMNS}) VALUES ({', '.join(['?'] * _NCOLS)})"
                " ON CONFLICT (event_id) DO NOTHING",
                [(*r, stamp) for r in rows],
            )

    def _record_pg(self, rows: list[str], now: datetime | None) -> int:
        """Rows (unique ids, in id order) -> usage_events. First straight ``COPY`` into the
        table, the fast path, which fails as a whole if any id is already recorded; that only
        happens when a batch is delivered again (a replayed spool, a re-read or claimed stream
        entry), and then the batch goes through a staging table and ``INSERT ... ON CONFLICT
        DO NOTHING``. Id order matters when two consumers write overlapping batches at once
        (a claimed entry whose first reader was only slow): each waits for the other's
        uncommitted ids, and in one shared order that wait can never become a deadlock."""
        try:
            with self.db.transaction():
                stamp = self._lock_and_stamp(now)
                self.db.copy_text("usage_events", _COLUMN_LIST, _stamped(rows, stamp))
                return len(rows)
        except IntegrityError:
            pass
        with self.db.transaction():
            stamp = self._lock_and_stamp(now)
            self.db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS usage_stage"
                " (LIKE usage_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self.db.copy_text("usage_stage", _COLUMN_LIST, _stamped(rows, stamp))
            return self.db.execute(
                f"INSERT INTO usage_events ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_stage"
                " ON CONFLICT (event_id) DO NOTHING"
            )

    def _lock_and_stamp(self, now: datetime | None) -> str:
        # ROW EXCLUSIVE (what any insert takes) before reading the high-water mark: writers
        # run side by side, but high_water()'s SHARE lock waits until every writer that has
        # already chosen its stamp has committed (see high_water).
        self.db.execute("LOCK TABLE usage_events IN ROW EXCLUSIVE MODE")
        return _fmt_time(self._next_recorded_at(now))

    def _next_recorded_at(self, now: datetime | None) -> datetime:
        t = (now or self._clock()).astimezone(UTC)
        last = self._max_recorded()
        if last is not None and t <= last:
            t = last + timedelta(microseconds=1)
        return t

    def _max_recorded(self) -> datetime | None:
        row = self.db.query_one("SELECT MAX(recorded_at) FROM usage_events")
        return _parse_time(row[0]) if row and row[0] else None

    def high_water(self) -> datetime | None:
        """The latest ``recorded_at`` in the ledger (None when empty). Everything recorded so
        far is at or before it; everything recorded later is strictly after it.

        On PostgreSQL several consumers write at once, and a writer picks its stamp before it
        commits; a mark read while one is in flight could later turn out to have been passed
        by a commit with an earlier stamp. So the mark is read under a SHARE lock on the table,
        which waits for the writers in flight (they hold ROW EXCLUSIVE from before they read
        the mark they stamp after) and holds new ones back for the moment it takes. On SQLite
        writers are serialised by ``BEGIN IMMEDIATE`` already."""
        if self.db.dialect != "postgres":
            return self._max_recorded()
        with self.db.transaction():
            self.db.execute("LOCK TABLE usage_events IN SHARE MODE")
            return self._max_recorded()

    def _window(
        self, period: str, recorded_until: datetime | None, recorded_after: datetime | None = None
    ) -> tuple[str, list[Any]]:
        start, end = parse_period(period, self.zone)
        sql = "start_at >= ? AND start_at < ?"
        params: list[Any] = [_fmt_time(start), _fmt_time(end)]
        if recorded_until is not None:
            sql += " AND recorded_at <= ?"
            params.append(_fmt_time(recorded_until))
        if recorded_after is not None:
            sql += " AND recorded_at > ?"
            params.append(_fmt_time(recorded_after))
        return sql, params

    def usage(
        self, tenant: str, period: str, *, recorded_until: datetime | None = None
    ) -> dict[Metric, int]:
        """The tenant's usage in the month, in base units (ms, bytes, exports; see the module
        docstring), counting only events recorded at or before ``recorded_until`` if given."""
        where, params = self._window(period, recorded_until)
        row = self.db.query_one(
            f"SELECT {_AGGREGATES} FROM usage_events WHERE tenant = ? AND {where}",
            [tenant, *params],
        )
        return _usage_row(row) if row else empty_usage()

    def late_usage(
        self,
        tenant: str,
        period: str,
        recorded_after: datetime,
        *,
        recorded_until: datetime | None = None,
    ) -> dict[Metric, int]:
        """Usage in ``period`` that was recorded after ``recorded_after`` (and at or before
        ``recorded_until``), in base units. For sums this is a plain filter; exports count a
        session only if none of its intervals had been recorded by ``recorded_after``."""
        before = self.usage(tenant, period, recorded_until=recorded_after)
        after = self.usage(tenant, period, recorded_until=recorded_until)
        return {m: after[m] - before[m] for m in USAGE_METRICS}

    def usage_by_camera(
        self, tenant: str, period: str, *, recorded_until: datetime | None = None
    ) -> dict[str, dict[Metric, int]]:
        """The tenant's usage per camera, base units, cameras in name order."""
        where, params = self._window(period, recorded_until)
        rows = self.db.query(
            f"SELECT camera, {_AGGREGATES} FROM usage_events WHERE tenant = ? AND {where}"
            " GROUP BY camera ORDER BY camera",
            [tenant, *params],
        )
        return {str(r[0]): _usage_row(r[1:]) for r in rows}

    def viewing_of(
        self, owner: str, period: str, *, recorded_until: datetime | None = None
    ) -> dict[tuple[str, str], dict[Metric, int]]:
        """Other tenants' usage of ``owner``'s cameras: ``(viewer, camera) -> usage``."""
        where, params = self._window(period, recorded_until)
        rows = self.db.query(
            f"SELECT tenant, camera, {_AGGREGATES} FROM usage_events"
            f" WHERE camera_owner = ? AND tenant <> ? AND {where}"
            " GROUP BY tenant, camera ORDER BY tenant, camera",
            [owner, owner, *params],
        )
        return {(str(r[0]), str(r[1])): _usage_row(r[2:]) for r in rows}

    def contributed(
        self, owner: str, period: str, *, recorded_until: datetime | None = None
    ) -> int:
        """Milliseconds of other tenants' viewing (live + playback) of ``owner``'s cameras;
        the owner's own viewing is excluded."""
        where, params = self._window(period, recorded_until)
        row = self.db.query_one(
            "SELECT COALESCE(SUM(duration_ms), 0) FROM usage_events"
            f" WHERE camera_owner = ? AND tenant <> ? AND kind IN ('live', 'playback')"
            f" AND {where}",
            [owner, owner, *params],
        )
        return int(row[0]) if row else 0

    def viewing_by_tenant(self, period: str) -> dict[str, int]:
        """Milliseconds of live and playback viewing per tenant in the month (the public
        transparency figures, aggregated further by kind of organisation)."""
        where, params = self._window(period, None)
        rows = self.db.query(
            "SELECT tenant, COALESCE(SUM(duration_ms), 0) FROM usage_events"
            f" WHERE kind IN ('live', 'playback') AND {where} GROUP BY tenant ORDER BY tenant",
            params,
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def tenants(self, period: str, *, recorded_until: datetime | None = None) -> list[str]:
        """Tenants with any usage in the month, sorted."""
        where, params = self._window(period, recorded_until)
        rows = self.db.query(
            f"SELECT DISTINCT tenant FROM usage_events WHERE {where} ORDER BY tenant", params
        )
        return [str(r[0]) for r in rows]

    def owners(self, period: str, *, recorded_until: datetime | None = None) -> list[str]:
        """Camera owners whose cameras were used in the month, sorted."""
        where, params = self._window(period, recorded_until)
        rows = self.db.query(
            f"SELECT DISTINCT camera_owner FROM usage_events WHERE {where} ORDER BY camera_owner",
            params,
        )
        return [str(r[0]) for r in rows]

    def totals(self, period: str) -> dict[str, int]:
        """Reconciliation: bytes delivered per camera in the month (all tenants, all kinds),
        to compare against the relay's own counters. Cameras in name order."""
        where, params = self._window(period, None)
        rows = self.db.query(
            f"SELECT camera, COALESCE(SUM(bytes_sent), 0) FROM usage_events WHERE {where}"
            " GROUP BY camera ORDER BY camera",
            params,
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def totals_since(self, start: datetime) -> dict[str, tuple[int, int, int]]:
        """Per camera (events, duration ms, bytes) of intervals starting at or after ``start``:
        reconciled against what one gateway process reports it emitted since it started."""
        rows = self.db.query(
            "SELECT camera, COUNT(*), COALESCE(SUM(duration_ms), 0),"
            " COALESCE(SUM(bytes_sent), 0) FROM usage_events WHERE start_at >= ?"
            " GROUP BY camera ORDER BY camera",
            [_fmt_time(start)],
        )
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}

    def count(self) -> int:
        row = self.db.query_one("SELECT COUNT(*) FROM usage_events")
        return int(row[0]) if row else 0

    # ----------------------------------------------------------------------------- money
    def post(
        self,
        entry_id: str,
        lines: Iterable[tuple[str, int]],
        currency: str,
        *,
        now: datetime | None = None,
    ) -> bool:
        """Post one balanced entry; return False if this ``entry_id`` was already posted with
        the same lines (idempotent). Raises :class:`BillingError` if the amounts do not sum to
        zero, if there are no lines, or if ``entry_id`` was posted before with other lines."""
        check_currency(currency)
        entry = [(str(account), int(amount)) for account, amount in lines]
        if not entry:
            raise BillingError(f"posting {entry_id}: no lines")
        for account, amount in entry:
            if not account:
                raise BillingError(f"posting {entry_id}: empty account name")
            if isinstance(amount, bool):
                raise BillingError(f"posting {entry_id}: amount must be integer pence")
        total = sum(amount for _, amount in entry)
        if total != 0:
            raise BillingError(f"posting {entry_id}: unbalanced by {total} pence ({entry})")
        stamp = _fmt_time(now or self._clock())
        with self.db.transaction():
            existing = self.db.query(
                "SELECT account, amount_pence, currency FROM postings WHERE entry_id = ?"
                " ORDER BY line_no",
                (entry_id,),
            )
            if existing:
                same = [(str(a), int(p)) for a, p, _ in existing] == entry and all(
                    c == currency for _, _, c in existing
                )
                if not same:
                    raise BillingError(f"posting {entry_id}: already posted with other lines")
                return False
            self.db.executemany(
                "INSERT INTO postings (entry_id, line_no, account, amount_pence, currency,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (entry_id, no, account, amount, currency, stamp)
                    for no, (account, amount) in enumerate(entry, start=1)
                ],
            )
        return True

    def entry(self, entry_id: str) -> list[Posting]:
        rows = self.db.query(
            "SELECT entry_id, line_no, account, amount_pence, currency, created_at"
            " FROM postings WHERE entry_id = ? ORDER BY line_no",
            (entry_id,),
        )
        return [
            Posting(str(r[0]), int(r[1]), str(r[2]), int(r[3]), str(r[4]), _parse_time(r[5]))
            for r in rows
        ]

    def balance(self, account: str, currency: str = "GBP") -> int:
        row = self.db.query_one(
            "SELECT COALESCE(SUM(amount_pence), 0) FROM postings"
            " WHERE account = ? AND currency = ?",
            (account, currency),
        )
        return int(row[0]) if row else 0

    def balances(self, currency: str = "GBP") -> dict[str, int]:
        """Every account's balance (debits positive), accounts in name order."""
        rows = self.db.query(
            "SELECT account, SUM(amount_pence) FROM postings WHERE currency = ?"
            " GROUP BY account ORDER BY account",
            (currency,),
        )
        return {str(r[0]): int(r[1]) for r in rows}
