"""Real Stripe's flow: create the invoice (excluding pending items), then attach each line."""

from __future__ import annotations

import logging
from typing import Any

from billing.model import Invoice
from billing.stripe_sync.base import InvoiceState, Kind, StripeBase, StripeLine, idempotency_key

log = logging.getLogger(__name__)


class AttachedFlow(StripeBase):
    """Real Stripe: the invoice first, then each item attached to it."""

    def _sync_attached(self, invoice: Invoice, customer: str) -> str:
        base = self._key_base(invoice)
        stripe_id = self.lookup(Kind.INVOICE, invoice.invoice_id)
        if stripe_id is None:

            def find() -> str | None:
                inv = self._find_invoice(invoice, customer, set())
                return None if inv is None else str(inv.id)

            def create() -> str:
                params: dict[str, Any] = {
                    "customer": customer,
                    "currency": invoice.currency.lower(),
                    "auto_advance": False,
                    "collection_method": "send_invoice",
                    "days_until_due": self.days_until_due,
                    "pending_invoice_items_behavior": "exclude",
                    "description": f"feedgate {invoice.invoice_id} ({invoice.period})",
                    "metadata": self._invoice_metadata(invoice),
                }
                created = self.client.v1.invoices.create(
                    params,  # type: ignore[arg-type]
                    {"idempotency_key": idempotency_key(base)},
                )
                return str(created.id)

            stripe_id = self._retry(f"look up invoice {invoice.invoice_id}", find)
            if stripe_id is not None:
                log.warning("stripe: adopting invoice %s for %s", stripe_id, invoice.invoice_id)
            else:
                stripe_id = self._retry(f"create invoice {invoice.invoice_id}", create, find)
            self._record(Kind.INVOICE, invoice.invoice_id, stripe_id, InvoiceState.DRAFT)
        if self.state(Kind.INVOICE, invoice.invoice_id) != InvoiceState.DRAFT:
            return stripe_id  # finalised: its items are fixed

        lines = self._lines(invoice)
        sid = stripe_id
        if any(self.lookup(Kind.ITEM, self._item_our_id(invoice, ln)) is None for ln in lines):
            self._adopt_items(
                invoice, self._retry(f"list items of {sid}", lambda: self._invoice_items(sid))
            )
        for line in lines:
            our_id = self._item_our_id(invoice, line)
            if self.lookup(Kind.ITEM, our_id) is not None:
                continue

            def find_item(line: StripeLine = line) -> str | None:
                for item_id, meta in self._invoice_items(sid):
                    if meta.get("feedgate_line") == line.line_id:
                        return item_id
                return None

            def create_item(line: StripeLine = line) -> str:
                params = {**self._item_params(invoice, customer, line), "invoice": sid}
                item = self.client.v1.invoice_items.create(
                    params,  # type: ignore[arg-type]
                    {"idempotency_key": idempotency_key(f"{base}:{line.line_id}")},
                )
                return str(item.id)

            item_id = self._retry(f"create item {our_id}", create_item, find_item)
            self._record(Kind.ITEM, our_id, item_id)
        return stripe_id
