"""The arithmetic of rating and the invoice lines it writes (see :mod:`billing.rating`).

``Decimal`` only, in a private context with 60 significant digits, and exactly one rounding per
line: ``ROUND_HALF_UP`` to whole pence (:data:`ROUNDING`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

from billing import money
from billing.model import BillingError, InvoiceLine, LineKind, Metric
from billing.rating.plans import UNITS, MetricPrice, PricePlan, TierMode

__all__ = [
    "CONTEXT",
    "ROUNDING",
    "display_quantity",
    "exact_charge",
    "format_quantity",
    "rate",
    "round_pence",
    "usage_lines",
    "vat_pence",
    "whole_pence_text",
]

ROUNDING = ROUND_HALF_UP
CONTEXT = Context(prec=60, rounding=ROUND_HALF_UP)
_PENNY = Decimal(1)
_Q4 = Decimal("0.0001")
_Q2 = Decimal("0.01")

_LABELS: dict[Metric, str] = {
    Metric.LIVE_SECONDS: "Live viewing",
    Metric.PLAYBACK_SECONDS: "Recorded playback",
    Metric.PTZ_SECONDS: "PTZ camera control",
    Metric.BYTES: "Video data delivered",
    Metric.EXPORTS: "Clip exports",
    Metric.CONTRIBUTED_SECONDS: "Viewing of your cameras by others",
}


def exact_charge(price: MetricPrice, base: int) -> Decimal:
    """The unrounded charge in pence for ``base`` units (ms, bytes, exports) under ``price``."""
    if base < 0:
        raise BillingError(f"{price.metric.value}: negative usage {base}")
    if base == 0:
        return Decimal(0)
    size = price.size
    with localcontext(CONTEXT):
        q = Decimal(base)
        numerator = Decimal(0)
        if price.mode is TierMode.VOLUME:
            for tier in price.tiers:
                if tier.up_to is None or q <= tier.up_to * size:
                    numerator = q * tier.unit_price_pence + tier.flat_pence * size
                    break
        else:
            lower = Decimal(0)
            for tier in price.tiers:
                if q <= lower:
                    break
                upper = None if tier.up_to is None else tier.up_to * size
                top = q if upper is None else min(q, upper)
                numerator += (top - lower) * tier.unit_price_pence + tier.flat_pence * size
                if upper is None:
                    break
                lower = upper
        return numerator / size


def round_pence(amount: Decimal) -> int:
    with localcontext(CONTEXT):
        return int(amount.quantize(_PENNY, rounding=ROUND_HALF_UP))


def whole_pence_text(pence: int) -> str:
    """A whole number of pence as a line's unit price text: ``-500.0000``."""
    return str(Decimal(pence).quantize(_Q4))


def vat_pence(subtotal_pence: int, vat_rate: Decimal | str) -> int:
    """VAT on an invoice subtotal, rounded once to whole pence, half-up (away from zero on a
    half penny, so a credit note's VAT mirrors its invoice's)."""
    with localcontext(CONTEXT):
        return round_pence(Decimal(subtotal_pence) * Decimal(vat_rate))


def display_quantity(base: int, unit: str) -> Decimal:
    """``base`` units in the display unit, 4 decimal places (for reading only)."""
    with localcontext(CONTEXT):
        return (Decimal(base) / UNITS[unit].size).quantize(_Q4, rounding=ROUND_HALF_UP)


def format_quantity(base: int, unit: str) -> str:
    u = UNITS[unit]
    return f"{money.format_quantity(base, u.size, u.places)} {u.plural}"


def _fmt_price(pence: Decimal) -> str:
    if pence == pence.quantize(_Q2):
        return f"{pence:,.2f}p"
    return f"{pence.normalize():,f}p"


def _per(unit: str) -> str:
    return "each" if unit == "export" else f"per {unit}"


def _usage_line(plan: PricePlan, price: MetricPrice, base: int) -> InvoiceLine:
    label = _LABELS[price.metric]
    quantity = format_quantity(base, price.unit)
    exact = exact_charge(price, base)
    if plan.zero_rated or plan.nominal_fee_pence is not None:
        why = "zero-rated: no charge" if plan.zero_rated else "included in the nominal fee"
        return InvoiceLine(
            line_id=f"usage:{price.metric.value}",
            kind=LineKind.USAGE,
            description=f"{label}: {quantity} ({why})",
            metric=price.metric,
            quantity=str(display_quantity(base, price.unit)),
            unit=price.unit,
            unit_price=str(Decimal(0).quantize(_Q4)),
            amount_pence=0,
        )
    single = len(price.tiers) == 1 and price.tiers[0].flat_pence == 0
    if single:
        unit_price = price.tiers[0].unit_price_pence
        how = f"at {_fmt_price(unit_price)} {_per(price.unit)}"
    elif price.mode is TierMode.VOLUME:
        tier = next(
            t for t in price.tiers if t.up_to is None or Decimal(base) <= t.up_to * price.size
        )
        unit_price = tier.unit_price_pence
        how = f"at the volume-tier rate of {_fmt_price(unit_price)} {_per(price.unit)}"
        if tier.flat_pence and base:
            how += f" plus {_fmt_price(tier.flat_pence)} tier fee"
    else:
        how = "at tiered rates"
        with localcontext(CONTEXT):
            unit_price = exact * price.size / base if base else price.tiers[0].unit_price_pence
    return InvoiceLine(
        line_id=f"usage:{price.metric.value}",
        kind=LineKind.USAGE,
        description=f"{label}: {quantity} {how}",
        metric=price.metric,
        quantity=str(display_quantity(base, price.unit)),
        unit=price.unit,
        unit_price=str(Decimal(unit_price).quantize(_Q4, rounding=ROUND_HALF_UP)),
        amount_pence=round_pence(exact),
    )


def _flat_line(line_id: str, kind: LineKind, description: str, amount: int) -> InvoiceLine:
    return InvoiceLine(
        line_id=line_id,
        kind=kind,
        description=description,
        metric=None,
        quantity="1",
        unit="month",
        unit_price=whole_pence_text(amount),
        amount_pence=amount,
    )


def usage_lines(plan: PricePlan, usage: Mapping[Metric, int]) -> list[InvoiceLine]:
    """Just the USAGE lines (one per priced metric, plan order)."""
    return [_usage_line(plan, p, int(usage.get(p.metric, 0))) for p in plan.prices]


def rate(
    plan: PricePlan, usage: Mapping[Metric, int], *, contributor_credit_pence: int = 0
) -> list[InvoiceLine]:
    """A month's invoice lines for ``usage`` (base units: ms, bytes, exports)."""
    if contributor_credit_pence < 0:
        raise BillingError("contributor_credit_pence is a credit: give it as a positive amount")
    lines = usage_lines(plan, usage)
    zero = plan.zero_rated
    if plan.nominal_fee_pence is not None:
        fee = 0 if zero else plan.nominal_fee_pence
        lines.append(
            _flat_line(
                "nominal_fee",
                LineKind.PLATFORM_FEE,
                "Nominal-cost agreement: flat monthly fee"
                + (" (zero-rated: no charge)" if zero else ""),
                fee,
            )
        )
    elif plan.platform_fee_pence:
        fee = 0 if zero else plan.platform_fee_pence
        lines.append(
            _flat_line(
                "platform_fee",
                LineKind.PLATFORM_FEE,
                "Platform fee (monthly)" + (" (zero-rated: no charge)" if zero else ""),
                fee,
            )
        )
    subtotal = sum(line.amount_pence for line in lines)
    if not zero and subtotal < plan.minimum_commitment_pence:
        minimum = plan.minimum_commitment_pence
        shown = money.format_money(minimum, plan.currency)
        lines.append(
            _flat_line(
                "minimum_top_up",
                LineKind.MINIMUM_TOP_UP,
                f"Minimum monthly commitment of {shown}: top-up",
                minimum - subtotal,
            )
        )
    if contributor_credit_pence:
        share = f"{(plan.contributor_share * 100).normalize():f}%"
        credit = 0 if zero else -contributor_credit_pence
        lines.append(
            _flat_line(
                "contributor_credit",
                LineKind.CONTRIBUTOR_CREDIT,
                f"Contributor credit: {share} of other partners' charges for viewing your cameras"
                + (" (zero-rated: no charge)" if zero else ""),
                credit,
            )
        )
    return lines
