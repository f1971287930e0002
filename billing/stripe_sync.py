"""Push finalised feedgate invoices to Stripe, reconcile totals, and take Stripe's webhooks.

This is the only module that imports ``stripe``. Every call goes through one
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

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import stripe
import tenacity
from aiohttp import web

from billing.model import BillingError, Invoice, InvoiceStatus
from billing.money import plain_money, vat_label
from tenants.db import Database, IntegrityError

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_IDEMPOTENCY_KEY = 255
WEBHOOK_BODY_LIMIT = 64 * 1024
PAID_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})

_MIGRATIONS = [
    "CREATE TABLE stripe_objects ("
    " kind TEXT NOT NULL, our_id TEXT NOT NULL, stripe_id TEXT NOT NULL,"
    " state TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL DEFAULT '',"
    " PRIMARY KEY (kind, our_id));"
    "CREATE INDEX stripe_objects_by_stripe_id ON stripe_objects (stripe_id);"
    "CREATE TABLE stripe_events ("
    " event_id TEXT PRIMARY KEY, type TEXT NOT NULL, invoice_id TEXT,"
    " outcome TEXT NOT NULL, handled_at TEXT NOT NULL)",
]


class StripeSyncError(RuntimeError):
    """Stripe was unreachable or refused a request; nothing was recorded for the failed step."""


class SignatureError(ValueError):
    """A webhook's ``Stripe-Signature`` did not verify (never says what the secret is)."""


class ServerKind(StrEnum):
    STRIPE = "stripe"
    LOCALSTRIPE = "localstripe"


class Kind(StrEnum):
    CUSTOMER = "customer"
    INVOICE = "invoice"
    ITEM = "item"
    VEHICLE = "vehicle"  # localstripe only: the zero-amount subscription invoices hang off


class InvoiceState(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"
    FINALIZE_UNSUPPORTED = "finalize_unsupported"


class PaidStore(Protocol):
    """What ``handle_event`` needs from ``billing.invoices.InvoiceStore``."""

    def mark_paid(self, invoice_id: str, now: datetime) -> Any: ...


@dataclass(frozen=True)
class _Line:
    line_id: str
    description: str
    amount_pence: int


def idempotency_key(key: str) -> str:
    """Stripe keeps keys of up to 255 characters: longer ones keep a readable prefix + a hash."""
    if len(key) <= MAX_IDEMPOTENCY_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_IDEMPOTENCY_KEY - len(digest) - 1]}#{digest}"


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    if isinstance(exc, stripe.StripeError):
        status = exc.http_status
        return status is not None and (status == 429 or status >= 500)
    return False


def _now_text() -> str:
    return datetime.now(UTC).isoformat()


def _plain(obj: Any) -> dict[str, Any]:
    """A Stripe object (or an event's plain dict) as a plain dict."""
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    return obj if isinstance(obj, dict) else {}


def _meta(obj: Any) -> dict[str, str]:
    metadata = _plain(obj).get("metadata") or {}
    return {str(k): str(v) for k, v in dict(metadata).items()}


def _get(obj: Any, name: str) -> Any:
    return _plain(obj).get(name)


class StripeSync:
    def __init__(
        self,
        db: Database,
        *,
        api_key: str,
        api_base: str | None = None,
        max_network_retries: int = 4,
        retry_wait: float = 0.5,
        retry_max_wait: float = 8.0,
        timeout: float = 30.0,
        server: Literal["auto", "stripe", "localstripe"] = "auto",
        days_until_due: int = 30,
    ) -> None:
        self.db = db
        self.api_base = api_base
        self.attempts = max(1, max_network_retries + 1)
        self.retry_wait = retry_wait
        self.retry_max_wait = retry_max_wait
        self.days_until_due = days_until_due
        base = {"api": api_base} if api_base else None
        self.client = stripe.StripeClient(
            api_key,
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=0,  # tenacity retries, so the two never multiply
            http_client=stripe.new_default_http_client(timeout=timeout),
        )
        self._server: ServerKind | None = None if server == "auto" else ServerKind(server)
        self.finalize_supported: bool | None = None
        db.migrate("stripe", _MIGRATIONS)

    # ---------------------------------------------------------------- plumbing

    def _retry(
        self, what: str, fn: Callable[[], T], before_retry: Callable[[], T | None] | None = None
    ) -> T:
        """Run ``fn``; retry transient errors only. ``before_retry`` (used around creates) looks
        for an object a failed attempt may have created after all, and returns it to adopt."""
        first = True
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_random_exponential(
                multiplier=self.retry_wait, max=self.retry_max_wait
            ),
            retry=tenacity.retry_if_exception(_is_transient),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if not first:
                        log.info(
                            "stripe: retrying %s (attempt %d)",
                            what,
                            attempt.retry_state.attempt_number,
                        )
                        if before_retry is not None:
                            found = before_retry()
                            if found is not None:
                                return found
                    first = False
                    return fn()
        except stripe.StripeError as exc:
            where = self.api_base or "api.stripe.com"
            status = f"HTTP {exc.http_status}" if exc.http_status else "no response"
            kind = "unreachable or failing" if _is_transient(exc) else "refused the request"
            tries = self.attempts if _is_transient(exc) else 1
            raise StripeSyncError(
                f"Stripe at {where} {kind} while trying to {what} ({status}, after {tries} "
                f"attempt(s)): {exc.user_message or exc}"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def server(self) -> ServerKind:
        if self._server is None:
            self._server = self._detect_server()
        return self._server

    def _detect_server(self) -> ServerKind:
        host = urlsplit(self.api_base).hostname if self.api_base else "api.stripe.com"
        if host and (host == "stripe.com" or host.endswith(".stripe.com")):
            return ServerKind.STRIPE
        probe = self._retry("probe the server", lambda: self.client.v1.customers.list({"limit": 1}))
        response = probe.last_response
        has_request_id = response is not None and any(
            k.lower() == "request-id" for k in response.headers
        )
        kind = ServerKind.STRIPE if has_request_id else ServerKind.LOCALSTRIPE
        log.info("stripe: %s looks like %s", self.api_base, kind.value)
        return kind

    # ---------------------------------------------------------------- mapping table

    def lookup(self, kind: Kind, our_id: str) -> str | None:
        row = self.db.query_one(
            "SELECT stripe_id FROM stripe_objects WHERE kind = ? AND our_id = ?", (kind, our_id)
        )
        return str(row[0]) if row else None

    def state(self, kind: Kind, our_id: str) -> str | None:
        row = self.db.query_one(
            "SELECT state FROM stripe_objects WHERE kind = ? AND our_id = ?", (kind, our_id)
        )
        return str(row[0]) if row else None

    def our_id_for(self, kind: Kind, stripe_id: str) -> str | None:
        row = self.db.query_one(
            "SELECT our_id FROM stripe_objects WHERE kind = ? AND stripe_id = ?", (kind, stripe_id)
        )
        return str(row[0]) if row else None

    def _record(self, kind: Kind, our_id: str, stripe_id: str, state: str = "") -> None:
        self.db.execute(
            "INSERT INTO stripe_objects (kind, our_id, stripe_id, state, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, our_id) DO UPDATE SET"
            " stripe_id = excluded.stripe_id, state = excluded.state,"
            " updated_at = excluded.updated_at",
            (kind, our_id, stripe_id, state, _now_text()),
        )

    # ---------------------------------------------------------------- customers

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
            if _meta(cus).get("feedgate_tenant") == tenant_id and not _get(cus, "deleted"):
                yield cus

    # ---------------------------------------------------------------- invoices

    @staticmethod
    def _key_base(invoice: Invoice) -> str:
        if invoice.credit_note_for:
            return f"credit_note:{invoice.tenant}:{invoice.period}:{invoice.invoice_id}"
        return f"invoice:{invoice.tenant}:{invoice.period}"

    @staticmethod
    def _lines(invoice: Invoice) -> list[_Line]:
        lines = [_Line(li.line_id, li.description, li.amount_pence) for li in invoice.lines]
        if invoice.vat_pence:
            lines.append(_Line("vat", vat_label(invoice.vat_rate), invoice.vat_pence))
        return lines

    @staticmethod
    def _invoice_metadata(invoice: Invoice) -> dict[str, str]:
        meta = {
            "feedgate_invoice": invoice.invoice_id,
            "feedgate_tenant": invoice.tenant,
            "feedgate_period": invoice.period,
        }
        if invoice.credit_note_for:
            meta["feedgate_credit_note_for"] = invoice.credit_note_for
        return meta

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

    def _item_our_id(self, invoice: Invoice, line: _Line) -> str:
        return f"{invoice.invoice_id}:{line.line_id}"

    def _item_params(self, invoice: Invoice, customer: str, line: _Line) -> dict[str, Any]:
        return {
            "customer": customer,
            "amount": line.amount_pence,
            "currency": invoice.currency.lower(),
            "description": line.description,
            "metadata": {**self._invoice_metadata(invoice), "feedgate_line": line.line_id},
        }

    def _find_invoice(self, invoice: Invoice, customer: str, item_ids: set[str]) -> Any | None:
        """An invoice of this customer that is ours: tagged with our id, or (localstripe, whose
        create drops metadata) holding one of our items."""
        for inv in self.client.v1.invoices.list(
            {"customer": customer, "limit": 100}
        ).auto_paging_iter():
            if _get(inv, "status") == "void":
                continue
            if _meta(inv).get("feedgate_invoice") == invoice.invoice_id:
                return inv
            if item_ids and item_ids & {i for i, _ in self._invoice_items(str(inv.id))}:
                return inv
        return None

    def _invoice_items(self, stripe_invoice: str) -> list[tuple[str, dict[str, str]]]:
        """(item id, metadata) of the invoice items on one Stripe invoice."""
        out: list[tuple[str, dict[str, str]]] = []
        if self.server is ServerKind.STRIPE:
            items = self.client.v1.invoice_items.list({"invoice": stripe_invoice, "limit": 100})
            for item in items.auto_paging_iter():
                out.append((str(item.id), _meta(item)))
            return out
        lines = self.client.v1.invoices.line_items.list(stripe_invoice, {"limit": 100})
        for line in lines.auto_paging_iter():
            item_id = _get(line, "invoice_item")
            if item_id:
                out.append((str(item_id), _meta(line)))
        return out

    def _adopt_items(self, invoice: Invoice, found: Iterable[tuple[str, dict[str, str]]]) -> None:
        for item_id, meta in found:
            if meta.get("feedgate_invoice", invoice.invoice_id) != invoice.invoice_id:
                continue
            line_id = meta.get("feedgate_line")
            if not line_id:
                continue
            our_id = f"{invoice.invoice_id}:{line_id}"
            if self.lookup(Kind.ITEM, our_id) is None:
                log.warning("stripe: adopting invoice item %s for %s", item_id, our_id)
                self._record(Kind.ITEM, our_id, item_id)

    # -- real Stripe: invoice first, items attached to it ------------------------------

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

            def find_item(line: _Line = line) -> str | None:
                for item_id, meta in self._invoice_items(sid):
                    if meta.get("feedgate_line") == line.line_id:
                        return item_id
                return None

            def create_item(line: _Line = line) -> str:
                params = {**self._item_params(invoice, customer, line), "invoice": sid}
                item = self.client.v1.invoice_items.create(
                    params,  # type: ignore[arg-type]
                    {"idempotency_key": idempotency_key(f"{base}:{line.line_id}")},
                )
                return str(item.id)

            item_id = self._retry(f"create item {our_id}", create_item, find_item)
            self._record(Kind.ITEM, our_id, item_id)
        return stripe_id

    # -- localstripe: pending items first, then the invoice that pulls them in ---------

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
                if _meta(sub).get("feedgate_vehicle") == currency:
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
        return [(str(i.id), _meta(i)) for i in items.auto_paging_iter() if not _get(i, "invoice")]

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
        self, invoice: Invoice, customer: str, vehicle: str, lines: Sequence[_Line]
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

            def find_item(line: _Line = line) -> str | None:
                for item_id, meta in self._pending_items(customer):
                    if (
                        meta.get("feedgate_invoice") == invoice.invoice_id
                        and meta.get("feedgate_line") == line.line_id
                    ):
                        return item_id
                return None

            def create_item(line: _Line = line) -> str:
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

    # -- finalisation -------------------------------------------------------------------

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
        if _get(current, "status") not in (None, "draft"):
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
        total = int(_get(remote, "total") or 0)
        amount_due = int(_get(remote, "amount_due") or 0)
        currency = str(_get(remote, "currency") or "").upper()
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
        paid_remote = _get(remote, "status") == "paid"
        if paid_remote != (inv.status == InvoiceStatus.PAID):
            diffs.append(f"{label}: status ours {inv.status}, Stripe {_get(remote, 'status')}")
        return diffs

    def _line_sum(self, stripe_id: str) -> int:
        lines = self.client.v1.invoices.line_items.list(stripe_id, {"limit": 100})
        return sum(int(_get(line, "amount") or 0) for line in lines.auto_paging_iter())

    # ---------------------------------------------------------------- webhooks

    def handle_event(self, event: dict[str, Any], store: PaidStore, now: datetime) -> str:
        """Apply one verified event; idempotent by event id. Returns what happened:
        ``duplicate``, ``ignored``, ``unknown_invoice``, ``already_paid``, ``refused`` (our store
        raised ``BillingError``: e.g. the invoice is void) or ``paid``."""
        event_id = str(event.get("id") or "")
        event_type = str(event.get("type") or "")
        if not event_id:
            raise ValueError("Stripe event without an id")
        if self.db.query_one("SELECT 1 FROM stripe_events WHERE event_id = ?", (event_id,)):
            return "duplicate"
        obj = (event.get("data") or {}).get("object") or {}
        our_id: str | None = None
        if event_type in PAID_EVENTS:
            stripe_id = str(obj.get("id") or "")
            our_id = self.our_id_for(Kind.INVOICE, stripe_id) if stripe_id else None
            our_id = our_id or _meta(obj).get("feedgate_invoice")
        with self.db.transaction():
            if event_type not in PAID_EVENTS:
                outcome = "ignored"
            elif our_id is None:
                outcome = "unknown_invoice"
            elif self.db.query_one(
                "SELECT 1 FROM stripe_events WHERE invoice_id = ? AND outcome = 'paid'",
                (our_id,),
            ):
                outcome = "already_paid"
            else:
                outcome = "paid"
            try:
                self.db.execute(
                    "INSERT INTO stripe_events (event_id, type, invoice_id, outcome, handled_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (event_id, event_type, our_id, outcome, now.isoformat()),
                )
            except IntegrityError:
                return "duplicate"  # a concurrent delivery of the same event won
            if outcome == "paid":
                assert our_id is not None
                try:
                    store.mark_paid(our_id, now)
                except BillingError as exc:
                    # permanent (void invoice, credit note...): record it, do not let Stripe
                    # redeliver for days; any other error rolls back and Stripe redelivers
                    log.error("stripe: event %s cannot mark %s paid: %s", event_id, our_id, exc)
                    self.db.execute(
                        "UPDATE stripe_events SET outcome = 'refused' WHERE event_id = ?",
                        (event_id,),
                    )
                    return "refused"
        log.info("stripe: event %s (%s) -> %s %s", event_id, event_type, outcome, our_id or "")
        return outcome


def verify_signature(
    payload: bytes, header: str, secret: str, now: float, tolerance: float = 300
) -> dict[str, Any]:
    """Check ``Stripe-Signature: t=…,v1=…[,v1=…]`` (HMAC-SHA256 of ``"{t}.{body}"``) and the
    timestamp tolerance; return the parsed event. Raises ``SignatureError``."""
    if not secret:
        raise SignatureError("no webhook secret configured")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("Stripe-Signature timestamp is not an integer") from None
        elif key == "v1":
            signatures.append(value.strip())
    if timestamp is None:
        raise SignatureError("Stripe-Signature has no timestamp (t=)")
    if not signatures:
        raise SignatureError("Stripe-Signature has no v1 signature")
    expected = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256
    ).hexdigest()
    # compare every candidate (no early exit on the first match)
    matches = [hmac.compare_digest(expected.encode(), sig.encode()) for sig in signatures]
    if not any(matches):
        raise SignatureError("no v1 signature matches the payload (wrong secret or altered body)")
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"Stripe-Signature timestamp is {int(now - timestamp)} s from now "
            f"(tolerance {int(tolerance)} s): stale or replayed"
        )
    try:
        event = json.loads(payload)
    except ValueError:
        raise SignatureError("signed payload is not JSON") from None
    if not isinstance(event, dict):
        raise SignatureError("signed payload is not a JSON object")
    return event


def webhook_handler(
    secret: str,
    sync: StripeSync,
    store: PaidStore,
    *,
    body_limit: int = WEBHOOK_BODY_LIMIT,
    tolerance: float = 300,
    clock: Callable[[], float] = time.time,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """aiohttp handler for ``POST /stripe/webhook``: 400 on a bad signature, 413 over the body
    limit, 200 with the outcome otherwise (500 if applying it failed, so Stripe redelivers)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > body_limit:
            return web.json_response({"error": "body too large"}, status=413)
        body = bytearray()
        while chunk := await request.content.read(65536):
            body += chunk
            if len(body) > body_limit:
                return web.json_response({"error": "body too large"}, status=413)
        header = request.headers.get("Stripe-Signature", "")
        try:
            event = verify_signature(bytes(body), header, secret, clock(), tolerance)
        except SignatureError as exc:
            log.warning("stripe webhook from %s rejected: %s", request.remote, exc)
            return web.json_response({"error": "bad signature"}, status=400)
        try:
            outcome = await asyncio.to_thread(
                sync.handle_event, event, store, datetime.fromtimestamp(clock(), UTC)
            )
        except Exception:
            log.exception("stripe webhook: event %s could not be applied", event.get("id"))
            return web.json_response({"error": "not applied"}, status=500)
        return web.json_response({"received": True, "outcome": outcome})

    return handle
