"""How usage events travel in a Redis stream entry, and how an entry is checked on the way out.

An entry written now is ``{"v": "2", "n": count, "rows": text}`` with the events as
:mod:`billing.usagerow` rows; ``"1"`` entries (``"events"``: a JSON list of event objects, this
module's event codec) are still read, so entries an older gateway left are not lost in an
upgrade. The consumer only looks at bounded entries."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from billing.model import UsageEvent, UsageKind
from billing.usagerow import RowError, check_rows, encode_row, encode_rows

DEFAULT_STREAM = "feedgate:usage"
# Stream entry formats: "2" is {"v", "n", "rows"} with rows in billing.usagerow form (written
# now); "1" is {"v", "n", "events"} with a JSON list of event objects (still read, so entries
# left in the stream by an older gateway are not lost in an upgrade).
FORMAT_VERSION = b"2"
JSON_FORMAT_VERSION = b"1"
# Bounds on what the consumer will look at. A real entry holds at most MAX_ENTRY_EVENTS rows of
# a few hundred bytes; anything bigger was not written by a sink and is dead-lettered unread,
# with at most DEAD_LETTER_FIELD_BYTES of each field kept for inspection.
MAX_ENTRY_EVENTS = 1000
MAX_ENTRY_BYTES = 1 << 20
DEAD_LETTER_FIELD_BYTES = 64 * 1024

# Event (de)serialisation: compact JSON objects keyed by field name; times are ISO 8601 with
# their UTC offset, so decode(encode(e)) == e field for field.

_FIELDS = frozenset(f.name for f in dataclasses.fields(UsageEvent))


class DecodeError(ValueError):
    """Bytes that are not a usage event (or a list of them) in this module's format."""


def event_to_dict(event: UsageEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "session_id": event.session_id,
        "seq": event.seq,
        "tenant": event.tenant,
        "principal": event.principal,
        "camera": event.camera,
        "camera_owner": event.camera_owner,
        "kind": event.kind.value,
        "protocol": event.protocol,
        "variant": event.variant,
        "start": event.start.isoformat(),
        "end": event.end.isoformat(),
        "duration_ms": event.duration_ms,
        "bytes_sent": event.bytes_sent,
        "final": event.final,
    }


def _str(value: Any, name: str) -> str:
    if type(value) is not str:
        raise DecodeError(f"{name}: expected a string, got {type(value).__name__}")
    return value


def _int(value: Any, name: str) -> int:
    if type(value) is not int:
        raise DecodeError(f"{name}: expected an integer, got {type(value).__name__}")
    return value


def event_from_dict(data: Any) -> UsageEvent:
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object, got {type(data).__name__}")
    if data.keys() != _FIELDS:
        missing, extra = sorted(_FIELDS - data.keys()), sorted(data.keys() - _FIELDS)
        raise DecodeError(f"fields do not match UsageEvent: missing {missing}, unknown {extra}")
    principal = data["principal"]
    final = data["final"]
    if type(final) is not bool:
        raise DecodeError("final: expected a boolean")
    try:
        return UsageEvent(
            event_id=_str(data["event_id"], "event_id"),
            session_id=_str(data["session_id"], "session_id"),
            seq=_int(data["seq"], "seq"),
            tenant=_str(data["tenant"], "tenant"),
            principal=None if principal is None else _str(principal, "principal"),
            camera=_str(data["camera"], "camera"),
            camera_owner=_str(data["camera_owner"], "camera_owner"),
            kind=UsageKind(_str(data["kind"], "kind")),
            protocol=_str(data["protocol"], "protocol"),
            variant=_str(data["variant"], "variant"),
            start=datetime.fromisoformat(_str(data["start"], "start")),
            end=datetime.fromisoformat(_str(data["end"], "end")),
            duration_ms=_int(data["duration_ms"], "duration_ms"),
            bytes_sent=_int(data["bytes_sent"], "bytes_sent"),
            final=final,
        )
    except DecodeError:
        raise
    except (ValueError, TypeError) as exc:  # BillingError is a ValueError
        raise DecodeError(str(exc)) from None


_dumps = json.JSONEncoder(separators=(",", ":")).encode


def encode_event(event: UsageEvent) -> str:
    return _dumps(event_to_dict(event))


def decode_event(data: str | bytes) -> UsageEvent:
    try:
        obj = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DecodeError(f"not JSON: {exc}") from None
    return event_from_dict(obj)


def encode_events(events: Sequence[UsageEvent]) -> bytes:
    return _dumps([event_to_dict(e) for e in events]).encode()


def decode_events(data: str | bytes) -> list[UsageEvent]:
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(obj, list):
        raise DecodeError(f"expected a JSON list, got {type(obj).__name__}")
    return [event_from_dict(item) for item in obj]


def entry_field(fields: dict[Any, Any], name: str) -> Any:
    return fields.get(name.encode(), fields.get(name))


def encode_entries(events: Sequence[UsageEvent], per_entry: int) -> list[dict[Any, Any]]:
    """Stream entries' fields for `events`, at most `per_entry` events in each."""
    return [
        {"v": FORMAT_VERSION, "n": str(len(chunk)), "rows": encode_rows(chunk)}
        for chunk in (events[i : i + per_entry] for i in range(0, len(events), per_entry))
    ]


def decode_entries(
    entries: list[Any],
) -> tuple[list[Any], list[str], list[tuple[Any, dict[Any, Any], str]]]:
    """Stream entries -> (ids of good entries, their checked rows, bad entries with why)."""
    good_ids: list[Any] = []
    rows: list[str] = []
    poison: list[tuple[Any, dict[Any, Any], str]] = []
    for entry_id, fields in entries:
        try:
            size = sum(len(v) for v in fields.values() if isinstance(v, bytes | str))
            if size > MAX_ENTRY_BYTES:
                raise DecodeError(f"entry of {size} bytes is over the {MAX_ENTRY_BYTES} limit")
            version = entry_field(fields, "v")
            if isinstance(version, str):
                version = version.encode()
            if version == FORMAT_VERSION:
                payload = entry_field(fields, "rows")
                if payload is None:
                    raise DecodeError("no 'rows' field")
                text = payload.decode() if isinstance(payload, bytes) else str(payload)
                decoded = check_rows(text)
            elif version == JSON_FORMAT_VERSION:
                payload = entry_field(fields, "events")
                if payload is None:
                    raise DecodeError("no 'events' field")
                decoded = [encode_row(e) for e in decode_events(payload)]
            else:
                raise DecodeError(f"unknown format version {version!r}")
            n = entry_field(fields, "n")
            if n is not None and int(n) != len(decoded):
                raise DecodeError(f"entry says {int(n)} events, holds {len(decoded)}")
        except (DecodeError, RowError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            poison.append((entry_id, fields, f"{type(exc).__name__}: {exc}"))
            continue
        good_ids.append(entry_id)
        rows.extend(decoded)
    return good_ids, rows, poison
