"""Price plans and rating: usage in base units -> invoice lines in whole pence.

- :mod:`~billing.rating.plans`: plans, prices, tiers and units (the values);
- :mod:`~billing.rating.planfile`: plan files (TOML, declared with pydantic);
- :mod:`~billing.rating.charges`: the arithmetic and the invoice lines;
- :mod:`~billing.rating.credits`: contributor credits;
- :mod:`~billing.rating.adjustments`: late usage, rated on a later month's invoice.

``Decimal`` lives only in this package.

Arithmetic
----------
``Decimal`` only, in a private context with 60 significant digits (so nothing is lost before
the one rounding), and exactly one rounding per line: ``ROUND_HALF_UP`` to whole pence
(:data:`ROUNDING`). Usage arrives from the ledger as integers in base units (milliseconds,
bytes, exports). Tier boundaries are written in the *display* unit (camera-hours, GB, ...) and
are converted to base units by multiplying by the unit's size (exact), so a line's amount is

    amount = round_half_up( (Σ_tier portion_base * unit_price  +  Σ_entered_tier flat * size)
                            / size )

with a single division. Display quantities (``InvoiceLine.quantity``) are ``base / size`` at
4 decimal places, for reading only; they never feed back into an amount.

Tiers
-----
``up_to`` is inclusive, in the display unit; the last tier has ``up_to=None`` (infinity).

- GRADUATED: each tier prices the part of the quantity that falls inside it; a tier's
  ``flat_pence`` is charged once if the quantity *enters* the tier (is above its lower bound).
  Zero usage costs nothing. The charge is non-decreasing in the quantity.
- VOLUME: the whole quantity is priced at the tier it falls in (quantity <= up_to), plus that
  tier's ``flat_pence``. Zero usage costs nothing. (Volume pricing can fall at a boundary.)

Plan-level rules, applied in this order by :func:`rate`:

1. one USAGE line per priced metric (in the plan's order), listed even at zero usage;
2. PLATFORM_FEE ``platform_fee`` (if > 0), or for a nominal-cost plan the ``nominal_fee`` line
   (usage lines then show their quantities at £0);
3. MINIMUM_TOP_UP when usage + fees are below ``minimum_commitment_pence``;
4. CONTRIBUTOR_CREDIT (negative) when a credit is given. It is not capped: a contributor whose
   credit exceeds its charges gets a negative (credit) invoice.

A zero-rated plan lists every line at £0 (no top-up, no credit). VAT is not a line: it is
computed on the invoice subtotal by :func:`vat_pence`, rounded once, half-up.

Contributor credits (:func:`contributor_credits`)
------------------------------------------------
For a camera owner whose plan has ``contributor_share > 0``: for every other tenant V that
used the owner's cameras in the month, and each viewing metric m in (live, playback, bytes)::

    effective_rate(V, m) = exact usage charge of V's plan for V's whole month of m
                           / V's whole month of m                (pence per base unit)
    charge(V, m, camera) = V's usage of m on that camera * effective_rate(V, m)

``credit = round_half_up(share * Σ_V,m,camera charge)`` — one rounding per owner. The effective
rate is V's *average* price (its tiers over its whole month), so the credit does not depend on
the order in which cameras were viewed; zero-rated and nominal-cost viewers contribute nothing
(they were not charged for usage); platform fees and minimum top-ups are not usage charges.
"""

from billing.rating.adjustments import late_usage_lines
from billing.rating.charges import (
    ROUNDING,
    display_quantity,
    exact_charge,
    format_quantity,
    rate,
    usage_lines,
    vat_pence,
    whole_pence_text,
)
from billing.rating.credits import contributor_credits, effective_rates
from billing.rating.planfile import PlanError, load_plans, plan_assignments
from billing.rating.plans import UNITS, MetricPrice, PricePlan, Tier, TierMode

__all__ = [
    "ROUNDING",
    "UNITS",
    "MetricPrice",
    "PlanError",
    "PricePlan",
    "Tier",
    "TierMode",
    "contributor_credits",
    "display_quantity",
    "effective_rates",
    "exact_charge",
    "format_quantity",
    "late_usage_lines",
    "load_plans",
    "plan_assignments",
    "rate",
    "usage_lines",
    "vat_pence",
    "whole_pence_text",
]
