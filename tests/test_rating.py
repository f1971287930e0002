"""Pure rating: tiers, fees, plans, VAT, contributor credits - every figure computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.invoices import build_invoice
from billing.ledger import Ledger
from billing.model import BillingError, InvoiceLine, LineKind, Metric, UsageEvent, UsageKind
from billing.rating import (
    MetricPrice,
    PricePlan,
    Tier,
    TierMode,
    contributor_credits,
    display_quantity,
    exact_charge,
    rate,
    vat_pence,
)
from tenants.db import Database

HOUR_MS = 3_600_000
GB = 10**9
D = Decimal
VAT = D("0.20")

LIVE_TIERS = (Tier(D(100), D(50)), Tier(D(500), D(40)), Tier(None, D(30)))


def live(mode: TierMode = TierMode.GRADUATED, tiers: tuple[Tier, ...] = LIVE_TIERS) -> MetricPrice:
    return MetricPrice(Metric.LIVE_SECONDS, "camera-hour", tiers, mode)


def flat_rate(metric: Metric, unit: str, pence: str) -> MetricPrice:
    return MetricPrice(metric, unit, (Tier(None, D(pence)),))


def amounts(lines: list[InvoiceLine]) -> dict[str, int]:
    return {line.line_id: line.amount_pence for line in lines}


# ----------------------------------------------------------------------------------- tiers
def test_graduated_tiers_to_the_penny() -> None:
    price = live()
    # 250.5 h: 100 h at 50p + 150.5 h at 40p = 5,000 + 6,020
    assert exact_charge(price, int(D("250.5") * HOUR_MS)) == D(11020)
    # 600 h: 5,000 + 400 * 40 + 100 * 30 = 24,000
    assert exact_charge(price, 600 * HOUR_MS) == D(24000)
    # exactly on a boundary: all in the first tier (up_to is inclusive)
    assert exact_charge(price, 100 * HOUR_MS) == D(5000)
    assert exact_charge(price, 0) == 0


def test_volume_tiers_to_the_penny() -> None:
    price = live(TierMode.VOLUME)
    assert exact_charge(price, 100 * HOUR_MS) == D(5000)  # 100 h * 50p (boundary inclusive)
    assert exact_charge(price, int(D("250.5") * HOUR_MS)) == D(10020)  # 250.5 h * 40p
    assert exact_charge(price, 600 * HOUR_MS) == D(18000)  # 600 h * 30p
    assert exact_charge(price, 0) == 0


def test_flat_tier_fee_is_charged_once_when_the_tier_is_entered() -> None:
    tiers = (Tier(D(10), D(0), flat_pence=D(500)), Tier(None, D(20), flat_pence=D(100)))
    price = MetricPrice(Metric.BYTES, "GB", tiers)
    assert exact_charge(price, 0) == 0
    assert exact_charge(price, 5 * GB) == D(500)
    assert exact_charge(price, 10 * GB) == D(500)
    # 12.5 GB: 500 + 100 (second tier entered) + 2.5 GB * 20p
    assert exact_charge(price, int(D("12.5") * GB)) == D(650)
    volume = MetricPrice(Metric.BYTES, "GB", tiers, TierMode.VOLUME)
    # volume: 12.5 GB * 20p + that tier's 100p flat
    assert exact_charge(volume, int(D("12.5") * GB)) == D(350)


def test_line_rounds_half_up_once() -> None:
    plan = PricePlan(
        "p", vat_rate=VAT, prices=(flat_rate(Metric.LIVE_SECONDS, "camera-hour", "50"),)
    )
    # 0.01 h at 50p = 0.5p exactly -> 1p (half-up; half-even would give 0)
    (line,) = rate(plan, {Metric.LIVE_SECONDS: 36_000})
    assert line.amount_pence == 1
    # 0.03 h = 1.5p -> 2p; 0.0299.. h just below -> 1p
    assert rate(plan, {Metric.LIVE_SECONDS: 108_000})[0].amount_pence == 2
    assert rate(plan, {Metric.LIVE_SECONDS: 107_999})[0].amount_pence == 1


def test_unit_conversions_are_exact() -> None:
    assert display_quantity(5_400_000, "camera-hour") == D("1.5000")
    assert display_quantity(1, "hour") == D("0.0000")
    assert display_quantity(1_500_000_000, "GB") == D("1.5000")
    assert display_quantity(90_000, "minute") == D("1.5000")
    # 1,234,567,890 bytes at 10p per GB = 12.3456789p -> 12p
    bytes_price = flat_rate(Metric.BYTES, "GB", "10")
    assert exact_charge(bytes_price, 1_234_567_890) == D("12.3456789")
    # one third of an hour at 30p is exactly 10p, not 9.999999...
    assert exact_charge(flat_rate(Metric.LIVE_SECONDS, "hour", "30"), HOUR_MS // 3) == D(10)
    ptz = PricePlan("p", vat_rate=VAT, prices=(flat_rate(Metric.PTZ_SECONDS, "minute", "10"),))
    assert rate(ptz, {Metric.PTZ_SECONDS: 90_000})[0].amount_pence == 15


def test_descriptions_read_like_an_invoice() -> None:
    plan = PricePlan(
        "p",
        vat_rate=VAT,
        prices=(
            live(),
            flat_rate(Metric.BYTES, "GB", "12.5"),
            flat_rate(Metric.EXPORTS, "export", "500"),
            MetricPrice(Metric.PLAYBACK_SECONDS, "hour", LIVE_TIERS, TierMode.VOLUME),
        ),
    )
    usage = {
        Metric.LIVE_SECONDS: int(D("1234.5") * HOUR_MS),
        Metric.BYTES: 3 * GB,
        Metric.EXPORTS: 2,
        Metric.PLAYBACK_SECONDS: 2 * HOUR_MS,
    }
    lines = {line.line_id: line for line in rate(plan, usage)}
    live_line = lines["usage:live_seconds"]
    assert live_line.description == "Live viewing: 1,234.50 camera-hours at tiered rates"
    assert live_line.quantity == "1234.5000" and live_line.unit == "camera-hour"
    # 100*50 + 400*40 + 734.5*30 = 5,000 + 16,000 + 22,035
    assert live_line.amount_pence == 43035
    assert lines["usage:bytes"].description == "Video data delivered: 3.00 GB at 12.50p per GB"
    assert lines["usage:bytes"].amount_pence == 38  # 37.5 -> 38
    assert lines["usage:exports"].description == "Clip exports: 2 exports at 500.00p each"
    assert lines["usage:playback_seconds"].description == (
        "Recorded playback: 2.00 hours at the volume-tier rate of 50.00p per hour"
    )


# ------------------------------------------------------------------------------ plan rules
STANDARD = (live(), flat_rate(Metric.BYTES, "GB", "10"))
USAGE = {Metric.LIVE_SECONDS: int(D("250.5") * HOUR_MS), Metric.BYTES: 5 * GB}  # 11,020 + 50


def test_platform_fee_line() -> None:
    plan = PricePlan("p", vat_rate=VAT, prices=STANDARD, platform_fee_pence=5000)
    lines = rate(plan, USAGE)
    assert amounts(lines) == {"usage:live_seconds": 11020, "usage:bytes": 50, "platform_fee": 5000}
    assert lines[-1].kind is LineKind.PLATFORM_FEE


def test_minimum_commitment_tops_up_the_difference() -> None:
    plan = PricePlan(
        "p", vat_rate=VAT, prices=STANDARD, platform_fee_pence=5000, minimum_commitment_pence=20000
    )
    lines = rate(plan, USAGE)
    assert amounts(lines)["minimum_top_up"] == 20000 - (11020 + 50 + 5000)
    assert sum(line.amount_pence for line in lines) == 20000
    assert lines[-1].kind is LineKind.MINIMUM_TOP_UP
    assert "£200.00" in lines[-1].description
    # above the minimum: no top-up line
    plan_low = PricePlan("p", vat_rate=VAT, prices=STANDARD, minimum_commitment_pence=100)
    assert "minimum_top_up" not in amounts(rate(plan_low, USAGE))
    # the credit is taken after the top-up: it still reduces what a minimum-commitment pays
    lines = rate(plan, USAGE, contributor_credit_pence=300)
    assert sum(line.amount_pence for line in lines) == 19700


def test_nominal_plan_flat_fee_and_usage_at_zero() -> None:
    plan = PricePlan("community", vat_rate=VAT, prices=STANDARD, nominal_fee_pence=100)
    lines = rate(plan, USAGE)
    assert amounts(lines) == {"usage:live_seconds": 0, "usage:bytes": 0, "nominal_fee": 100}
    assert "included in the nominal fee" in lines[0].description
    assert lines[0].quantity == "250.5000"
    with pytest.raises(BillingError, match="nominal"):
        PricePlan("x", vat_rate=VAT, nominal_fee_pence=100, platform_fee_pence=1)


def test_zero_rated_lists_everything_at_zero() -> None:
    plan = PricePlan(
        "police",
        prices=STANDARD,
        platform_fee_pence=5000,
        minimum_commitment_pence=99999,
        zero_rated=True,
    )
    lines = rate(plan, USAGE)
    assert amounts(lines) == {"usage:live_seconds": 0, "usage:bytes": 0, "platform_fee": 0}
    assert all("zero-rated" in line.description for line in lines)
    assert plan.vat == 0
    inv = build_invoice("i", "t", "2026-10", "GBP", lines, plan.vat, created_at=T0)
    assert (inv.subtotal_pence, inv.vat_pence, inv.total_pence, inv.vat_rate) == (0, 0, 0, "0")


def test_vat_is_never_assumed() -> None:
    # issue #9 finding 8: a plan that charges names its VAT rate; 0 is a rate, not a default
    with pytest.raises(BillingError, match="vat_rate: required"):
        PricePlan("p", prices=STANDARD)
    assert PricePlan("p", prices=STANDARD, vat_rate=D(0)).vat == 0
    with pytest.raises(BillingError, match="zero-rated plan charges no VAT"):
        PricePlan("p", prices=STANDARD, zero_rated=True, vat_rate=D("0.20"))


def test_contributor_credit_line_is_negative() -> None:
    plan = PricePlan("p", vat_rate=VAT, prices=STANDARD, contributor_share=D("0.1"))
    lines = rate(plan, USAGE, contributor_credit_pence=250)
    assert lines[-1].kind is LineKind.CONTRIBUTOR_CREDIT
    assert lines[-1].amount_pence == -250
    assert "10%" in lines[-1].description
    with pytest.raises(BillingError):
        rate(plan, USAGE, contributor_credit_pence=-1)


# ---------------------------------------------------------------------------------- VAT
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_vat_rounds_half_up_at_invoice_level() -> None:
    assert vat_pence(1003, D("0.20")) == 201  # 200.6
    assert vat_pence(1002, D("0.20")) == 200  # 200.4
    assert vat_pence(60, D("0.175")) == 11  # 10.5 -> 11 (half-even would say 10)
    assert vat_pence(-60, D("0.175")) == -11  # a credit note mirrors its invoice
    assert vat_pence(10, D("0.05")) == 1  # 0.5 -> 1
    # invoice level, not per line: two lines of 0.5p VAT each would round to 2p if rounded
    # per line; on the 5p subtotal the 5 % VAT is 0.25 -> 0p.
    plan = PricePlan("p", prices=(flat_rate(Metric.EXPORTS, "export", "2.5"),), vat_rate=D("0.05"))
    lines = rate(plan, {Metric.EXPORTS: 2})
    inv = build_invoice("i", "t", "2026-10", "GBP", lines, plan.vat, created_at=T0)
    assert (inv.subtotal_pence, inv.vat_pence, inv.total_pence) == (5, 0, 5)
    # 17.5 %: subtotal 60p -> VAT 10.5p -> 11p, rounded once on the subtotal
    lines = rate(
        PricePlan("q", vat_rate=VAT, prices=(flat_rate(Metric.EXPORTS, "export", "30"),)),
        {Metric.EXPORTS: 2},
    )
    inv = build_invoice("i", "t", "2026-10", "GBP", lines, D("0.175"), created_at=T0)
    assert (inv.subtotal_pence, inv.vat_pence, inv.total_pence, inv.vat_rate) == (
        60,
        11,
        71,
        "0.175",
    )


# ------------------------------------------------------------------------ contributor credits
def _event(
    tenant: str, camera: str, owner: str, hours: int, nbytes: int = 0, n: int = 0
) -> UsageEvent:
    start = datetime(2026, 10, 3, 8, tzinfo=UTC) + timedelta(minutes=n)
    sid = f"{tenant}-{camera}-{n}"
    return UsageEvent(
        event_id=UsageEvent.make_id(sid, 0),
        session_id=sid,
        seq=0,
        tenant=tenant,
        principal=None,
        camera=camera,
        camera_owner=owner,
        kind=UsageKind.LIVE,
        protocol="rtsp",
        variant="masked",
        start=start,
        end=start + timedelta(hours=hours),
        duration_ms=hours * HOUR_MS,
        bytes_sent=nbytes,
    )


def test_contributor_credits_from_viewers_effective_rates() -> None:
    db = Database.open("sqlite://:memory:")
    ledger = Ledger(db)
    ledger.record(
        [
            _event("acme", "c1", "council", 150, 2 * GB, n=1),  # others on council's cameras
            _event("acme", "a1", "acme", 50, 0, n=2),  # acme on its own camera
            _event("beta", "c1", "council", 100, 0, n=3),  # a zero-rated viewer
            _event("council", "c1", "council", 70, 0, n=4),  # the owner itself: excluded
        ]
    )
    plans = {
        "std": PricePlan(
            "std",
            vat_rate=VAT,
            prices=(
                live(tiers=(Tier(D(100), D(50)), Tier(None, D(40)))),
                flat_rate(Metric.BYTES, "GB", "10"),
            ),
        ),
        "free": PricePlan("free", prices=STANDARD, zero_rated=True),
        "owner": PricePlan("owner", vat_rate=VAT, prices=STANDARD, contributor_share=D("0.10")),
    }
    assignments = {"acme": "std", "beta": "free", "council": "owner"}
    # acme's month: 200 h -> 100*50 + 100*40 = 9,000p -> 45p/h effective; 150 h on council's
    # cameras -> 6,750p; bytes 2 GB * 10p = 20p (all of acme's bytes were on c1); beta: 0.
    # credit = 10 % of 6,770 = 677.
    assert contributor_credits(ledger, "2026-10", plans, assignments) == {"council": 677}
    assert ledger.contributed("council", "2026-10") == 250 * HOUR_MS
    db.close()


# ------------------------------------------------------------------------------ properties
tier_lists = st.lists(
    st.tuples(
        st.integers(1, 10_000),
        st.decimals("0", "500", places=4),
        st.decimals("0", "5000", places=2),
    ),
    min_size=1,
    max_size=4,
)


def _tiers(raw: list[tuple[int, Decimal, Decimal]]) -> tuple[Tier, ...]:
    bounds = sorted({b for b, _, _ in raw})
    tiers = [Tier(D(b), p, f) for b, (_, p, f) in zip(bounds, raw, strict=False)]
    tiers.append(Tier(None, raw[-1][1], raw[-1][2]))
    return tuple(tiers)


plans = st.builds(
    lambda t1, t2, mode, fee, minimum, zero, share, vat: PricePlan(
        "h",
        prices=(
            MetricPrice(Metric.LIVE_SECONDS, "camera-hour", _tiers(t1), mode),
            MetricPrice(Metric.BYTES, "GB", _tiers(t2), mode),
            flat_rate(Metric.EXPORTS, "export", "123.4567"),
        ),
        platform_fee_pence=fee,
        minimum_commitment_pence=minimum,
        zero_rated=zero,
        contributor_share=share,
        vat_rate=None if zero else vat,
    ),
    tier_lists,
    tier_lists,
    st.sampled_from(TierMode),
    st.integers(0, 100_000),
    st.integers(0, 1_000_000),
    st.booleans(),
    st.decimals("0", "1", places=2),
    st.sampled_from([D("0"), D("0.05"), D("0.175"), D("0.20")]),
)
usages = st.fixed_dictionaries(
    {
        Metric.LIVE_SECONDS: st.integers(0, 10**12),
        Metric.BYTES: st.integers(0, 10**15),
        Metric.EXPORTS: st.integers(0, 10_000),
    }
)


@settings(max_examples=150, deadline=None)
@given(plan=plans, usage=usages, credit=st.integers(0, 10**6))
def test_rating_lines_are_whole_pence_and_add_up(
    plan: PricePlan, usage: dict[Metric, int], credit: int
) -> None:
    lines = rate(plan, usage, contributor_credit_pence=credit)
    assert all(type(line.amount_pence) is int for line in lines)
    assert len({line.line_id for line in lines}) == len(lines)
    inv = build_invoice("i", "t", "2026-10", "GBP", lines, plan.vat, created_at=T0)
    assert inv.subtotal_pence == sum(line.amount_pence for line in lines)
    assert inv.total_pence == inv.subtotal_pence + inv.vat_pence
    before_credit = sum(
        line.amount_pence for line in lines if line.kind is not LineKind.CONTRIBUTOR_CREDIT
    )
    if plan.zero_rated:
        assert inv.total_pence == 0
    else:
        assert before_credit >= plan.minimum_commitment_pence
        assert inv.subtotal_pence == before_credit - credit


@settings(max_examples=200, deadline=None)
@given(raw=tier_lists, a=st.integers(0, 10**13), b=st.integers(0, 10**13))
def test_graduated_tiers_are_monotone(
    raw: list[tuple[int, Decimal, Decimal]], a: int, b: int
) -> None:
    price = MetricPrice(Metric.LIVE_SECONDS, "camera-hour", _tiers(raw), TierMode.GRADUATED)
    lo, hi = sorted((a, b))
    assert exact_charge(price, lo) <= exact_charge(price, hi)
    plan = PricePlan("m", vat_rate=VAT, prices=(price,))
    assert (
        rate(plan, {Metric.LIVE_SECONDS: lo})[0].amount_pence
        <= rate(plan, {Metric.LIVE_SECONDS: hi})[0].amount_pence
    )
