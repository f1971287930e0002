"""Sans-I/O RTSP playback requests: what a PLAY asks of recorded media.

A live PLAY carries nothing here. A playback PLAY carries a time (``Range: clock=`` as RFC 2326
§3.7 writes UTC, or ``npt=`` seconds from where the session's range began), and an ONVIF replay
client (ONVIF Streaming Specification §6) adds ``Require: onvif-replay``, ``Scale`` (negative is
reverse), ``Rate-Control: no`` (send as fast as the client reads), ``Frames: intra`` (key frames
only, optionally ``intra/<ms>`` apart) and ``Immediate: yes`` (drop what is queued and jump).
Clients that cannot send a clock range (ffmpeg, VLC) name the instant in the URL instead:
``?start=2026-12-01T10:15:00Z`` (RFC 3339), with an optional ``end=`` or ``duration=`` seconds.

:func:`parse_play` reads one PLAY's headers into a :class:`ReplayRequest`; every error is an
:class:`~gateway.protocols.rtsp.RtspError` with the status to answer. :func:`format_clock`,
:func:`format_clock_range` and :func:`format_scale` write the reply's values back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from gateway.protocols.rtsp import Headers, RtspError
from gateway.protocols.rtsp_headers import parse_range

__all__ = [
    "ONVIF_REPLAY",
    "SUPPORTED_OPTIONS",
    "Frames",
    "FramesMode",
    "ReplayRequest",
    "choose_scale",
    "format_clock",
    "format_clock_range",
    "format_scale",
    "parse_frames",
    "parse_play",
    "parse_rfc3339",
    "parse_scale",
    "parse_url_range",
    "parse_yes_no",
    "unsupported_options",
]

ONVIF_REPLAY = "onvif-replay"
#: The option tags a PLAY may ``Require`` of this server (RFC 2326 §12.32).
SUPPORTED_OPTIONS = frozenset({ONVIF_REPLAY})
# Beyond this a Scale is a typo or an attack on the pacing arithmetic, not a trick play.
MAX_SCALE = 64.0
# The earliest and latest instants a recording can name: far enough either side of today.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_URL_DURATION = 31 * 86400.0
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,6}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})")
_FRAMES = re.compile(r"(intra|predicted|all)(?:/([0-9]{1,9}))?", re.IGNORECASE)
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?"
    r"(Z|z|[+-][0-9]{2}:[0-9]{2})"
)
_OPTION_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_+]{0,63}")


def _bad(what: str) -> RtspError:
    return RtspError(400, what)


class FramesMode(StrEnum):
    ALL = "all"
    INTRA = "intra"  # key frames only (fast forward and reverse)
    PREDICTED = "predicted"  # I and P frames, no B frames


@dataclass(frozen=True, slots=True)
class Frames:
    mode: FramesMode = FramesMode.ALL
    # With intra: at least this many milliseconds of recording between two frames sent.
    interval_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What one PLAY asks of the recording.

    ``start`` is None for a PLAY that resumes where its session paused (or, on a fresh session,
    starts at the URL's ``start``); ``npt_start`` is an offset from the session's range instead
    of an instant. ``end`` is where to stop (None: until the recording's end).
    """

    start: datetime | None = None
    end: datetime | None = None
    npt_start: float | None = None
    npt_end: float | None = None
    scale: float = 1.0
    speed: float | None = None
    rate_control: bool = True
    frames: Frames = Frames()
    immediate: bool = False
    onvif: bool = False

    @property
    def reverse(self) -> bool:
        return self.scale < 0

    @property
    def seeks(self) -> bool:
        """Whether this PLAY names a position (a seek), or resumes."""
        return self.start is not None or self.npt_start is not None


def parse_yes_no(value: str | None, name: str, default: bool) -> bool:
    if value is None:
        return default
    text = value.strip().lower()
    if text == "yes":
        return True
    if text == "no":
        return False
    raise _bad(f"{name} must be yes or no")


def parse_scale(value: str | None, name: str = "Scale") -> float | None:
    """A finite, non-zero decimal no larger than :data:`MAX_SCALE` either way."""
    if value is None:
        return None
    text = value.strip()
    if not _DECIMAL.fullmatch(text):
        raise _bad(f"invalid {name} {text[:32]!r}")
    scale = float(text)
    if scale == 0 or not math.isfinite(scale) or abs(scale) > MAX_SCALE:
        raise _bad(f"{name} must be non-zero and at most {MAX_SCALE:g} either way")
    return scale


def parse_frames(value: str | None) -> Frames:
    if value is None:
        return Frames()
    m = _FRAMES.fullmatch(value.strip())
    if m is None:
        raise _bad("Frames must be intra, predicted or all")
    mode = FramesMode(m.group(1).lower())
    if m.group(2) is not None and mode is not FramesMode.INTRA:
        raise _bad("only Frames: intra takes an interval")
    return Frames(mode, int(m.group(2)) if m.group(2) is not None else None)


def unsupported_options(values: Iterable[str]) -> list[str]:
    """The ``Require`` option tags this server does not support (answer 551 naming them)."""
    tags: list[str] = []
    for value in values:
        for tag in value.split(","):
            tag = tag.strip()
            if not tag:
                continue
            if not _OPTION_TAG.fullmatch(tag):
                raise _bad("invalid option tag in Require")
            if tag.lower() not in SUPPORTED_OPTIONS and tag not in tags:
                tags.append(tag)
    return tags


def _check_instant(when: datetime, what: str) -> datetime:
    if not _EARLIEST <= when < _LATEST:
        raise _bad(f"{what} out of range")
    return when


def parse_play(headers: Headers) -> ReplayRequest:
    """Read one PLAY's playback headers. A ``Require`` naming an unknown option is 551 (the
    caller adds ``Unsupported``); a malformed value is 400; a range running the wrong way for
    its Scale is 457 (Invalid Range)."""
    unknown = unsupported_options(headers.get_all("Require"))
    if unknown:
        raise RtspError(551, "option not supported: " + ", ".join(unknown))
    onvif = any(
        tag.strip().lower() == ONVIF_REPLAY
        for value in headers.get_all("Require")
        for tag in value.split(",")
    )
    scale = parse_scale(headers.get("Scale")) or 1.0
    speed = parse_scale(headers.get("Speed"), "Speed")
    if speed is not None and speed < 0:
        raise _bad("Speed must be positive")
    rate_control = parse_yes_no(headers.get("Rate-Control"), "Rate-Control", True)
    immediate = parse_yes_no(headers.get("Immediate"), "Immediate", False)
    frames = parse_frames(headers.get("Frames"))
    start = end = None
    npt_start = npt_end = None
    value = headers.get("Range")
    if value is not None:
        spec = parse_range(value)
        if spec.unit == "clock":
            start = spec.start_datetime
            end = spec.end_datetime
            if start is not None:
                _check_instant(start, "Range start")
            if end is not None:
                _check_instant(end, "Range end")
        elif spec.unit == "npt":
            # "npt=now-" (and a bare "npt=0-" from a client that always sends one) resumes.
            npt_start = spec.start_seconds if spec.start else None
            npt_end = spec.end_seconds
        else:
            raise RtspError(457, "playback takes clock or npt ranges, not smpte")
        _check_direction(start, end, scale)
        if npt_start is not None and npt_end is not None:
            if (npt_end <= npt_start) if scale > 0 else (npt_end >= npt_start):
                raise RtspError(457, "Range ends before it starts for its Scale")
    return ReplayRequest(
        start=start,
        end=end,
        npt_start=npt_start,
        npt_end=npt_end,
        scale=scale,
        speed=speed,
        rate_control=rate_control,
        frames=frames,
        immediate=immediate,
        onvif=onvif,
    )


def _check_direction(start: datetime | None, end: datetime | None, scale: float) -> None:
    # ONVIF reverse replay names the later instant first ("clock=...1149Z-...1148Z", Scale -1).
    if start is None or end is None:
        return
    if (end <= start) if scale > 0 else (end >= start):
        raise RtspError(457, "Range ends before it starts for its Scale")


def parse_rfc3339(text: str, what: str = "time") -> datetime:
    """An RFC 3339 instant with its offset (``2026-12-01T10:15:00Z``), as UTC."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"{what} must be an RFC 3339 time with its offset, e.g. 2026-12-01T10:15:00Z"
        )
    frac = (m.group(3) or "")[:7]  # fromisoformat takes at most 6 digits
    offset = "+00:00" if m.group(4) in ("Z", "z") else m.group(4)
    try:
        when = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{frac}{offset}")
    except ValueError:
        raise ValueError(f"{what} is not a valid date and time") from None
    when = when.astimezone(UTC)
    if not _EARLIEST <= when < _LATEST:
        raise ValueError(f"{what} out of range")
    return when


def parse_url_range(query: Mapping[str, str]) -> tuple[datetime, datetime | None] | None:
    """The URL form's range (``?start=...&end=...`` or ``&duration=seconds``), or None for a
    live URL. Errors are 400s naming the parameter."""
    if "start" not in query:
        if "end" in query or "duration" in query:
            raise _bad("end and duration need a start")
        return None
    try:
        start = parse_rfc3339(query["start"], "start")
        end: datetime | None = None
        if "end" in query and "duration" in query:
            raise ValueError("give end or duration, not both")
        if "end" in query:
            end = parse_rfc3339(query["end"], "end")
            if end <= start:
                raise ValueError("end must be after start")
        elif "duration" in query:
            text = query["duration"].strip()
            if not _DECIMAL.fullmatch(text) or not 0 < float(text) <= MAX_URL_DURATION:
                raise ValueError(
                    f"duration must be seconds, above 0 and at most {MAX_URL_DURATION:g}"
                )
            end = start + timedelta(seconds=float(text))
    except ValueError as exc:
        raise _bad(str(exc)) from None
    return start, end


def choose_scale(requested: float, supported: Iterable[float]) -> float:
    """The supported scale nearest the request, in its direction (RFC 2326 §12.34: the server
    may restrict scales and says which it chose). Ties go to the slower one."""
    candidates = sorted({abs(s) for s in supported if s != 0})
    if not candidates:
        raise ValueError("no supported scales")
    magnitude = min(candidates, key=lambda s: (abs(s - abs(requested)), s))
    return magnitude if requested > 0 else -magnitude


def format_clock(when: datetime) -> str:
    """``20261201T101500.250Z``: UTC, milliseconds only when there are any."""
    when = when.astimezone(UTC)
    text = when.strftime("%Y%m%dT%H%M%S")
    if when.microsecond:
        text += f".{when.microsecond // 1000:03d}"
    return text + "Z"


def format_clock_range(start: datetime, end: datetime | None) -> str:
    return f"clock={format_clock(start)}-{format_clock(end) if end is not None else ''}"


def format_scale(scale: float) -> str:
    return f"{scale:.1f}" if scale == int(scale) else f"{scale:g}"
