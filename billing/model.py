"""Billing's shared vocabulary: usage events in, invoices out.

Money is integer minor units (pence) plus an ISO 4217 currency, as stripe-python does it;
``Decimal`` appears only inside rating. Times are stored in UTC; months (billing periods) are
the deployment's local months (:mod:`tenants.months`). This package never imports ``gateway``:
the gateway emits ``UsageEvent``s through ``UsageSink`` and that is the whole interface.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import Protocol

from tenants.months import DEFAULT_ZONE, month_bounds, month_of

_CURRENCY = re.compile(r"^[A-Z]{3}$")


class BillingError(ValueError):
    """A billing rule was broken (bad period, mixed currencies, unbalanced postings)."""


class Metric(StrEnum):
    LIVE_SECONDS = "live_seconds"  # a reader watching live
    PLAYBACK_SECONDS = "playback_seconds"
    BYTES = "bytes"  # bytes delivered to the tenant's readers
    PTZ_SECONDS = "ptz_seconds"  # seconds holding PTZ control
    EXPORTS = "exports"  # clips exported
    CONTRIBUTED_SECONDS = "contributed_seconds"  # others watching this tenant's cameras


class UsageKind(StrEnum):
    LIVE = "live"
    PLAYBACK = "playback"
    PTZ = "ptz"
    EXPORT = "export"


@dataclass(frozen=True)
class UsageEvent:
    """One interval of one session's use, attributed to the tenant that used it.

    ``event_id`` is derived from the session and the interval number, so a report that is
    sent twice (a retry, a replay after a crash) is the same event and is counted once.
    """

    event_id: str
    session_id: str
    seq: int  # interval number within the session, from 0
    tenant: str
    principal: str | None
    camera: str
    camera_owner: str
    kind: UsageKind
    protocol: str  # rtsp, webrtc, ...
    variant: str  # masked or unmasked
    start: datetime
    end: datetime
    duration_ms: int
    bytes_sent: int
    final: bool = False  # the session's last interval

    @staticmethod
    def make_id(session_id: str, seq: int) -> str:
        return hashlib.sha256(f"{session_id}:{seq}".encode()).hexdigest()[:32]

    def __post_init__(self) -> None:
        if self.duration_ms < 0 or self.bytes_sent < 0 or self.seq < 0:
            raise BillingError(f"usage event {self.event_id}: negative quantity")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise BillingError(f"usage event {self.event_id}: times must be UTC-aware")
        if self.end < self.start:
            raise BillingError(f"usage event {self.event_id}: ends before it starts")


class UsageSink(Protocol):
    """The one narrow interface between the gateway and billing. ``emit`` must not block the
    event loop and must not lose the event: it is either recorded, queued, or spooled."""

    def emit(self, event: UsageEvent) -> None: ...


def check_currency(currency: str) -> str:
    if not _CURRENCY.match(currency):
        raise BillingError(f"currency {currency!r}: expected an ISO 4217 code like GBP")
    return currency


def parse_period(period: str, zone: tzinfo = DEFAULT_ZONE) -> tuple[datetime, datetime]:
    """'2026-11' -> [local midnight on 1 Nov, on 1 Dec) in `zone`, as UTC instants."""
    try:
        return month_bounds(period, zone)
    except ValueError as exc:
        raise BillingError(str(exc)) from None


period_of = month_of


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"
    PAID = "paid"
    VOID = "void"


class LineKind(StrEnum):
    USAGE = "usage"
    PLATFORM_FEE = "platform_fee"
    MINIMUM_TOP_UP = "minimum_top_up"  # brings a month up to the minimum commitment
    CONTRIBUTOR_CREDIT = "contributor_credit"  # negative: a share of others' viewing
    ADJUSTMENT = "adjustment"  # late usage for an already finalised month
    CREDIT = "credit"  # on a credit note


@dataclass(frozen=True)
class InvoiceLine:
    line_id: str  # stable within the invoice: "usage:live_seconds", "adjustment:2026-10:bytes"
    kind: LineKind
    description: str  # what a council finance officer reads
    metric: Metric | None
    quantity: str  # decimal text in the unit shown (hours, GB, minutes), e.g. "12.5000"
    unit: str  # "camera-hour", "GB", "minute", "export", "month"
    unit_price: str  # decimal text in pence per unit, e.g. "45.5000"
    amount_pence: int  # rounded once, ROUND_HALF_UP


@dataclass(frozen=True)
class Invoice:
    invoice_id: str  # deterministic: f"inv-{tenant}-{period}" (credit notes: "cn-...-n")
    tenant: str
    period: str  # YYYY-MM
    currency: str
    lines: tuple[InvoiceLine, ...]
    subtotal_pence: int
    vat_rate: str  # decimal text, e.g. "0.20"
    vat_pence: int  # rounded at invoice level
    total_pence: int
    status: InvoiceStatus = InvoiceStatus.DRAFT
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finalized_at: datetime | None = None
    paid_at: datetime | None = None
    credit_note_for: str | None = None  # set on a credit note
    stripe_invoice_id: str | None = None

    def __post_init__(self) -> None:
        check_currency(self.currency)
        if sum(line.amount_pence for line in self.lines) != self.subtotal_pence:
            raise BillingError(f"invoice {self.invoice_id}: lines do not add up to subtotal")
        if self.subtotal_pence + self.vat_pence != self.total_pence:
            raise BillingError(f"invoice {self.invoice_id}: subtotal + VAT != total")
