"""StripeSync: one Customer per tenant, each finalised invoice exactly once, finalisation and
reconciliation."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import stripe

from billing.model import BillingError, Invoice, InvoiceStatus
from billing.money import plain_money
from billing.stripe_sync.attached import AttachedFlow
from billing.stripe_sync.base import (
    InvoiceState,
    Kind,
    ServerKind,
    field_of,
    idempotency_key,
    metadata_of,
)
from billing.stripe_sync.localstripe import LocalstripeFlow
from billing.stripe_sync.webhooks import PaidStore, apply_event

log = logging.getLogger(__name__)


class StripeSync(AttachedFlow, LocalstripeFlow):
    """Finalised invoices to Stripe, exactly once each; reconciliation; webhook events."""

    def ensure_customer(self, tenant_id: str, name: str, email: str | None = None) -> str:
        known = self.lookup(Kind.CUSTOMER, tenant_id)
        if known:
            return known

        def find() -> str | None:
            for cus in self._customers_of(tenant_id):
                return str(cus.id)
            return None

        def create() -> str:
            params: dict[str, Any] = {"name": name, "metadata": {"feedgate_tenant": tenant_id}}
            if email:
                params["email"] = email
            cus = self.client.v1.customers.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key(f"customer:{tenant_id}")},
            )
            return str(cus.id)

        cus_id = self._retry(f"find customer for {tenant_id}", find) or self._retry(
            f"create customer for {tenant_id}", create, before_retry=find
        )
        self._record(Kind.CUSTOMER, tenant_id, cus_id)
        return cus_id

    def _customers_of(self, tenant_id: str) -> Iterator[Any]:
        if self.server is ServerKind.STRIPE:
            query = f"metadata['feedgate_tenant']:'{tenant_id}'"
            found: Iterable[Any] = self.client.v1.customers.search({"query": query}).data
        else:
            found = self.client.v1.customers.list({"limit": 100}).auto_paging_iter()
        for cus in found:
            ours = metadata_of(cus).get("feedgate_tenant") == tenant_id
            if ours and not field_of(cus, "deleted"):
                yield cus

    # ---------------------------------------------------------------- invoices

    def sync_invoice(self, invoice: Invoice, *, customer_name: str | None = None) -> str:
        """Make sure Stripe has this finalised invoice exactly once; return its Stripe id."""
        if invoice.status not in (InvoiceStatus.FINALIZED, InvoiceStatus.PAID):
            raise BillingError(
                f"invoice {invoice.invoice_id} is {invoice.status}: only finalised invoices sync"
            )
        customer = self.ensure_customer(invoice.tenant, customer_name or invoice.tenant)
        if self.server is ServerKind.STRIPE:
            stripe_id = self._sync_attached(invoice, customer)
        else:
            stripe_id = self._sync_pending_then_invoice(invoice, customer)
        self._finalize(invoice, stripe_id)
        return stripe_id

    def _finalize(self, invoice: Invoice, stripe_id: str) -> None:
        state = self.state(Kind.INVOICE, invoice.invoice_id)
        if state == InvoiceState.FINALIZED:
            return
        if self.finalize_supported is False:
            self._record(
                Kind.INVOICE, invoice.invoice_id, stripe_id, InvoiceState.FINALIZE_UNSUPPORTED
            )
            return
        current = self._retry(
            f"retrieve invoice {stripe_id}", lambda: self.client.v1.invoices.retrieve(stripe_id)
        )
        if field_of(current, "status") not in (None, "draft"):
            self._record(Kind.INVOICE, invoice.invoice_id, stripe_id, InvoiceState.FINALIZED)
            return

        def finalize() -> bool:
            try:
                self.client.v1.invoices.finalize_invoice(
                    stripe_id,
                    {"auto_advance": False},
                    {"idempotency_key": idempotency_key(f"{self._key_base(invoice)}:finalize")},
                )
            except stripe.StripeError as exc:
                # Real Stripe's 404 is a JSON "resource_missing" error; a router's 404 (no such
                # route: localstripe) has no Stripe error code.
                if exc.http_status == 404 and not exc.code:
                    return False
                raise
            return True

        if self._retry(f"finalize invoice {stripe_id}", finalize):
            self.finalize_supported = True
            self._record(Kind.INVOICE, invoice.invoice_id, stripe_id, InvoiceState.FINALIZED)
        else:
            if self.finalize_supported is None:
                log.warning(
                    "stripe: finalisation not supported by this server (%s answered 404 for "
                    "POST /v1/invoices/{id}/finalize); invoices stay Stripe drafts",
                    self.api_base,
                )
            self.finalize_supported = False
            self._record(
                Kind.INVOICE, invoice.invoice_id, stripe_id, InvoiceState.FINALIZE_UNSUPPORTED
            )

    # ---------------------------------------------------------------- reconciliation

    def reconcile(self, invoices: Iterable[Invoice]) -> list[str]:
        """Our totals against Stripe's, one human-readable line per difference."""
        diffs: list[str] = []
        for inv in invoices:
            stripe_id = self.lookup(Kind.INVOICE, inv.invoice_id)
            if stripe_id is None:
                if inv.status in (InvoiceStatus.FINALIZED, InvoiceStatus.PAID):
                    diffs.append(f"{inv.invoice_id}: not in Stripe")
                continue
            diffs.extend(self._reconcile_one(inv, stripe_id))
        return diffs

    def _reconcile_one(self, inv: Invoice, sid: str) -> list[str]:
        diffs: list[str] = []
        remote = self._retry(
            f"retrieve invoice {sid}", lambda: self.client.v1.invoices.retrieve(sid)
        )
        items = self._retry(f"list items of {sid}", lambda: self._invoice_items(sid))
        lines = self._lines(inv)
        line_sum = self._retry(f"sum lines of {sid}", lambda: self._line_sum(sid))
        total = int(field_of(remote, "total") or 0)
        amount_due = int(field_of(remote, "amount_due") or 0)
        currency = str(field_of(remote, "currency") or "").upper()
        label = f"{inv.invoice_id} ({sid})"
        if currency and currency != inv.currency:
            diffs.append(f"{label}: currency ours {inv.currency}, Stripe {currency}")
        if line_sum != inv.total_pence:
            diffs.append(
                f"{label}: lines add up to {plain_money(line_sum)} in Stripe, "
                f"ours {plain_money(inv.total_pence)}"
            )
        clamped = inv.total_pence < 0 and total == 0  # negative totals become balance credit
        if total != inv.total_pence and not clamped:
            diffs.append(
                f"{label}: total ours {plain_money(inv.total_pence)}, Stripe {plain_money(total)}"
            )
        if amount_due != max(0, inv.total_pence) and not clamped:
            diffs.append(
                f"{label}: amount due ours {plain_money(max(0, inv.total_pence))}, "
                f"Stripe {plain_money(amount_due)}"
            )
        ours_tagged = [m for _, m in items if m.get("feedgate_invoice") == inv.invoice_id]
        if len(ours_tagged) != len(lines):
            diffs.append(f"{label}: {len(lines)} lines ours, {len(ours_tagged)} in Stripe")
        paid_remote = field_of(remote, "status") == "paid"
        if paid_remote != (inv.status == InvoiceStatus.PAID):
            diffs.append(f"{label}: status ours {inv.status}, Stripe {field_of(remote, 'status')}")
        return diffs

    def _line_sum(self, stripe_id: str) -> int:
        lines = self.client.v1.invoices.line_items.list(stripe_id, {"limit": 100})
        return sum(int(field_of(line, "amount") or 0) for line in lines.auto_paging_iter())

    # ---------------------------------------------------------------- webhooks

    def handle_event(self, event: dict[str, Any], store: PaidStore, now: datetime) -> str:
        """Apply one verified event: see :func:`~billing.stripe_sync.webhooks.apply_event`."""
        return apply_event(self, event, store, now)
