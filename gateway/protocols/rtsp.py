"""Sans-I/O RTSP 1.0 (RFC 2326) messages: the incremental parser and the serializers.

No sockets and no asyncio here: the connection code feeds received bytes to
:class:`RtspParser` and acts on the events it returns, and writes whatever the
``format_*`` functions produce.  Keeping the protocol pure makes it testable
byte-for-byte and lets the same parser serve the server and the client side.
Header values (Transport, Session, Range, RTP-Info, URIs) are in
:mod:`gateway.protocols.rtsp_headers`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_LIMITS",
    "DIGITS",
    "STATUS_PHRASES",
    "TOKEN_TEXT",
    "UNSAFE_TEXT",
    "Event",
    "Headers",
    "InterleavedFrame",
    "Limits",
    "Pending",
    "Request",
    "Response",
    "RtspError",
    "RtspParser",
    "format_request",
    "format_response",
    "frame",
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


class Pending(StrEnum):
    """The part of a message the parser is waiting for more bytes of."""

    MESSAGE = "message"  # a start line and headers
    BODY = "body"  # the Content-Length body after a complete head
    FRAME = "frame"  # an interleaved '$' frame


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
TOKEN_TEXT = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# '$' is deliberately absent: a leading '$' always means an interleaved frame.
_TOKEN_START = frozenset((string.ascii_letters + string.digits + "!#%&'*+-.^_`|~").encode())
# Control characters other than HTAB; a CR is only legal directly before LF.
_BAD_HEAD_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_VERSION = re.compile(rb"[A-Za-z]+/[0-9]+\.[0-9]+")
_STATUS = re.compile(rb"[1-5][0-9][0-9]")
DIGITS = re.compile(r"[0-9]+")

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

    @property
    def pending(self) -> Pending | None:
        """What the bytes held back so far belong to: the head of a message, a message's body,
        an interleaved frame, or nothing (the peer is between messages)."""
        if self._head is not None:
            return Pending.BODY
        if not self._buf:
            return None
        return Pending.FRAME if self._buf[0] == _DOLLAR else Pending.MESSAGE

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
                if not DIGITS.fullmatch(value) or len(value) > 18:
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

UNSAFE_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _format_headers(out: list[bytes], headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    # Values may echo client input (URIs, stream names); refusing CR/LF here is
    # what stops header injection into our own responses.
    for name, value in headers:
        if not TOKEN_TEXT.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if UNSAFE_TEXT.search(value):
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
    if not TOKEN_TEXT.fullmatch(method):
        raise ValueError(f"invalid method {method!r}")
    if not uri or any(ch.isspace() for ch in uri) or UNSAFE_TEXT.search(uri):
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
    if UNSAFE_TEXT.search(reason):
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
