"""Reading declared types (pydantic v2) from TOML files, with errors that name the file, the key
and the reason.

The config (``gateway/config.py``), the tenancy seed (``tenants/seed.py``) and the price plans
(``billing/rating/planfile.py``) are each declared as pydantic types and read through
:func:`read_toml` and :func:`validate`. A :class:`ValidationError`'s locations become keys as
an operator writes them (``grants[2].time_windows``, ``plans.standard.prices[0].tiers[1].up_to``),
and its messages are turned into short reasons.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import tomllib
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

__all__ = ["FileError", "Problem", "key_of", "problems", "read_toml", "validate"]

T = TypeVar("T")

#: (key, reason)
Problem = tuple[str, str]

# Short reasons for pydantic's most common error types (its own messages are longer).
_REASONS = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "set_type": "expected a list",
    "frozen_set_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "dataclass_type": "expected a table",
    "model_attributes_type": "expected a table",
    "decimal_parsing": "expected a number",
    "decimal_type": "expected a number",
}

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


class FileError(ValueError):
    """A file that cannot be used: ``"{file}: {key}: {reason}"``, one line per problem."""

    def __init__(self, file: str, key: str, reason: str, *, more: Sequence[Problem] = ()) -> None:
        self.file, self.key, self.reason = file, key, reason
        self.problems: list[Problem] = [(key, reason), *more]
        super().__init__("\n".join(f"{file}: {k}: {r}" for k, r in self.problems))


def key_of(loc: Iterable[int | str]) -> str:
    """``("grants", 2, "time_windows")`` -> ``grants[2].time_windows``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-wrap", "function-plain"):
            continue  # validator wrappers pydantic puts in locations
        else:
            out += f".{part}" if out else str(part)
    return out or "-"


def _reason(err: ErrorDetails, known: Sequence[str] | None) -> str:
    kind = err["type"]
    if kind == "missing" or kind == "missing_keyword_argument":
        return "required"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown key (known: {', '.join(known)})" if known else "unknown key"
    if kind == "value_error":
        return str((err.get("ctx") or {}).get("error", err["msg"]))
    ctx = err.get("ctx") or {}
    got = f"got {err.get('input')!r}"
    for bound, op in _BOUNDS.items():
        if bound in ctx:
            return f"must be {op} {ctx[bound]}, {got}"
    if kind in ("literal_error", "enum"):
        return f"must be {ctx.get('expected', '?')}, {got}"
    short = _REASONS.get(kind)
    if short is not None:
        return f"{short}, {got}"
    return str(err["msg"])


def problems(exc: ValidationError, root: Any = None) -> list[Problem]:
    """Each error of `exc` as (key, reason); with the validated type `root`, an unknown key's
    reason lists the known ones."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        known = None
        if root is not None and err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            known = _keys_at(root, err["loc"][:-1])
        out.append((key_of(err["loc"]), _reason(err, known)))
    return out


def _unwrap(tp: Any) -> Any:
    """The type under Annotated[...] and X | None."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _fields(tp: Any) -> dict[str, Any] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {name: f.annotation for name, f in tp.model_fields.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {f.name: hints[f.name] for f in dataclasses.fields(tp)}
    return None


def _keys_at(root: Any, loc: Sequence[int | str]) -> list[str] | None:
    """The keys a table at `loc` in a document of type `root` may have."""
    tp = root
    for part in loc:
        tp = _unwrap(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (dict, collections.abc.Mapping) and len(args) == 2:
            tp = args[1]
        elif origin in (list, tuple, set, frozenset) and args:
            tp = args[0]
        else:
            fields = _fields(tp)
            if fields is None or not isinstance(part, str) or part not in fields:
                return None
            tp = fields[part]
    fields = _fields(_unwrap(tp))
    return sorted(fields) if fields is not None else None


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def validate(tp: type[T], data: Any, file: str, error: type[FileError]) -> T:
    """`data` as a `tp` (a declared type), or `error` naming the file and every bad key."""
    try:
        value: T = _adapter(typing.cast(Any, tp)).validate_python(data)
    except ValidationError as exc:
        (key, reason), *more = problems(exc, tp)
        raise error(file, key, reason, more=more) from None
    return value


def read_toml(path: str | Path, error: type[FileError]) -> dict[str, Any]:
    """The parsed TOML document, or `error` saying why it cannot be read."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise error(file, "-", f"cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(file, "-", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(file, "-", f"TOML syntax: {exc}") from None
