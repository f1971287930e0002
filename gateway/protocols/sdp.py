"""Sans-I/O SDP (RFC 8866, formerly RFC 4566) parsing and formatting for RTSP DESCRIBE.

Camera SDP is routinely sloppy, so the parser is tolerant where it costs nothing (LF or
CRLF, blank lines, trailing whitespace, unknown line types, odd attributes) but strict
about the structure the relay depends on (``v=`` first, well-formed ``m=`` lines) and about
size, because the DESCRIBE body comes from an untrusted peer. :class:`SdpError` is the only
exception that escapes :func:`parse_sdp`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_LINES",
    "MAX_MEDIA",
    "MAX_SDP_BYTES",
    "STATIC_PAYLOAD_TYPES",
    "Attribute",
    "MediaDescription",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "format_sdp",
    "h264_sprop_parameter_sets",
    "h265_sprop",
    "parse_sdp",
    "resolve_control",
]

MAX_SDP_BYTES = 128 * 1024
MAX_LINES = 4096
MAX_MEDIA = 64

Attribute = tuple[str, str | None]


class SdpError(ValueError):
    """Malformed, oversized or undecodable SDP."""


@dataclass(frozen=True, slots=True)
class RtpMap:
    encoding: str  # upper-cased, e.g. "H264", "MPEG4-GENERIC"
    clock_rate: int
    channels: int | None = None


# RFC 3551 §6 static payload types, so SDP that omits a=rtpmap for them still resolves.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    0: RtpMap("PCMU", 8000, 1),
    3: RtpMap("GSM", 8000, 1),
    4: RtpMap("G723", 8000, 1),
    5: RtpMap("DVI4", 8000, 1),
    6: RtpMap("DVI4", 16000, 1),
    7: RtpMap("LPC", 8000, 1),
    8: RtpMap("PCMA", 8000, 1),
    9: RtpMap("G722", 8000, 1),
    10: RtpMap("L16", 44100, 2),
    11: RtpMap("L16", 44100, 1),
    12: RtpMap("QCELP", 8000, 1),
    13: RtpMap("CN", 8000, 1),
    14: RtpMap("MPA", 90000),
    15: RtpMap("G728", 8000, 1),
    16: RtpMap("DVI4", 11025, 1),
    17: RtpMap("DVI4", 22050, 1),
    18: RtpMap("G729", 8000, 1),
    25: RtpMap("CELB", 90000),
    26: RtpMap("JPEG", 90000),
    28: RtpMap("NV", 90000),
    31: RtpMap("H261", 90000),
    32: RtpMap("MPV", 90000),
    33: RtpMap("MP2T", 90000),
    34: RtpMap("H263", 90000),
}

# ASCII-only: int() would also accept other Unicode digits and unbounded lengths.
_UINT = re.compile(r"[0-9]{1,10}")
_ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_LINE_TYPE = re.compile(r"[A-Za-z]")


def _uint(text: str, what: str, maximum: int) -> int:
    if not _UINT.fullmatch(text):
        raise SdpError(f"bad {what}: {text[:40]!r}")
    value = int(text)
    if value > maximum:
        raise SdpError(f"{what} out of range: {value}")
    return value


def _payload_type(text: str) -> int | None:
    if _UINT.fullmatch(text):
        value = int(text)
        if value <= 127:
            return value
    return None


def _opt_uint(text: str) -> int | None:
    text = text.strip()
    return int(text) if _UINT.fullmatch(text) else None


def _find(attributes: list[Attribute], name: str) -> str | None:
    name = name.lower()
    for key, value in attributes:
        if key.lower() == name:
            return value
    return None


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    port_count: int | None = None  # the "/2" of "m=video 5000/2 ..."
    other: list[tuple[str, str]] = field(default_factory=list)  # i=, k=, unknown lines

    def get(self, name: str) -> str | None:
        """Value of the first attribute ``name`` (case-insensitive); None if absent/flag."""
        return _find(self.attributes, name)

    @property
    def control(self) -> str | None:
        return self.get("control")

    @property
    def payload_type(self) -> int | None:
        return _payload_type(self.formats[0]) if self.formats else None

    def rtpmap(self) -> dict[int, RtpMap]:
        """Explicit a=rtpmap entries, plus static-table entries for listed formats."""
        result: dict[int, RtpMap] = {}
        for key, value in self.attributes:
            if key.lower() != "rtpmap" or value is None:
                continue
            parts = value.split(None, 1)
            if len(parts) != 2:
                continue
            pt = _payload_type(parts[0])
            fields = parts[1].strip().split("/")
            if pt is None or pt in result or len(fields) not in (2, 3) or not fields[0]:
                continue
            clock = _opt_uint(fields[1])
            channels = _opt_uint(fields[2]) if len(fields) == 3 else None
            if clock is None or (len(fields) == 3 and channels is None):
                continue
            result[pt] = RtpMap(fields[0].upper(), clock, channels)
        for fmt in self.formats:
            pt = _payload_type(fmt)
            if pt is not None and pt not in result and pt in STATIC_PAYLOAD_TYPES:
                result[pt] = STATIC_PAYLOAD_TYPES[pt]
        return result

    def fmtp(self) -> dict[int, dict[str, str]]:
        """a=fmtp parameters per payload type; keys lower-cased (they are case-insensitive)."""
        result: dict[int, dict[str, str]] = {}
        for key, value in self.attributes:
            if key.lower() != "fmtp" or value is None:
                continue
            parts = value.split(None, 1)
            pt = _payload_type(parts[0]) if parts else None
            if pt is None or pt in result:
                continue
            params: dict[str, str] = {}
            for item in (parts[1] if len(parts) == 2 else "").split(";"):
                name, _, val = item.partition("=")
                name = name.strip().lower()
                if name:
                    params.setdefault(name, val.strip())
            result[pt] = params
        return result

    @property
    def codec(self) -> str | None:
        pt = self.payload_type
        if pt is None:
            return None
        entry = self.rtpmap().get(pt)
        return entry.encoding if entry else None

    @property
    def clock_rate(self) -> int | None:
        pt = self.payload_type
        if pt is None:
            return None
        entry = self.rtpmap().get(pt)
        return entry.clock_rate if entry else None


@dataclass
class SessionDescription:
    version: int = 0
    origin: str = ""
    name: str = ""
    connection: str | None = None
    timing: str = ""
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    # Other session-level lines (i=, u=, e=, p=, b=, extra t=/r=, z=, k=, unknown), grouped
    # into RFC order at parse time so that format → parse reproduces the same object.
    other: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        return _find(self.attributes, name)

    @property
    def control(self) -> str | None:
        return self.get("control")


# RFC 8866 §5 line order: session "i u e p" precede c=, "b" sits between c= and t=, the
# rest follows t=. At media level "i" precedes c=. Everything else keeps its input order.
_SESSION_GROUP = {"i": 0, "u": 0, "e": 0, "p": 0, "b": 1}
_MEDIA_GROUP = {"i": 0}


def _session_group(line: tuple[str, str]) -> int:
    return _SESSION_GROUP.get(line[0], 2)


def _media_group(line: tuple[str, str]) -> int:
    return _MEDIA_GROUP.get(line[0], 1)


def _decode(data: str | bytes | bytearray | memoryview) -> str:
    if isinstance(data, str):
        if len(data) > MAX_SDP_BYTES or len(data.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
            raise SdpError("SDP larger than 128 KiB")
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) > MAX_SDP_BYTES:
            raise SdpError("SDP larger than 128 KiB")
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP is not valid UTF-8: {exc}") from None
    raise SdpError(f"expected str or bytes, got {type(data).__name__}")


def _parse_media_line(value: str) -> MediaDescription:
    tokens = value.split()
    if len(tokens) < 4:
        raise SdpError(f"malformed m= line: {value[:80]!r}")
    media, port_text, proto, *formats = tokens
    port_count: int | None = None
    if "/" in port_text:
        port_text, _, count_text = port_text.partition("/")
        port_count = _uint(count_text, "port count", 0xFFFF)
        if port_count == 0:
            raise SdpError("port count must be positive")
    port = _uint(port_text, "port", 0xFFFF)
    return MediaDescription(media, port, proto, formats, port_count=port_count)


def parse_sdp(data: str | bytes) -> SessionDescription:
    text = _decode(data)
    if text.startswith("\ufeff"):
        text = text[1:]
    raw_lines = text.split("\n")
    if len(raw_lines) > MAX_LINES + 1:  # +1: a final newline yields one empty element
        raise SdpError(f"SDP has more than {MAX_LINES} lines")
    lines: list[tuple[str, str]] = []
    for raw in raw_lines:
        line = raw.rstrip(" \t\r")
        if not line:
            continue
        if "\r" in line or "\x00" in line:
            raise SdpError("stray CR or NUL inside an SDP line")
        if len(line) < 2 or line[1] != "=" or not _LINE_TYPE.fullmatch(line[0]):
            raise SdpError(f"malformed SDP line: {line[:80]!r}")
        lines.append((line[0], line[2:]))
    if not lines or lines[0][0] != "v":
        raise SdpError("SDP must start with v=")

    sd = SessionDescription(version=_uint(lines[0][1].strip(), "version", 0xFFFF))
    seen: set[str] = set()
    current: MediaDescription | None = None
    for kind, value in lines[1:]:
        if kind == "v":
            raise SdpError("duplicate v= line")
        if kind == "m":
            if len(sd.media) >= MAX_MEDIA:
                raise SdpError(f"more than {MAX_MEDIA} media sections")
            current = _parse_media_line(value)
            sd.media.append(current)
        elif current is not None:
            if kind == "a":
                current.attributes.append(_parse_attribute(value))
            elif kind == "c" and current.connection is None:
                current.connection = value
            elif kind == "b":
                current.bandwidths.append(value)
            else:
                current.other.append((kind, value))
        elif kind == "a":
            sd.attributes.append(_parse_attribute(value))
        elif kind in ("o", "s", "c", "t") and kind not in seen:
            seen.add(kind)
            if kind == "o":
                sd.origin = value
            elif kind == "s":
                sd.name = value
            elif kind == "c":
                sd.connection = value
            else:
                sd.timing = value
        elif kind in ("o", "s"):
            raise SdpError(f"duplicate {kind}= line")
        else:
            sd.other.append((kind, value))
    sd.other.sort(key=_session_group)
    for md in sd.media:
        md.other.sort(key=_media_group)
    return sd


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    return (name, rest if sep else None)


def _check(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise SdpError(f"SDP value contains CR, LF or NUL: {value[:40]!r}")
    return value


def _format_attribute(attribute: Attribute) -> str:
    name, value = attribute
    return f"a={_check(name)}" if value is None else f"a={_check(name)}:{_check(value)}"


def format_sdp(sd: SessionDescription) -> str:
    """Serialise with CRLF line endings in RFC 8866 order."""
    other = sorted(sd.other, key=_session_group)
    out = [f"v={sd.version}"]
    if sd.origin:
        out.append(f"o={_check(sd.origin)}")
    # RFC 8866 §5.3: s= is mandatory; a single space is the recommended empty name.
    out.append(f"s={_check(sd.name) or ' '}")
    out.extend(f"{k}={_check(v)}" for k, v in other if _session_group((k, v)) == 0)
    if sd.connection is not None:
        out.append(f"c={_check(sd.connection)}")
    out.extend(f"{k}={_check(v)}" for k, v in other if _session_group((k, v)) == 1)
    # An empty t= must still be written if extra t= lines follow, or the first of those
    # would be re-read as the session timing.
    if sd.timing or any(kind == "t" for kind, _ in other):
        out.append(f"t={_check(sd.timing)}")
    out.extend(f"{k}={_check(v)}" for k, v in other if _session_group((k, v)) == 2)
    out.extend(_format_attribute(a) for a in sd.attributes)
    for md in sd.media:
        port = f"{md.port}/{md.port_count}" if md.port_count is not None else str(md.port)
        fields = [md.media, port, md.proto, *md.formats]
        if any(not f or any(c.isspace() for c in f) for f in fields) or not md.formats:
            raise SdpError("m= fields must be non-empty and contain no whitespace")
        out.append("m=" + " ".join(fields))
        media_other = sorted(md.other, key=_media_group)
        out.extend(f"{k}={_check(v)}" for k, v in media_other if _media_group((k, v)) == 0)
        if md.connection is not None:
            out.append(f"c={_check(md.connection)}")
        out.extend(f"b={_check(b)}" for b in md.bandwidths)
        out.extend(f"{k}={_check(v)}" for k, v in media_other if _media_group((k, v)) == 1)
        out.extend(_format_attribute(a) for a in md.attributes)
    return "\r\n".join(out) + "\r\n"


def resolve_control(base_url: str, control: str | None) -> str:
    """Resolve an a=control value against the Content-Base (or request URL).

    Relative controls are appended to the base treated as a directory, the way live555,
    ffmpeg and GStreamer do, rather than by RFC 3986 merging: cameras (e.g. Dahua) send
    a Content-Base such as ``rtsp://h/cam?channel=1/`` and expect exactly
    ``rtsp://h/cam?channel=1/trackID=0`` back, which strict merging would mangle.
    Path-absolute controls (``/x``) replace the base's path, as RFC 3986 says.
    """
    control = control.strip() if control is not None else ""
    if not control or control == "*":
        return base_url
    if _ABSOLUTE_URL.match(control):
        return control
    if control.startswith("/"):
        match = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*", base_url)
        if match:
            return match.group(0) + control
    return base_url + control if base_url.endswith("/") else f"{base_url}/{control}"


def _fmtp_for(md: MediaDescription, encodings: tuple[str, ...]) -> dict[str, str]:
    rtpmaps = md.rtpmap()
    fmtps = md.fmtp()
    for fmt in md.formats:
        pt = _payload_type(fmt)
        if pt is not None and pt in rtpmaps and rtpmaps[pt].encoding in encodings:
            return fmtps.get(pt, {})
    pt = md.payload_type
    return fmtps.get(pt, {}) if pt is not None else {}


def _b64_list(value: str | None) -> list[bytes]:
    if not value:
        return []
    out = []
    for item in value.split(","):
        item = "".join(item.split())
        if not item:
            continue
        # Some cameras drop the trailing "=" padding; restore it rather than reject.
        item += "=" * (-len(item) % 4)
        try:
            decoded = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SdpError(f"bad base64 in sprop parameter: {item[:40]!r}") from exc
        if decoded:
            out.append(decoded)
    return out


def h264_sprop_parameter_sets(md: MediaDescription) -> list[bytes]:
    """SPS/PPS NAL units from ``sprop-parameter-sets`` (RFC 6184 §8.1)."""
    return _b64_list(_fmtp_for(md, ("H264",)).get("sprop-parameter-sets"))


def h265_sprop(md: MediaDescription) -> dict[str, list[bytes]]:
    """``{"sprop-vps": [...], "sprop-sps": [...], "sprop-pps": [...]}`` (RFC 7798 §7.1)."""
    params = _fmtp_for(md, ("H265", "HEVC"))
    return {key: _b64_list(params.get(key)) for key in ("sprop-vps", "sprop-sps", "sprop-pps")}
