"""Contributor credits: a camera owner whose plan shares revenue earns a share of what other
partners paid to view its cameras (see :mod:`billing.rating` for the method)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING

from billing.model import Metric
from billing.rating.charges import CONTEXT, exact_charge, round_pence
from billing.rating.plans import PricePlan

if TYPE_CHECKING:
    from billing.ledger import Ledger

__all__ = ["contributor_credits", "effective_rates"]

_VIEWING = (Metric.LIVE_SECONDS, Metric.PLAYBACK_SECONDS, Metric.BYTES)


def effective_rates(plan: PricePlan, usage: Mapping[Metric, int]) -> dict[Metric, Decimal]:
    """Pence per base unit the plan actually charged for each viewing metric this month (its
    average over the tiers); 0 for unpriced metrics, zero usage, and nominal/zero-rated plans."""
    out: dict[Metric, Decimal] = {}
    for m in _VIEWING:
        price = plan.price_for(m)
        base = int(usage.get(m, 0))
        if price is None or base == 0 or plan.zero_rated or plan.nominal_fee_pence is not None:
            out[m] = Decimal(0)
            continue
        with localcontext(CONTEXT):
            out[m] = exact_charge(price, base) / base
    return out


def contributor_credits(
    ledger: Ledger,
    period: str,
    plans: Mapping[str, PricePlan],
    assignments: Mapping[str, str],
    *,
    recorded_until: datetime | None = None,
) -> dict[str, int]:
    """``owner -> credit in pence`` (positive) for owners whose plan shares revenue; owners
    with a zero credit are left out. See the module docstring for the method."""
    rates: dict[str, dict[Metric, Decimal]] = {}

    def viewer_rates(viewer: str) -> dict[Metric, Decimal]:
        if viewer not in rates:
            plan_id = assignments.get(viewer)
            if plan_id is None or plan_id not in plans:
                rates[viewer] = dict.fromkeys(_VIEWING, Decimal(0))
            else:
                usage = ledger.usage(viewer, period, recorded_until=recorded_until)
                rates[viewer] = effective_rates(plans[plan_id], usage)
        return rates[viewer]

    credits: dict[str, int] = {}
    for owner in sorted(assignments):
        plan = plans.get(assignments[owner])
        if plan is None or plan.contributor_share <= 0:
            continue
        with localcontext(CONTEXT):
            charges = Decimal(0)
            viewing = ledger.viewing_of(owner, period, recorded_until=recorded_until)
            for (viewer, _camera), usage in viewing.items():
                r = viewer_rates(viewer)
                for m in _VIEWING:
                    charges += usage[m] * r[m]
            credit = round_pence(charges * plan.contributor_share)
        if credit > 0:
            credits[owner] = credit
    return credits
