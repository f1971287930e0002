"""Trickle ICE fragments (``application/trickle-ice-sdpfrag``, RFC 8840), sans I/O.

A WHEP client PATCHes the session with the candidates it gathers after its offer::

    a=ice-ufrag:EsAw
    a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
    m=audio 9 UDP/TLS/RTP/SAVPF 0
    a=mid:0
    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0
    a=end-of-candidates

Every line is checked: a fragment is accepted whole or refused whole (400), so nothing half of
a bad fragment reaches the ICE agent. Candidates of another ICE generation (``ufrag`` extension)
and mDNS hostnames (``*.local``, meaningless to a server outside the browser's LAN; its checks
arrive as peer-reflexive anyway) are dropped.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from aiortc.rtcicetransport import RTCIceCandidate

MAX_FRAGMENT_BYTES = 16 * 1024
MAX_LINES = 256
MAX_CANDIDATES = 32

_FOUNDATION = re.compile(r"[A-Za-z0-9+/]{1,32}")
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]{1,256}")
_TYPES = frozenset({"host", "srflx", "prflx", "relay"})
_MDNS = re.compile(r"[A-Za-z0-9-]{1,63}\.local")


class FragmentError(ValueError):
    """The fragment is malformed: answer 400 and change nothing."""


@dataclass
class Fragment:
    ufrag: str | None = None
    pwd: str | None = None
    mids: list[str] = field(default_factory=list)
    candidates: list[tuple[str | None, RTCIceCandidate]] = field(default_factory=list)  # (mid,)
    end_of_candidates: bool = False
    dropped: int = 0  # candidates ignored (mDNS, TCP, other components or generations)


def _uint(text: str, what: str, maximum: int) -> int:
    if not text.isdigit() or len(text) > 10:
        raise FragmentError(f"{what} {text[:20]!r} is not a number")
    value = int(text)
    if value > maximum:
        raise FragmentError(f"{what} {value} out of range")
    return value


def parse_candidate(value: str) -> tuple[RTCIceCandidate | None, str | None]:
    """``a=candidate:`` value → (candidate, its ufrag extension), or (None, _) for one we
    ignore. Raises ``FragmentError`` for one that is malformed."""
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ":
        raise FragmentError(
            "candidate needs foundation, component, transport, priority, "
            "address, port, 'typ' and a type"
        )
    foundation, component_s, transport, priority_s, address, port_s, _, typ = bits[:8]
    if not _FOUNDATION.fullmatch(foundation):
        raise FragmentError(f"bad candidate foundation {foundation[:40]!r}")
    component = _uint(component_s, "component", 256)
    priority = _uint(priority_s, "priority", 0xFFFFFFFF)
    port = _uint(port_s, "port", 65535)
    if typ not in _TYPES:
        raise FragmentError(f"unknown candidate type {typ[:20]!r}")
    if len(bits) % 2:
        raise FragmentError("candidate extensions must be name/value pairs")
    ext = dict(zip(bits[8::2], bits[9::2], strict=True))
    related_address = ext.get("raddr")
    related_port = _uint(ext["rport"], "rport", 65535) if "rport" in ext else None
    mdns = bool(_MDNS.fullmatch(address))
    if not mdns:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise FragmentError(f"candidate address {address[:60]!r} is not an IP") from None
    if mdns or transport.lower() != "udp" or component != 1 or port == 0:
        return None, ext.get("ufrag")
    candidate = RTCIceCandidate(
        component=component,
        foundation=foundation,
        ip=address,
        port=port,
        priority=priority,
        protocol="udp",
        type=typ,
        relatedAddress=related_address,
        relatedPort=related_port,
    )
    return candidate, ext.get("ufrag")


def parse_fragment(body: bytes) -> Fragment:
    if len(body) > MAX_FRAGMENT_BYTES:
        raise FragmentError(f"fragment larger than {MAX_FRAGMENT_BYTES} bytes")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FragmentError("fragment is not ASCII") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_LINES:
        raise FragmentError(f"fragment has more than {MAX_LINES} lines")
    frag = Fragment()
    mid: str | None = None
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise FragmentError(f"not an SDP line: {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            mid = None
            continue
        if kind != "a":
            raise FragmentError(f"unexpected {kind}= line in a trickle fragment")
        name, _, attr = value.partition(":")
        if name == "ice-ufrag":
            if not _ICE_CHARS.fullmatch(attr):
                raise FragmentError("bad a=ice-ufrag")
            frag.ufrag = attr
        elif name == "ice-pwd":
            if not _ICE_CHARS.fullmatch(attr):
                raise FragmentError("bad a=ice-pwd")
            frag.pwd = attr
        elif name == "mid":
            if not attr or len(attr) > 32:
                raise FragmentError("bad a=mid")
            mid = attr
            frag.mids.append(attr)
        elif name == "candidate":
            if len(frag.candidates) + frag.dropped >= MAX_CANDIDATES:
                raise FragmentError(f"more than {MAX_CANDIDATES} candidates in one fragment")
            candidate, ufrag = parse_candidate(attr)
            if candidate is None or (ufrag is not None and frag.ufrag not in (None, ufrag)):
                frag.dropped += 1
                continue
            frag.candidates.append((mid, candidate))
        elif name == "end-of-candidates":
            frag.end_of_candidates = True
        elif name in ("ice-options", "group"):
            continue
        else:
            raise FragmentError(f"unexpected a={name[:30]} in a trickle fragment")
    return frag
