"""Price plans as values: a plan prices metrics in display units with graduated or volume
tiers, and may add a platform fee, a minimum commitment, a nominal fee, contributor credits and
VAT. Amounts in whole pence are ``int``; prices and rates are ``Decimal``."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from billing.model import BillingError, Metric, check_currency
from billing.money import UNIT_SIZES

__all__ = ["UNITS", "MetricPrice", "PlanValueError", "PricePlan", "Tier", "TierMode"]

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


class PlanValueError(BillingError):
    """A plan, price or tier that cannot be: ``key`` is where, relative to the value built
    (``tiers[1].up_to``, ``unit``, ``vat_rate``), so a plan file can name its own key."""

    def __init__(self, key: str, reason: str, *, plan: str = "") -> None:
        self.key, self.reason = key, reason
        super().__init__(f"plan {plan}: {key}: {reason}" if plan else f"{key}: {reason}")


class TierMode(StrEnum):
    GRADUATED = "graduated"
    VOLUME = "volume"


def _number(key: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise PlanValueError(key, f"expected a Decimal, got {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise PlanValueError(key, "must be a finite number")
    return number


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # inclusive, in the display unit; None = infinity
    unit_price_pence: Decimal
    flat_pence: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.up_to is not None:
            up_to = _number("up_to", self.up_to)
            if up_to <= 0:
                raise PlanValueError("up_to", f"must be positive, got {up_to}")
            object.__setattr__(self, "up_to", up_to)
        for name in ("unit_price_pence", "flat_pence"):
            value = _number(name, getattr(self, name))
            if value < 0:
                raise PlanValueError(name, f"must not be negative, got {value}")
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class MetricPrice:
    metric: Metric
    unit: str
    tiers: tuple[Tier, ...]
    mode: TierMode = TierMode.GRADUATED

    def __post_init__(self) -> None:
        unit = UNITS.get(self.unit)
        if unit is None:
            raise PlanValueError("unit", f"expected one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.metric not in unit.metrics:
            raise PlanValueError("unit", f"{self.unit!r} cannot price {self.metric.value}")
        if not self.tiers:
            raise PlanValueError("tiers", "at least one tier is needed")
        previous: Decimal | None = Decimal(0)
        for i, tier in enumerate(self.tiers):
            last = i == len(self.tiers) - 1
            if tier.up_to is None and not last:
                raise PlanValueError(f"tiers[{i}].up_to", "only the last tier may be unbounded")
            if tier.up_to is not None and last:
                raise PlanValueError(f"tiers[{i}].up_to", "the last tier must be unbounded")
            if tier.up_to is not None and previous is not None and tier.up_to <= previous:
                raise PlanValueError(
                    f"tiers[{i}].up_to", f"must exceed the tier before's ({previous})"
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
    # Never assumed: required unless the plan is zero-rated (which charges no VAT: 0).
    vat_rate: Decimal | None = None

    def __post_init__(self) -> None:
        try:
            self._check()
        except PlanValueError as exc:
            raise PlanValueError(exc.key, exc.reason, plan=self.id) from None

    def _check(self) -> None:
        try:
            check_currency(self.currency)
        except BillingError as exc:
            raise PlanValueError("currency", str(exc)) from None
        seen: set[Metric] = set()
        for i, p in enumerate(self.prices):
            if p.metric in seen:
                raise PlanValueError(f"prices[{i}].metric", f"{p.metric.value} is priced twice")
            seen.add(p.metric)
        for name in ("platform_fee_pence", "minimum_commitment_pence", "nominal_fee_pence"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PlanValueError(name, f"must be whole pence >= 0, got {value!r}")
        if self.nominal_fee_pence is not None and (
            self.platform_fee_pence or self.minimum_commitment_pence
        ):
            raise PlanValueError(
                "nominal_fee_pence", "a nominal-cost plan has no platform fee or minimum commitment"
            )
        if self.zero_rated:
            if self.vat_rate:
                raise PlanValueError("vat_rate", "a zero-rated plan charges no VAT")
            object.__setattr__(self, "vat_rate", Decimal(0))
        elif self.vat_rate is None:
            raise PlanValueError("vat_rate", "required: the plan's VAT rate (0 for none)")
        for name in ("contributor_share", "vat_rate"):
            value = _number(name, getattr(self, name))
            if not 0 <= value <= 1:
                raise PlanValueError(name, f"must be between 0 and 1, got {value}")
            object.__setattr__(self, name, value)

    @property
    def vat(self) -> Decimal:
        """The VAT rate (``vat_rate``, always set once the plan is built)."""
        assert self.vat_rate is not None
        return self.vat_rate

    def price_for(self, metric: Metric) -> MetricPrice | None:
        for p in self.prices:
            if p.metric == metric:
                return p
        return None
