"""billing.stripe_sync against a real localstripe (started per module on a free port).

localstripe is a dev dependency (``pip install localstripe``). Each test works on its own
tenant (so its own Stripe customer); counts are read back through localstripe's HTTP API.
A fault-injecting aiohttp proxy in front of localstripe checks retries; Stripe calls are
blocking, so tests run them with ``asyncio.to_thread`` while the proxy serves on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession, web

from billing.invoices import InvoiceStore
from billing.model import BillingError, Invoice, InvoiceLine, InvoiceStatus, LineKind, Metric
from billing.stripe_sync import (
    InvoiceState,
    Kind,
    ServerKind,
    SignatureError,
    StripeSync,
    StripeSyncError,
    idempotency_key,
    verify_signature,
    webhook_handler,
)
from tenants.db import Database

API_KEY = "sk_test_feedgate"
START_DEADLINE = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("localstripe")
    if exe is None:
        pytest.skip("localstripe is not installed (pip install localstripe)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("localstripe")
    log = (workdir / "localstripe.log").open("wb")
    # --from-scratch: never load the state another run left in /tmp/localstripe.pickle
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--from-scratch"],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                httpx.get(f"{base}/v1/customers", auth=(API_KEY, ""), timeout=0.5)
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"localstripe did not answer on {base} in {START_DEADLINE}s")
            with contextlib.suppress(subprocess.TimeoutExpired):  # the poll interval
                rc = proc.wait(timeout=0.05)
                text = (workdir / "localstripe.log").read_text(errors="replace")
                raise RuntimeError(f"localstripe exited with {rc}:\n{text}")
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def sdb(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(f"sqlite://{tmp_path / 'billing.db'}")
    try:
        yield database
    finally:
        database.close()


def make_sync(db: Database, base: str, **kw: Any) -> StripeSync:
    kw.setdefault("max_network_retries", 4)
    kw.setdefault("retry_wait", 0.01)
    kw.setdefault("retry_max_wait", 0.05)
    kw.setdefault("timeout", 5.0)
    return StripeSync(db, api_key=API_KEY, api_base=base, **kw)


def tenant() -> str:
    return f"council-{uuid.uuid4().hex[:8]}"


def line(line_id: str, amount: int, kind: LineKind = LineKind.USAGE) -> InvoiceLine:
    return InvoiceLine(
        line_id=line_id,
        kind=kind,
        description=f"{line_id} for the month",
        metric=Metric.LIVE_SECONDS if kind is LineKind.USAGE else None,
        quantity="1.0000",
        unit="month",
        unit_price=f"{amount}.0000",
        amount_pence=amount,
    )


def make_invoice(
    tenant_id: str,
    amounts: dict[str, int] | None = None,
    *,
    period: str = "2026-10",
    vat_rate: str = "0.20",
    credit_note_for: str | None = None,
    status: InvoiceStatus = InvoiceStatus.FINALIZED,
) -> Invoice:
    amounts = amounts or {"usage:live_seconds": 12_345, "usage:bytes": 678, "platform_fee": 25_000}
    kind = LineKind.CREDIT if credit_note_for else LineKind.USAGE
    lines = tuple(line(k, v, kind) for k, v in amounts.items())
    subtotal = sum(amounts.values())
    vat = round(subtotal * float(vat_rate))
    prefix = "cn" if credit_note_for else "inv"
    return Invoice(
        invoice_id=f"{prefix}-{tenant_id}-{period}" + ("-1" if credit_note_for else ""),
        tenant=tenant_id,
        period=period,
        currency="GBP",
        lines=lines,
        subtotal_pence=subtotal,
        vat_rate=vat_rate,
        vat_pence=vat,
        total_pence=subtotal + vat,
        status=status,
        finalized_at=datetime(2026, 11, 1, tzinfo=UTC),
        credit_note_for=credit_note_for,
    )


class Api:
    """Read localstripe back over HTTP (not through the code under test)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, auth=(API_KEY, ""), timeout=5.0)

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, data: dict[str, Any]) -> Any:
        r = self.http.post(path, data=data)
        r.raise_for_status()
        return r.json()

    def customer_of(self, tenant_id: str) -> str:
        found = [
            c["id"]
            for c in self.get("/v1/customers", limit=100)["data"]
            if c["metadata"].get("feedgate_tenant") == tenant_id
        ]
        assert len(found) == 1, found
        return str(found[0])

    def invoices(self, customer: str) -> list[dict[str, Any]]:
        """The customer's invoices, without the localstripe vehicle's own 0.00 first invoice."""
        data = self.get("/v1/invoices", customer=customer, limit=100)["data"]
        return [i for i in data if i["metadata"].get("feedgate_invoice")]

    def items(self, customer: str) -> list[dict[str, Any]]:
        """Every invoice item of the customer: pending ones, and those on its invoices."""
        pending = self.get("/v1/invoiceitems", customer=customer, limit=100)["data"]
        on_invoices = [
            ln
            for inv in self.get("/v1/invoices", customer=customer, limit=100)["data"]
            for ln in self.get(f"/v1/invoices/{inv['id']}/lines", limit=100)["data"]
            if ln.get("invoice_item")
        ]
        return [*pending, *on_invoices]


@pytest.fixture
def api(localstripe: str) -> Iterator[Api]:
    a = Api(localstripe)
    yield a
    a.http.close()


def rows(db: Database) -> list[tuple[Any, ...]]:
    return db.query(
        "SELECT kind, our_id, stripe_id, state FROM stripe_objects ORDER BY kind, our_id"
    )


# ------------------------------------------------------------------ syncing


async def test_finalized_invoice_syncs_and_totals_match(
    sdb: Database, localstripe: str, api: Api
) -> None:
    sync = make_sync(sdb, localstripe)
    inv = make_invoice(tenant())
    stripe_id = await asyncio.to_thread(sync.sync_invoice, inv)

    assert sync.server is ServerKind.LOCALSTRIPE
    remote = api.get(f"/v1/invoices/{stripe_id}")
    assert remote["total"] == inv.total_pence == 12_345 + 678 + 25_000 + 7_605
    assert remote["amount_due"] == inv.total_pence
    assert remote["currency"] == "gbp"
    assert remote["metadata"]["feedgate_invoice"] == inv.invoice_id
    lines = {
        ln["metadata"]["feedgate_line"]: ln
        for ln in api.get(f"/v1/invoices/{stripe_id}/lines")["data"]
        if ln.get("invoice_item")
    }
    assert {k: v["amount"] for k, v in lines.items()} == {
        "usage:live_seconds": 12_345,
        "usage:bytes": 678,
        "platform_fee": 25_000,
        "vat": 7_605,
    }
    assert lines["platform_fee"]["description"] == "platform_fee for the month"
    assert lines["vat"]["description"] == "VAT at 20%"
    # localstripe has no /finalize: recorded, not failed
    assert sync.finalize_supported is False
    assert sync.state(Kind.INVOICE, inv.invoice_id) == InvoiceState.FINALIZE_UNSUPPORTED
    assert sync.lookup(Kind.INVOICE, inv.invoice_id) == stripe_id
    assert await asyncio.to_thread(sync.reconcile, [inv]) == []


async def test_sync_on_both_backends(db: Database, localstripe: str, api: Api) -> None:
    """The mapping SQL is portable: SQLite and PostgreSQL."""
    sync = make_sync(db, localstripe)
    inv = make_invoice(tenant())
    first = await asyncio.to_thread(sync.sync_invoice, inv)
    again = await asyncio.to_thread(make_sync(db, localstripe).sync_invoice, inv)
    assert first == again
    customer = api.customer_of(inv.tenant)
    assert len(api.invoices(customer)) == 1
    assert len(api.items(customer)) == 4


async def test_sync_twice_creates_nothing_new(sdb: Database, localstripe: str, api: Api) -> None:
    sync = make_sync(sdb, localstripe)
    inv = make_invoice(tenant())
    first = await asyncio.to_thread(sync.sync_invoice, inv)
    customer = api.customer_of(inv.tenant)
    before = (
        len(api.invoices(customer)),
        len(api.items(customer)),
        len(api.get("/v1/customers", limit=100)["data"]),
    )
    assert before[:2] == (1, 4)
    # same instance, then a fresh one (a new process) on the same database
    assert await asyncio.to_thread(sync.sync_invoice, inv) == first
    assert await asyncio.to_thread(make_sync(sdb, localstripe).sync_invoice, inv) == first
    after = (
        len(api.invoices(customer)),
        len(api.items(customer)),
        len(api.get("/v1/customers", limit=100)["data"]),
    )
    assert after == before
    # the next month is a separate invoice for the same customer
    nxt = make_invoice(inv.tenant, period="2026-11")
    second = await asyncio.to_thread(sync.sync_invoice, nxt)
    assert second != first
    assert len(api.invoices(customer)) == 2
    assert api.get(f"/v1/invoices/{second}")["total"] == nxt.total_pence
    assert await asyncio.to_thread(sync.reconcile, [inv, nxt]) == []


async def test_crash_between_item_create_and_mapping_adopts(
    sdb: Database, localstripe: str, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = make_invoice(tenant())
    crashing = make_sync(sdb, localstripe)
    real_record = crashing._record
    recorded: list[str] = []

    def record_then_crash(kind: Kind, our_id: str, stripe_id: str, state: str = "") -> None:
        if kind is Kind.ITEM and len(recorded) == 2:
            raise RuntimeError("power cut after creating the third item")
        if kind is Kind.ITEM:
            recorded.append(our_id)
        real_record(kind, our_id, stripe_id, state)

    monkeypatch.setattr(crashing, "_record", record_then_crash)
    with pytest.raises(RuntimeError, match="power cut"):
        await asyncio.to_thread(crashing.sync_invoice, inv)
    customer = api.customer_of(inv.tenant)
    assert len(api.items(customer)) == 3  # created in Stripe, the third one unrecorded
    assert api.invoices(customer) == []
    # and lose one of the recorded mappings too
    sdb.execute("DELETE FROM stripe_objects WHERE kind = 'item' AND our_id = ?", (recorded[0],))

    stripe_id = await asyncio.to_thread(make_sync(sdb, localstripe).sync_invoice, inv)
    assert len(api.items(customer)) == 4  # only the fourth line was new
    assert len(api.invoices(customer)) == 1
    assert api.get(f"/v1/invoices/{stripe_id}")["total"] == inv.total_pence
    assert await asyncio.to_thread(make_sync(sdb, localstripe).reconcile, [inv]) == []


async def test_lost_mappings_after_full_sync_adopt_the_invoice(
    sdb: Database, localstripe: str, api: Api
) -> None:
    inv = make_invoice(tenant())
    stripe_id = await asyncio.to_thread(make_sync(sdb, localstripe).sync_invoice, inv)
    customer = api.customer_of(inv.tenant)
    sdb.execute("DELETE FROM stripe_objects WHERE kind IN ('invoice', 'item', 'customer')")
    again = await asyncio.to_thread(make_sync(sdb, localstripe).sync_invoice, inv)
    assert again == stripe_id
    assert api.customer_of(inv.tenant) == customer
    assert len(api.invoices(customer)) == 1
    assert len(api.items(customer)) == 4
    assert len([r for r in rows(sdb) if r[0] == "item"]) == 4


async def test_credit_note_syncs_as_negative_invoice(
    sdb: Database, localstripe: str, api: Api
) -> None:
    sync = make_sync(sdb, localstripe)
    t = tenant()
    original = make_invoice(t)
    credit = make_invoice(t, {"credit:usage:bytes": -678}, credit_note_for=original.invoice_id)
    inv_id = await asyncio.to_thread(sync.sync_invoice, original)
    cn_id = await asyncio.to_thread(sync.sync_invoice, credit)
    assert cn_id != inv_id
    lines = api.get(f"/v1/invoices/{cn_id}/lines")["data"]
    assert sorted(ln["amount"] for ln in lines if ln.get("invoice_item")) == [-678, -136]
    remote = api.get(f"/v1/invoices/{cn_id}")
    assert remote["metadata"]["feedgate_credit_note_for"] == original.invoice_id
    assert remote["total"] == 0  # localstripe clamps negative totals at 0
    assert await asyncio.to_thread(sync.reconcile, [original, credit]) == []


async def test_draft_invoice_is_refused(sdb: Database, localstripe: str) -> None:
    sync = make_sync(sdb, localstripe)
    with pytest.raises(BillingError, match="only finalised"):
        await asyncio.to_thread(
            sync.sync_invoice, make_invoice(tenant(), status=InvoiceStatus.DRAFT)
        )


async def test_reconcile_reports_differences(sdb: Database, localstripe: str, api: Api) -> None:
    sync = make_sync(sdb, localstripe)
    inv = make_invoice(tenant())
    await asyncio.to_thread(sync.sync_invoice, inv)
    changed = make_invoice(
        inv.tenant, {"usage:live_seconds": 12_346, "usage:bytes": 678, "platform_fee": 25_000}
    )
    unsynced = make_invoice(tenant())
    diffs = await asyncio.to_thread(sync.reconcile, [changed, unsynced])
    text = "\n".join(diffs)
    assert f"{changed.invoice_id}" in text and "total ours 456.29, Stripe 456.28" in text
    assert f"{unsynced.invoice_id}: not in Stripe" in diffs


def test_long_idempotency_keys_are_hashed() -> None:
    short = "invoice:t:2026-10:usage"
    assert idempotency_key(short) == short
    long = "invoice:t:2026-10:" + "x" * 400
    key = idempotency_key(long)
    assert len(key) == 255 and key.startswith("invoice:t:2026-10:xxx")
    assert key != idempotency_key(long + "y")


# ------------------------------------------------------------------ failures


@dataclass
class FaultProxy:
    """Answers the first requests with scripted faults, then forwards to localstripe.

    Faults: "500", "503", "429", "400", "drop" (close without answering) and "lost" (forward,
    then close without passing the answer back: the server did it, the client never hears)."""

    upstream: str
    faults: list[str] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (fault, method, path)
    url: str = ""

    on_request: Callable[[web.Request], None] | None = None  # may script faults per request

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.on_request is not None:
            self.on_request(request)
        fault = self.faults.pop(0) if self.faults else "ok"
        self.seen.append((fault, request.method, request.path))
        if fault in ("500", "503", "429", "400"):
            error = {"error": {"type": "api_error", "message": f"injected {fault}"}}
            return web.json_response(error, status=int(fault))
        if fault == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        body = await request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with (
            ClientSession() as s,
            s.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as r,
        ):
            data = await r.read()
            status, ctype = r.status, r.headers.get("Content-Type", "application/json")
        if fault == "lost":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        return web.Response(body=data, status=status, headers={"Content-Type": ctype})


@contextlib.asynccontextmanager
async def fault_proxy(upstream: str, faults: list[str]) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream, list(faults))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        await runner.cleanup()


async def test_transient_faults_are_retried_without_duplicates(
    sdb: Database, localstripe: str, api: Api
) -> None:
    inv = make_invoice(tenant())
    # probe: 500, 429; customer lookup: drop; then every 3rd request fails once more
    faults = ["500", "429", "drop", "ok", "503", "ok", "ok", "429", "ok", "drop"]
    async with fault_proxy(localstripe, faults) as proxy:
        sync = make_sync(sdb, proxy.url, max_network_retries=3)
        stripe_id = await asyncio.to_thread(sync.sync_invoice, inv)
    injected = [s for s in proxy.seen if s[0] != "ok"]
    assert len(injected) == 6
    customer = api.customer_of(inv.tenant)
    assert len(api.invoices(customer)) == 1
    assert len(api.items(customer)) == 4
    assert api.get(f"/v1/invoices/{stripe_id}")["total"] == inv.total_pence


async def test_lost_responses_to_creates_are_adopted_not_duplicated(
    sdb: Database, localstripe: str, api: Api
) -> None:
    """localstripe ignores Idempotency-Key, so a create whose answer was lost is found by
    listing before the retry."""
    inv = make_invoice(tenant())
    sync = make_sync(sdb, localstripe)
    await asyncio.to_thread(sync.ensure_customer, inv.tenant, inv.tenant)  # vehicle etc. later
    creates: list[str] = []

    async with fault_proxy(localstripe, []) as proxy:

        def lose_first_creates(request: web.Request) -> None:
            key = f"{request.method} {request.path}"
            if key in ("POST /v1/invoiceitems", "POST /v1/invoices") and key not in creates:
                creates.append(key)
                proxy.faults.insert(0, "lost")

        proxy.on_request = lose_first_creates
        app_sync = make_sync(sdb, proxy.url)
        stripe_id = await asyncio.to_thread(app_sync.sync_invoice, inv)
    assert [s[1:] for s in proxy.seen if s[0] == "lost"] == [
        ("POST", "/v1/invoiceitems"),
        ("POST", "/v1/invoices"),
    ]
    customer = api.customer_of(inv.tenant)
    assert len(api.invoices(customer)) == 1
    assert len(api.items(customer)) == 4
    assert api.get(f"/v1/invoices/{stripe_id}")["total"] == inv.total_pence


async def test_4xx_is_not_retried(sdb: Database, localstripe: str) -> None:
    async with fault_proxy(localstripe, ["400"]) as proxy:
        sync = make_sync(sdb, proxy.url, server="localstripe")
        with pytest.raises(StripeSyncError, match="refused the request") as err:
            await asyncio.to_thread(sync.ensure_customer, tenant(), "A council")
    assert len(proxy.seen) == 1
    assert "HTTP 400" in str(err.value)
    assert rows(sdb) == []


async def test_unreachable_server_then_later_sync_succeeds(
    sdb: Database, localstripe: str, api: Api
) -> None:
    inv = make_invoice(tenant())
    dead = f"http://127.0.0.1:{_free_port()}"
    sync = make_sync(sdb, dead, max_network_retries=2)
    t0 = time.monotonic()
    with pytest.raises(StripeSyncError) as err:
        await asyncio.to_thread(sync.sync_invoice, inv)
    assert time.monotonic() - t0 < 5
    message = str(err.value)
    assert dead in message and "unreachable" in message and "3 attempt(s)" in message
    assert rows(sdb) == []

    stripe_id = await asyncio.to_thread(make_sync(sdb, localstripe).sync_invoice, inv)
    customer = api.customer_of(inv.tenant)
    assert len(api.invoices(customer)) == 1
    assert len(api.items(customer)) == 4
    assert api.get(f"/v1/invoices/{stripe_id}")["total"] == inv.total_pence


# ------------------------------------------------------------------ webhooks

SECRET = "whsec_test_" + "k" * 24


def sign(payload: bytes, secret: str, t: int) -> str:
    sig = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def test_signature_valid() -> None:
    body = json.dumps({"id": "evt_1", "type": "invoice.paid"}).encode()
    now = 1_800_000_000
    assert verify_signature(body, sign(body, SECRET, now), SECRET, now + 10)["id"] == "evt_1"


def test_signature_wrong_secret() -> None:
    body = b'{"id": "evt_1"}'
    with pytest.raises(SignatureError, match="no v1 signature matches") as err:
        verify_signature(body, sign(body, "whsec_other", 100), SECRET, 100)
    assert SECRET not in str(err.value)


def test_signature_stale_timestamp() -> None:
    body = b'{"id": "evt_1"}'
    with pytest.raises(SignatureError, match="tolerance 300"):
        verify_signature(body, sign(body, SECRET, 1000), SECRET, 1000 + 301)
    # and from the future
    with pytest.raises(SignatureError, match="stale or replayed"):
        verify_signature(body, sign(body, SECRET, 2000), SECRET, 1000)
    assert verify_signature(body, sign(body, SECRET, 1000), SECRET, 1300)["id"] == "evt_1"


def test_signature_tampered_body() -> None:
    body = b'{"id": "evt_1", "amount": 100}'
    header = sign(body, SECRET, 100)
    with pytest.raises(SignatureError):
        verify_signature(body.replace(b"100", b"999"), header, SECRET, 100)


def test_signature_multiple_v1_values() -> None:
    """During secret rotation Stripe signs with each secret: any one v1 may match."""
    body = b'{"id": "evt_2"}'
    good = sign(body, SECRET, 100).split("v1=")[1]
    bad = sign(body, "whsec_old", 100).split("v1=")[1]
    header = f"t=100,v1={bad},v1={good},v0=deadbeef"
    assert verify_signature(body, header, SECRET, 100)["id"] == "evt_2"
    with pytest.raises(SignatureError, match="no v1"):
        verify_signature(body, f"t=100,v0={good}", SECRET, 100)
    with pytest.raises(SignatureError, match="no timestamp"):
        verify_signature(body, f"v1={good}", SECRET, 100)
    with pytest.raises(SignatureError, match="not an integer"):
        verify_signature(body, f"t=abc,v1={good}", SECRET, 100)


def stored(db: Database, inv: Invoice) -> InvoiceStore:
    """Put ``inv`` in the real InvoiceStore as a finalized invoice."""
    store = InvoiceStore(db)
    store.save_draft(replace(inv, status=InvoiceStatus.DRAFT, finalized_at=None), usage_cutoff=None)
    store.finalize(inv.invoice_id, datetime(2026, 11, 1, tzinfo=UTC))
    return store


def paid_event(event_id: str, stripe_invoice: str, kind: str = "invoice.paid") -> dict[str, Any]:
    return {
        "id": event_id,
        "type": kind,
        "data": {"object": {"id": stripe_invoice, "object": "invoice", "metadata": {}}},
    }


async def test_handle_event_marks_paid_once_and_ignores_replays(
    sdb: Database, localstripe: str
) -> None:
    sync = make_sync(sdb, localstripe)
    inv = make_invoice(tenant())
    store = stored(sdb, inv)
    stripe_id = await asyncio.to_thread(sync.sync_invoice, inv)
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert sync.handle_event(paid_event("evt_a", stripe_id), store, now) == "paid"
    assert store.require(inv.invoice_id).status is InvoiceStatus.PAID
    assert store.require(inv.invoice_id).paid_at == now
    assert sync.handle_event(paid_event("evt_a", stripe_id), store, now) == "duplicate"
    # Stripe sends both invoice.paid and invoice.payment_succeeded for one payment
    second = paid_event("evt_b", stripe_id, "invoice.payment_succeeded")
    assert sync.handle_event(second, store, now) == "already_paid"
    paid_postings = sdb.query("SELECT COUNT(*) FROM stripe_events WHERE outcome = 'paid'")
    assert paid_postings == [(1,)]
    # found by metadata when the mapping does not know the Stripe id
    other_inv = make_invoice(inv.tenant, period="2026-09")
    stored(sdb, other_inv)
    other = paid_event("evt_c", "in_elsewhere")
    other["data"]["object"]["metadata"] = {"feedgate_invoice": other_inv.invoice_id}
    assert sync.handle_event(other, store, now) == "paid"
    assert store.require(other_inv.invoice_id).status is InvoiceStatus.PAID
    assert sync.handle_event(paid_event("evt_d", "in_nobody"), store, now) == "unknown_invoice"
    assert sync.handle_event({"id": "evt_e", "type": "invoice.created"}, store, now) == "ignored"
    # the store refuses (no such invoice / void): recorded, not redelivered forever
    ghost = paid_event("evt_g", "in_ghost")
    ghost["data"]["object"]["metadata"] = {"feedgate_invoice": "inv-ghost-2026-10"}
    assert sync.handle_event(ghost, store, now) == "refused"
    assert sync.handle_event(ghost, store, now) == "duplicate"


async def test_handle_event_failure_is_not_recorded(sdb: Database, localstripe: str) -> None:
    sync = make_sync(sdb, localstripe, server="localstripe")

    class Failing:
        def mark_paid(self, invoice_id: str, now: datetime) -> None:
            raise RuntimeError("database down")

    event = paid_event("evt_f", "in_x")
    event["data"]["object"]["metadata"] = {"feedgate_invoice": "inv-y"}
    with pytest.raises(RuntimeError):
        sync.handle_event(event, Failing(), datetime.now(UTC))
    inv = make_invoice(tenant())
    store = stored(sdb, inv)
    event["data"]["object"]["metadata"] = {"feedgate_invoice": inv.invoice_id}
    assert sync.handle_event(event, store, datetime.now(UTC)) == "paid"  # the redelivery works
    assert store.require(inv.invoice_id).status is InvoiceStatus.PAID


@contextlib.asynccontextmanager
async def webhook_server(handler: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/stripe/webhook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/stripe/webhook"
    finally:
        await runner.cleanup()


async def test_webhook_handler_http(
    sdb: Database, localstripe: str, caplog: pytest.LogCaptureFixture
) -> None:
    sync = make_sync(sdb, localstripe, server="localstripe")
    inv = make_invoice(tenant())
    store = stored(sdb, inv)
    event = paid_event("evt_h", "in_h")
    event["data"]["object"]["metadata"] = {"feedgate_invoice": inv.invoice_id}
    body = json.dumps(event).encode()
    async with (
        webhook_server(webhook_handler(SECRET, sync, store)) as url,
        httpx.AsyncClient() as c,
    ):
        caplog.set_level(logging.WARNING, logger="billing.stripe_sync")
        bad = await c.post(
            url, content=body, headers={"Stripe-Signature": sign(body, "x", int(time.time()))}
        )
        assert bad.status_code == 400
        assert "rejected" in caplog.text and SECRET not in caplog.text
        missing = await c.post(url, content=body)
        assert missing.status_code == 400
        big = b"{" + b" " * (64 * 1024) + b"}"
        too_big = await c.post(
            url, content=big, headers={"Stripe-Signature": sign(big, SECRET, int(time.time()))}
        )
        assert too_big.status_code == 413
        ok = await c.post(
            url, content=body, headers={"Stripe-Signature": sign(body, SECRET, int(time.time()))}
        )
        assert ok.status_code == 200 and ok.json()["outcome"] == "paid"
        replay = await c.post(
            url, content=body, headers={"Stripe-Signature": sign(body, SECRET, int(time.time()))}
        )
        assert replay.json()["outcome"] == "duplicate"
    assert store.require(inv.invoice_id).status is InvoiceStatus.PAID


async def test_localstripe_webhook_marks_invoice_paid(
    sdb: Database, localstripe: str, api: Api
) -> None:
    """localstripe signs its webhooks like Stripe: pay the synced invoice there and the
    invoice.payment_succeeded it sends verifies and marks ours paid."""
    sync = make_sync(sdb, localstripe)
    inv = make_invoice(tenant())
    store = stored(sdb, inv)
    stripe_id = await asyncio.to_thread(sync.sync_invoice, inv)
    store.attach_stripe_id(inv.invoice_id, stripe_id)
    received: list[str] = []
    inner = webhook_handler(SECRET, sync, store)

    async def spy(request: web.Request) -> web.StreamResponse:
        response = await inner(request)
        received.append(str(getattr(response, "status", "")))
        return response

    async with webhook_server(spy) as url:
        hook = f"feedgate-{uuid.uuid4().hex[:8]}"
        api.http.post(
            f"/_config/webhooks/{hook}",
            data={"url": url, "secret": SECRET, "events[]": ["invoice.payment_succeeded"]},
        ).raise_for_status()
        customer = api.customer_of(inv.tenant)
        pm = api.post(
            "/v1/payment_methods",
            {
                "type": "card",
                "card[number]": "4242424242424242",
                "card[exp_month]": "12",
                "card[exp_year]": "2030",
                "card[cvc]": "123",
            },
        )["id"]
        api.post(f"/v1/payment_methods/{pm}/attach", {"customer": customer})
        api.post(f"/v1/customers/{customer}", {"invoice_settings[default_payment_method]": pm})
        assert api.post(f"/v1/invoices/{stripe_id}/pay", {})["status"] == "paid"
        deadline = time.monotonic() + 10  # localstripe waits 1 s before it delivers
        while store.require(inv.invoice_id).status is not InvoiceStatus.PAID:
            assert time.monotonic() < deadline, f"no webhook arrived (got {received})"
            await asyncio.sleep(0.05)
        # unhook (localstripe's registry is global): events of later tests go nowhere
        api.http.post(
            f"/_config/webhooks/{hook}",
            data={"url": "http://127.0.0.1:9/", "secret": "x", "events[]": ["none"]},
        ).raise_for_status()
    assert received == ["200"]
    paid = store.require(inv.invoice_id)
    assert paid.stripe_invoice_id == stripe_id
    assert await asyncio.to_thread(sync.reconcile, [paid]) == []
