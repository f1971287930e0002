"""Late usage: usage recorded after its month was invoiced, rated as the difference it makes.

A month rated once with the usage billed so far (``before``) and once with the late usage too
(``after``), under the tenant's current plan: each metric's line is the difference in its usage
charge, so graduated tiers are honoured, and a minimum commitment's top-up shrinks (or grows)
by what it no longer (or now) has to make up. The lines go on a later month's invoice as
ADJUSTMENT lines ("Late usage for 2026-10: ...").
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, localcontext

from billing.model import InvoiceLine, LineKind, Metric
from billing.rating.charges import (
    CONTEXT,
    display_quantity,
    format_quantity,
    rate,
    whole_pence_text,
)
from billing.rating.plans import PricePlan

__all__ = ["late_usage_lines"]

_Q4 = Decimal("0.0001")

_LABELS = {
    Metric.LIVE_SECONDS: "live viewing",
    Metric.PLAYBACK_SECONDS: "recorded playback",
    Metric.PTZ_SECONDS: "PTZ camera control",
    Metric.BYTES: "video data delivered",
    Metric.EXPORTS: "clip exports",
}


def late_usage_lines(
    plan: PricePlan, month: str, before: Mapping[Metric, int], after: Mapping[Metric, int]
) -> list[InvoiceLine]:
    """ADJUSTMENT lines for `month`'s usage growing from `before` to `after` (base units)."""
    if before == after:
        return []
    old = {line.line_id: line.amount_pence for line in rate(plan, before)}
    new = {line.line_id: line.amount_pence for line in rate(plan, after)}
    lines: list[InvoiceLine] = []
    for price in plan.prices:
        m = price.metric
        late = after.get(m, 0) - before.get(m, 0)
        key = f"usage:{m.value}"
        delta = new.get(key, 0) - old.get(key, 0)
        if late == 0 and delta == 0:
            continue
        qty = display_quantity(late, price.unit)
        with localcontext(CONTEXT):
            unit_price = (Decimal(delta) / qty).quantize(_Q4, ROUND_HALF_UP) if qty else Decimal(0)
        lines.append(
            InvoiceLine(
                line_id=f"adjustment:{month}:{m.value}",
                kind=LineKind.ADJUSTMENT,
                description=(
                    f"Late usage for {month}: {_LABELS[m]},"
                    f" {format_quantity(late, price.unit)} recorded after that month's invoice"
                ),
                metric=m,
                quantity=str(qty),
                unit=price.unit,
                unit_price=str(unit_price),
                amount_pence=delta,
            )
        )
    top_delta = new.get("minimum_top_up", 0) - old.get("minimum_top_up", 0)
    if top_delta:
        lines.append(
            InvoiceLine(
                line_id=f"adjustment:{month}:minimum_top_up",
                kind=LineKind.ADJUSTMENT,
                description=(
                    f"Late usage for {month}: minimum commitment top-up"
                    f" {'reduced' if top_delta < 0 else 'increased'} accordingly"
                ),
                metric=None,
                quantity="1",
                unit="month",
                unit_price=whole_pence_text(top_delta),
                amount_pence=top_delta,
            )
        )
    return lines
