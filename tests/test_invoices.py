"""Ledger, postings, the invoice run and the invoice life cycle, on SQLite and PostgreSQL."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.invoices import InvoiceStore, run_invoices
from billing.ledger import Ledger
from billing.model import BillingError, InvoiceStatus, LineKind, Metric, UsageEvent, UsageKind
from billing.rating import (
    MetricPrice,
    PlanError,
    PricePlan,
    Tier,
    load_plans,
    plan_assignments,
)
from tenants.db import Database

HOUR_MS = 3_600_000
GB = 10**9
D = Decimal
OCT, NOV, DEC = "2026-10", "2026-11", "2026-12"


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> datetime:
        self.t += timedelta(**kw)
        return self.t


def ev(
    tenant: str,
    camera: str = "c1",
    owner: str = "council",
    *,
    session: str | None = None,
    seq: int = 0,
    start: datetime = datetime(2026, 10, 5, 9, tzinfo=UTC),
    ms: int = HOUR_MS,
    nbytes: int = 0,
    kind: UsageKind = UsageKind.LIVE,
) -> UsageEvent:
    sid = session or f"{tenant}-{camera}-{start.isoformat()}"
    return UsageEvent(
        event_id=UsageEvent.make_id(sid, seq),
        session_id=sid,
        seq=seq,
        tenant=tenant,
        principal="op1",
        camera=camera,
        camera_owner=owner,
        kind=kind,
        protocol="rtsp",
        variant="masked",
        start=start,
        end=start + timedelta(milliseconds=ms),
        duration_ms=ms,
        bytes_sent=nbytes,
    )


def hours(tenant: str, h: int, *, day: int = 5, month: int = 10, **kw: object) -> list[UsageEvent]:
    """``h`` one-hour live intervals of one session on the given day."""
    start = datetime(2026, month, day, 0, tzinfo=UTC)
    sid = f"{tenant}-{month}-{day}-{kw.get('camera', 'c1')}"
    return [
        ev(tenant, session=sid, seq=i, start=start + timedelta(hours=i), **kw)  # type: ignore[arg-type]
        for i in range(h)
    ]


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 10, 31, 12, tzinfo=UTC))


@pytest.fixture
def ledger(db: Database, clock: Clock) -> Ledger:
    return Ledger(db, clock=clock)


@pytest.fixture
def store(db: Database, ledger: Ledger) -> InvoiceStore:
    return InvoiceStore(db, ledger=ledger)


# 100 h at 50p, then 40p; bytes 10p/GB; £50 platform fee.
PLANS = {
    "std": PricePlan(
        "std",
        vat_rate=D("0.20"),
        prices=(
            MetricPrice(
                Metric.LIVE_SECONDS, "camera-hour", (Tier(D(100), D(50)), Tier(None, D(40)))
            ),
            MetricPrice(Metric.BYTES, "GB", (Tier(None, D(10)),)),
        ),
        platform_fee_pence=5000,
    ),
    "min": PricePlan(
        "min",
        vat_rate=D("0.20"),
        prices=(MetricPrice(Metric.LIVE_SECONDS, "camera-hour", (Tier(None, D(100)),)),),
        minimum_commitment_pence=10000,
    ),
    "owner": PricePlan(
        "owner",
        vat_rate=D("0.20"),
        prices=(MetricPrice(Metric.LIVE_SECONDS, "camera-hour", (Tier(None, D(20)),)),),
        contributor_share=D("0.25"),
    ),
}
ASSIGN = {"acme": "std", "beta": "min", "council": "owner"}


# ------------------------------------------------------------------------------- ledger
def test_record_is_exactly_once(ledger: Ledger) -> None:
    a, b, c = hours("acme", 3)
    # a duplicate inside one batch counts once
    assert ledger.record([a, b, a]) == 2
    # across batches: only c is new; a replay of everything adds nothing
    assert ledger.record([b, c]) == 1
    assert ledger.record([a, b, c]) == 0
    assert ledger.record([]) == 0
    assert ledger.count() == 3
    assert ledger.usage("acme", OCT)[Metric.LIVE_SECONDS] == 3 * HOUR_MS
    # the first copy wins: a "different" event with the same id is ignored
    clash = ev("acme", session=a.session_id, seq=0, ms=5)
    assert clash.event_id == a.event_id
    assert ledger.record([clash]) == 0
    assert ledger.usage("acme", OCT)[Metric.LIVE_SECONDS] == 3 * HOUR_MS


def test_record_large_batch_spans_insert_chunks(ledger: Ledger) -> None:
    t0 = datetime(2026, 10, 5, tzinfo=UTC)
    batch = [  # more than one multi-row INSERT
        ev("acme", session="big", seq=i, start=t0 + timedelta(minutes=i)) for i in range(1200)
    ]
    assert ledger.record(batch + batch[:700]) == 1200
    assert ledger.record(batch[600:] + hours("acme", 5, day=6)) == 5
    assert ledger.usage("acme", OCT)[Metric.LIVE_SECONDS] == 1205 * HOUR_MS


def test_usage_aggregates_units_and_month_edges(ledger: Ledger, clock: Clock) -> None:
    oct_end = datetime(2026, 11, 1, tzinfo=UTC)
    ledger.record(
        [
            ev("acme", "c1", ms=1500, nbytes=7, start=oct_end - timedelta(microseconds=1)),
            ev("acme", "c1", ms=2500, nbytes=3, start=oct_end),  # November
            ev("acme", "c2", kind=UsageKind.PLAYBACK, ms=10, nbytes=100),
            ev("acme", "c2", kind=UsageKind.PTZ, ms=20, session="ptz1"),
            ev("acme", "c2", owner="acme", kind=UsageKind.EXPORT, session="x1", seq=0, nbytes=5),
            ev("acme", "c2", owner="acme", kind=UsageKind.EXPORT, session="x1", seq=1, nbytes=5),
            ev("acme", "c2", owner="acme", kind=UsageKind.EXPORT, session="x2", nbytes=5),
            ev("beta", "a9", owner="acme", ms=4000),
            ev("acme", "a9", owner="acme", ms=999),
        ]
    )
    usage = ledger.usage("acme", OCT)
    assert usage == {
        Metric.LIVE_SECONDS: 1500 + 999,
        Metric.PLAYBACK_SECONDS: 10,
        Metric.PTZ_SECONDS: 20,
        Metric.BYTES: 7 + 100 + 15,
        Metric.EXPORTS: 2,  # two export sessions, one reported in two intervals
    }
    assert ledger.usage("acme", NOV)[Metric.LIVE_SECONDS] == 2500
    by_cam = ledger.usage_by_camera("acme", OCT)
    assert list(by_cam) == ["a9", "c1", "c2"]
    assert by_cam["c2"][Metric.BYTES] == 115
    assert ledger.totals(OCT) == {"a9": 0, "c1": 7, "c2": 115}
    # others' viewing of acme's cameras: beta's 4 s; acme's own viewing is excluded
    assert ledger.contributed("acme", OCT) == 4000
    # late usage: recorded after a mark
    mark = ledger.high_water()
    assert mark is not None
    clock.advance(days=3)
    ledger.record([ev("acme", "c9", ms=777, start=datetime(2026, 10, 9, tzinfo=UTC))])
    late = ledger.late_usage("acme", OCT, mark)
    assert late[Metric.LIVE_SECONDS] == 777 and late[Metric.BYTES] == 0
    assert ledger.usage("acme", OCT, recorded_until=mark)[Metric.LIVE_SECONDS] == 2499


def test_recorded_at_strictly_increases_even_if_the_clock_does_not(
    ledger: Ledger, clock: Clock
) -> None:
    ledger.record(hours("acme", 1))
    first = ledger.high_water()
    clock.advance(hours=-5)  # the clock steps back
    ledger.record(hours("acme", 1, day=7))
    second = ledger.high_water()
    assert first is not None and second is not None and second > first
    assert ledger.late_usage("acme", OCT, first)[Metric.LIVE_SECONDS] == HOUR_MS


def test_postings_balanced_and_idempotent(ledger: Ledger) -> None:
    with pytest.raises(BillingError, match="unbalanced"):
        ledger.post("e1", [("receivable:acme", 100), ("revenue:bytes", -99)], "GBP")
    with pytest.raises(BillingError):
        ledger.post("e1", [], "GBP")
    assert ledger.entry("e1") == []
    lines = [("receivable:acme", 120), ("revenue:bytes", -100), ("vat:output", -20)]
    assert ledger.post("e1", lines, "GBP") is True
    assert ledger.post("e1", lines, "GBP") is False  # idempotent
    with pytest.raises(BillingError, match="other lines"):
        ledger.post("e1", [("receivable:acme", 1), ("revenue:bytes", -1)], "GBP")
    assert ledger.balance("receivable:acme") == 120
    assert ledger.balances() == {"receivable:acme": 120, "revenue:bytes": -100, "vat:output": -20}
    assert [p.line_no for p in ledger.entry("e1")] == [1, 2, 3]


# -------------------------------------------------------------------------- invoice run
NOW = datetime(2026, 11, 1, 2, tzinfo=UTC)


def _record_october(ledger: Ledger) -> None:
    ledger.record(
        hours("acme", 120, nbytes=GB // 2)  # 120 h, 60 GB on council's c1
        + hours("beta", 30, camera="c2")  # 30 h on council's c2
        + hours("council", 10, camera="c1")  # the owner's own viewing
    )


def test_run_invoices_rates_and_is_idempotent(
    ledger: Ledger, store: InvoiceStore, db: Database
) -> None:
    _record_october(ledger)
    first = run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)
    assert [i.invoice_id for i in first] == [
        "inv-acme-2026-10",
        "inv-beta-2026-10",
        "inv-council-2026-10",
    ]
    acme, beta, council = first
    # acme: 100 h * 50 + 20 h * 40 = 5,800; 60 GB * 10 = 600; fee 5,000 -> 11,400 + 20 % VAT
    assert {line.line_id: line.amount_pence for line in acme.lines} == {
        "usage:live_seconds": 5800,
        "usage:bytes": 600,
        "platform_fee": 5000,
    }
    assert (acme.subtotal_pence, acme.vat_pence, acme.total_pence) == (11400, 2280, 13680)
    # beta: 30 h * 100p = 3,000, minimum 10,000 -> top-up 7,000
    assert {line.line_id: line.amount_pence for line in beta.lines}["minimum_top_up"] == 7000
    # council: 10 h * 20 = 200. Credit: acme paid (5,800 + 600) for 120 h / 60 GB, all on c1;
    # beta's effective rate is 100p/h (top-ups are not usage) -> 3,000. 25 % of 9,400 = 2,350.
    assert {line.line_id: line.amount_pence for line in council.lines} == {
        "usage:live_seconds": 200,
        "contributor_credit": -2350,
    }
    assert council.subtotal_pence == -2150 and council.vat_pence == -430

    again = run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW + timedelta(hours=5))
    assert again == first  # same ids, lines, totals and created_at
    assert store.list(period=OCT) == first
    rows = db.query("SELECT COUNT(*) FROM invoice_lines")
    assert rows[0][0] == sum(len(i.lines) for i in first)


def test_draft_is_recomputed_in_place(ledger: Ledger, store: InvoiceStore, clock: Clock) -> None:
    _record_october(ledger)
    run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)
    clock.advance(minutes=1)
    ledger.record(hours("acme", 10, day=20))
    (acme, *_) = run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)
    assert acme.status is InvoiceStatus.DRAFT
    # 130 h: 5,000 + 30 * 40
    assert acme.lines[0].amount_pence == 6200
    assert acme.created_at == NOW
    assert len(store.list(tenant="acme")) == 1


def test_unassigned_usage_is_an_error(ledger: Ledger, store: InvoiceStore) -> None:
    ledger.record(hours("stranger", 1))
    with pytest.raises(BillingError, match="stranger"):
        run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)
    with pytest.raises(BillingError, match="unknown plan"):
        run_invoices(ledger, store, PLANS, {"stranger": "gold"}, OCT, now=NOW)


def test_finalize_is_immutable_and_posts_balanced_entries(
    ledger: Ledger, store: InvoiceStore, clock: Clock
) -> None:
    _record_october(ledger)
    run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)
    for tenant in ("acme", "beta", "council"):
        inv = store.finalize(f"inv-{tenant}-{OCT}", NOW + timedelta(days=1))
        assert inv.status is InvoiceStatus.FINALIZED and inv.finalized_at is not None
        entry = ledger.entry(inv.invoice_id)
        assert sum(p.amount_pence for p in entry) == 0
    frozen = store.list(period=OCT)
    # more usage and a re-run: the finalized invoices do not move
    clock.advance(days=2)
    ledger.record(hours("acme", 50, day=21))
    assert run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW) == frozen
    with pytest.raises(BillingError, match="cannot be changed"):
        store.save_draft(replace(frozen[0], status=InvoiceStatus.DRAFT), usage_cutoff=None)
    assert store.finalize(frozen[0].invoice_id, NOW) == frozen[0]  # no-op
    assert ledger.balances() == {
        "payable:contributor:council": 2350,
        "receivable:acme": 13680,
        "receivable:beta": 12000,
        "receivable:council": -2580,
        "revenue:bytes": -600,
        "revenue:live_seconds": -(5800 + 3000 + 200),
        "revenue:minimum_top_up": -7000,
        "revenue:platform_fee": -5000,
        "vat:output": -(2280 + 2000 - 430),
    }
    assert sum(ledger.balances().values()) == 0


def test_late_usage_goes_on_next_months_invoice(
    ledger: Ledger, store: InvoiceStore, clock: Clock
) -> None:
    _record_october(ledger)
    run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)
    # usage recorded between the run and finalization is late too: it was not on the draft
    clock.advance(minutes=5)
    ledger.record(hours("acme", 5, day=29))  # 5 more October hours
    for inv in store.list(period=OCT):
        store.finalize(inv.invoice_id, NOW)
    clock.advance(days=3)
    ledger.record(hours("acme", 15, day=30, nbytes=GB))  # late October: 15 h, 15 GB
    ledger.record(hours("beta", 20, day=30, camera="c2"))  # late October for beta
    ledger.record(hours("acme", 2, day=3, month=11))  # November
    nov = {i.tenant: i for i in run_invoices(ledger, store, PLANS, ASSIGN, NOV, now=NOW)}
    acme = {line.line_id: line for line in nov["acme"].lines}
    adj = acme["adjustment:2026-10:live_seconds"]
    assert adj.kind is LineKind.ADJUSTMENT
    assert adj.description.startswith("Late usage for 2026-10")
    assert adj.quantity == "20.0000"
    assert adj.amount_pence == 20 * 40  # all above the 100 h tier: 40p
    assert acme["adjustment:2026-10:bytes"].amount_pence == 15 * 10
    assert acme["usage:live_seconds"].amount_pence == 2 * 50  # November's own: 2 h at 50p
    # beta's late 20 h (2,000p) just shrinks October's 7,000p top-up
    beta = {line.line_id: line.amount_pence for line in nov["beta"].lines}
    assert beta["adjustment:2026-10:live_seconds"] == 2000
    assert beta["adjustment:2026-10:minimum_top_up"] == -2000
    # the October invoices did not change
    assert store.require("inv-acme-2026-10").subtotal_pence == 11400
    # idempotent with adjustments too
    assert run_invoices(ledger, store, PLANS, ASSIGN, NOV, now=NOW) == list(nov.values())
    # once November is finalized, December does not bill the same late usage again
    for inv in nov.values():
        store.finalize(inv.invoice_id, NOW + timedelta(days=30))
    dec = run_invoices(ledger, store, PLANS, ASSIGN, DEC, now=NOW)
    assert not [line for inv in dec for line in inv.lines if line.kind is LineKind.ADJUSTMENT]
    # ... but more late October usage after that does appear in December
    clock.advance(days=40)
    ledger.record(hours("acme", 1, day=31))
    dec = run_invoices(ledger, store, PLANS, ASSIGN, DEC, now=NOW)
    acme_dec = {line.line_id: line.amount_pence for line in dec[0].lines}
    assert acme_dec["adjustment:2026-10:live_seconds"] == 40


def test_credit_note(ledger: Ledger, store: InvoiceStore) -> None:
    _record_october(ledger)
    run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)
    with pytest.raises(BillingError, match="draft"):
        store.credit_note("inv-acme-2026-10", 100, "goodwill", NOW)
    store.finalize("inv-acme-2026-10", NOW)
    cn1 = store.credit_note("inv-acme-2026-10", ["platform_fee"], "fee waived in outage", NOW)
    assert cn1.invoice_id == "cn-acme-2026-10-1"
    assert cn1.credit_note_for == "inv-acme-2026-10"
    assert cn1.status is InvoiceStatus.FINALIZED
    assert (cn1.subtotal_pence, cn1.vat_pence, cn1.total_pence) == (-5000, -1000, -6000)
    assert cn1.lines[0].kind is LineKind.CREDIT and "fee waived" in cn1.lines[0].description
    with pytest.raises(BillingError, match="already credited"):
        store.credit_note("inv-acme-2026-10", ["platform_fee"], "again", NOW)
    cn2 = store.credit_note("inv-acme-2026-10", 333, "service credit", NOW)
    assert cn2.invoice_id == "cn-acme-2026-10-2"
    # 333 * 20 % = 66.6 -> 67
    assert (cn2.subtotal_pence, cn2.vat_pence, cn2.total_pence) == (-333, -67, -400)
    with pytest.raises(BillingError, match="exceed"):
        store.credit_note("inv-acme-2026-10", 11400 - 5000 - 333 + 1, "too much", NOW)
    for cn in (cn1, cn2):
        assert sum(p.amount_pence for p in ledger.entry(cn.invoice_id)) == 0
    assert ledger.balance("receivable:acme") == 13680 - 6000 - 400
    assert ledger.balance("revenue:platform_fee") == 0
    assert ledger.balance("revenue:credit_notes") == 333
    # credit notes are not invoices to pay or void, and the run ignores them
    with pytest.raises(BillingError):
        store.void(cn1.invoice_id)
    assert [i.invoice_id for i in run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)] == [
        "inv-acme-2026-10",
        "inv-beta-2026-10",
        "inv-council-2026-10",
    ]


def test_void_and_mark_paid(ledger: Ledger, store: InvoiceStore) -> None:
    _record_october(ledger)
    run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)
    # void a draft: no postings; the run then leaves it alone
    assert store.void("inv-beta-2026-10").status is InvoiceStatus.VOID
    assert ledger.entry("inv-beta-2026-10") == []
    with pytest.raises(BillingError, match="void"):
        store.finalize("inv-beta-2026-10", NOW)
    # void a finalized invoice: its entry is reversed
    store.finalize("inv-council-2026-10", NOW)
    store.void("inv-council-2026-10", NOW)
    assert ledger.balance("receivable:council") == 0
    assert ledger.balance("payable:contributor:council") == 0
    # pay
    with pytest.raises(BillingError, match="only a finalized"):
        store.mark_paid("inv-acme-2026-10", NOW)
    store.finalize("inv-acme-2026-10", NOW)
    paid = store.mark_paid("inv-acme-2026-10", NOW + timedelta(days=9))
    assert paid.status is InvoiceStatus.PAID and paid.paid_at == NOW + timedelta(days=9)
    assert store.mark_paid("inv-acme-2026-10", NOW) == paid  # idempotent
    assert ledger.balance("receivable:acme") == 0
    assert ledger.balance("cash:bank") == 13680
    with pytest.raises(BillingError, match="credit note"):
        store.void("inv-acme-2026-10")
    statuses = {
        i.invoice_id: i.status for i in run_invoices(ledger, store, PLANS, ASSIGN, OCT, now=NOW)
    }
    assert statuses == {
        "inv-acme-2026-10": InvoiceStatus.PAID,
        "inv-beta-2026-10": InvoiceStatus.VOID,
        "inv-council-2026-10": InvoiceStatus.VOID,
    }
    assert sum(ledger.balances().values()) == 0


# ---------------------------------------------------------------------------- plan files
GOOD = """
vat_rate = "0.20"  # every plan's, unless it gives its own

[plans.standard]
platform_fee_pence = 5000
vat_rate = 0.175
contributor_share = "0.10"

[[plans.standard.prices]]
metric = "live_seconds"
unit = "camera-hour"
mode = "graduated"
tiers = [{ up_to = 1000, unit_price_pence = "45.5" }, { unit_price_pence = 30, flat_pence = 100 }]

[[plans.standard.prices]]
metric = "bytes"
unit = "GB"
tiers = [{ up_to = "inf", unit_price_pence = 2 }]

[plans.community]
nominal_fee_pence = 100

[plans.police]
zero_rated = true

[assignments]
acme = "standard"
police = "police"
"""


def test_load_plans_and_assignments(tmp_path: Path) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(GOOD)
    plans = load_plans(path)
    std = plans["standard"]
    assert std.vat == D("0.175") and std.contributor_share == D("0.10")
    assert plans["community"].vat == D("0.20")  # the file's rate
    assert plans["police"].vat == 0  # zero-rated: no VAT at all
    assert std.prices[0].tiers == (
        Tier(D(1000), D("45.5")),
        Tier(None, D(30), D(100)),
    )
    assert std.prices[1].tiers == (Tier(None, D(2)),)
    assert plans["community"].nominal_fee_pence == 100 and plans["police"].zero_rated
    assert plan_assignments(path) == {"acme": "standard", "police": "police"}


V = "vat_rate = '0.20'\n"  # the file's VAT rate, so each case reaches its own mistake


@pytest.mark.parametrize(
    ("snippet", "key", "reason"),
    [
        (V + "[plans.a]\nplatform_fee = 1\n", "plans.a.platform_fee", "unknown key"),
        (V + "[plans.a]\nplatform_fee_pence = 1.5\n", "plans.a.platform_fee_pence", "integer"),
        (
            V + "[plans.a]\nminimum_commitment_pence = -1\n",
            "plans.a.minimum_commitment_pence",
            ">= 0",
        ),
        ("[plans.a]\nvat_rate = 'lots'\n", "plans.a.vat_rate", "not a number"),
        ("[plans.a]\nvat_rate = 2\n", "plans.a.vat_rate", "<= 1"),
        ("[plans.a]\nplatform_fee_pence = 1\n", "plans.a.vat_rate", "required"),
        (V + "[plans.a]\nzero_rated = true\nvat_rate = 0.2\n", "plans.a.vat_rate", "zero-rated"),
        (V + "[plans.a]\ncurrency = 'pounds'\n", "plans.a.currency", "pattern"),
        (
            V + "[plans.a]\nnominal_fee_pence = 100\nplatform_fee_pence = 1\n",
            "plans.a.nominal_fee_pence",
            "no platform fee",
        ),
        (
            V + "[[plans.a.prices]]\nmetric = 'live'\nunit = 'hour'\ntiers = []\n",
            "plans.a.prices[0].metric",
            "live_seconds",
        ),
        (
            V + "[[plans.a.prices]]\nmetric = 'bytes'\nunit = 'TB'\ntiers = []\n",
            "plans.a.prices[0].unit",
            "one of camera-hour",
        ),
        (
            V + "[[plans.a.prices]]\nmetric = 'bytes'\nunit = 'hour'\n"
            "tiers = [{unit_price_pence = 1}]\n",
            "plans.a.prices[0].unit",
            "cannot price bytes",
        ),
        (
            V + "[[plans.a.prices]]\nmetric = 'bytes'\nunit = 'GB'\n"
            "tiers = [{up_to = 10, unit_price_pence = 1}, {up_to = 5, unit_price_pence = 1},"
            " {unit_price_pence = 1}]\n",
            "plans.a.prices[0].tiers[1].up_to",
            "must exceed",
        ),
        (
            V + "[[plans.a.prices]]\nmetric = 'bytes'\nunit = 'GB'\n"
            "tiers = [{up_to = 10, unit_price_pence = 1}]\n",
            "plans.a.prices[0].tiers[0].up_to",
            "last tier must be unbounded",
        ),
        (
            V + "[[plans.a.prices]]\nmetric = 'bytes'\nunit = 'GB'\n"
            "tiers = [{up_to = 0, unit_price_pence = 1}, {unit_price_pence = 1}]\n",
            "plans.a.prices[0].tiers[0].up_to",
            "> 0",
        ),
        (
            V + "[[plans.a.prices]]\nmetric = 'bytes'\nunit = 'GB'\ntiers = [{up_to = 10}]\n",
            "plans.a.prices[0].tiers[0].unit_price_pence",
            "required",
        ),
        (
            V + "[[plans.a.prices]]\nmetric = 'bytes'\nunit = 'GB'\nmode = 'stairs'\n"
            "tiers = [{unit_price_pence = 1}]\n",
            "plans.a.prices[0].mode",
            "graduated",
        ),
        (
            V + "[[plans.a.prices]]\nmetric = 'bytes'\nunit = 'GB'\n"
            "tiers = [{unit_price_pence = 1}]\n"
            "[[plans.a.prices]]\nmetric = 'bytes'\nunit = 'MB'\n"
            "tiers = [{unit_price_pence = 1}]\n",
            "plans.a.prices[1].metric",
            "priced twice",
        ),
        ("[plans.a\n", "-", "TOML syntax"),
        ("x = 1\n", "x", "unknown key"),
        (V, "plans", "at least one"),
        (
            V + "[plans.a]\n[assignments]\nacme = 'gold'\n",
            "assignments.acme",
            "unknown plan 'gold'",
        ),
    ],
)
def test_bad_plan_files_name_file_key_and_reason(
    tmp_path: Path, snippet: str, key: str, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(snippet))
    with pytest.raises(PlanError) as info:
        load_plans(path)
        plan_assignments(path)
    err = info.value
    assert err.file == str(path) and err.key == key and reason in err.reason, err
    assert str(path) in str(err) and key in str(err)


def test_missing_plan_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read"):
        load_plans(tmp_path / "nope.toml")


def test_a_month_is_the_deployments_local_month(db: Database, clock: Clock) -> None:
    # Issue #9 finding 5: 23:30 UTC on 30 September is 00:30 BST on 1 October, so London
    # bills it in October; a deployment in UTC would bill it in September.
    late = ev("acme", start=datetime(2026, 9, 30, 23, 30, tzinfo=UTC))
    london = Ledger(db, clock=clock)
    london.record([late])
    assert london.usage("acme", OCT)[Metric.LIVE_SECONDS] == HOUR_MS
    assert london.usage("acme", "2026-09")[Metric.LIVE_SECONDS] == 0
    utc = Ledger(db, clock=clock, zone=UTC)
    assert utc.usage("acme", "2026-09")[Metric.LIVE_SECONDS] == HOUR_MS
    assert utc.usage("acme", OCT)[Metric.LIVE_SECONDS] == 0
    store = InvoiceStore(db, ledger=london)
    (inv,) = [i for i in run_invoices(london, store, PLANS, ASSIGN, OCT, now=clock()) if
              i.tenant == "acme"]  # fmt: skip
    assert inv.lines[0].quantity == "1.0000"  # the hour is on October's invoice
