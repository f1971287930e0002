"""Invoices: a deterministic, idempotent monthly run, a small status machine, and postings.

Status: ``draft -> finalized -> paid``, or ``draft|finalized -> void``. A draft is recomputed in
place by :func:`run_invoices`; a finalized (or paid, or void) invoice is never changed again
except for its status moving on. Ids are deterministic: ``inv-{tenant}-{period}`` and, for
credit notes, ``cn-{tenant}-{period}-{n}`` (n = 1, 2, ... per tenant and period).

What a draft covers. Each run reads the ledger's :meth:`~billing.ledger.Ledger.high_water`
mark once and rates only events recorded at or before it; the invoice stores that mark
(``usage_cutoff``). Events recorded later for that month - after the run, or after
finalization - are *late*: the next run for a later month puts them on that month's (draft)
invoice as ADJUSTMENT lines ("Late usage for 2026-10: ..."). Their amount is the difference
between re-rating the earlier month with and without the late usage under the tenant's current
plan, so graduated tiers and a minimum commitment are honoured (a top-up shrinks). Contributor
credits are settled with the month's own invoice and are not re-opened by late usage.

Postings (debits positive; each entry sums to zero), all via :meth:`Ledger.post`:

- finalize ``{invoice_id}``: ``receivable:{tenant}`` +total; each line -amount to its account
  (``revenue:{metric}``, ``revenue:platform_fee``, ``revenue:nominal_fee``,
  ``revenue:minimum_top_up``; a contributor credit line, being negative, debits
  ``payable:contributor:{tenant}``); ``vat:output`` -VAT.
- credit note ``cn-...``: the same shape with the signs reversed (credit notes are negative).
- mark_paid ``{invoice_id}:paid``: ``cash:bank`` +total, ``receivable:{tenant}`` -total.
- void of a finalized invoice ``{invoice_id}:void``: the finalize entry reversed.
"""

from billing.invoices.run import run_invoices
from billing.invoices.store import MIGRATIONS, InvoiceStore, build_invoice, invoice_postings

__all__ = ["MIGRATIONS", "InvoiceStore", "build_invoice", "invoice_postings", "run_invoices"]
