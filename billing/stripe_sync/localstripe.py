"""localstripe's flow: it cannot attach items to an invoice, so they are created pending and an
invoice hung off a zero-amount "vehicle" subscription pulls them in."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import stripe

from billing.model import Invoice
from billing.stripe_sync.base import (
    InvoiceState,
    Kind,
    StripeBase,
    StripeLine,
    StripeSyncError,
    field_of,
    idempotency_key,
    metadata_of,
)

log = logging.getLogger(__name__)


class LocalstripeFlow(StripeBase):
    """localstripe: pending items first, then the invoice that pulls them in (see the
    package docstring for why)."""

    def _vehicle(self, customer: str, tenant: str, currency: str) -> str:
        our_id = f"{tenant}:{currency}"
        known = self.lookup(Kind.VEHICLE, our_id)
        if known:
            return known
        plan_id = f"feedgate-localstripe-vehicle-{currency}"

        def ensure_plan() -> None:
            try:
                self.client.v1.plans.retrieve(plan_id)
            except stripe.StripeError as exc:
                if exc.http_status != 404:
                    raise
                self.client.v1.plans.create(
                    {
                        "id": plan_id,
                        "amount": 0,
                        "currency": currency,
                        "interval": "month",
                        "product": {"name": "feedgate invoices (localstripe vehicle)"},
                    }
                )

        def find() -> str | None:
            subs = self.client.v1.subscriptions.list({"customer": customer, "limit": 100})
            for sub in subs.auto_paging_iter():
                if metadata_of(sub).get("feedgate_vehicle") == currency:
                    return str(sub.id)
            return None

        def create() -> str:
            sub = self.client.v1.subscriptions.create(
                {
                    "customer": customer,
                    "items": [{"plan": plan_id}],
                    "metadata": {"feedgate_vehicle": currency},
                }
            )
            return str(sub.id)

        self._retry("ensure the localstripe vehicle plan", ensure_plan)
        sub_id = self._retry("find the localstripe vehicle", find) or self._retry(
            "create the localstripe vehicle", create, find
        )
        self._record(Kind.VEHICLE, our_id, sub_id)
        return sub_id

    def _pending_items(self, customer: str) -> list[tuple[str, dict[str, str]]]:
        items = self.client.v1.invoice_items.list({"customer": customer, "limit": 100})
        return [
            (str(i.id), metadata_of(i))
            for i in items.auto_paging_iter()
            if not field_of(i, "invoice")
        ]

    def _sync_pending_then_invoice(self, invoice: Invoice, customer: str) -> str:
        currency = invoice.currency.lower()
        lines = self._lines(invoice)
        stripe_id = self.lookup(Kind.INVOICE, invoice.invoice_id)
        if stripe_id is None:
            vehicle = self._vehicle(customer, invoice.tenant, currency)
            # Adopt what a crashed run left: the invoice itself, or its pending items.
            mapped = {
                i for ln in lines if (i := self.lookup(Kind.ITEM, self._item_our_id(invoice, ln)))
            }
            existing = self._retry(
                f"look up invoice {invoice.invoice_id}",
                lambda: self._find_invoice(invoice, customer, mapped),
            )
            if existing is not None:
                stripe_id = str(existing.id)
                log.warning("stripe: adopting invoice %s for %s", stripe_id, invoice.invoice_id)
            else:
                stripe_id = self._create_pending_flow(invoice, customer, vehicle, lines)
            self._record(Kind.INVOICE, invoice.invoice_id, stripe_id, InvoiceState.DRAFT)
        sid = stripe_id
        on_invoice = self._retry(f"list lines of {sid}", lambda: self._invoice_items(sid))
        self._adopt_items(invoice, on_invoice)
        ours = {self.lookup(Kind.ITEM, self._item_our_id(invoice, ln)) for ln in lines}
        strangers = [i for i, _ in on_invoice if i not in ours]
        if strangers:
            log.warning(
                "stripe: localstripe pulled foreign pending items %s into %s (%s)",
                strangers,
                sid,
                invoice.invoice_id,
            )
        missing = [
            ln.line_id
            for ln in lines
            if self.lookup(Kind.ITEM, self._item_our_id(invoice, ln)) is None
        ]
        if missing:
            raise StripeSyncError(
                f"Stripe invoice {sid} for {invoice.invoice_id} lacks lines {missing}, and this "
                "server (localstripe) cannot add items to an existing invoice"
            )
        return stripe_id

    def _create_pending_flow(
        self, invoice: Invoice, customer: str, vehicle: str, lines: Sequence[StripeLine]
    ) -> str:
        base = self._key_base(invoice)
        pending = self._retry("list pending items", lambda: self._pending_items(customer))
        self._adopt_items(invoice, pending)
        item_ids: set[str] = set()
        for line in lines:
            our_id = self._item_our_id(invoice, line)
            known = self.lookup(Kind.ITEM, our_id)
            if known is not None:
                item_ids.add(known)
                continue

            def find_item(line: StripeLine = line) -> str | None:
                for item_id, meta in self._pending_items(customer):
                    if (
                        meta.get("feedgate_invoice") == invoice.invoice_id
                        and meta.get("feedgate_line") == line.line_id
                    ):
                        return item_id
                return None

            def create_item(line: StripeLine = line) -> str:
                item = self.client.v1.invoice_items.create(
                    self._item_params(invoice, customer, line),  # type: ignore[arg-type]
                    {"idempotency_key": idempotency_key(f"{base}:{line.line_id}")},
                )
                return str(item.id)

            item_id = self._retry(f"create item {our_id}", create_item, find_item)
            self._record(Kind.ITEM, our_id, item_id)
            item_ids.add(item_id)

        def find() -> str | None:
            inv = self._find_invoice(invoice, customer, item_ids)
            return None if inv is None else str(inv.id)

        def create() -> str:
            created = self.client.v1.invoices.create(
                {
                    "customer": customer,
                    "subscription": vehicle,
                    "description": f"feedgate {invoice.invoice_id} ({invoice.period})",
                },
                {"idempotency_key": idempotency_key(base)},
            )
            return str(created.id)

        stripe_id = self._retry(f"create invoice {invoice.invoice_id}", create, find)
        self._record(Kind.INVOICE, invoice.invoice_id, stripe_id, InvoiceState.DRAFT)
        self._retry(
            f"tag invoice {stripe_id}",
            lambda: self.client.v1.invoices.update(
                stripe_id, {"metadata": self._invoice_metadata(invoice)}
            ),
        )
        return stripe_id
