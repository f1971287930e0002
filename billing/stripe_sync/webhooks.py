"""Stripe's webhooks: the signature checked, each event applied once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from billing.model import BillingError
from billing.stripe_sync.base import Kind, StripeBase, metadata_of
from tenants.db import IntegrityError

log = logging.getLogger(__name__)

WEBHOOK_BODY_LIMIT = 64 * 1024
PAID_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})


class SignatureError(ValueError):
    """A webhook's ``Stripe-Signature`` did not verify (never says what the secret is)."""


class PaidStore(Protocol):
    """What :func:`apply_event` needs from ``billing.invoices.InvoiceStore``."""

    def mark_paid(self, invoice_id: str, now: datetime) -> Any: ...


def apply_event(sync: StripeBase, event: dict[str, Any], store: PaidStore, now: datetime) -> str:
    """Apply one verified event; idempotent by event id. Returns what happened:
    ``duplicate``, ``ignored``, ``unknown_invoice``, ``already_paid``, ``refused`` (our store
    raised ``BillingError``: e.g. the invoice is void) or ``paid``."""
    event_id = str(event.get("id") or "")
    event_type = str(event.get("type") or "")
    if not event_id:
        raise ValueError("Stripe event without an id")
    if sync.db.query_one("SELECT 1 FROM stripe_events WHERE event_id = ?", (event_id,)):
        return "duplicate"
    obj = (event.get("data") or {}).get("object") or {}
    our_id: str | None = None
    if event_type in PAID_EVENTS:
        stripe_id = str(obj.get("id") or "")
        our_id = sync.our_id_for(Kind.INVOICE, stripe_id) if stripe_id else None
        our_id = our_id or metadata_of(obj).get("feedgate_invoice")
    with sync.db.transaction():
        if event_type not in PAID_EVENTS:
            outcome = "ignored"
        elif our_id is None:
            outcome = "unknown_invoice"
        elif sync.db.query_one(
            "SELECT 1 FROM stripe_events WHERE invoice_id = ? AND outcome = 'paid'",
            (our_id,),
        ):
            outcome = "already_paid"
        else:
            outcome = "paid"
        try:
            sync.db.execute(
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
                sync.db.execute(
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
    sync: StripeBase,
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
                apply_event, sync, event, store, datetime.fromtimestamp(clock(), UTC)
            )
        except Exception:
            log.exception("stripe webhook: event %s could not be applied", event.get("id"))
            return web.json_response({"error": "not applied"}, status=500)
        return web.json_response({"received": True, "outcome": outcome})

    return handle
