"""The export service's words: its refusal, a subject access request's redaction zone, and the
check every free text it is given (a purpose, a reason) passes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.live import Refusal

MAX_TEXT = 512


class ExportError(Refusal):
    """A refused or impossible request: ``status`` (HTTP) and a stable ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message, code=code)


@dataclass(frozen=True)
class RedactionZone:
    """A subject access request's zone: black over ``points`` from ``start`` to ``end``."""

    id: str
    points: tuple[tuple[float, float], ...]
    start: datetime
    end: datetime


def text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        raise ExportError(400, "invalid_argument", f"{name}: at most {MAX_TEXT} printable chars")
    return value
