"""The admin CLI's argument types: lists, durations, days, polygons, time windows, and the
config file of ``--local`` verbs. Each bad value is a usage error naming what was expected."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.client import CliError

if TYPE_CHECKING:
    from gateway.config import Config


def csv_list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_ttl(text: str) -> int:
    """'900', '90s', '15m', '2h', '1d' -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds or N[s|m|h|d]")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYY-MM-DD") from None


def day_range(start: date, end: date) -> tuple[datetime, datetime]:
    """--from D1 --to D2: D1 00:00 UTC up to the end of D2 (inclusive)."""
    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hi = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    if hi <= lo:
        raise CliError("--to is before --from", 2)
    return lo, hi


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_points(text: str) -> list[tuple[float, float]]:
    """'0.1,0.1 0.5,0.1 0.5,0.4' -> [(0.1, 0.1), (0.5, 0.1), (0.5, 0.4)]. Ranges and counts
    are the server's to check (it names the offending field)."""
    points: list[tuple[float, float]] = []
    for part in text.split():
        xs, sep, ys = part.partition(",")
        try:
            if not sep:
                raise ValueError
            points.append((float(xs), float(ys)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected space-separated x,y pairs in 0..1"
            ) from None
    if not points:
        raise argparse.ArgumentTypeError('no points: expected "x,y x,y x,y ..."')
    return points


def windows(texts: Iterable[str]) -> list[dict[str, Any]]:
    """--window HH:MM-HH:MM[@d,d] values as the API's time windows."""
    from tenants.model import DomainError, TimeWindow

    out = []
    for text in texts:
        try:
            w = TimeWindow.parse(text)
        except DomainError as exc:
            raise CliError(f"--window: {exc}", 2) from None
        days = [] if w.weekdays == frozenset(range(7)) else sorted(w.weekdays)
        out.append({"start": f"{w.start:%H:%M}", "end": f"{w.end:%H:%M}", "weekdays": days})
    return out


def load_config(path: str | None) -> Config:
    from gateway.config import ConfigError
    from gateway.config import load_config as load

    if not path:
        raise CliError("--local needs --config FILE", 2)
    try:
        return load(path)
    except ConfigError as exc:
        raise CliError(f"config error: {exc}", 2) from None


def audit_key_path(config: Config) -> Path:
    # Where Tenancy.open finds the audit signing key.
    from gateway.identity import key_path

    return key_path(config, "audit_key")


__all__ = [
    "audit_key_path",
    "csv_list",
    "day_range",
    "load_config",
    "parse_day",
    "parse_points",
    "parse_ttl",
    "rfc3339",
    "windows",
]
