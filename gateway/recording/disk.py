"""Free space on the recording disk and its two marks (sans-I/O except :func:`disk_space`).

``low_water``: below it the oldest unlocked segments are deleted until it is met again.
``critical``: below it recording stops, with an alert and a metric, until space returns above
it. A mark is a share of the disk (``"10%"``) or an amount (``"50GB"``, ``"500MB"``,
``"1073741824"``; decimal units, as disks are sold).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

__all__ = ["Mark", "Pressure", "Space", "assess", "disk_space", "parse_mark"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_MARK = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[KMGT]?B)?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Mark:
    kind: Literal["percent", "bytes"]
    value: float

    def bytes_of(self, total: int) -> int:
        return int(total * self.value / 100) if self.kind == "percent" else int(self.value)


def parse_mark(text: str) -> Mark:
    m = _MARK.match(text)
    if m is None:
        raise ValueError(f"{text!r}: expected a percentage (10%) or bytes (50GB, 500MB, 1048576)")
    number, unit = float(m.group(1)), (m.group(2) or "").upper()
    if unit == "%":
        if not 0 <= number < 100:
            raise ValueError(f"{text!r}: a percentage must be 0 to under 100")
        return Mark("percent", number)
    return Mark("bytes", number * _UNITS[unit])


@dataclass(frozen=True, slots=True)
class Space:
    free: int
    total: int


def disk_space(path: Path) -> Space:
    usage = shutil.disk_usage(path)
    return Space(usage.free, usage.total)


class Pressure(StrEnum):
    OK = "ok"
    LOW = "low"  # below the low-water mark: delete the oldest unlocked segments
    CRITICAL = "critical"  # below the critical mark: recording stops


def assess(space: Space, low_water: Mark, critical: Mark) -> Pressure:
    if space.free < critical.bytes_of(space.total):
        return Pressure.CRITICAL
    if space.free < low_water.bytes_of(space.total):
        return Pressure.LOW
    return Pressure.OK
