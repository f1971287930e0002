"""Price plans and rating: usage in base units -> invoice lines in whole pence.

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

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from billing import money
from billing.model import BillingError, InvoiceLine, LineKind, Metric, check_currency
from billing.money import UNIT_SIZES

if TYPE_CHECKING:
    from billing.ledger import Ledger

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
    "exact_charge",
    "format_quantity",
    "load_plans",
    "plan_assignments",
    "rate",
    "vat_pence",
]

ROUNDING = ROUND_HALF_UP
_CTX = Context(prec=60, rounding=ROUND_HALF_UP)
_PENNY = Decimal(1)
_Q4 = Decimal("0.0001")
_Q2 = Decimal("0.01")

_TIME = frozenset({Metric.LIVE_SECONDS, Metric.PLAYBACK_SECONDS, Metric.PTZ_SECONDS})


@dataclass(frozen=True)
class _Unit:
    size: int  # base units per display unit
    plural: str
    metrics: frozenset[Metric]
    places: int  # decimal places in descriptions


#: Display units: how many base units (ms, bytes, exports) make one, and what they may price.
UNITS: dict[str, _Unit] = {
    "camera-hour": _Unit(UNIT_SIZES["camera-hour"], "camera-hours", _TIME, 2),
    "hour": _Unit(UNIT_SIZES["hour"], "hours", _TIME, 2),
    "minute": _Unit(UNIT_SIZES["minute"], "minutes", _TIME, 2),
    "second": _Unit(UNIT_SIZES["second"], "seconds", _TIME, 2),
    "GB": _Unit(UNIT_SIZES["GB"], "GB", frozenset({Metric.BYTES}), 2),  # 10**9 bytes
    "MB": _Unit(UNIT_SIZES["MB"], "MB", frozenset({Metric.BYTES}), 2),  # 10**6 bytes
    "export": _Unit(UNIT_SIZES["export"], "exports", frozenset({Metric.EXPORTS}), 0),
}

_LABELS: dict[Metric, str] = {
    Metric.LIVE_SECONDS: "Live viewing",
    Metric.PLAYBACK_SECONDS: "Recorded playback",
    Metric.PTZ_SECONDS: "PTZ camera control",
    Metric.BYTES: "Video data delivered",
    Metric.EXPORTS: "Clip exports",
    Metric.CONTRIBUTED_SECONDS: "Viewing of your cameras by others",
}

_VIEWING = (Metric.LIVE_SECONDS, Metric.PLAYBACK_SECONDS, Metric.BYTES)


class PlanError(BillingError):
    """A price-plan file is wrong: names the file, the key and the reason."""

    def __init__(self, path: str | Path, key: str, reason: str) -> None:
        self.path, self.key, self.reason = str(path), key, reason
        super().__init__(f"{path}: {key}: {reason}")


class TierMode(StrEnum):
    GRADUATED = "graduated"
    VOLUME = "volume"


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # inclusive, in the display unit; None = infinity
    unit_price_pence: Decimal
    flat_pence: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for name in ("up_to", "unit_price_pence", "flat_pence"):
            value = getattr(self, name)
            if value is None and name == "up_to":
                continue
            if isinstance(value, bool) or not isinstance(value, Decimal | int):
                raise BillingError(f"tier {name}: expected a Decimal, got {value!r}")
            value = Decimal(value)
            if not value.is_finite():
                raise BillingError(f"tier {name}: must be a finite number")
            object.__setattr__(self, name, value)
        if self.up_to is not None and self.up_to <= 0:
            raise BillingError(f"tier up_to {self.up_to}: must be positive")
        if self.unit_price_pence < 0 or self.flat_pence < 0:
            raise BillingError("tier prices must not be negative")


@dataclass(frozen=True)
class MetricPrice:
    metric: Metric
    unit: str
    tiers: tuple[Tier, ...]
    mode: TierMode = TierMode.GRADUATED

    def __post_init__(self) -> None:
        unit = UNITS.get(self.unit)
        if unit is None:
            raise BillingError(f"unit {self.unit!r}: expected one of {', '.join(UNITS)}")
        if self.metric not in unit.metrics:
            raise BillingError(f"unit {self.unit!r} cannot price {self.metric.value}")
        if not self.tiers:
            raise BillingError(f"{self.metric.value}: at least one tier is needed")
        previous: Decimal | None = Decimal(0)
        for i, tier in enumerate(self.tiers):
            last = i == len(self.tiers) - 1
            if tier.up_to is None and not last:
                raise BillingError(f"{self.metric.value}: only the last tier may be unbounded")
            if tier.up_to is not None and last:
                raise BillingError(f"{self.metric.value}: the last tier must be unbounded")
            if tier.up_to is not None and previous is not None and tier.up_to <= previous:
                raise BillingError(
                    f"{self.metric.value}: tier {i + 1} up_to must exceed the tier before"
                )
            previous = tier.up_to

    @property
    def size(self) -> int:
        return UNITS[self.unit].size


@dataclass(frozen=True)
class PricePlan:
    id: str
    currency: str = "GBP"
    prices: tuple[MetricPrice, ...] = ()
    platform_fee_pence: int = 0
    minimum_commitment_pence: int = 0
    nominal_fee_pence: int | None = None
    zero_rated: bool = False
    contributor_share: Decimal = field(default=Decimal(0))
    vat_rate: Decimal = field(default=Decimal("0.20"))

    def __post_init__(self) -> None:
        check_currency(self.currency)
        metrics = [p.metric for p in self.prices]
        if len(set(metrics)) != len(metrics):
            raise BillingError(f"plan {self.id}: a metric is priced twice")
        for name in ("platform_fee_pence", "minimum_commitment_pence", "nominal_fee_pence"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BillingError(f"plan {self.id}: {name} must be whole pence >= 0")
        if self.nominal_fee_pence is not None and (
            self.platform_fee_pence or self.minimum_commitment_pence
        ):
            raise BillingError(
                f"plan {self.id}: a nominal-cost plan has no platform fee or minimum commitment"
            )
        for name in ("contributor_share", "vat_rate"):
            value = Decimal(getattr(self, name))
            if not value.is_finite() or not 0 <= value <= 1:
                raise BillingError(f"plan {self.id}: {name} must be between 0 and 1")
            object.__setattr__(self, name, value)

    def price_for(self, metric: Metric) -> MetricPrice | None:
        for p in self.prices:
            if p.metric == metric:
                return p
        return None


# --------------------------------------------------------------------------------- arithmetic
def exact_charge(price: MetricPrice, base: int) -> Decimal:
    """The unrounded charge in pence for ``base`` units (ms, bytes, exports) under ``price``."""
    if base < 0:
        raise BillingError(f"{price.metric.value}: negative usage {base}")
    if base == 0:
        return Decimal(0)
    size = price.size
    with localcontext(_CTX):
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


def _round(amount: Decimal) -> int:
    with localcontext(_CTX):
        return int(amount.quantize(_PENNY, rounding=ROUND_HALF_UP))


def vat_pence(subtotal_pence: int, vat_rate: Decimal) -> int:
    """VAT on an invoice subtotal, rounded once to whole pence, half-up (away from zero on a
    half penny, so a credit note's VAT mirrors its invoice's)."""
    with localcontext(_CTX):
        return _round(Decimal(subtotal_pence) * Decimal(vat_rate))


def display_quantity(base: int, unit: str) -> Decimal:
    """``base`` units in the display unit, 4 decimal places (for reading only)."""
    with localcontext(_CTX):
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
        with localcontext(_CTX):
            unit_price = exact * price.size / base if base else price.tiers[0].unit_price_pence
    return InvoiceLine(
        line_id=f"usage:{price.metric.value}",
        kind=LineKind.USAGE,
        description=f"{label}: {quantity} {how}",
        metric=price.metric,
        quantity=str(display_quantity(base, price.unit)),
        unit=price.unit,
        unit_price=str(Decimal(unit_price).quantize(_Q4, rounding=ROUND_HALF_UP)),
        amount_pence=_round(exact),
    )


def _flat_line(line_id: str, kind: LineKind, description: str, amount: int) -> InvoiceLine:
    return InvoiceLine(
        line_id=line_id,
        kind=kind,
        description=description,
        metric=None,
        quantity="1",
        unit="month",
        unit_price=str(Decimal(amount).quantize(_Q4)),
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


# ------------------------------------------------------------------------ contributor credits
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
        with localcontext(_CTX):
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
        with localcontext(_CTX):
            charges = Decimal(0)
            viewing = ledger.viewing_of(owner, period, recorded_until=recorded_until)
            for (viewer, _camera), usage in viewing.items():
                r = viewer_rates(viewer)
                for m in _VIEWING:
                    charges += usage[m] * r[m]
            credit = _round(charges * plan.contributor_share)
        if credit > 0:
            credits[owner] = credit
    return credits


# ---------------------------------------------------------------------------------- TOML
_PLAN_KEYS = {
    "currency",
    "prices",
    "platform_fee_pence",
    "minimum_commitment_pence",
    "nominal_fee_pence",
    "zero_rated",
    "contributor_share",
    "vat_rate",
}
_PRICE_KEYS = {"metric", "unit", "mode", "tiers"}
_TIER_KEYS = {"up_to", "unit_price_pence", "flat_pence"}


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise PlanError(path, "(file)", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(path, "(syntax)", str(exc)) from None


def _decimal(path: str | Path, key: str, value: Any) -> Decimal:
    if isinstance(value, bool):
        raise PlanError(path, key, f"expected a number, got {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # repr() is the shortest text that round-trips: the digits that were written.
        value = repr(value)
    if isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except ArithmeticError:
            raise PlanError(path, key, f"not a number: {value!r}") from None
        if d.is_finite():
            return d
    raise PlanError(path, key, f"expected a finite number, got {value!r}")


def _int(path: str | Path, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(path, key, f"expected whole pence (an integer), got {value!r}")
    if value < 0:
        raise PlanError(path, key, "must not be negative")
    return value


def _unknown(path: str | Path, key: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise PlanError(
            path, f"{key}.{extra[0]}", f"unknown key (expected one of {', '.join(sorted(allowed))})"
        )


def _tier(path: str | Path, key: str, raw: Any) -> Tier:
    if not isinstance(raw, dict):
        raise PlanError(path, key, "expected a table {up_to = ..., unit_price_pence = ...}")
    _unknown(path, key, raw, _TIER_KEYS)
    if "unit_price_pence" not in raw:
        raise PlanError(path, f"{key}.unit_price_pence", "missing")
    up_raw = raw.get("up_to")
    up_to = None
    if up_raw is not None and not (isinstance(up_raw, str) and up_raw.strip().lower() == "inf"):
        up_to = _decimal(path, f"{key}.up_to", up_raw)
    try:
        return Tier(
            up_to=up_to,
            unit_price_pence=_decimal(path, f"{key}.unit_price_pence", raw["unit_price_pence"]),
            flat_pence=_decimal(path, f"{key}.flat_pence", raw.get("flat_pence", 0)),
        )
    except PlanError:
        raise
    except BillingError as exc:
        raise PlanError(path, key, str(exc)) from None


def _price(path: str | Path, key: str, raw: Any) -> MetricPrice:
    if not isinstance(raw, dict):
        raise PlanError(path, key, "expected a table with metric, unit, mode, tiers")
    _unknown(path, key, raw, _PRICE_KEYS)
    for required in ("metric", "unit", "tiers"):
        if required not in raw:
            raise PlanError(path, f"{key}.{required}", "missing")
    try:
        metric = Metric(raw["metric"])
    except ValueError:
        raise PlanError(
            path,
            f"{key}.metric",
            f"unknown metric {raw['metric']!r}: expected one of "
            + ", ".join(m.value for m in Metric if m is not Metric.CONTRIBUTED_SECONDS),
        ) from None
    try:
        mode = TierMode(raw.get("mode", "graduated"))
    except ValueError:
        raise PlanError(path, f"{key}.mode", "expected 'graduated' or 'volume'") from None
    tiers_raw = raw["tiers"]
    if not isinstance(tiers_raw, list):
        raise PlanError(path, f"{key}.tiers", "expected an array of tier tables")
    tiers = tuple(_tier(path, f"{key}.tiers[{i}]", t) for i, t in enumerate(tiers_raw))
    try:
        return MetricPrice(metric=metric, unit=str(raw["unit"]), tiers=tiers, mode=mode)
    except BillingError as exc:
        raise PlanError(path, key, str(exc)) from None


def load_plans(path: str | Path) -> dict[str, PricePlan]:
    """``[plans.<id>]`` tables from a TOML file; see ``ops/config`` for an example::

        [plans.standard]
        platform_fee_pence = 5000
        vat_rate = "0.20"
        [[plans.standard.prices]]
        metric = "live_seconds"
        unit = "camera-hour"
        mode = "graduated"
        tiers = [{ up_to = 1000, unit_price_pence = "45" }, { unit_price_pence = "30" }]

    Every error names the file, the key (``plans.standard.prices[0].tiers[1].up_to``) and why.
    """
    doc = _read_toml(path)
    raw_plans = doc.get("plans")
    if not isinstance(raw_plans, dict) or not raw_plans:
        raise PlanError(path, "plans", "expected at least one [plans.<id>] table")
    plans: dict[str, PricePlan] = {}
    for plan_id, raw in raw_plans.items():
        key = f"plans.{plan_id}"
        if not isinstance(raw, dict):
            raise PlanError(path, key, "expected a table")
        _unknown(path, key, raw, _PLAN_KEYS)
        prices_raw = raw.get("prices", [])
        if not isinstance(prices_raw, list):
            raise PlanError(path, f"{key}.prices", "expected an array of [[...prices]] tables")
        prices = tuple(_price(path, f"{key}.prices[{i}]", p) for i, p in enumerate(prices_raw))
        zero_rated = raw.get("zero_rated", False)
        if not isinstance(zero_rated, bool):
            raise PlanError(path, f"{key}.zero_rated", "expected true or false")
        currency = raw.get("currency", "GBP")
        nominal = raw.get("nominal_fee_pence")
        try:
            plans[plan_id] = PricePlan(
                id=plan_id,
                currency=str(currency),
                prices=prices,
                platform_fee_pence=_int(
                    path, f"{key}.platform_fee_pence", raw.get("platform_fee_pence", 0)
                ),
                minimum_commitment_pence=_int(
                    path,
                    f"{key}.minimum_commitment_pence",
                    raw.get("minimum_commitment_pence", 0),
                ),
                nominal_fee_pence=(
                    None if nominal is None else _int(path, f"{key}.nominal_fee_pence", nominal)
                ),
                zero_rated=zero_rated,
                contributor_share=_decimal(
                    path, f"{key}.contributor_share", raw.get("contributor_share", 0)
                ),
                vat_rate=_decimal(path, f"{key}.vat_rate", raw.get("vat_rate", "0.20")),
            )
        except PlanError:
            raise
        except BillingError as exc:
            raise PlanError(path, key, str(exc)) from None
    return plans


def plan_assignments(
    path: str | Path, plans: Mapping[str, PricePlan] | None = None
) -> dict[str, str]:
    """``[assignments]`` (``tenant = "plan-id"``) from the same kind of file; every plan id is
    checked against ``plans`` (by default, the file's own ``[plans]``)."""
    doc = _read_toml(path)
    known = plans if plans is not None else load_plans(path)
    raw = doc.get("assignments", {})
    if not isinstance(raw, dict):
        raise PlanError(path, "assignments", 'expected a table of tenant = "plan-id"')
    out: dict[str, str] = {}
    for tenant, plan_id in raw.items():
        key = f"assignments.{tenant}"
        if not isinstance(plan_id, str):
            raise PlanError(path, key, f"expected a plan id (text), got {plan_id!r}")
        if plan_id not in known:
            raise PlanError(
                path, key, f"unknown plan {plan_id!r} (known: {', '.join(sorted(known))})"
            )
        out[tenant] = plan_id
    return out
