"""Sans-I/O RTSP 1.0 (RFC 2326) protocol: message parser, serializers, header helpers.

No sockets and no asyncio here: the connection code feeds received bytes to
:class:`RtspParser` and acts on the events it returns, and writes whatever the
``format_*`` functions produce.  Keeping the protocol pure makes it testable
byte-for-byte and lets the same parser serve the server and the client side.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "DEFAULT_LIMITS",
    "STATUS_PHRASES",
    "Event",
    "Headers",
    "InterleavedFrame",
    "Limits",
    "RangeSpec",
    "Request",
    "Response",
    "RtpInfoEntry",
    "RtspError",
    "RtspParser",
    "TransportSpec",
    "format_range",
    "format_request",
    "format_response",
    "format_rtp_info",
    "format_session",
    "format_transport",
    "frame",
    "parse_cseq",
    "parse_range",
    "parse_rtp_info",
    "parse_session",
    "parse_transport",
    "split_uri",
]

RTSP_VERSION = "RTSP/1.0"


class RtspError(Exception):
    """Malformed or unacceptable input; ``status`` is what to answer the peer with.

    ``cseq`` carries the offending request's CSeq when the parser got far enough
    to see one, so the server can still echo it in its error response (clients
    match responses to requests by CSeq and otherwise hang until timeout).
    """

    def __init__(self, status: int, reason: str, *, cseq: str | None = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.cseq = cseq

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class Headers:
    """Ordered, case-insensitive multi-dict of header fields.

    A list rather than a dict: RTSP messages carry a handful of headers, order
    matters for faithful relaying, and repeated fields (WWW-Authenticate) must
    survive.
    """

    __slots__ = ("_items", "_keys")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._keys: list[str] = []
        for name, value in items:
            self.add(name, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower()
        for i, k in enumerate(self._keys):
            if k == key:
                return self._items[i][1]
        return default

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [self._items[i][1] for i, k in enumerate(self._keys) if k == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._keys

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))
        self._keys.append(name.lower())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    uri: str
    version: str
    headers: Headers
    body: bytes = b""

    @property
    def cseq(self) -> str | None:
        return self.headers.get("CSeq")


@dataclass(frozen=True, slots=True)
class Response:
    version: str
    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    @property
    def cseq(self) -> str | None:
        return self.headers.get("CSeq")


@dataclass(frozen=True, slots=True)
class InterleavedFrame:
    channel: int
    payload: bytes


Event = Request | Response | InterleavedFrame


@dataclass(frozen=True)
class Limits:
    max_headers: int = 255
    max_header_name: int = 512
    max_header_value: int = 2048
    max_uri: int = 2048
    max_body: int = 128 * 1024
    max_start_line: int = 4096

    @property
    def max_head(self) -> int:
        """Largest header block (start line through the blank line) we will buffer.

        Slightly above max_headers * (name + value) so that a block in which
        every header is at its individual limit (plus ": " and CRLF) still fits.
        """
        per_header = self.max_header_name + self.max_header_value + 4
        return self.max_start_line + 2 + self.max_headers * per_header + 2

    @property
    def max_buffered(self) -> int:
        return self.max_body + self.max_head + 65539


DEFAULT_LIMITS = Limits()

# RFC 7230 tchar; RFC 2326's token grammar is the same set in practice.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_STR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# '$' is deliberately absent: a leading '$' always means an interleaved frame.
_TOKEN_START = frozenset((string.ascii_letters + string.digits + "!#%&'*+-.^_`|~").encode())
# Control characters other than HTAB; a CR is only legal directly before LF.
_BAD_HEAD_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_VERSION = re.compile(rb"[A-Za-z]+/[0-9]+\.[0-9]+")
_STATUS = re.compile(rb"[1-5][0-9][0-9]")
_DIGITS = re.compile(r"[0-9]+")

_DOLLAR = 0x24
_CR = 0x0D
_LF = 0x0A


class RtspParser:
    """Incremental parser for one direction of an RTSP connection.

    Accepts requests, responses and ``$``-interleaved binary frames in any
    order and across arbitrary chunk boundaries.  Consumed bytes are dropped
    from the front of a bytearray (CPython does this in O(1)), and while nothing
    is buffered incoming chunks are parsed in place, so a publisher pushing
    back-to-back RTP frames costs one copy per payload.
    """

    __slots__ = (
        "_body_len",
        "_buf",
        "_error",
        "_head",
        "_line_seen",
        "_scanned",
        "limits",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._error: RtspError | None = None
        # Parsed start line + headers waiting for a Content-Length body.
        self._head: Request | Response | None = None
        self._body_len = 0
        # How far into the pending header block we have already searched for
        # the blank line; without it 1-byte feeds would rescan quadratically.
        self._scanned = 0
        self._line_seen = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        if self._error is not None:
            raise self._error.with_traceback(None)
        if not isinstance(data, bytes):
            data = bytes(data)
        events: list[Event] = []
        src: bytes | bytearray
        if self._buf:
            self._buf += data
            src = self._buf
        else:
            src = data
        try:
            pos = self._parse(src, events)
        except RtspError as exc:
            self._error = exc
            self._buf = bytearray()
            self._head = None
            raise
        if src is self._buf:
            del self._buf[:pos]
        elif pos < len(data):
            self._buf += memoryview(data)[pos:]
        return events

    def _parse(self, src: bytes | bytearray, events: list[Event]) -> int:
        pos = 0
        end = len(src)
        while True:
            head = self._head
            if head is not None:
                stop = pos + self._body_len
                if stop > end:
                    return pos
                events.append(_with_body(head, bytes(src[pos:stop])))
                self._head = None
                pos = stop
                continue
            if pos >= end:
                return pos
            c = src[pos]
            if c == _DOLLAR:
                # Hot path for a publisher's RTP stream: stay in this loop for
                # as long as frames are back to back.
                while end - pos >= 4 and src[pos] == _DOLLAR:
                    stop = pos + 4 + ((src[pos + 2] << 8) | src[pos + 3])
                    if stop > end:
                        return pos
                    events.append(InterleavedFrame(src[pos + 1], bytes(src[pos + 4 : stop])))
                    pos = stop
                if pos < end and src[pos] == _DOLLAR:
                    return pos  # fewer than 4 bytes of a frame header so far
                continue
            if c == _CR or c == _LF:
                # Stray CRLFs between messages (keepalives, sloppy body
                # lengths) are harmless; RFC 7230 §3.5 says to skip them.
                pos += 1
                continue
            if self._scanned == 0 and c not in _TOKEN_START:
                raise RtspError(400, f"unexpected byte 0x{c:02x} at start of message")
            head_end, block_end = self._find_head_end(src, pos, end)
            if head_end < 0:
                return pos
            msg, body_len = self._parse_head(bytes(src[pos:block_end]))
            self._scanned = 0
            self._line_seen = False
            pos = head_end
            if body_len:
                self._head = msg
                self._body_len = body_len
            else:
                events.append(msg)

    def _find_head_end(self, src: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
        """Return (index after the blank line, index after the last header's LF), or (-1, -1)."""
        limits = self.limits
        # Back up two bytes so a terminator straddling the previous chunk edge is found.
        start = pos + max(self._scanned - 2, 0)
        if not self._line_seen:
            line_stop = min(end, pos + limits.max_start_line + 2)
            nl = src.find(b"\n", start, line_stop)
            if nl < 0:
                if end - pos > limits.max_start_line + 1:
                    raise RtspError(400, "start line too long")
                self._scanned = end - pos
                return -1, -1
            line_len = nl - pos - (1 if src[nl - 1] == _CR else 0)
            if line_len > limits.max_start_line:
                raise RtspError(400, "start line too long")
            self._line_seen = True
        limit = pos + limits.max_head
        stop = min(end, limit)
        i = src.find(b"\n\r\n", start, stop)
        # Bare-LF terminators exist in the wild; only look before the CRLF one
        # so we never scan into following frame payloads.
        j = src.find(b"\n\n", start, stop if i < 0 else i + 2)
        if j >= 0:
            return j + 2, j + 1
        if i >= 0:
            return i + 3, i + 1
        if end >= limit:
            raise RtspError(400, "header block too large")
        self._scanned = end - pos
        return -1, -1

    def _parse_head(self, block: bytes) -> tuple[Request | Response, int]:
        limits = self.limits
        bad = _BAD_HEAD_BYTES.search(block)
        if bad is not None:
            raise RtspError(400, f"control character 0x{block[bad.start()]:02x} in header")
        lines = block.split(b"\n")
        lines.pop()  # block ends with LF
        start_line = lines[0]
        if start_line.endswith(b"\r"):
            start_line = start_line[:-1]

        headers = Headers()
        content_length: int | None = None
        seen_cseq = False
        seen_session = False
        cseq: str | None = None
        if len(lines) - 1 > limits.max_headers:
            raise RtspError(400, "too many headers")
        for raw in lines[1:]:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                raise RtspError(400, "empty header line")  # unreachable via terminator search
            if line[0] in (0x20, 0x09):
                raise RtspError(400, "obsolete header line folding", cseq=cseq)
            colon = line.find(b":")
            if colon < 0:
                raise RtspError(400, "header line without colon", cseq=cseq)
            raw_name = line[:colon]
            if len(raw_name) > limits.max_header_name:
                raise RtspError(400, "header name too long", cseq=cseq)
            if not _TOKEN.fullmatch(raw_name):
                raise RtspError(400, "invalid header name", cseq=cseq)
            raw_value = line[colon + 1 :].strip(b" \t")
            if len(raw_value) > limits.max_header_value:
                raise RtspError(400, "header value too long", cseq=cseq)
            name = raw_name.decode("ascii")
            try:
                value = raw_value.decode("utf-8")
            except UnicodeDecodeError:
                value = raw_value.decode("latin-1")
            key = name.lower()
            if key == "content-length":
                if not _DIGITS.fullmatch(value) or len(value) > 18:
                    raise RtspError(400, "invalid Content-Length", cseq=cseq)
                n = int(value)
                if content_length is not None and content_length != n:
                    raise RtspError(400, "conflicting Content-Length", cseq=cseq)
                content_length = n
            elif key == "cseq":
                if seen_cseq:
                    raise RtspError(400, "duplicate CSeq", cseq=cseq)
                seen_cseq = True
                cseq = value
            elif key == "session":
                if seen_session:
                    raise RtspError(400, "duplicate Session", cseq=cseq)
                seen_session = True
            headers.add(name, value)

        body_len = content_length or 0
        if body_len > limits.max_body:
            raise RtspError(413, "body too large", cseq=cseq)

        parts = start_line.split(b" ")
        if b"/" in parts[0]:
            return self._parse_status_line(start_line, headers, cseq), body_len
        if len(parts) != 3 or not all(parts):
            raise RtspError(400, "malformed request line", cseq=cseq)
        raw_method, raw_uri, raw_version = parts
        if not _TOKEN.fullmatch(raw_method):
            raise RtspError(400, "invalid method", cseq=cseq)
        if len(raw_uri) > limits.max_uri:
            raise RtspError(414, "request URI too long", cseq=cseq)
        if b"\t" in raw_uri:
            raise RtspError(400, "whitespace in request URI", cseq=cseq)
        try:
            uri = raw_uri.decode("utf-8")
        except UnicodeDecodeError:
            raise RtspError(400, "request URI is not UTF-8", cseq=cseq) from None
        version = _check_version(raw_version, cseq)
        if not seen_cseq:
            raise RtspError(400, "missing CSeq")
        return Request(raw_method.decode("ascii"), uri, version, headers), body_len

    @staticmethod
    def _parse_status_line(line: bytes, headers: Headers, cseq: str | None) -> Response:
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not _STATUS.fullmatch(parts[1]):
            raise RtspError(400, "malformed status line", cseq=cseq)
        version = _check_version(parts[0], cseq)
        reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
        return Response(version, int(parts[1]), reason, headers)


def _check_version(raw: bytes, cseq: str | None) -> str:
    if raw == b"RTSP/1.0":
        return RTSP_VERSION
    if _VERSION.fullmatch(raw):
        raise RtspError(505, f"unsupported version {raw.decode('ascii')}", cseq=cseq)
    raise RtspError(400, "malformed protocol version", cseq=cseq)


def _with_body(head: Request | Response, body: bytes) -> Request | Response:
    if isinstance(head, Request):
        return Request(head.method, head.uri, head.version, head.headers, body)
    return Response(head.version, head.status, head.reason, head.headers, body)


# --------------------------------------------------------------------------- serializers

STATUS_PHRASES: dict[int, str] = {
    100: "Continue",
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Time-out",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    415: "Unsupported Media Type",
    451: "Parameter Not Understood",
    452: "Conference Not Found",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    456: "Header Field Not Valid for Resource",
    457: "Invalid Range",
    458: "Parameter Is Read-Only",
    459: "Aggregate Operation Not Allowed",
    460: "Only Aggregate Operation Allowed",
    461: "Unsupported Transport",
    462: "Destination Unreachable",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Time-out",
    505: "RTSP Version Not Supported",
    551: "Option Not Supported",
}

_UNSAFE_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _format_headers(out: list[bytes], headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    # Values may echo client input (URIs, stream names); refusing CR/LF here is
    # what stops header injection into our own responses.
    for name, value in headers:
        if not _TOKEN_STR.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if _UNSAFE_TEXT.search(value):
            raise ValueError(f"control character in header {name!r}")
        if body and name.lower() == "content-length":
            continue
        out.append(f"{name}: {value}\r\n".encode())
    if body:
        out.append(b"Content-Length: %d\r\n" % len(body))
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)


def format_request(
    method: str, uri: str, headers: Iterable[tuple[str, str]], body: bytes = b""
) -> bytes:
    """Serialize a request; Content-Length is computed from ``body`` when there is one."""
    if not _TOKEN_STR.fullmatch(method):
        raise ValueError(f"invalid method {method!r}")
    if not uri or any(ch.isspace() for ch in uri) or _UNSAFE_TEXT.search(uri):
        raise ValueError(f"invalid request URI {uri!r}")
    out = [f"{method} {uri} {RTSP_VERSION}\r\n".encode()]
    return _format_headers(out, headers, body)


def format_response(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes = b"",
    reason: str | None = None,
) -> bytes:
    """Serialize a response; the reason phrase defaults to RFC 2326's wording."""
    if not 100 <= status <= 599:
        raise ValueError(f"invalid status {status}")
    if reason is None:
        reason = STATUS_PHRASES.get(status, "Unknown")
    if _UNSAFE_TEXT.search(reason):
        raise ValueError("control character in reason phrase")
    out = [f"{RTSP_VERSION} {status} {reason}\r\n".encode()]
    return _format_headers(out, headers, body)


def frame(channel: int, payload: bytes) -> bytes:
    """Wrap ``payload`` in an RFC 2326 §10.12 interleaved ``$`` frame."""
    if not 0 <= channel <= 255:
        raise ValueError(f"channel {channel} out of range 0..255")
    n = len(payload)
    if n > 65535:
        raise ValueError(f"interleaved payload of {n} bytes exceeds 65535")
    return bytes((_DOLLAR, channel, n >> 8, n & 0xFF)) + payload


# --------------------------------------------------------------------------- header values


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
    if _TOKEN_STR.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _parse_int(text: str, lo: int, hi: int, what: str) -> int:
    if not _DIGITS.fullmatch(text) or len(text) > 20:
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
            if not _TOKEN_STR.fullmatch(name):
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
        if not e.url or _UNSAFE_TEXT.search(e.url):
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
    if not _DIGITS.fullmatch(value) or len(value) > 10:
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
    if _UNSAFE_TEXT.search(path):
        raise _bad("control character in URI path")
    query: dict[str, str] = {}
    for key, val in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(key, val)
    return path.strip("/"), parts.query, query
