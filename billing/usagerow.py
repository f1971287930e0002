"""The usage row: one usage event as one line of PostgreSQL ``COPY`` text.

This is the form a usage event travels in (Redis stream entries, format version 2) and the
form the PostgreSQL ledger loads with ``COPY ... FROM STDIN``, so the hot path from the stream
to the ledger never builds a Python object per event: the consumer checks each line against
one strict pattern and hands the checked text to the database.

A row is the ledger's columns in :data:`COLUMNS` order, separated by tabs, with no trailing
newline. Text fields use ``COPY``'s escapes (backslash, tab, newline, carriage return become
``\\\\``, ``\\t``, ``\\n``, ``\\r``); a missing principal is ``\\N``; times are UTC, fixed width
with microseconds and ``Z`` (they sort as text); integers are plain non-negative decimals.

The stream crosses a trust boundary (anything that can write to Redis can write an entry), so
:func:`check_rows` accepts only what :func:`encode_row` can produce, and a real calendar time:
a row that passes it cannot fail ``COPY`` for its form, and cannot put a negative quantity or
an unknown kind into the ledger.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from billing.model import BillingError, UsageEvent, UsageKind

__all__ = [
    "COLUMNS",
    "RowError",
    "check_rows",
    "encode_row",
    "encode_rows",
    "format_time",
    "parse_time",
    "row_event_id",
    "row_to_event",
    "row_values",
]

#: The ledger columns a row carries, in order (the ledger adds ``recorded_at``).
COLUMNS: tuple[str, ...] = (
    "event_id",
    "session_id",
    "seq",
    "tenant",
    "principal",
    "camera",
    "camera_owner",
    "kind",
    "protocol",
    "variant",
    "start_at",
    "end_at",
    "duration_ms",
    "bytes_sent",
    "final",
)
_TEXT_FIELDS = (0, 1, 3, 4, 5, 6, 8, 9)
_INT_FIELDS = (2, 12, 13, 14)


class RowError(ValueError):
    """Text that is not a usage row (or a block of them) in this module's format."""


def format_time(t: datetime) -> str:
    """UTC, fixed width, microseconds, ``Z``: sorts as text in both databases."""
    if t.tzinfo is not UTC:
        if t.tzinfo is None or t.utcoffset() is None:
            raise BillingError("times must be timezone-aware")
        t = t.astimezone(UTC)
    # isoformat of an aware UTC time ends in "+00:00"; the ledger writes "Z".
    return t.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


# -- encoding

_SPECIAL = re.compile(r"[\\\t\n\r\x00]")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\ufffd"}


def _escape(s: str) -> str:
    # PostgreSQL text cannot hold NUL at all: it becomes U+FFFD rather than losing the event.
    return _SPECIAL.sub(lambda m: _ESCAPES[m.group()], s)


def encode_row(e: UsageEvent) -> str:
    principal = e.principal
    texts = (
        f"{e.event_id}{e.session_id}{e.tenant}{principal or ''}{e.camera}{e.camera_owner}"
        f"{e.protocol}{e.variant}"
    )
    if _SPECIAL.search(texts) is None:  # the usual case: nothing to escape
        p = "\\N" if principal is None else principal
        return (
            f"{e.event_id}\t{e.session_id}\t{e.seq}\t{e.tenant}\t{p}\t{e.camera}\t"
            f"{e.camera_owner}\t{e.kind.value}\t{e.protocol}\t{e.variant}\t"
            f"{format_time(e.start)}\t{format_time(e.end)}\t{e.duration_ms}\t"
            f"{e.bytes_sent}\t{1 if e.final else 0}"
        )
    return "\t".join(
        [
            _escape(e.event_id),
            _escape(e.session_id),
            str(e.seq),
            _escape(e.tenant),
            "\\N" if principal is None else _escape(principal),
            _escape(e.camera),
            _escape(e.camera_owner),
            e.kind.value,
            _escape(e.protocol),
            _escape(e.variant),
            format_time(e.start),
            format_time(e.end),
            str(e.duration_ms),
            str(e.bytes_sent),
            "1" if e.final else "0",
        ]
    )


def encode_rows(events: Iterable[UsageEvent]) -> str:
    """A block of rows, newline-separated (what one stream entry carries)."""
    return "\n".join([encode_row(e) for e in events])


# -- checking

# Text: anything but the separators and NUL, with COPY's escapes. "\N" (NULL) does not match
# it, so a NULL principal and the text "\N" cannot be confused.
_TEXT = r"[^\t\n\r\\\x00]*(?:\\[\\tnr][^\t\n\r\\\x00]*)*"
_NONEMPTY = rf"(?=[^\t])(?:{_TEXT})"
_INT = r"(?:0|[1-9][0-9]{0,17})"  # fits a BIGINT
_TIME = (
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z"
)
_KINDS = "|".join(re.escape(k.value) for k in UsageKind)
_ROW = re.compile(
    rf"({_NONEMPTY})\t{_NONEMPTY}\t{_INT}\t{_NONEMPTY}\t(?:\\N|{_TEXT})\t{_NONEMPTY}\t"
    rf"{_NONEMPTY}\t(?:{_KINDS})\t{_TEXT}\t{_TEXT}\t({_TIME})\t({_TIME})\t{_INT}\t{_INT}\t[01]"
)


def check_rows(block: str) -> list[str]:
    """Split a block into rows and check every one; raise :class:`RowError` naming the first
    bad row. What comes back can go to ``Ledger.record_rows`` as it is."""
    rows = block.split("\n")
    match = _ROW.fullmatch
    for i, row in enumerate(rows):
        m = match(row)
        if m is None:
            raise RowError(f"row {i + 1}: not a usage row: {row[:120]!r}")
        start, end = m.group(2, 3)
        if end < start:  # fixed width UTC: text order is time order
            raise RowError(f"row {i + 1}: ends before it starts")
        try:  # the pattern allows 31 February; the calendar does not
            datetime.fromisoformat(start)
            datetime.fromisoformat(end)
        except ValueError as exc:
            raise RowError(f"row {i + 1}: {exc}") from None
    return rows


def row_event_id(row: str) -> str:
    """The row's event id as stored (escaped form; ids never need escaping in practice)."""
    return row[: row.index("\t")]


# -- decoding (SQLite ledger, tests, tools)

_UNESCAPE = re.compile(r"\\([\\tnr])")
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    return _UNESCAPE.sub(lambda m: _UNESCAPES[m.group(1)], s)


def row_values(row: str) -> tuple[Any, ...]:
    """A checked row as the ledger's column values (text unescaped, integers as ``int``)."""
    fields: list[Any] = row.split("\t")
    if len(fields) != len(COLUMNS):
        raise RowError(f"expected {len(COLUMNS)} fields, got {len(fields)}")
    null_principal = fields[4] == "\\N"
    for i in _TEXT_FIELDS:
        fields[i] = _unescape(fields[i])
    if null_principal:
        fields[4] = None
    for i in _INT_FIELDS:
        fields[i] = int(fields[i])
    return tuple(fields)


def row_to_event(row: str) -> UsageEvent:
    v = row_values(row)
    return UsageEvent(
        event_id=v[0],
        session_id=v[1],
        seq=v[2],
        tenant=v[3],
        principal=v[4],
        camera=v[5],
        camera_owner=v[6],
        kind=UsageKind(v[7]),
        protocol=v[8],
        variant=v[9],
        start=parse_time(v[10]),
        end=parse_time(v[11]),
        duration_ms=v[12],
        bytes_sent=v[13],
        final=bool(v[14]),
    )


def rows_to_events(rows: Sequence[str]) -> list[UsageEvent]:
    return [row_to_event(r) for r in rows]
