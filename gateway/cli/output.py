"""How admin verbs print what the control API answered: one object as ``key: value`` lines,
lists as aligned tables, and either as JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf.message import Message


def as_dict(msg: Message, *, full: bool = False) -> dict[str, Any]:
    """``full``: keep fields at their zero value (a mask's point at x = 0 keeps its x)."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=full
    )


def show(args: argparse.Namespace, msg: Message, *, full: bool = False) -> None:
    d = as_dict(msg, full=full)
    if args.json:
        print(json.dumps(d, indent=2, sort_keys=True))
        return
    for key, value in d.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value, sort_keys=True)
        print(f"{key}: {value}")


def table(
    args: argparse.Namespace,
    items: Sequence[Message],
    columns: Sequence[str],
    key: str,
    *,
    full: bool = False,
    summaries: Mapping[str, Callable[[Any], Any]] | None = None,
) -> None:
    """A table of ``items`` (``--json``: ``{key: [...]}``). ``summaries`` replace a column's
    value in the table (not in JSON) by a function of it, e.g. a polygon by its corner count."""
    if args.json:
        rows = [as_dict(m, full=full) for m in items]
        print(json.dumps({key: rows}, indent=2, sort_keys=True))
        return
    rows = []
    for m in items:
        row = as_dict(m)
        for column, summary in (summaries or {}).items():
            row[column] = summary(getattr(m, column))
        rows.append(row)
    print_table(rows, columns)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


__all__ = ["as_dict", "print_table", "show", "table"]
