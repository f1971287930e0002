"""The plumbing every Stripe call goes through, and the mapping table from our ids to Stripe's."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import stripe
import tenacity

from billing.model import Invoice
from billing.money import vat_label
from tenants.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")


MAX_IDEMPOTENCY_KEY = 255

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


@dataclass(frozen=True)
class StripeLine:
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


def plain_dict(obj: Any) -> dict[str, Any]:
    """A Stripe object (or an event's plain dict) as a plain dict."""
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    return obj if isinstance(obj, dict) else {}


def metadata_of(obj: Any) -> dict[str, str]:
    metadata = plain_dict(obj).get("metadata") or {}
    return {str(k): str(v) for k, v in dict(metadata).items()}


def field_of(obj: Any, name: str) -> Any:
    return plain_dict(obj).get(name)


class StripeBase:
    """One Stripe client with its retries and server detection, the mapping table from our
    ids to Stripe's, and what both invoice flows share: our lines, keys and metadata, and
    finding what Stripe already holds of an invoice."""

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

    # ---------------------------------------------------------------- invoices, shared

    @staticmethod
    def _key_base(invoice: Invoice) -> str:
        if invoice.credit_note_for:
            return f"credit_note:{invoice.tenant}:{invoice.period}:{invoice.invoice_id}"
        return f"invoice:{invoice.tenant}:{invoice.period}"

    @staticmethod
    def _lines(invoice: Invoice) -> list[StripeLine]:
        lines = [StripeLine(li.line_id, li.description, li.amount_pence) for li in invoice.lines]
        if invoice.vat_pence:
            lines.append(StripeLine("vat", vat_label(invoice.vat_rate), invoice.vat_pence))
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

    def _item_our_id(self, invoice: Invoice, line: StripeLine) -> str:
        return f"{invoice.invoice_id}:{line.line_id}"

    def _item_params(self, invoice: Invoice, customer: str, line: StripeLine) -> dict[str, Any]:
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
            if field_of(inv, "status") == "void":
                continue
            if metadata_of(inv).get("feedgate_invoice") == invoice.invoice_id:
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
                out.append((str(item.id), metadata_of(item)))
            return out
        lines = self.client.v1.invoices.line_items.list(stripe_invoice, {"limit": 100})
        for line in lines.auto_paging_iter():
            item_id = field_of(line, "invoice_item")
            if item_id:
                out.append((str(item_id), metadata_of(line)))
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
