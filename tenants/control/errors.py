"""How the control service refuses: one error type with a stable code, which every adapter
maps to its own wire form (a gRPC status, an RFC 9457 problem document, a CLI exit code)."""

from __future__ import annotations

from enum import StrEnum

from tenants.db import IntegrityError
from tenants.model import DomainError
from tenants.store import NotFound


class Code(StrEnum):
    """Stable error codes: clients may switch on these; the message is for people."""

    INVALID = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "permission_denied"
    NOT_FOUND = "not_found"
    CONFLICT = "already_exists"
    PRECONDITION = "failed_precondition"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


# The codes that are refusals of the caller (audited as such), not mistakes in a request.
REFUSALS = frozenset({Code.UNAUTHENTICATED, Code.FORBIDDEN})


class ControlError(Exception):
    """Refuse an operation. ``field``: the request field at fault, as a dotted path."""

    def __init__(self, code: Code, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    @property
    def refusal(self) -> bool:
        return self.code in REFUSALS

    def at(self, prefix: str) -> ControlError:
        """The same error with its field under ``prefix`` (``camera`` + ``id``: ``camera.id``)."""
        if not prefix:
            return self
        field = f"{prefix}.{self.field}" if self.field else prefix
        return ControlError(self.code, self.message, field=field.replace(".[", "["))


def invalid(field: str, reason: str) -> ControlError:
    return ControlError(Code.INVALID, reason, field=field)


def denied(reason: str) -> ControlError:
    return ControlError(Code.FORBIDDEN, reason)


def precondition(reason: str) -> ControlError:
    return ControlError(Code.PRECONDITION, reason)


def hidden(kind: str, id: str, verb: str = "see") -> ControlError:
    """The one answer for an object the caller may not see *and* for one that does not exist,
    so ids of other tenants' objects cannot be told apart from no object at all."""
    return ControlError(Code.FORBIDDEN, f"no {kind} {id!r} that you may {verb}")


def from_exception(exc: BaseException) -> ControlError | None:
    """The store's and the domain's exceptions as control errors; None for anything else."""
    if isinstance(exc, ControlError):
        return exc
    if isinstance(exc, NotFound):
        return ControlError(Code.NOT_FOUND, str(exc))
    if isinstance(exc, IntegrityError):
        text = str(exc)
        if "UNIQUE" in text or "duplicate key" in text:
            return ControlError(Code.CONFLICT, text)
        return ControlError(Code.PRECONDITION, text)
    if isinstance(exc, DomainError):
        return ControlError(Code.INVALID, str(exc))
    return None


__all__ = [
    "REFUSALS",
    "Code",
    "ControlError",
    "denied",
    "from_exception",
    "hidden",
    "invalid",
    "precondition",
]
