"""Price-plan files (TOML), declared with pydantic; see ``ops/config/demo-plans.toml``::

    vat_rate = "0.20"            # every plan's VAT rate, unless a plan gives its own

    [plans.standard]
    platform_fee_pence = 5000
    [[plans.standard.prices]]
    metric = "live_seconds"
    unit = "camera-hour"         # or hour, minute, second; GB (10**9 bytes), MB (10**6 bytes)
    mode = "graduated"           # or volume
    tiers = [{ up_to = 1000, unit_price_pence = "45" }, { unit_price_pence = "30" }]

    [plans.council-own]
    zero_rated = true            # no charge, and no VAT

    [assignments]
    met-police = "standard"

VAT is never assumed: a plan that charges needs ``vat_rate``, its own or the file's. A zero-rated
plan has none. Every error names the file, the key (``plans.standard.prices[0].tiers[1].up_to``)
and the reason.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

from billing.model import BillingError, Metric
from billing.rating.plans import UNITS, MetricPrice, PlanValueError, PricePlan, Tier, TierMode
from tenants.loader import FileError, read_toml, validate

__all__ = ["PlanError", "PlanFile", "load_plans", "plan_assignments"]


class PlanError(FileError, BillingError):
    """A price-plan file is wrong: ``"{file}: {key}: {reason}"``."""

    @property
    def path(self) -> str:
        return self.file


def _decimal(value: Any) -> Any:
    """Numbers as written: a TOML float by its shortest round-tripping text (``0.2``, not
    0.2000000000000000111), text as a decimal number."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    return value


def _unbounded(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() == "inf" else value


def _unit(value: str) -> str:
    if value not in UNITS:
        raise ValueError(f"must be one of {', '.join(UNITS)}, got {value!r}")
    return value


Price = Annotated[Decimal, BeforeValidator(_decimal), Field(ge=0, allow_inf_nan=False)]
Bound = Annotated[Decimal, BeforeValidator(_decimal), Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[Decimal, BeforeValidator(_decimal), Field(ge=0, le=1, allow_inf_nan=False)]
Pence = Annotated[StrictInt, Field(ge=0, description="whole pence")]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierEntry(_Table):
    up_to: Annotated[Bound | None, BeforeValidator(_unbounded)] = None  # inclusive; "inf"
    unit_price_pence: Price
    flat_pence: Price = Decimal(0)


class PriceEntry(_Table):
    metric: Metric
    unit: Annotated[
        StrictStr,
        AfterValidator(_unit),
        Field(description=f"one of {', '.join(UNITS)}; MB and GB are 10**6 and 10**9 bytes"),
    ]
    mode: TierMode = TierMode.GRADUATED
    tiers: list[TierEntry]


class PlanEntry(_Table):
    currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")] = "GBP"
    prices: list[PriceEntry] = []
    platform_fee_pence: Pence = 0
    minimum_commitment_pence: Pence = 0
    nominal_fee_pence: Pence | None = None
    zero_rated: StrictBool = False
    contributor_share: Fraction = Decimal(0)
    vat_rate: Fraction | None = None


class PlanFile(_Table):
    vat_rate: Fraction | None = None  # the default for every plan that charges
    plans: dict[str, PlanEntry] = {}
    assignments: dict[str, StrictStr] = {}


def _read(path: str | Path) -> PlanFile:
    file = str(path)
    doc = validate(PlanFile, read_toml(path, PlanError), file, PlanError)
    if not doc.plans:
        raise PlanError(file, "plans", "expected at least one [plans.<id>] table")
    return doc


def _plan(file: str, plan_id: str, entry: PlanEntry, default_vat: Decimal | None) -> PricePlan:
    key = f"plans.{plan_id}"
    vat = entry.vat_rate
    if vat is None and not entry.zero_rated:
        if default_vat is None:
            raise PlanError(
                file,
                f"{key}.vat_rate",
                "required: the plan's VAT rate, or one vat_rate for every plan at the top of"
                ' the file (e.g. vat_rate = "0.20"; "0" for none)',
            )
        vat = default_vat
    at = f"{key}.prices"
    try:
        prices = []
        for i, p in enumerate(entry.prices):
            at = f"{key}.prices[{i}]"
            tiers = []
            for j, t in enumerate(p.tiers):
                at = f"{key}.prices[{i}].tiers[{j}]"
                tiers.append(Tier(t.up_to, t.unit_price_pence, t.flat_pence))
            at = f"{key}.prices[{i}]"
            prices.append(MetricPrice(p.metric, p.unit, tuple(tiers), p.mode))
        at = key
        return PricePlan(
            id=plan_id,
            currency=entry.currency,
            prices=tuple(prices),
            platform_fee_pence=entry.platform_fee_pence,
            minimum_commitment_pence=entry.minimum_commitment_pence,
            nominal_fee_pence=entry.nominal_fee_pence,
            zero_rated=entry.zero_rated,
            contributor_share=entry.contributor_share,
            vat_rate=vat,
        )
    except PlanValueError as exc:
        raise PlanError(file, f"{at}.{exc.key}", exc.reason) from None


def load_plans(path: str | Path) -> dict[str, PricePlan]:
    """The ``[plans.<id>]`` tables of a plan file."""
    doc = _read(path)
    return {pid: _plan(str(path), pid, entry, doc.vat_rate) for pid, entry in doc.plans.items()}


def plan_assignments(path: str | Path, plans: dict[str, PricePlan] | None = None) -> dict[str, str]:
    """``[assignments]`` (``tenant = "plan-id"``) from a plan file; every plan id is checked
    against `plans` (by default, the file's own ``[plans]``)."""
    doc = _read(path)
    known = plans if plans is not None else load_plans(path)
    for tenant, plan_id in doc.assignments.items():
        if plan_id not in known:
            raise PlanError(
                str(path),
                f"assignments.{tenant}",
                f"unknown plan {plan_id!r} (known: {', '.join(sorted(known))})",
            )
    return dict(doc.assignments)
