"""Invoices and credit notes as stored: their status machine, their lines, and the money
postings each status change makes (see :mod:`billing.invoices`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from billing.ledger import Ledger, _fmt_time, _parse_time
from billing.model import (
    BillingError,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineKind,
    Metric,
    check_currency,
)
from billing.rating import vat_pence, whole_pence_text
from tenants.db import Database

if TYPE_CHECKING:
    from decimal import Decimal  # a rate passed through to rating, never computed here

__all__ = ["MIGRATIONS", "InvoiceStore", "build_invoice", "invoice_postings"]

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE invoices (
        invoice_id TEXT NOT NULL PRIMARY KEY,
        tenant TEXT NOT NULL,
        period TEXT NOT NULL,
        currency TEXT NOT NULL,
        subtotal_pence BIGINT NOT NULL,
        vat_rate TEXT NOT NULL,
        vat_pence BIGINT NOT NULL,
        total_pence BIGINT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        finalized_at TEXT,
        paid_at TEXT,
        credit_note_for TEXT,
        stripe_invoice_id TEXT,
        usage_cutoff TEXT,
        reason TEXT
    );
    CREATE INDEX invoices_tenant_period ON invoices (tenant, period);
    CREATE TABLE invoice_lines (
        invoice_id TEXT NOT NULL REFERENCES invoices (invoice_id),
        line_no INTEGER NOT NULL,
        line_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        description TEXT NOT NULL,
        metric TEXT,
        quantity TEXT NOT NULL,
        unit TEXT NOT NULL,
        unit_price TEXT NOT NULL,
        amount_pence BIGINT NOT NULL,
        PRIMARY KEY (invoice_id, line_no),
        UNIQUE (invoice_id, line_id)
    )
    """,
)

_INV_COLS = (
    "invoice_id, tenant, period, currency, subtotal_pence, vat_rate, vat_pence, total_pence,"
    " status, created_at, finalized_at, paid_at, credit_note_for, stripe_invoice_id"
)
_LINE_COLS = "line_id, kind, description, metric, quantity, unit, unit_price, amount_pence"


def _opt_time(t: datetime | None) -> str | None:
    return None if t is None else _fmt_time(t)


def _opt_parse(s: Any) -> datetime | None:
    return None if s is None else _parse_time(str(s))


def build_invoice(
    invoice_id: str,
    tenant: str,
    period: str,
    currency: str,
    lines: Sequence[InvoiceLine],
    vat_rate: Decimal | str,
    *,
    created_at: datetime,
    status: InvoiceStatus = InvoiceStatus.DRAFT,
    finalized_at: datetime | None = None,
    credit_note_for: str | None = None,
) -> Invoice:
    """Totals from lines: subtotal = Σ amounts, VAT = round_half_up(subtotal * rate) once."""
    subtotal = sum(line.amount_pence for line in lines)
    vat = vat_pence(subtotal, vat_rate)
    return Invoice(
        invoice_id=invoice_id,
        tenant=tenant,
        period=period,
        currency=check_currency(currency),
        lines=tuple(lines),
        subtotal_pence=subtotal,
        vat_rate=str(vat_rate),
        vat_pence=vat,
        total_pence=subtotal + vat,
        status=status,
        created_at=created_at,
        finalized_at=finalized_at,
        credit_note_for=credit_note_for,
    )


def _account(line: InvoiceLine, tenant: str) -> str:
    base_id = line.line_id.removeprefix("credit:")
    if line.kind is LineKind.CONTRIBUTOR_CREDIT or base_id == "contributor_credit":
        return f"payable:contributor:{tenant}"
    if line.metric is not None:
        return f"revenue:{line.metric.value}"
    if base_id in ("platform_fee", "nominal_fee", "minimum_top_up"):
        return f"revenue:{base_id}"
    if base_id.endswith(":minimum_top_up"):
        return "revenue:minimum_top_up"
    return "revenue:credit_notes"


def invoice_postings(invoice: Invoice) -> list[tuple[str, int]]:
    """The balanced entry for a finalized invoice or credit note (accounts merged, zero
    amounts dropped, receivable first, VAT last, revenue accounts in line order)."""
    amounts: dict[str, int] = {f"receivable:{invoice.tenant}": invoice.total_pence}
    for line in invoice.lines:
        account = _account(line, invoice.tenant)
        amounts[account] = amounts.get(account, 0) - line.amount_pence
    amounts["vat:output"] = amounts.get("vat:output", 0) - invoice.vat_pence
    return [(a, p) for a, p in amounts.items() if p != 0]


class InvoiceStore:
    """Invoices and their lines on a :class:`~tenants.db.Database`; money postings go to the
    :class:`~billing.ledger.Ledger` on the same database, in the same transaction."""

    def __init__(self, db: Database, *, ledger: Ledger | None = None) -> None:
        self.db = db
        self.ledger = ledger if ledger is not None else Ledger(db)
        db.migrate("billing_invoices", MIGRATIONS)

    # ---------------------------------------------------------------------------- reading
    def _lines(self, invoice_id: str) -> tuple[InvoiceLine, ...]:
        rows = self.db.query(
            f"SELECT {_LINE_COLS} FROM invoice_lines WHERE invoice_id = ? ORDER BY line_no",
            (invoice_id,),
        )
        return tuple(
            InvoiceLine(
                line_id=str(r[0]),
                kind=LineKind(r[1]),
                description=str(r[2]),
                metric=None if r[3] is None else Metric(r[3]),
                quantity=str(r[4]),
                unit=str(r[5]),
                unit_price=str(r[6]),
                amount_pence=int(r[7]),
            )
            for r in rows
        )

    def _from_row(self, r: Sequence[Any]) -> Invoice:
        return Invoice(
            invoice_id=str(r[0]),
            tenant=str(r[1]),
            period=str(r[2]),
            currency=str(r[3]),
            lines=self._lines(str(r[0])),
            subtotal_pence=int(r[4]),
            vat_rate=str(r[5]),
            vat_pence=int(r[6]),
            total_pence=int(r[7]),
            status=InvoiceStatus(r[8]),
            created_at=_parse_time(str(r[9])),
            finalized_at=_opt_parse(r[10]),
            paid_at=_opt_parse(r[11]),
            credit_note_for=None if r[12] is None else str(r[12]),
            stripe_invoice_id=None if r[13] is None else str(r[13]),
        )

    def get(self, invoice_id: str) -> Invoice | None:
        row = self.db.query_one(
            f"SELECT {_INV_COLS} FROM invoices WHERE invoice_id = ?", (invoice_id,)
        )
        return None if row is None else self._from_row(row)

    def require(self, invoice_id: str) -> Invoice:
        invoice = self.get(invoice_id)
        if invoice is None:
            raise BillingError(f"invoice {invoice_id}: not found")
        return invoice

    def list(
        self,
        *,
        tenant: str | None = None,
        period: str | None = None,
        status: InvoiceStatus | None = None,
    ) -> list[Invoice]:
        """Invoices and credit notes, ordered by period then id."""
        where, params = ["1 = 1"], []
        for column, value in (("tenant", tenant), ("period", period), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(str(value))
        rows = self.db.query(
            f"SELECT {_INV_COLS} FROM invoices WHERE {' AND '.join(where)}"
            " ORDER BY period, invoice_id",
            params,
        )
        return [self._from_row(r) for r in rows]

    def usage_cutoff(self, invoice_id: str) -> datetime | None:
        """The ledger high-water mark the invoice's usage was rated at (None: no usage yet)."""
        row = self.db.query_one(
            "SELECT usage_cutoff FROM invoices WHERE invoice_id = ?", (invoice_id,)
        )
        return None if row is None else _opt_parse(row[0])

    def _status(self, invoice_id: str) -> InvoiceStatus | None:
        row = self.db.query_one("SELECT status FROM invoices WHERE invoice_id = ?", (invoice_id,))
        return None if row is None else InvoiceStatus(row[0])

    # ---------------------------------------------------------------------------- writing
    def _insert(self, inv: Invoice, *, usage_cutoff: datetime | None, reason: str | None) -> None:
        self.db.execute(
            f"INSERT INTO invoices ({_INV_COLS}, usage_cutoff, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                inv.invoice_id,
                inv.tenant,
                inv.period,
                inv.currency,
                inv.subtotal_pence,
                inv.vat_rate,
                inv.vat_pence,
                inv.total_pence,
                str(inv.status),
                _fmt_time(inv.created_at),
                _opt_time(inv.finalized_at),
                _opt_time(inv.paid_at),
                inv.credit_note_for,
                inv.stripe_invoice_id,
                _opt_time(usage_cutoff),
                reason,
            ),
        )
        self.db.executemany(
            f"INSERT INTO invoice_lines (invoice_id, line_no, {_LINE_COLS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    inv.invoice_id,
                    no,
                    line.line_id,
                    str(line.kind),
                    line.description,
                    None if line.metric is None else line.metric.value,
                    line.quantity,
                    line.unit,
                    line.unit_price,
                    line.amount_pence,
                )
                for no, line in enumerate(inv.lines, start=1)
            ],
        )

    def save_draft(self, invoice: Invoice, *, usage_cutoff: datetime | None) -> bool:
        """Insert or replace a draft; return False if the stored draft was already identical.
        Refuses to touch an invoice that is no longer a draft (finalized invoices are
        immutable)."""
        if invoice.status is not InvoiceStatus.DRAFT:
            raise BillingError(f"invoice {invoice.invoice_id}: only drafts are saved this way")
        with self.db.transaction():
            current = self.get(invoice.invoice_id)
            if current is not None:
                if current.status is not InvoiceStatus.DRAFT:
                    raise BillingError(
                        f"invoice {invoice.invoice_id} is {current.status}: it cannot be changed"
                    )
                if current == invoice and self.usage_cutoff(invoice.invoice_id) == usage_cutoff:
                    return False
                self.db.execute(
                    "DELETE FROM invoice_lines WHERE invoice_id = ?", (invoice.invoice_id,)
                )
                self.db.execute("DELETE FROM invoices WHERE invoice_id = ?", (invoice.invoice_id,))
            self._insert(invoice, usage_cutoff=usage_cutoff, reason=None)
        return True

    def finalize(self, invoice_id: str, now: datetime) -> Invoice:
        """draft -> finalized, and post its balanced entry. Finalizing again is a no-op."""
        with self.db.transaction():
            inv = self.require(invoice_id)
            if inv.status is not InvoiceStatus.DRAFT:
                if inv.status is InvoiceStatus.VOID:
                    raise BillingError(f"invoice {invoice_id} is void: it cannot be finalized")
                return inv
            self.db.execute(
                "UPDATE invoices SET status = ?, finalized_at = ? WHERE invoice_id = ?",
                (str(InvoiceStatus.FINALIZED), _fmt_time(now), invoice_id),
            )
            inv = self.require(invoice_id)
            entry = invoice_postings(inv)
            if entry:
                self.ledger.post(invoice_id, entry, inv.currency, now=now)
        return inv

    def mark_paid(self, invoice_id: str, now: datetime) -> Invoice:
        """finalized -> paid (``cash:bank`` debited, receivable cleared). Idempotent."""
        with self.db.transaction():
            inv = self.require(invoice_id)
            if inv.status is InvoiceStatus.PAID:
                return inv
            if inv.status is not InvoiceStatus.FINALIZED or inv.credit_note_for is not None:
                raise BillingError(
                    f"invoice {invoice_id} is {inv.status}: only a finalized invoice is paid"
                )
            self.db.execute(
                "UPDATE invoices SET status = ?, paid_at = ? WHERE invoice_id = ?",
                (str(InvoiceStatus.PAID), _fmt_time(now), invoice_id),
            )
            if inv.total_pence:
                self.ledger.post(
                    f"{invoice_id}:paid",
                    [
                        ("cash:bank", inv.total_pence),
                        (f"receivable:{inv.tenant}", -inv.total_pence),
                    ],
                    inv.currency,
                    now=now,
                )
            return self.require(invoice_id)

    def void(self, invoice_id: str, now: datetime | None = None) -> Invoice:
        """draft|finalized -> void. A finalized invoice's entry is reversed. A paid invoice or
        a credit note cannot be voided (issue a credit note instead). Idempotent."""
        with self.db.transaction():
            inv = self.require(invoice_id)
            if inv.status is InvoiceStatus.VOID:
                return inv
            if inv.status is InvoiceStatus.PAID or inv.credit_note_for is not None:
                raise BillingError(
                    f"invoice {invoice_id} is {inv.status}"
                    + (" (a credit note)" if inv.credit_note_for else "")
                    + ": it cannot be voided; issue a credit note"
                )
            if inv.status is InvoiceStatus.FINALIZED:
                entry = invoice_postings(inv)
                if entry:
                    self.ledger.post(
                        f"{invoice_id}:void", [(a, -p) for a, p in entry], inv.currency, now=now
                    )
            self.db.execute(
                "UPDATE invoices SET status = ? WHERE invoice_id = ?",
                (str(InvoiceStatus.VOID), invoice_id),
            )
            return self.require(invoice_id)

    def credit_note(
        self, invoice_id: str, what: Sequence[str] | int, reason: str, now: datetime
    ) -> Invoice:
        """Issue a finalized credit note against a finalized or paid invoice.

        ``what`` is either line ids of the invoice to credit in full (each at most once across
        all its credit notes; negative lines cannot be credited) or an amount in pence, net of
        VAT. VAT is credited at the invoice's rate, rounded half-up on the note's subtotal.
        The total credited net may not exceed the invoice's subtotal."""
        if not reason.strip():
            raise BillingError("a credit note needs a reason")
        with self.db.transaction():
            inv = self.require(invoice_id)
            if inv.credit_note_for is not None:
                raise BillingError(f"{invoice_id} is a credit note: credit the invoice itself")
            if inv.status not in (InvoiceStatus.FINALIZED, InvoiceStatus.PAID):
                raise BillingError(
                    f"invoice {invoice_id} is {inv.status}: only finalized or paid invoices"
                    " take credit notes"
                )
            earlier = [
                cn for cn in self.list(tenant=inv.tenant) if cn.credit_note_for == invoice_id
            ]
            credited_ids = {line.line_id for cn in earlier for line in cn.lines}
            lines: list[InvoiceLine] = []
            if isinstance(what, int):
                if isinstance(what, bool) or what <= 0:
                    raise BillingError("credit amount must be a positive number of pence")
                lines.append(
                    InvoiceLine(
                        line_id="credit:amount"
                        + (f":{len(earlier) + 1}" if "credit:amount" in credited_ids else ""),
                        kind=LineKind.CREDIT,
                        description=f"Credit against {invoice_id}: {reason}",
                        metric=None,
                        quantity="1",
                        unit="credit",
                        unit_price=whole_pence_text(-what),
                        amount_pence=-what,
                    )
                )
            else:
                if not what:
                    raise BillingError("credit note: no lines given")
                by_id = {line.line_id: line for line in inv.lines}
                for line_id in dict.fromkeys(what):
                    orig = by_id.get(line_id)
                    if orig is None:
                        raise BillingError(f"invoice {invoice_id} has no line {line_id!r}")
                    if f"credit:{line_id}" in credited_ids:
                        raise BillingError(f"line {line_id!r} of {invoice_id} is already credited")
                    if orig.amount_pence <= 0:
                        raise BillingError(f"line {line_id!r} is not a charge: nothing to credit")
                    lines.append(
                        InvoiceLine(
                            line_id=f"credit:{line_id}",
                            kind=LineKind.CREDIT,
                            description=f"Credit: {orig.description} ({reason})",
                            metric=orig.metric,
                            quantity=orig.quantity,
                            unit=orig.unit,
                            unit_price=orig.unit_price,
                            amount_pence=-orig.amount_pence,
                        )
                    )
            already = -sum(cn.subtotal_pence for cn in earlier)
            this = -sum(line.amount_pence for line in lines)
            if already + this > inv.subtotal_pence:
                raise BillingError(
                    f"credit of {this}p on {invoice_id} would exceed its subtotal"
                    f" ({inv.subtotal_pence}p, {already}p already credited)"
                )
            n = 1 + sum(
                1 for x in self.list(tenant=inv.tenant, period=inv.period) if x.credit_note_for
            )
            note = build_invoice(
                f"cn-{inv.tenant}-{inv.period}-{n}",
                inv.tenant,
                inv.period,
                inv.currency,
                lines,
                inv.vat_rate,
                created_at=now,
                status=InvoiceStatus.FINALIZED,
                finalized_at=now,
                credit_note_for=invoice_id,
            )
            self._insert(note, usage_cutoff=None, reason=reason)
            entry = invoice_postings(note)
            if entry:
                self.ledger.post(note.invoice_id, entry, note.currency, now=now)
            return self.require(note.invoice_id)

    def attach_stripe_id(self, invoice_id: str, stripe_invoice_id: str) -> None:
        """Record the payment provider's id (metadata only; amounts are not touched)."""
        if not self.db.execute(
            "UPDATE invoices SET stripe_invoice_id = ? WHERE invoice_id = ?",
            (stripe_invoice_id, invoice_id),
        ):
            raise BillingError(f"invoice {invoice_id}: not found")
