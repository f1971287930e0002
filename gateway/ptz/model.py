"""PTZ values that cross a trust boundary, checked once here.

ONVIF's generic spaces: pan and tilt positions and velocities in -1..1, zoom position in 0..1,
zoom velocity in -1..1, relative translations in -2..2 (pan/tilt) and -1..1 (zoom). Anything
else (NaN, infinity, out of range, a preset token that is not a token) is refused with a
:class:`PtzError` of code ``bad_request`` before a camera sees it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PRESET_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_PRESET_NAME = 64
MAX_REASON = 256
_PRIORITY_RE = re.compile(r"^(\*|[a-z]+(?:\.[a-z]+)?)=(\d{1,5})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ErrorCode(StrEnum):
    """Stable codes; each adapter maps them to its status (HTTP, gRPC, SOAP fault)."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    NO_PTZ = "no_ptz"  # the camera has no ONVIF PTZ endpoint configured
    BAD_REQUEST = "bad_request"
    LOCKED = "ptz_locked"
    RATE_LIMITED = "rate_limited"
    UNREACHABLE = "camera_unreachable"
    CAMERA_FAULT = "camera_fault"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NO_PTZ: 404,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.LOCKED: 423,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNREACHABLE: 504,
    ErrorCode.CAMERA_FAULT: 502,
}


class PtzError(Exception):
    """A refused or failed PTZ request. ``detail`` carries what a client may be told (for a
    lock: the holder's tenant kind and the lock's end, never the person)."""

    def __init__(self, code: ErrorCode, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]


def bad(field: str, reason: str) -> PtzError:
    return PtzError(ErrorCode.BAD_REQUEST, f"{field}: {reason}")


class MoveKind(StrEnum):
    CONTINUOUS = "continuous"
    RELATIVE = "relative"
    ABSOLUTE = "absolute"


@dataclass(frozen=True)
class Vector:
    pan: float
    tilt: float
    zoom: float

    def as_dict(self) -> dict[str, float]:
        return {"pan": self.pan, "tilt": self.tilt, "zoom": self.zoom}


@dataclass(frozen=True)
class Move:
    kind: MoveKind
    vector: Vector
    timeout: float = 0.0  # ContinuousMove only: the camera stops by itself after this long

    def audit_detail(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": f"{self.kind.value}_move", **self.vector.as_dict()}
        if self.kind == MoveKind.CONTINUOUS:
            d["timeout_s"] = self.timeout
        return d


# (pan/tilt range, zoom range) per kind of move
_RANGES: dict[MoveKind, tuple[tuple[float, float], tuple[float, float]]] = {
    MoveKind.CONTINUOUS: ((-1.0, 1.0), (-1.0, 1.0)),
    MoveKind.ABSOLUTE: ((-1.0, 1.0), (0.0, 1.0)),
    MoveKind.RELATIVE: ((-2.0, 2.0), (-1.0, 1.0)),
}


def number(field: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(field, f"expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise bad(field, "must be a finite number")
    if not lo <= v <= hi:
        raise bad(field, f"{v} outside {lo}..{hi}")
    return v


def check_move(
    kind: MoveKind | str,
    pan: object,
    tilt: object,
    zoom: object,
    *,
    timeout: object = None,
    default_timeout: float = 1.0,
    max_timeout: float = 5.0,
) -> Move:
    """A move, validated. A ContinuousMove always carries a Timeout (the default when none is
    asked, never more than ``max_timeout``), so a camera stops even if its client vanishes."""
    try:
        k = MoveKind(kind)
    except ValueError:
        raise bad("kind", f"{kind!r} is not one of continuous, relative, absolute") from None
    pt, z = _RANGES[k]
    vector = Vector(number("pan", pan, *pt), number("tilt", tilt, *pt), number("zoom", zoom, *z))
    t = 0.0
    if k == MoveKind.CONTINUOUS:
        t = default_timeout if timeout is None else number("timeout", timeout, 0.0, max_timeout)
        if t <= 0.0:
            raise bad("timeout", "must be positive")
    elif timeout is not None:
        raise bad("timeout", "only a continuous move has a timeout")
    return Move(k, vector, t)


def check_token(field: str, value: object) -> str:
    if not isinstance(value, str) or not PRESET_TOKEN_RE.match(value):
        raise bad(field, "1-64 of A-Z a-z 0-9 _ . : - (start alnum)")
    return value


def check_text(field: str, value: object, limit: int, *, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise bad(field, "required")
        return ""
    if not isinstance(value, str):
        raise bad(field, "expected a string")
    if len(value) > limit:
        raise bad(field, f"longer than {limit} characters")
    if _CONTROL.search(value):
        raise bad(field, "contains control characters")
    return value


MAX_PRIORITY = 32000
DEFAULT_PRIORITY = 1000


def parse_priorities(text: str) -> dict[str, int]:
    """``"police=30000 council.operator=20000 *=1000"`` → {key: priority}."""
    table: dict[str, int] = {}
    for item in text.replace(",", " ").split():
        m = _PRIORITY_RE.match(item)
        if m is None:
            raise ValueError(f"{item!r}: expected kind=N, kind.role=N or *=N")
        value = int(m.group(2))
        if not 1 <= value <= MAX_PRIORITY:
            raise ValueError(f"{item!r}: priority must be 1..{MAX_PRIORITY}")
        table[m.group(1)] = value
    return table


@dataclass(frozen=True)
class Preset:
    token: str
    name: str
    position: Vector | None = None


@dataclass(frozen=True)
class Status:
    position: Vector
    moving: bool


__all__ = [
    "HTTP_STATUS",
    "ErrorCode",
    "Move",
    "MoveKind",
    "Preset",
    "PtzError",
    "Status",
    "Vector",
    "bad",
    "check_move",
    "check_text",
    "check_token",
    "number",
    "parse_priorities",
]
