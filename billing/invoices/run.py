"""The monthly invoice run: deterministic and idempotent (see :mod:`billing.invoices`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from billing.invoices.store import InvoiceStore, build_invoice
from billing.ledger import Ledger, empty_usage
from billing.model import BillingError, Invoice, InvoiceLine, InvoiceStatus, parse_period
from billing.rating import PricePlan, contributor_credits, late_usage_lines, rate

__all__ = ["run_invoices"]


def _billed_until(
    store: InvoiceStore, prior: Invoice, tenants_invoices: Sequence[Invoice]
) -> datetime | None:
    """The latest cutoff through which ``prior``'s month has been billed: its own, or that of a
    finalized invoice that carried adjustments for it."""
    marks = [store.usage_cutoff(prior.invoice_id)]
    prefix = f"adjustment:{prior.period}:"
    for other in tenants_invoices:
        if other.status in (InvoiceStatus.FINALIZED, InvoiceStatus.PAID) and any(
            line.line_id.startswith(prefix) for line in other.lines
        ):
            marks.append(store.usage_cutoff(other.invoice_id))
    present = [m for m in marks if m is not None]
    return max(present) if present else None


def _adjustment_lines(
    ledger: Ledger,
    store: InvoiceStore,
    plan: PricePlan,
    tenant: str,
    period: str,
    cutoff: datetime | None,
) -> list[InvoiceLine]:
    """Late usage of the tenant's earlier, finalised months, recorded up to `cutoff` and not
    yet billed, as lines of `period`'s invoice."""
    if cutoff is None:
        return []
    invoices = [inv for inv in store.list(tenant=tenant) if inv.credit_note_for is None]
    lines: list[InvoiceLine] = []
    for prior in invoices:
        if prior.period >= period or prior.status not in (
            InvoiceStatus.FINALIZED,
            InvoiceStatus.PAID,
        ):
            continue
        billed_until = _billed_until(store, prior, invoices)
        if billed_until is not None and billed_until >= cutoff:
            continue
        month = prior.period
        before = (
            ledger.usage(tenant, month, recorded_until=billed_until)
            if billed_until is not None
            else empty_usage()
        )
        after = ledger.usage(tenant, month, recorded_until=cutoff)
        lines += late_usage_lines(plan, month, before, after)
    return lines


def run_invoices(
    ledger: Ledger,
    store: InvoiceStore,
    plans: Mapping[str, PricePlan],
    assignments: Mapping[str, str],
    period: str,
    *,
    now: datetime,
) -> list[Invoice]:
    """Create or recompute every assigned tenant's draft for ``period``; leave finalized,
    paid and void invoices alone. Returns the period's invoices (tenant order).

    Deterministic and idempotent: the result depends only on the ledger's contents, the
    invoices already finalized, the plans and the assignments - running it again with nothing
    new recorded changes nothing (``created_at`` of a draft is kept from its first run; ``now``
    is only used for a new draft's ``created_at``). Raises :class:`BillingError` if a tenant
    with usage has no plan, or a plan id is unknown."""
    parse_period(period)
    for tenant, plan_id in sorted(assignments.items()):
        if plan_id not in plans:
            raise BillingError(f"tenant {tenant}: unknown plan {plan_id!r}")
    cutoff = ledger.high_water()
    unassigned = [t for t in ledger.tenants(period, recorded_until=cutoff) if t not in assignments]
    if unassigned:
        raise BillingError(
            f"{period}: usage by tenants with no price plan: {', '.join(unassigned)}"
        )
    credits = contributor_credits(ledger, period, plans, assignments, recorded_until=cutoff)
    out: list[Invoice] = []
    for tenant in sorted(assignments):
        plan = plans[assignments[tenant]]
        invoice_id = f"inv-{tenant}-{period}"
        existing = store.get(invoice_id)
        if existing is not None and existing.status is not InvoiceStatus.DRAFT:
            out.append(existing)
            continue
        usage = (
            ledger.usage(tenant, period, recorded_until=cutoff)
            if cutoff is not None
            else empty_usage()
        )
        lines = rate(plan, usage, contributor_credit_pence=credits.get(tenant, 0))
        lines += _adjustment_lines(ledger, store, plan, tenant, period, cutoff)
        invoice = build_invoice(
            invoice_id,
            tenant,
            period,
            plan.currency,
            lines,
            plan.vat,
            created_at=existing.created_at if existing is not None else now,
        )
        store.save_draft(invoice, usage_cutoff=cutoff)
        out.append(store.require(invoice_id))
    return out
