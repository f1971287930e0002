"""Money and usage units, written once: formatting integer pence, and base-unit conversions.

Money is integer minor units (pence) plus an ISO 4217 currency, as stripe-python does it.
Everything here is integer arithmetic: ``Decimal`` stays inside rating, which hands out its
unit prices as decimal text (``"45.5000"``, pence) that :func:`format_unit_price` only reads.

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
    "format_money",
    "format_quantity",
    "format_unit_price",
    "plain_money",
    "scaled",
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

_DECIMAL_TEXT = re.compile(r"^(-)?(\d+)(?:\.(\d+))?$")


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


def format_unit_price(pence_text: str, currency: str = "GBP") -> str:
    """A unit price in pence as decimal text (``"45.5000"``) in the currency's major unit,
    with 2 to 4 decimal places, as many as are not zero: ``£0.455``. Text that is not a plain
    decimal number is returned as it is."""
    m = _DECIMAL_TEXT.match(pence_text.strip())
    if m is None:
        return pence_text
    negative, whole, frac = m.group(1) is not None, m.group(2), m.group(3) or ""
    # Half-up at 2 places of pence is half-up at 4 places of the major unit; the digit after
    # the second decides it (what follows it only matters below one half).
    digits = frac.ljust(3, "0")
    hundredths = int(whole + digits[:2]) + (1 if digits[2] >= "5" else 0)
    units, frac4 = divmod(hundredths, 10_000)
    places = 4
    while places > 2 and frac4 % 10 == 0:
        frac4 //= 10
        places -= 1
    sign = "-" if negative and (units or frac4) else ""
    symbol = SYMBOLS.get(currency, "")
    text = f"{sign}{symbol}{_grouped(units, frac4, places, ',')}"
    return text if symbol else f"{text} {currency}"
