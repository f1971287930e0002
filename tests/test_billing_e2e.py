"""Metering to money, end to end: real ffmpeg viewers of two tenants, the ledger against the
relay's own counters, an invoice against a hand computation, and the same invoice in Stripe
(localstripe)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from conftest import (
    make_config,
    publish_argv,
    publishing,
    read_argv,
    running_gateway,
    wait_for,
)
from test_stripe import API_KEY, Api, localstripe  # noqa: F401 - the localstripe fixture

from billing.invoices import run_invoices
from billing.model import Metric, period_of
from billing.rating import load_plans, plan_assignments
from billing.stripe_sync import StripeSync
from gateway.config import BillingConfig, CameraConfig, TenancyConfig
from tenants.audit import AuditAction

SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[tenants]]
id = "police"
name = "Metropolitan Police"
kind = "police"
[[tenants]]
id = "shop"
name = "Shopping centre"
kind = "retail"

[[principals]]
id = "encoder"
tenant = "council"
name = "Encoder"
kind = "service"
roles = ["operator"]
digest_password = "enc"

[[principals]]
id = "police-user"
tenant = "police"
name = "police-user"
roles = ["viewer"]

[[principals]]
id = "shop-user"
tenant = "shop"
name = "shop-user"
roles = ["viewer"]

[[principals]]
id = "officer"
tenant = "police"
name = "officer"
roles = ["viewer"]

[[cameras]]
id = "street"
owner = "council"

[[grants]]
id = "police-street"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live"]
[[grants]]
id = "shop-street"
owner = "council"
grantee = "shop"
cameras = ["street"]
rights = ["live"]
"""

PLANS = """
[plans.own]
zero_rated = true
prices = []

[plans.partner]
platform_fee_pence = 1000
vat_rate = "0.20"
[[plans.partner.prices]]
metric = "live_seconds"
unit = "camera-hour"
mode = "graduated"
tiers = [{ unit_price_pence = "3600" }]
[[plans.partner.prices]]
metric = "bytes"
unit = "MB"
mode = "graduated"
tiers = [{ unit_price_pence = "7" }]

[assignments]
council = "own"
police = "partner"
shop = "partner"
"""


def _hand_computed_total(live_ms: int, nbytes: int) -> int:
    """The partner plan by hand: £36 per camera-hour (1p per second), 7p per MB (10^6 bytes),
    £10 platform fee, each line rounded half-up to the penny, then VAT 20 % half-up."""
    live = (Decimal(live_ms) / Decimal(3_600_000) * Decimal(3600)).quantize(
        Decimal(1), ROUND_HALF_UP
    )
    data = (Decimal(nbytes) / Decimal(1_000_000) * Decimal(7)).quantize(Decimal(1), ROUND_HALF_UP)
    subtotal = int(live) + int(data) + 1000
    vat = int((Decimal(subtotal) * Decimal("0.20")).quantize(Decimal(1), ROUND_HALF_UP))
    return subtotal + vat


async def test_two_tenants_are_metered_rated_invoiced_and_synced(
    tmp_path: Path,
    procs,
    localstripe: str,  # noqa: F811
) -> None:
    seed, plans = tmp_path / "seed.toml", tmp_path / "plans.toml"
    seed.write_text(SEED)
    plans.write_text(PLANS)
    config = make_config((CameraConfig(id="street"),), report_interval=0.5)
    config = replace(
        config,
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed)),
        billing=BillingConfig(enabled=True, plans=str(plans)),
    )
    async with running_gateway(config) as gw:
        await procs(publish_argv(f"rtsp://encoder:enc@127.0.0.1:{gw.port}/street"))
        await publishing(gw, "street")
        tenancy, metering = gw.gateway.tenancy, gw.gateway.metering
        assert tenancy is not None and metering is not None

        def url(tenant: str) -> str:
            t = tenancy.issuer.issue(
                tenant=tenant, subject=f"{tenant}-user", roles=["viewer"], ttl=timedelta(minutes=10)
            )
            return gw.url(f"street?token={t}")

        # The police watch two streams for 4 s each, the shop one stream for 2 s.
        viewers = [
            await procs(read_argv(url("police"), seconds=4, decode=False)),
            await procs(read_argv(url("police"), seconds=4, decode=False)),
            await procs(read_argv(url("shop"), seconds=2, decode=False)),
        ]
        for v in viewers:
            assert await v.wait(30) == 0, v.text
        stream = gw.hub.get("street")
        await wait_for(lambda: not stream.readers, 10, what="the viewers to leave")
        ledger = metering.ledger
        await wait_for(
            lambda: (
                ledger.count() >= metering.meter.events_emitted
                and metering.meter.events_emitted > 0
            ),
            10,
            what="every emitted event in the ledger",
        )
        period = period_of(datetime.now(UTC))

        # The ledger agrees with the relay's own counters: bytes to the byte (the relay served
        # only these three readers), seconds with the access control's session clock.
        police, shop = ledger.usage("police", period), ledger.usage("shop", period)
        assert police[Metric.BYTES] + shop[Metric.BYTES] == stream.counters.bytes_out
        tenancy.drain()  # session ends are stored on the database thread
        ends = [e for e in tenancy.audit.entries() if e.action == AuditAction.SESSION_END]
        session_ms = {
            t: sum(round(e.detail["seconds"] * 1000) for e in ends if e.tenant == t)
            for t in ("police", "shop")
        }
        for tenant, usage in (("police", police), ("shop", shop)):
            ms = usage[Metric.LIVE_SECONDS]
            assert abs(ms - session_ms[tenant]) <= max(2, session_ms[tenant] * 0.001), (
                tenant,
                ms,
                session_ms[tenant],
            )
        # Two streams of 4 s of media each; the GOP cache hands each one up to a GOP at once.
        assert 5000 < police[Metric.LIVE_SECONDS] < 12000
        assert 1000 < shop[Metric.LIVE_SECONDS] < 6000

        # Rated and invoiced: exactly the hand computation, to the penny.
        price_plans = load_plans(plans)
        invoices = run_invoices(
            ledger,
            metering.invoices,
            price_plans,
            plan_assignments(plans, price_plans),
            period,
            now=datetime.now(UTC),
        )
        by_tenant = {i.tenant: i for i in invoices}
        for tenant, usage in (("police", police), ("shop", shop)):
            assert by_tenant[tenant].total_pence == _hand_computed_total(
                usage[Metric.LIVE_SECONDS], usage[Metric.BYTES]
            )
        assert by_tenant["council"].total_pence == 0

        # Finalised and synced: localstripe holds the same totals.
        sync = StripeSync(ledger.db, api_key=API_KEY, api_base=localstripe)
        api = Api(localstripe)
        try:
            for tenant in ("police", "shop"):
                inv = metering.invoices.finalize(by_tenant[tenant].invoice_id, datetime.now(UTC))
                sync.ensure_customer(tenant, tenant)
                sid = await asyncio.to_thread(sync.sync_invoice, inv)
                remote = api.get(f"/v1/invoices/{sid}")
                assert remote["total"] == inv.total_pence
                assert remote["currency"] == "gbp"
            assert (
                await asyncio.to_thread(
                    sync.reconcile, metering.invoices.list(period=period, tenant="police")
                )
                == []
            )
        finally:
            api.http.close()
