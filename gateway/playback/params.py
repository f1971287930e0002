"""The playback HTTP API's query parameters, checked before anything is looked up.

MediaMTX's playback server takes ``GET /list?path=&start=&end=`` and
``GET /get?path=&start=&duration=&format=fmp4|mp4``; the same names mean the same here, so its
clients work unchanged. HLS VOD playlists take ``start`` and ``end`` (or ``duration``) too.
Every error names the parameter and why, for a 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.protocols.rtsp_replay import parse_rfc3339

__all__ = [
    "MAX_GET_SECONDS",
    "MAX_LIST_WINDOW",
    "GetParams",
    "ListParams",
    "MediaFormat",
    "ParamError",
    "parse_get",
    "parse_list",
]

# One request cuts at most a day of one camera; longer ranges are exports.
MAX_GET_SECONDS = 86_400.0
MAX_LIST_WINDOW = timedelta(days=400)
_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
_KNOWN = {
    "list": frozenset({"path", "start", "end", "token", "purpose"}),
    "get": frozenset({"path", "start", "duration", "format", "token", "purpose", "unmasked"}),
}


class ParamError(ValueError):
    """A bad query parameter: ``str(err)`` names it and why."""


class MediaFormat(StrEnum):
    FMP4 = "fmp4"  # fragmented MP4, streamed as it is cut
    MP4 = "mp4"  # one moov at the front: written whole, then sent


@dataclass(frozen=True, slots=True)
class ListParams:
    path: str
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True, slots=True)
class GetParams:
    path: str
    start: datetime
    duration: float
    format: MediaFormat

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration)


def _one(query: Mapping[str, str] | object, name: str) -> str | None:
    getall = getattr(query, "getall", None)
    if getall is not None:
        values = getall(name, [])
        if len(values) > 1:
            raise ParamError(f"{name}: given more than once")
        return str(values[0]) if values else None
    assert isinstance(query, Mapping)
    value = query.get(name)
    return None if value is None else str(value)


def _check_names(query: Mapping[str, str], kind: str) -> None:
    unknown = sorted(set(query) - _KNOWN[kind])
    if unknown:
        raise ParamError(f"{unknown[0]}: unknown parameter")


def _path(query: Mapping[str, str]) -> str:
    path = _one(query, "path")
    if not path:
        raise ParamError("path: required (the camera's id)")
    if not _PATH.fullmatch(path):
        raise ParamError("path: not a camera id")
    return path


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    text = _one(query, name)
    if text is None or text == "":
        return None
    try:
        return parse_rfc3339(text, name)
    except ValueError as exc:
        raise ParamError(str(exc)) from None


def parse_list(query: Mapping[str, str]) -> ListParams:
    _check_names(query, "list")
    path = _path(query)
    start, end = _time(query, "start"), _time(query, "end")
    if start is not None and end is not None:
        if end <= start:
            raise ParamError("end: must be after start")
        if end - start > MAX_LIST_WINDOW:
            raise ParamError(f"end: at most {MAX_LIST_WINDOW.days} days after start")
    return ListParams(path, start, end)


def parse_get(query: Mapping[str, str]) -> GetParams:
    _check_names(query, "get")
    path = _path(query)
    start = _time(query, "start")
    if start is None:
        raise ParamError("start: required (RFC 3339, e.g. 2026-12-01T10:15:00Z)")
    text = _one(query, "duration")
    if text is None:
        raise ParamError("duration: required (seconds)")
    if not _SECONDS.fullmatch(text.strip()):
        raise ParamError("duration: must be a number of seconds")
    duration = float(text)
    if not 0 < duration <= MAX_GET_SECONDS:
        raise ParamError(f"duration: must be above 0 and at most {MAX_GET_SECONDS:g} seconds")
    fmt_text = (_one(query, "format") or "fmp4").lower()
    try:
        fmt = MediaFormat(fmt_text)
    except ValueError:
        raise ParamError("format: must be fmp4 or mp4") from None
    return GetParams(path, start, duration, fmt)
