"""Sans-I/O RTSP 1.0 header values (RFC 2326 §12): Transport, Session, Range, RTP-Info, CSeq
and Request-URIs, parsed into typed values and formatted back.

The message grammar (start lines, header fields, bodies, interleaved frames) is in
:mod:`gateway.protocols.rtsp`; this module only reads and writes the values inside fields.
Every parser raises :class:`~gateway.protocols.rtsp.RtspError` with the status to answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote, urlsplit

from gateway.protocols.rtsp import DIGITS, TOKEN_TEXT, UNSAFE_TEXT, RtspError

__all__ = [
    "RangeSpec",
    "RtpInfoEntry",
    "TransportSpec",
    "format_range",
    "format_rtp_info",
    "format_session",
    "format_transport",
    "parse_cseq",
    "parse_range",
    "parse_rtp_info",
    "parse_session",
    "parse_transport",
    "split_uri",
]


def _bad(what: str) -> RtspError:
    return RtspError(400, what)


def _split_quoted(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double-quoted strings (which may contain backslash escapes)."""
    if '"' not in value:
        return value.split(sep)
    parts: list[str] = []
    start = 0
    in_quote = False
    escaped = False
    for i, ch in enumerate(value):
        if in_quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == sep:
            parts.append(value[start:i])
            start = i + 1
    if in_quote:
        raise _bad("unterminated quoted string")
    parts.append(value[start:])
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if '"' in value:
        raise _bad("stray quote in parameter")
    return value


def _quote_if_needed(value: str) -> str:
    if TOKEN_TEXT.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _parse_int(text: str, lo: int, hi: int, what: str) -> int:
    if not DIGITS.fullmatch(text) or len(text) > 20:
        raise _bad(f"invalid {what}")
    n = int(text)
    if not lo <= n <= hi:
        raise _bad(f"{what} out of range")
    return n


def _parse_pair(text: str, hi: int, what: str) -> tuple[int, int]:
    first, dash, second = text.partition("-")
    a = _parse_int(first.strip(), 0, hi, what)
    if not dash:
        # A lone port/channel implies the RTCP one right after it (RFC 2326 §12.39).
        if a + 1 > hi:
            raise _bad(f"{what} out of range")
        return a, a + 1
    return a, _parse_int(second.strip(), 0, hi, what)


# Transport (§12.39) -----------------------------------------------------------

_PROFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*(?:/[A-Za-z]+)?")
_SSRC = re.compile(r"[0-9A-Fa-f]{1,8}")


@dataclass
class TransportSpec:
    profile: str = "RTP/AVP"
    unicast: bool = True
    interleaved: tuple[int, int] | None = None
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    mode: str = "PLAY"
    ssrc: str | None = None
    destination: str | None = None
    source: str | None = None
    ttl: int | None = None
    other: tuple[tuple[str, str | None], ...] = ()

    @property
    def is_tcp(self) -> bool:
        return self.profile.upper().endswith("/TCP")


def parse_transport(value: str) -> list[TransportSpec]:
    """Parse a Transport header into its alternatives, in the client's preference order.

    Unknown profiles (RTP/SAVP, RAW/RAW/UDP, ...) are returned rather than
    rejected: one unsupported alternative must not void the others, and the
    server picks what it supports or answers 461.
    """
    specs: list[TransportSpec] = []
    for alternative in _split_quoted(value, ","):
        alternative = alternative.strip()
        if not alternative:
            continue
        fields = _split_quoted(alternative, ";")
        profile = fields[0].strip()
        if not _PROFILE.fullmatch(profile):
            raise _bad("invalid transport specifier")
        spec = TransportSpec(profile=profile.upper())
        other: list[tuple[str, str | None]] = []
        for field in fields[1:]:
            field = field.strip()
            if not field:
                continue
            name, eq, raw = field.partition("=")
            name = name.strip().lower()
            if not TOKEN_TEXT.fullmatch(name):
                raise _bad("invalid transport parameter")
            val = _unquote(raw.strip()) if eq else None
            if name in ("unicast", "multicast"):
                if val is not None:
                    raise _bad(f"{name} takes no value")
                spec.unicast = name == "unicast"
                continue
            if val is None:
                other.append((name, None))
                continue
            if name == "interleaved":
                spec.interleaved = _parse_pair(val, 255, "interleaved channel")
            elif name == "client_port":
                spec.client_port = _parse_pair(val, 65535, "client port")
            elif name == "server_port":
                spec.server_port = _parse_pair(val, 65535, "server port")
            elif name == "mode":
                mode = val.strip().upper()
                if not mode or not re.fullmatch(r"[A-Z_]+(?:\s*,\s*[A-Z_]+)*", mode):
                    raise _bad("invalid transport mode")
                spec.mode = mode
            elif name == "ssrc":
                if not _SSRC.fullmatch(val):
                    raise _bad("invalid ssrc")
                spec.ssrc = val.upper()
            elif name == "destination":
                spec.destination = val
            elif name == "source":
                spec.source = val
            elif name == "ttl":
                spec.ttl = _parse_int(val, 0, 255, "ttl")
            else:
                other.append((name, val))
        spec.other = tuple(other)
        specs.append(spec)
    if not specs:
        raise _bad("empty Transport header")
    return specs


def _format_pair(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def format_transport(spec: TransportSpec) -> str:
    parts = [spec.profile, "unicast" if spec.unicast else "multicast"]
    if spec.destination is not None:
        parts.append(f"destination={_quote_if_needed(spec.destination)}")
    if spec.source is not None:
        parts.append(f"source={_quote_if_needed(spec.source)}")
    if spec.interleaved is not None:
        parts.append(f"interleaved={_format_pair(spec.interleaved)}")
    if spec.client_port is not None:
        parts.append(f"client_port={_format_pair(spec.client_port)}")
    if spec.server_port is not None:
        parts.append(f"server_port={_format_pair(spec.server_port)}")
    if spec.ttl is not None:
        parts.append(f"ttl={spec.ttl}")
    if spec.ssrc is not None:
        parts.append(f"ssrc={spec.ssrc}")
    if spec.mode != "PLAY":
        parts.append(f"mode={_quote_if_needed(spec.mode)}")
    for name, val in spec.other:
        parts.append(name if val is None else f"{name}={_quote_if_needed(val)}")
    return ";".join(parts)


# Session (§12.37) -------------------------------------------------------------

_SESSION_ID = re.compile(r"[A-Za-z0-9$\-_.+]{1,64}")


def parse_session(value: str) -> tuple[str, int | None]:
    """Return (session id, timeout seconds or None)."""
    fields = value.split(";")
    session_id = fields[0].strip()
    if not _SESSION_ID.fullmatch(session_id):
        raise _bad("invalid session id")
    timeout: int | None = None
    for field in fields[1:]:
        name, _, raw = field.strip().partition("=")
        if name.strip().lower() == "timeout":
            timeout = _parse_int(raw.strip(), 0, 2**31 - 1, "session timeout")
    return session_id, timeout


def format_session(session_id: str, timeout: int | None) -> str:
    if not _SESSION_ID.fullmatch(session_id):
        raise ValueError(f"invalid session id {session_id!r}")
    if timeout is None:
        return session_id
    return f"{session_id};timeout={int(timeout)}"


# Range (§12.29) ---------------------------------------------------------------

_NPT_SECONDS = re.compile(r"([0-9]{1,12})(?:\.([0-9]{0,9}))?")
_NPT_HMS = re.compile(r"([0-9]{1,9}):([0-5]?[0-9]):([0-5]?[0-9])(?:\.([0-9]{0,9}))?")
_CLOCK = re.compile(r"([0-9]{8}T[0-9]{6})(?:\.([0-9]{1,9}))?Z")
_SMPTE = re.compile(r"[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?::[0-9]{1,2}(?:\.[0-9]{1,2})?)?")
_RANGE_UNITS = ("npt", "clock", "smpte", "smpte-30-drop", "smpte-25")


def _npt_seconds(text: str) -> float | None:
    if text == "now":
        return None
    m = _NPT_SECONDS.fullmatch(text)
    if m:
        return float(text)
    m = _NPT_HMS.fullmatch(text)
    if m:
        frac = float("0." + m.group(4)) if m.group(4) else 0.0
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3)) + frac
    raise _bad(f"invalid npt time {text!r}")


def _clock_datetime(text: str) -> datetime:
    m = _CLOCK.fullmatch(text)
    if not m:
        raise _bad(f"invalid clock time {text!r}")
    try:
        dt = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise _bad(f"invalid clock time {text!r}") from None
    if m.group(2):
        dt = dt.replace(microsecond=int(m.group(2)[:6].ljust(6, "0")))
    return dt


@dataclass
class RangeSpec:
    unit: str
    start: str
    end: str | None = None
    start_seconds: float | None = None
    end_seconds: float | None = None

    @property
    def start_datetime(self) -> datetime | None:
        if self.unit != "clock" or not self.start:
            return None
        return _clock_datetime(self.start)

    @property
    def end_datetime(self) -> datetime | None:
        if self.unit != "clock" or not self.end:
            return None
        return _clock_datetime(self.end)


def parse_range(value: str) -> RangeSpec:
    """Parse ``npt=``, ``clock=`` or ``smpte=`` ranges.

    An omitted start (``npt=-20``) is kept as ``start == ""``; a value with no
    dash at all (``npt=0.000``, sent by some old clients) is taken as open-ended.
    """
    spec_text = value.split(";", 1)[0].strip()
    unit, eq, rng = spec_text.partition("=")
    unit = unit.strip().lower()
    if not eq or unit not in _RANGE_UNITS:
        raise _bad("invalid Range unit")
    start, _, end_text = rng.strip().partition("-")
    start = start.strip()
    end: str | None = end_text.strip() or None
    if not start and end is None:
        raise _bad("empty Range")
    start_s: float | None = None
    end_s: float | None = None
    if unit == "npt":
        if start:
            start_s = _npt_seconds(start)
        if end is not None:
            end_s = _npt_seconds(end)
    elif unit == "clock":
        for t in (start, end):
            if t:
                _clock_datetime(t)
    else:
        for t in (start, end):
            if t and not _SMPTE.fullmatch(t):
                raise _bad(f"invalid smpte time {t!r}")
    return RangeSpec(unit, start, end, start_s, end_s)


def format_range(spec: RangeSpec) -> str:
    return f"{spec.unit}={spec.start}-{spec.end or ''}"


# RTP-Info (§12.33) ------------------------------------------------------------


@dataclass
class RtpInfoEntry:
    url: str
    seq: int | None = None
    rtptime: int | None = None


# URLs may legally contain ',' and ';', so entries are split only where a new
# "url=" starts and a URL only ends at a known parameter.
_RTP_INFO_SPLIT = re.compile(r",\s*(?=url\s*=)", re.IGNORECASE)
_RTP_INFO_PARAM = re.compile(r"\s*(seq|rtptime)\s*=\s*(.*?)\s*", re.IGNORECASE)


def parse_rtp_info(value: str) -> list[RtpInfoEntry]:
    entries: list[RtpInfoEntry] = []
    for chunk in _RTP_INFO_SPLIT.split(value.strip()):
        fields = chunk.split(";")
        head = fields[0].strip()
        key, eq, url = head.partition("=")
        if not eq or key.strip().lower() != "url":
            raise _bad("RTP-Info entry without url")
        url_parts = [url.strip()]
        entry = RtpInfoEntry(url="")
        in_url = True
        for field in fields[1:]:
            m = _RTP_INFO_PARAM.fullmatch(field)
            if m is None:
                if in_url:
                    url_parts.append(field)
                continue  # unknown parameter after the URL: ignore (forward compatibility)
            in_url = False
            if m.group(1).lower() == "seq":
                entry.seq = _parse_int(m.group(2), 0, 0xFFFF, "RTP-Info seq")
            else:
                entry.rtptime = _parse_int(m.group(2), 0, 0xFFFFFFFF, "RTP-Info rtptime")
        entry.url = _unquote(";".join(url_parts).strip())
        if not entry.url:
            raise _bad("empty RTP-Info url")
        entries.append(entry)
    return entries


def format_rtp_info(entries: Iterable[RtpInfoEntry]) -> str:
    out: list[str] = []
    for e in entries:
        if not e.url or UNSAFE_TEXT.search(e.url):
            raise ValueError(f"invalid RTP-Info url {e.url!r}")
        part = f"url={e.url}"
        if e.seq is not None:
            part += f";seq={e.seq}"
        if e.rtptime is not None:
            part += f";rtptime={e.rtptime}"
        out.append(part)
    return ",".join(out)


# CSeq and URIs ---------------------------------------------------------------


def parse_cseq(value: str | None) -> int:
    if value is None:
        raise _bad("missing CSeq")
    value = value.strip()
    if not DIGITS.fullmatch(value) or len(value) > 10:
        raise _bad("invalid CSeq")
    return int(value)


_URI_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


def split_uri(uri: str) -> tuple[str, str, dict[str, str]]:
    """Split a Request-URI into (path, raw query, first value of each query key).

    The path is percent-decoded and stripped of surrounding slashes, so
    ``rtsp://h/cam1/`` and ``rtsp://h/cam%31`` both name ``cam1``; ``*`` gives
    an empty path.
    """
    if uri == "*":
        return "", "", {}
    if _URI_FORBIDDEN.search(uri):
        raise _bad("invalid characters in URI")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - validates the port, raises ValueError
    except ValueError:
        raise _bad("malformed URI") from None
    if parts.scheme.lower() not in ("rtsp", "rtsps") or not parts.hostname:
        raise _bad("URI must be absolute rtsp:// or rtsps://")
    try:
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        raise _bad("URI path is not UTF-8") from None
    if UNSAFE_TEXT.search(path):
        raise _bad("control character in URI path")
    query: dict[str, str] = {}
    for key, val in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(key, val)
    return path.strip("/"), parts.query, query
