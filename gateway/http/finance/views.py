"""What the finance pages show, shaped for their templates: display units, dates, months, the
usage table and chart, invoice rows, facts and lines. Plain data in, plain data out (no
request, no HTML): the templates only lay it out, and autoescape it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from billing.model import Invoice, InvoiceStatus, Metric
from billing.money import (
    BYTES_PER_GB,
    MS_PER_HOUR,
    MS_PER_MINUTE,
    format_decimal,
    format_money,
    format_quantity,
    format_unit_price,
    vat_label,
)
from tenants.months import add_months, month_days

PAYMENT_TERMS_DAYS = 30
NDASH = "\u2013"

_STATUS_LABEL = {
    InvoiceStatus.DRAFT: "Draft",
    InvoiceStatus.FINALIZED: "Finalised",
    InvoiceStatus.PAID: "Paid",
    InvoiceStatus.VOID: "Void",
}


@dataclass(frozen=True)
class Column:
    label: str
    short: str  # CSV header
    metric: Metric
    size: int  # base units per display unit
    places: int  # decimal places on the page (CSV: 4, exports 0)
    unit: str  # the chart's unit
    chart: str  # the chart's title


COLUMNS: tuple[Column, ...] = (
    Column(
        "Live camera-hours", "live_camera_hours", Metric.LIVE_SECONDS, MS_PER_HOUR, 2,
        "camera-hours", "Live",
    ),
    Column(
        "Playback hours", "playback_hours", Metric.PLAYBACK_SECONDS, MS_PER_HOUR, 2,
        "hours", "Playback",
    ),
    Column("GB delivered", "gb_delivered", Metric.BYTES, BYTES_PER_GB, 2, "GB", "Data delivered"),
    Column(
        "PTZ minutes", "ptz_minutes", Metric.PTZ_SECONDS, MS_PER_MINUTE, 2,
        "minutes", "PTZ control",
    ),
    Column("Exports", "exports", Metric.EXPORTS, 1, 0, "exports", "Exports"),
)  # fmt: skip


# ------------------------------------------------------------------------------ formatting
# Money, unit prices, quantities and rates are billing.money's; what is left here is which
# units are whole and dates.
def fmt_quantity(base: int, col: Column) -> str:
    return format_quantity(base, col.size, col.places)


_WHOLE_UNITS = frozenset({"export", "month", "credit"})


def fmt_line_quantity(text: str, unit: str) -> str:
    """An invoice line's decimal text ("1234.5000") -> "1,234.50": whole units (exports,
    months) without decimals, others with 2 to 4 places (as many as are not zero), rounded
    half-up at the fourth. Text that is not a plain decimal is shown as it is."""
    if unit in _WHOLE_UNITS:
        whole = format_decimal(text, min_places=0)
        if "." not in whole:
            return whole
    return format_decimal(text)


def fmt_unit_price(pence_text: str, currency: str) -> str:
    return format_unit_price(pence_text, currency)


def fmt_date(when: datetime | None) -> str:
    if when is None:
        return "—"
    when = when.astimezone(UTC)
    return f"{when.day} {when:%B %Y}"


def month_name(period: str) -> str:
    first, _ = month_days(period)
    return f"{first:%B %Y}"


def shift(period: str, months: int) -> str:
    return add_months(period, months)


def period_span(period: str) -> str:
    first, last = month_days(period)
    return f"{first.day} {first:%B %Y} {NDASH} {last.day} {last:%B %Y}"


# ----------------------------------------------------------------------------------- links
def q(path: str, **params: str | None) -> str:
    """``path`` with the non-empty ``params`` as its query."""
    kept = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(kept)}" if kept else path


def invoice_url(invoice_id: str, suffix: str = "") -> str:
    return f"/finance/invoices/{quote(invoice_id, safe='')}{suffix}"


@dataclass(frozen=True)
class Link:
    label: str
    href: str


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    selected: bool


@dataclass(frozen=True)
class MonthNav:
    """Previous/next month, a month picker (and a tenant picker for the platform), actions."""

    path: str
    period: str
    label: str
    prev: Link
    next: Link
    tenants: tuple[Option, ...]  # empty: no tenant picker
    actions: tuple[Link, ...]


def month_nav(
    path: str,
    period: str,
    tenant: str | None,
    names: Mapping[str, str] | None,
    actions: Sequence[Link],
) -> MonthNav:
    """``names`` is given to the platform's users only, who may pick any tenant."""
    prev_p, next_p = shift(period, -1), shift(period, 1)
    keep = tenant if names is not None else None
    options: tuple[Option, ...] = ()
    if names is not None:
        ordered = sorted(names, key=lambda t: names[t].lower())
        options = (
            Option("", "All tenants", False),
            *(Option(t, names[t], t == tenant) for t in ordered),
        )
    return MonthNav(
        path=path,
        period=period,
        label=month_name(period),
        prev=Link(f"← {month_name(prev_p)}", q(path, period=prev_p, tenant=keep)),
        next=Link(f"{month_name(next_p)} →", q(path, period=next_p, tenant=keep)),
        tenants=options,
        actions=tuple(actions),
    )


# ----------------------------------------------------------------------------------- usage
Usage = Mapping[Metric, int]


@dataclass(frozen=True)
class UsageRow:
    name: str
    tenant: str
    href: str
    cells: tuple[str, ...]


@dataclass(frozen=True)
class UsageTable:
    heads: tuple[str, ...]
    rows: tuple[UsageRow, ...]
    totals: tuple[str, ...]  # empty: one row, no total line


def usage_table(
    rows: Sequence[tuple[str, Usage]], names: Mapping[str, str], link: dict[str, str]
) -> UsageTable:
    """``link``: tenant -> where its name leads (its invoices)."""
    totals = dict.fromkeys((c.metric for c in COLUMNS), 0)
    shaped = []
    for tenant, usage in rows:
        for c in COLUMNS:
            totals[c.metric] += usage[c.metric]
        shaped.append(
            UsageRow(
                name=names.get(tenant, tenant),
                tenant=tenant,
                href=link[tenant],
                cells=tuple(fmt_quantity(usage[c.metric], c) for c in COLUMNS),
            )
        )
    return UsageTable(
        heads=tuple(c.label for c in COLUMNS),
        rows=tuple(shaped),
        totals=tuple(fmt_quantity(totals[c.metric], c) for c in COLUMNS) if len(rows) > 1 else (),
    )


@dataclass(frozen=True)
class Bar:
    label: str
    short: str  # the label cut to fit
    y: int
    width: int
    shown: str  # the formatted value


@dataclass(frozen=True)
class Panel:
    """One horizontal bar chart, in SVG user units."""

    title: str
    unit: str
    bars: tuple[Bar, ...]
    label_w: int = 150
    bar_w: int = 170
    value_w: int = 70
    row_h: int = 22
    top: int = 6

    @property
    def width(self) -> int:
        return self.label_w + self.bar_w + self.value_w

    @property
    def height(self) -> int:
        return self.top + self.row_h * max(len(self.bars), 1) + 6


def _panel(col: Column, rows: Sequence[tuple[str, Usage]]) -> Panel:
    biggest = max((u[col.metric] for _, u in rows), default=0)
    proto = Panel(col.chart, col.unit, ())
    bars = []
    for i, (label, usage) in enumerate(rows):
        value = usage[col.metric]
        w = 0 if biggest <= 0 else (2 * value * proto.bar_w + biggest) // (2 * biggest)
        if value > 0:
            w = max(w, 1)  # a small value is still a visible bar
        bars.append(
            Bar(
                label=label,
                short=label if len(label) <= 18 else label[:17] + "…",
                y=proto.top + i * proto.row_h,
                width=w,
                shown=fmt_quantity(usage[col.metric], col),
            )
        )
    return Panel(col.chart, col.unit, tuple(bars))


def chart(rows: Sequence[tuple[str, Usage]]) -> tuple[Panel, ...]:
    """Small multiples: one panel per metric, one bar per row (a tenant or a month)."""
    return tuple(_panel(col, rows) for col in COLUMNS)


# -------------------------------------------------------------------------------- invoices
@dataclass(frozen=True)
class Badge:
    css: str
    label: str


def badge(status: InvoiceStatus) -> Badge:
    return Badge(status.value, _STATUS_LABEL[status])


def kind_of(inv: Invoice) -> str:
    return "Credit note" if inv.credit_note_for else "Invoice"


@dataclass(frozen=True)
class InvoiceRow:
    invoice_id: str
    href: str
    print_href: str
    kind: str
    tenant_name: str
    period: str
    created: str
    status: Badge
    subtotal: str
    vat: str
    total: str


@dataclass(frozen=True)
class SumRow:
    currency: str
    subtotal: str
    vat: str
    total: str


def invoice_rows(
    found: Sequence[Invoice], names: Mapping[str, str]
) -> tuple[tuple[InvoiceRow, ...], tuple[SumRow, ...]]:
    """The list's rows, and its totals per currency leaving out void invoices."""
    rows = []
    sums: dict[str, list[int]] = {}
    for inv in found:
        cur = inv.currency
        rows.append(
            InvoiceRow(
                invoice_id=inv.invoice_id,
                href=invoice_url(inv.invoice_id),
                print_href=invoice_url(inv.invoice_id, "/print"),
                kind=kind_of(inv),
                tenant_name=names.get(inv.tenant, inv.tenant),
                period=inv.period,
                created=fmt_date(inv.created_at),
                status=badge(inv.status),
                subtotal=format_money(inv.subtotal_pence, cur),
                vat=format_money(inv.vat_pence, cur),
                total=format_money(inv.total_pence, cur),
            )
        )
        if inv.status is not InvoiceStatus.VOID:
            s = sums.setdefault(cur, [0, 0, 0])
            s[0] += inv.subtotal_pence
            s[1] += inv.vat_pence
            s[2] += inv.total_pence
    totals = tuple(
        SumRow(cur, format_money(s[0], cur), format_money(s[1], cur), format_money(s[2], cur))
        for cur, s in sorted(sums.items())
    )
    return tuple(rows), totals


@dataclass(frozen=True)
class Fact:
    label: str
    text: str
    href: str = ""
    badge: Badge | None = None


@dataclass(frozen=True)
class Line:
    description: str
    quantity: str
    unit: str
    unit_price: str
    amount: str


@dataclass(frozen=True)
class Totals:
    subtotal: str
    vat_label: str
    vat: str
    due_label: str
    total: str


def lines(inv: Invoice) -> tuple[Line, ...]:
    return tuple(
        Line(
            description=line.description,
            quantity=fmt_line_quantity(line.quantity, line.unit),
            unit=line.unit,
            unit_price=fmt_unit_price(line.unit_price, inv.currency),
            amount=format_money(line.amount_pence, inv.currency),
        )
        for line in inv.lines
    )


def totals(inv: Invoice, due_label: str = "Total") -> Totals:
    return Totals(
        subtotal=format_money(inv.subtotal_pence, inv.currency),
        vat_label=vat_label(inv.vat_rate),
        vat=format_money(inv.vat_pence, inv.currency),
        due_label=due_label,
        total=format_money(inv.total_pence, inv.currency),
    )


def invoice_facts(inv: Invoice, names: Mapping[str, str]) -> tuple[Fact, ...]:
    facts = [
        Fact("Tenant", f"{names.get(inv.tenant, inv.tenant)} ({inv.tenant})"),
        Fact("Period", period_span(inv.period)),
        Fact("Status", "", badge=badge(inv.status)),
        Fact("Currency", inv.currency),
        Fact("Created", fmt_date(inv.created_at)),
        Fact("Finalised", fmt_date(inv.finalized_at)),
        Fact("Paid", fmt_date(inv.paid_at)),
    ]
    if inv.credit_note_for:
        target = inv.credit_note_for
        facts.append(Fact("Credit note for", target, href=invoice_url(target)))
    if inv.stripe_invoice_id:
        facts.append(Fact("Payment provider ref.", inv.stripe_invoice_id))
    return tuple(facts)


@dataclass(frozen=True)
class Printable:
    """The printable invoice or credit note."""

    kind: str
    invoice_id: str
    issuer: str
    customer: str
    account: str
    banner: str
    banner_css: str
    facts: tuple[Fact, ...]
    lines: tuple[Line, ...]
    totals: Totals
    terms: str
    title: str


def printable(inv: Invoice, names: Mapping[str, str], platform_tenant: str) -> Printable:
    issuer = names.get(platform_tenant, platform_tenant)
    note = inv.credit_note_for is not None
    kind = kind_of(inv)
    issued = inv.finalized_at
    if inv.status is InvoiceStatus.DRAFT or issued is None:
        issued_text, due_text = "Not yet issued (draft)", f"{PAYMENT_TERMS_DAYS} days from issue"
    else:
        issued_text = fmt_date(issued)
        due_text = fmt_date(issued + timedelta(days=PAYMENT_TERMS_DAYS))
    banner, banner_css = {
        InvoiceStatus.DRAFT: ("DRAFT — this is not a VAT invoice", ""),
        InvoiceStatus.VOID: ("VOID — this invoice has been cancelled", ""),
        InvoiceStatus.PAID: (f"PAID on {fmt_date(inv.paid_at)}", "paid"),
    }.get(inv.status, ("", ""))
    facts = [
        Fact(f"{kind} number", inv.invoice_id),
        Fact(f"{kind} date", issued_text),
        Fact("Period", period_span(inv.period)),
        Fact("Account", inv.tenant),
    ]
    if inv.credit_note_for is not None:
        facts.append(Fact("Credits invoice", inv.credit_note_for))
        terms = (
            "This credit note reduces the amount owed on the invoice it names. It will be"
            " set against your account; no payment is due."
        )
    else:
        facts.append(Fact("Payment due", due_text))
        terms = (
            f"Payment is due within {PAYMENT_TERMS_DAYS} days of the invoice date. Please"
            f" quote the invoice number {inv.invoice_id} as the payment reference."
            " Amounts are in "
            + ("pounds sterling" if inv.currency == "GBP" else inv.currency)
            + "; VAT is charged on the subtotal at the rate shown."
        )
    return Printable(
        kind=kind,
        invoice_id=inv.invoice_id,
        issuer=issuer,
        customer=names.get(inv.tenant, inv.tenant),
        account=inv.tenant,
        banner=banner,
        banner_css=banner_css,
        facts=tuple(facts),
        lines=lines(inv),
        totals=totals(inv, "Total credited" if note else "Total due"),
        terms=terms,
        title=f"{kind} {inv.invoice_id} {NDASH} {issuer}",
    )
