"""billing.money: pence and usage quantities formatted in one place, with integer arithmetic
that gives what Decimal's ROUND_HALF_UP gives."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import (
    BYTES_PER_GB,
    BYTES_PER_MB,
    MS_PER_HOUR,
    MS_PER_MINUTE,
    UNIT_SIZES,
    format_decimal,
    format_money,
    format_quantity,
    format_rate,
    format_unit_price,
    plain_money,
)
from billing.rating import UNITS


def test_units_are_decimal_and_time_is_milliseconds() -> None:
    assert BYTES_PER_MB == 1_000_000 and BYTES_PER_GB == 1_000_000_000
    assert MS_PER_MINUTE == 60_000 and MS_PER_HOUR == 3_600_000
    # Rating prices in the same units the pages and the CLI show.
    assert {u: UNITS[u].size for u in UNITS} == UNIT_SIZES


@pytest.mark.parametrize(
    ("pence", "currency", "shown", "plain"),
    [
        (133_639, "GBP", "£1,336.39", "1336.39"),
        (-144, "GBP", "-£1.44", "-1.44"),
        (5, "GBP", "£0.05", "0.05"),
        (0, "GBP", "£0.00", "0.00"),
        (12_345_678_900, "GBP", "£123,456,789.00", "123456789.00"),
        (250, "EUR", "€2.50", "2.50"),
        (-100_000, "SEK", "-1,000.00 SEK", "-1000.00"),
    ],
)
def test_money(pence: int, currency: str, shown: str, plain: str) -> None:
    assert format_money(pence, currency) == shown
    assert plain_money(pence) == plain


@pytest.mark.parametrize(
    ("base", "size", "places", "shown"),
    [
        (5_400_000, MS_PER_HOUR, 2, "1.50"),
        (18_000, MS_PER_HOUR, 2, "0.01"),  # 0.005 h rounds half up
        (17_999, MS_PER_HOUR, 2, "0.00"),
        (-18_000, MS_PER_HOUR, 2, "-0.01"),  # away from zero
        (1_234_567_890_123, BYTES_PER_GB, 3, "1,234.568"),
        (7, 1, 0, "7"),
        (-1, BYTES_PER_GB, 2, "0.00"),  # no "-0.00"
    ],
)
def test_quantity(base: int, size: int, places: int, shown: str) -> None:
    assert format_quantity(base, size, places) == shown


def test_quantity_without_separators() -> None:
    assert format_quantity(123_456_789 * MS_PER_HOUR, MS_PER_HOUR, 2, grouped=False) == (
        "123456789.00"
    )


@pytest.mark.parametrize(
    ("text", "currency", "shown"),
    [
        ("45.5000", "GBP", "£0.455"),
        ("45.0000", "GBP", "£0.45"),
        ("0.1234", "GBP", "£0.0012"),
        ("0.1250", "GBP", "£0.0013"),  # half up at 4 places of pounds
        ("123456.7800", "GBP", "£1,234.5678"),
        ("-30", "EUR", "-€0.30"),
        ("12", "SEK", "0.12 SEK"),
        ("n/a", "GBP", "n/a"),
    ],
)
def test_unit_price(text: str, currency: str, shown: str) -> None:
    assert format_unit_price(text, currency) == shown


def _decimal_quantity(base: int, size: int, places: int) -> str:
    q = (Decimal(base) / Decimal(size)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    return f"{q.copy_abs() if q == 0 else q:,.{places}f}"


@given(
    st.integers(-(10**15), 10**15),
    st.sampled_from(sorted(set(UNIT_SIZES.values()))),
    st.sampled_from([0, 2, 3, 4]),
)
def test_quantity_matches_decimal_half_up(base: int, size: int, places: int) -> None:
    assert format_quantity(base, size, places) == _decimal_quantity(base, size, places)


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False))
def test_unit_price_matches_decimal_half_up(pence: Decimal) -> None:
    d = (pence / 100).quantize(Decimal("0.0001"), ROUND_HALF_UP)
    places = 4
    while places > 2 and d == d.quantize(Decimal(1).scaleb(-(places - 1))):
        places -= 1
    sign = "-" if d < 0 else ""
    assert format_unit_price(f"{pence:f}") == f"{sign}£{d.copy_abs():,.{places}f}"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("1234.5000", "1,234.50"),
        ("0.1234", "0.1234"),
        ("0.12345", "0.1235"),  # half up at the fourth place
        ("2", "2.00"),
        ("-0.00004", "0.00"),  # no negative zero
        ("-12.5", "-12.50"),
        ("1e3", "1e3"),  # not decimal text: shown as it is
        ("1" * 31, "1" * 31),  # bounded
    ],
)
def test_decimal_text(text: str, shown: str) -> None:
    assert format_decimal(text) == shown


def test_decimal_text_without_places() -> None:
    assert format_decimal("3.0000", min_places=0) == "3"
    assert format_decimal("3.5000", min_places=0) == "3.5"


@pytest.mark.parametrize(
    ("text", "shown"),
    [("0.20", "20%"), ("0.175", "17.5%"), ("0", "0%"), ("0.05", "5%"), ("1", "100%")],
)
def test_rate(text: str, shown: str) -> None:
    assert format_rate(text) == shown


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False))
def test_decimal_text_matches_decimal_half_up(value: Decimal) -> None:
    d = value.quantize(Decimal("0.0001"), ROUND_HALF_UP)
    places = 4
    while places > 2 and d == d.quantize(Decimal(1).scaleb(-(places - 1))):
        places -= 1
    sign = "-" if d < 0 else ""
    assert format_decimal(f"{value:f}") == f"{sign}{d.copy_abs():,.{places}f}"
