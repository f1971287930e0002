"""Push finalised feedgate invoices to Stripe, reconcile totals, and take Stripe's webhooks.

This is the only package that imports ``stripe``:

- :mod:`~billing.stripe_sync.base`: the client, its retries, server detection, the mapping table;
- :mod:`~billing.stripe_sync.attached`: real Stripe's invoice flow;
- :mod:`~billing.stripe_sync.localstripe`: localstripe's;
- :mod:`~billing.stripe_sync.sync`: ``StripeSync`` (customers, invoices, finalisation,
  reconciliation);
- :mod:`~billing.stripe_sync.webhooks`: signatures and events.

 Every call goes through one
``stripe.StripeClient`` per ``StripeSync`` (API key and base URL are per instance: no global
``stripe.api_key`` state leaks between instances or tests). Calls are blocking: from async code
run them with ``asyncio.to_thread``.

How an invoice reaches real Stripe (the robust flow)
----------------------------------------------------
1. ``ensure_customer``: one Customer per tenant (metadata ``feedgate_tenant``, idempotency key
   ``customer:{tenant}``).
2. ``POST /v1/invoices`` with ``pending_invoice_items_behavior=exclude``,
   ``auto_advance=false``, ``collection_method=send_invoice`` and our metadata (idempotency key
   ``invoice:{tenant}:{period}``;
   credit notes ``credit_note:{tenant}:{period}:{invoice_id}`` so they never collide with the
   invoice they credit).
3. One ``POST /v1/invoiceitems`` per line with ``invoice=<id>`` (explicitly attached, so pending
   items of another run can never be swept in), idempotency key ``…:{line_id}``. VAT is computed
   by feedgate (rounded once at invoice level), so it goes to Stripe as one more item
   (line id ``vat``): Stripe's total is then ours to the penny.
4. ``POST /v1/invoices/{id}/finalize``.

Never double-create. Stripe keeps idempotency keys for 24 h, but localstripe ignores them, so our
own mapping table ``stripe_objects`` is the first line of defence: every object is looked up there
before it is created and recorded right after. For a crash between a create and its record, each
sync first lists what Stripe already has for the customer (invoices by
``metadata[feedgate_invoice]`` or by their lines, items by ``metadata[feedgate_line]``) and
adopts it. A create that failed with a transient error is re-listed before it is retried, so a
lost response does not duplicate either.
Transient errors (connection errors, 429, 5xx) are retried by tenacity with exponential backoff
and jitter; 4xx never are.

localstripe: what it lacks and what this module does about it
------------------------------------------------------------
The server kind is detected once per instance (``server="auto"``): an ``api_base`` of ``None`` or
``*.stripe.com`` is real Stripe; any other base is probed with ``GET /v1/customers?limit=1`` and a
response without a ``Request-Id`` header (real Stripe and stripe-mock always send one) is taken
to be localstripe. Pass ``server="stripe"``/``"localstripe"`` to skip the probe.

* ``POST /v1/invoices`` for a customer without a subscription answers 404 "No upcoming invoices
  for customer", and unknown parameters (``auto_advance``, ``collection_method``…) crash it (500).
  Handled: on localstripe each customer gets one zero-amount "vehicle" subscription (plan
  ``feedgate-localstripe-vehicle-{currency}``, amount 0), created before any of its items, and
  invoices are created with ``subscription=<vehicle>``; the vehicle's own 0.00 line is ignored by
  ``reconcile``. This path is never taken against real Stripe.
* ``invoice=<id>`` on ``POST /v1/invoiceitems`` is accepted and stored but the item is *not* added
  to the invoice's lines (they are computed once, when the invoice is created), and
  ``pending_invoice_items_behavior`` is ignored: creating an invoice always pulls in all the
  customer's pending items. Handled: on localstripe items are created pending first and the
  invoice is created after them (the only order that works there); afterwards we check that the
  invoice holds exactly our items and log a warning naming any stranger.
* Invoice ``metadata`` on create is dropped: it is set with a follow-up ``POST /v1/invoices/{id}``
  (adoption after a crash also matches invoices by their lines, so that window is covered).
* ``GET /v1/invoiceitems`` lists only pending items and rejects ``invoice=``: an invoice's items are
  read from ``GET /v1/invoices/{id}/lines`` instead (its lines carry the items' metadata).
* No ``/finalize`` route (404 from the router, not a Stripe error): logged once per instance as
  "finalisation not supported by this server" and recorded as state ``finalize_unsupported``
  on the mapping row; the invoice stays a Stripe draft.
* No idempotency: covered by the mapping table and the adoption described above.
* No credit notes API: credit notes are synced (on both servers) as an invoice of negative items.
  localstripe clamps a negative ``total`` to 0 (real Stripe reports it and credits the customer
  balance); ``reconcile`` then compares the line sum.
"""

from billing.stripe_sync.base import (
    MAX_IDEMPOTENCY_KEY,
    InvoiceState,
    Kind,
    ServerKind,
    StripeSyncError,
    idempotency_key,
)
from billing.stripe_sync.sync import StripeSync
from billing.stripe_sync.webhooks import (
    PAID_EVENTS,
    WEBHOOK_BODY_LIMIT,
    PaidStore,
    SignatureError,
    apply_event,
    verify_signature,
    webhook_handler,
)

__all__ = [
    "MAX_IDEMPOTENCY_KEY",
    "PAID_EVENTS",
    "WEBHOOK_BODY_LIMIT",
    "InvoiceState",
    "Kind",
    "PaidStore",
    "ServerKind",
    "SignatureError",
    "StripeSync",
    "StripeSyncError",
    "apply_event",
    "idempotency_key",
    "verify_signature",
    "webhook_handler",
]
