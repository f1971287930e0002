"""Money and usage units, written once: formatting integer pence, and base-unit conversions.

Money is integer minor units (pence) plus an ISO 4217 currency, as stripe-python does it.
Everything here is integer arithmetic: ``Decimal`` stays inside rating, which hands out unit
prices, quantities and VAT rates as decimal text (``"45.5000"`` pence, ``"1234.5000"`` hours,
``"0.20"``) that :func:`format_unit_price`, :func:`format_decimal` and :func:`format_rate` only
read.

Usage arrives in base units: milliseconds for time, bytes for data, counts for exports. The
display units are decimal: a MB is 10**6 bytes and a GB 10**9 (as the price plans say).
"""

from __future__ import annotations

import re

__all__ = [
    "BYTES_PER_GB",
    "BYTES_PER_MB",
    "MS_PER_HOUR",
    "MS_PER_MINUTE",
    "MS_PER_SECOND",
    "SYMBOLS",
    "UNIT_SIZES",
    "format_decimal",
    "format_money",
    "format_quantity",
    "format_rate",
    "format_unit_price",
    "plain_money",
    "scaled",
    "vat_label",
]

MS_PER_SECOND = 1_000
MS_PER_MINUTE = 60 * MS_PER_SECOND
MS_PER_HOUR = 60 * MS_PER_MINUTE
BYTES_PER_MB = 10**6
BYTES_PER_GB = 10**9

#: Base units (ms, bytes, exports) in one display unit, by the unit's name in price plans.
UNIT_SIZES: dict[str, int] = {
    "camera-hour": MS_PER_HOUR,
    "hour": MS_PER_HOUR,
    "minute": MS_PER_MINUTE,
    "second": MS_PER_SECOND,
    "GB": BYTES_PER_GB,
    "MB": BYTES_PER_MB,
    "export": 1,
}

SYMBOLS: dict[str, str] = {"GBP": "£", "EUR": "€", "USD": "$"}

# At most 30 digits either side: the text comes from our own database, but bound it anyway.
_DECIMAL_TEXT = re.compile(r"^(-)?(\d{1,30})(?:\.(\d{1,30}))?$")


def _grouped(units: int, frac: int, places: int, sep: str) -> str:
    whole = f"{units:,}" if sep else str(units)
    return whole if places == 0 else f"{whole}.{frac:0{places}d}"


def scaled(base: int, size: int, places: int) -> tuple[int, int]:
    """``base / size`` rounded half-up (away from zero) to `places` decimals, as
    (whole part, fraction in units of 10**-places), both of the magnitude; exact."""
    scale = 10**places
    magnitude = (2 * abs(base) * scale + size) // (2 * size)
    whole, frac = divmod(magnitude, scale)
    return whole, frac


def format_quantity(base: int, size: int, places: int = 2, *, grouped: bool = True) -> str:
    """``base`` base units in a display unit of `size` base units: ``1,234.57``."""
    whole, frac = scaled(base, size, places)
    sign = "-" if base < 0 and (whole or frac) else ""
    return sign + _grouped(whole, frac, places, "," if grouped else "")


def format_money(pence: int, currency: str = "GBP") -> str:
    """``£1,234.56``, ``-£12.00``; a currency without a symbol here: ``1,234.56 SEK``."""
    sign = "-" if pence < 0 else ""
    pounds, rest = divmod(abs(int(pence)), 100)
    symbol = SYMBOLS.get(currency)
    if symbol is None:
        return f"{sign}{pounds:,}.{rest:02d} {currency}"
    return f"{sign}{symbol}{pounds:,}.{rest:02d}"


def plain_money(pence: int) -> str:
    """``-1234.56``: no symbol, no separators (CSV cells, reconciliation messages)."""
    sign = "-" if pence < 0 else ""
    pounds, rest = divmod(abs(int(pence)), 100)
    return f"{sign}{pounds}.{rest:02d}"


def _shifted(text: str, shift: int, places: int) -> tuple[bool, int, int] | None:
    """Decimal text times ``10**shift``, rounded half-up (away from zero) to `places`
    decimals, as (negative, whole part, fraction in units of 10**-places); None when the text
    is not a plain decimal number."""
    m = _DECIMAL_TEXT.match(text.strip())
    if m is None:
        return None
    frac = m.group(3) or ""
    digits, exponent = int(m.group(2) + frac), shift + places - len(frac)
    if exponent >= 0:
        scaled_value = digits * 10**exponent
    else:
        div = 10**-exponent
        scaled_value = (2 * digits + div) // (2 * div)
    whole, rest = divmod(scaled_value, 10**places)
    return m.group(1) is not None and scaled_value != 0, whole, rest


def _trimmed(whole: int, frac: int, places: int, min_places: int, sep: str) -> str:
    """``whole.frac`` with trailing zeros dropped down to `min_places`."""
    while places > min_places and frac % 10 == 0:
        frac //= 10
        places -= 1
    return _grouped(whole, frac, places, sep)


def format_decimal(text: str, *, max_places: int = 4, min_places: int = 2) -> str:
    """Decimal text as rating writes it (an invoice line's quantity, ``"1234.5000"``) for
    reading: ``1,234.50``, rounded half-up at `max_places`, with as many places beyond
    `min_places` as are not zero. Text that is not a plain decimal number is returned as it is."""
    parts = _shifted(text, 0, max_places)
    if parts is None:
        return text
    negative, whole, frac = parts
    return ("-" if negative else "") + _trimmed(whole, frac, max_places, min_places, ",")


def format_rate(text: str) -> str:
    """A rate as decimal text (a VAT rate, ``"0.20"``, ``"0.175"``) as a percentage: ``20%``,
    ``17.5%`` (at most 4 decimal places of a percent). Other text is returned as it is."""
    parts = _shifted(text, 2, 4)
    if parts is None:
        return text
    negative, whole, frac = parts
    return ("-" if negative else "") + _trimmed(whole, frac, 4, 0, "") + "%"


def vat_label(rate_text: str) -> str:
    """How an invoice names its VAT: ``VAT at 20%``; ``No VAT`` at a zero rate (a zero-rated
    plan shows no VAT)."""
    shown = format_rate(rate_text)
    return "No VAT" if shown == "0%" else f"VAT at {shown}"


def format_unit_price(pence_text: str, currency: str = "GBP") -> str:
    """A unit price in pence as decimal text (``"45.5000"``) in the currency's major unit,
    with 2 to 4 decimal places, as many as are not zero: ``£0.455``. Text that is not a plain
    decimal number is returned as it is."""
    parts = _shifted(pence_text, -2, 4)
    if parts is None:
        return pence_text
    negative, units, frac4 = parts
    symbol = SYMBOLS.get(currency, "")
    text = f"{'-' if negative else ''}{symbol}{_trimmed(units, frac4, 4, 2, ',')}"
    return text if symbol else f"{text} {currency}"
