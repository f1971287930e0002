"""Sans-I/O RTP (RFC 3550) and RTCP helpers for the relay data path.

The per-packet functions (:func:`rtp_header`, :func:`rewrite_rtp`,
:func:`payload_of`, :func:`is_rtcp`) deliberately return plain ints/bytes rather than
objects: they run once per packet for thousands of streams, and allocating a dataclass
per packet is measurable at that rate. :class:`RtpPacket` is the friendly, slower
counterpart for tests, tooling and the transcoder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "RTCP_APP",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "RTP_HEADER",
    "ReceiverReport",
    "ReportBlock",
    "RtcpOther",
    "RtcpPacket",
    "RtpError",
    "RtpPacket",
    "SenderReport",
    "SequenceTracker",
    "build_goodbye",
    "build_receiver_report",
    "build_sender_report",
    "has_goodbye",
    "is_rtcp",
    "parse_rtcp",
    "payload_of",
    "rewrite_rtp",
    "rewrite_sender_report",
    "rtp_header",
]


class RtpError(ValueError):
    """A packet is too short or violates RFC 3550 framing."""


RTP_HEADER = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_RTCP_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IQIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_SSRC_AND_NTP = struct.Struct("!IQ")

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204


# --------------------------------------------------------------------------------------
# RTP fast path
# --------------------------------------------------------------------------------------


def rtp_header(packet: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int, int]:
    """Return ``(payload_type, marker, sequence, timestamp, ssrc, payload_offset)``.

    ``payload_offset`` skips CSRCs and the header extension. When the P bit is set the
    payload ends at ``len(packet) - packet[-1]``; use :func:`payload_of` to honour that.
    """
    n = len(packet)
    if n < 12:
        raise RtpError(f"RTP packet too short ({n} bytes)")
    b0, b1, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(packet)
    if b0 == 0x80:
        # Nearly every camera packet: no padding, extension or CSRCs.
        return b1 & 0x7F, b1 >> 7, sequence, timestamp, ssrc, 12
    if b0 & 0xC0 != 0x80:
        raise RtpError(f"unsupported RTP version {b0 >> 6}")
    offset = 12 + ((b0 & 0x0F) << 2)
    if b0 & 0x10:
        if n < offset + 4:
            raise RtpError("RTP header extension truncated")
        offset += 4 + (((packet[offset + 2] << 8) | packet[offset + 3]) << 2)
    end = n
    if b0 & 0x20:
        pad = packet[n - 1]
        # A zero pad count is meaningless and would let a hostile packet claim padding
        # without any; RFC 3550 §5.1 says the count includes itself.
        if pad == 0:
            raise RtpError("RTP padding count is zero")
        end -= pad
    if offset > end:
        raise RtpError("RTP header/padding exceed packet length")
    return b1 & 0x7F, b1 >> 7, sequence, timestamp, ssrc, offset


def payload_of(packet: bytes | bytearray | memoryview) -> memoryview:
    """Zero-copy view of the RTP payload (CSRCs, extension and padding removed)."""
    if len(packet) >= 12 and packet[0] == 0x80:
        return memoryview(packet)[12:]
    offset = rtp_header(packet)[5]
    end = len(packet)
    if packet[0] & 0x20:
        end -= packet[end - 1]
    return memoryview(packet)[offset:end]


def rewrite_rtp(
    packet: bytes | bytearray | memoryview, sequence: int, timestamp: int, ssrc: int
) -> bytes:
    """Copy of ``packet`` with sequence, timestamp and SSRC replaced (values wrap).

    Only the fixed header is validated (length and version); the relay has already run
    :func:`rtp_header` on the packet, so re-checking extensions here would be wasted work.
    """
    if len(packet) < 12 or packet[0] & 0xC0 != 0x80:
        raise RtpError("not an RTP packet")
    # One pack + one slice + one concatenation measured faster than bytearray/pack_into.
    return (
        RTP_HEADER.pack(
            packet[0],
            packet[1],
            sequence & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc & 0xFFFFFFFF,
        )
        + packet[12:]
    )


def is_rtcp(packet: bytes | bytearray | memoryview) -> bool:
    """RFC 5761 §4 demultiplexing: RTCP packet types 192..223 in the second byte."""
    return len(packet) >= 2 and 192 <= packet[1] <= 223


# --------------------------------------------------------------------------------------
# RTP friendly object
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class RtpPacket:
    """A decoded RTP packet.

    ``padding`` is the number of padding bytes (0 when the P bit is clear) rather than a
    flag, and ``extension`` carries ``(profile, data)`` rather than a flag, so that
    :meth:`serialize` can reproduce the packet exactly.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0
    version: int = 2

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        pt, marker, seq, ts, ssrc, offset = rtp_header(data)
        b0 = data[0]
        cc = b0 & 0x0F
        csrcs = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
        extension: tuple[int, bytes] | None = None
        if b0 & 0x10:
            ext_at = 12 + 4 * cc
            profile = _U16.unpack_from(data, ext_at)[0]
            extension = (profile, bytes(data[ext_at + 4 : offset]))
        padding = data[-1] if b0 & 0x20 else 0
        return cls(
            payload_type=pt,
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[offset : len(data) - padding]),
            marker=bool(marker),
            csrcs=tuple(csrcs),
            extension=extension,
            padding=padding,
            version=b0 >> 6,
        )

    def serialize(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type out of range: {self.payload_type}")
        if len(self.csrcs) > 15:
            raise RtpError("at most 15 CSRCs")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding out of range: {self.padding}")
        b0 = (
            ((self.version & 0x03) << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if self.extension is not None else 0)
            | len(self.csrcs)
        )
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            RTP_HEADER.pack(
                b0,
                b1,
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        ]
        parts.extend(_U32.pack(c & 0xFFFFFFFF) for c in self.csrcs)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4 or len(data) > 0xFFFF * 4:
                raise RtpError("extension data must be a multiple of 4 bytes, < 256 KiB")
            parts.append(_U16.pack(profile & 0xFFFF) + _U16.pack(len(data) // 4) + data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


# --------------------------------------------------------------------------------------
# RTCP
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 0..255, fixed point /256
    cumulative_lost: int  # signed 24-bit: duplicates can make it negative (RFC 3550 §6.4.1)
    highest_seq: int  # extended highest sequence number received
    jitter: int
    lsr: int
    dlsr: int


@dataclass(slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP, 32.32 fixed point
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class RtcpOther:
    """Any RTCP packet we do not decode (SDES, BYE, APP, feedback...), kept verbatim."""

    packet_type: int
    raw: bytes


RtcpPacket = SenderReport | ReceiverReport | RtcpOther


def _parse_blocks(data: bytes | memoryview, at: int, count: int) -> list[ReportBlock]:
    blocks = []
    for i in range(count):
        ssrc, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, at + 24 * i)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr))
    return blocks


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Split a compound RTCP packet and decode SR/RR; others are returned raw."""
    view = memoryview(data)
    n = len(view)
    if n < 4:
        raise RtpError(f"RTCP packet too short ({n} bytes)")
    out: list[RtcpPacket] = []
    at = 0
    while at < n:
        if n - at < 4:
            raise RtpError("trailing bytes after RTCP packet")
        b0, pt, words = _RTCP_HEADER.unpack_from(view, at)
        if b0 & 0xC0 != 0x80:
            raise RtpError(f"unsupported RTCP version {b0 >> 6}")
        length = (words + 1) * 4
        end = at + length
        if end > n:
            raise RtpError("RTCP length field exceeds packet")
        body_end = end
        if b0 & 0x20:
            # RFC 3550 §6.4.1: only the last packet of a compound may be padded.
            if end != n:
                raise RtpError("RTCP padding on a non-final packet")
            pad = view[end - 1]
            if pad == 0 or pad > length - 4:
                raise RtpError("bad RTCP padding count")
            body_end -= pad
        count = b0 & 0x1F
        if pt == RTCP_SR:
            if body_end - at < 28 + 24 * count:
                raise RtpError("RTCP SR shorter than its report count")
            ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(view, at + 4)
            blocks = _parse_blocks(view, at + 28, count)
            out.append(SenderReport(ssrc, ntp, rtp_ts, packets, octets, blocks))
        elif pt == RTCP_RR:
            if body_end - at < 8 + 24 * count:
                raise RtpError("RTCP RR shorter than its report count")
            ssrc = _U32.unpack_from(view, at + 4)[0]
            out.append(ReceiverReport(ssrc, _parse_blocks(view, at + 8, count)))
        else:
            out.append(RtcpOther(pt, bytes(view[at:end])))
        at = end
    return out


def _pack_blocks(reports: list[ReportBlock]) -> list[bytes]:
    if len(reports) > 31:
        raise RtpError("at most 31 report blocks per RTCP packet")
    parts = []
    for rb in reports:
        if not -0x800000 <= rb.cumulative_lost <= 0x7FFFFF:
            # Clamp rather than wrap: a wrapped value would report a wildly wrong loss.
            lost = max(-0x800000, min(0x7FFFFF, rb.cumulative_lost))
        else:
            lost = rb.cumulative_lost
        parts.append(
            _REPORT_BLOCK.pack(
                rb.ssrc & 0xFFFFFFFF,
                ((rb.fraction_lost & 0xFF) << 24) | (lost & 0xFFFFFF),
                rb.highest_seq & 0xFFFFFFFF,
                rb.jitter & 0xFFFFFFFF,
                rb.lsr & 0xFFFFFFFF,
                rb.dlsr & 0xFFFFFFFF,
            )
        )
    return parts


def build_sender_report(sr: SenderReport) -> bytes:
    blocks = _pack_blocks(sr.reports)
    words = (28 + 24 * len(blocks)) // 4 - 1
    return b"".join(
        [
            _RTCP_HEADER.pack(0x80 | len(blocks), RTCP_SR, words),
            _SR_INFO.pack(
                sr.ssrc & 0xFFFFFFFF,
                sr.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
                sr.rtp_timestamp & 0xFFFFFFFF,
                sr.packet_count & 0xFFFFFFFF,
                sr.octet_count & 0xFFFFFFFF,
            ),
            *blocks,
        ]
    )


def build_receiver_report(rr: ReceiverReport) -> bytes:
    blocks = _pack_blocks(rr.reports)
    words = (8 + 24 * len(blocks)) // 4 - 1
    return b"".join(
        [
            _RTCP_HEADER.pack(0x80 | len(blocks), RTCP_RR, words),
            _U32.pack(rr.ssrc & 0xFFFFFFFF),
            *blocks,
        ]
    )


def build_goodbye(ssrc: int, cname: str = "feedgate", reason: str = "") -> bytes:
    """A sender's leaving, as RFC 3550 §6.1 wants every compound packet: an empty receiver
    report first (receivers such as GStreamer's refuse a compound that opens otherwise), an SDES
    CNAME, then the BYE with an optional reason (§6.6)."""
    ssrc &= 0xFFFFFFFF
    name = cname.encode()[:255]
    item = _U32.pack(ssrc) + bytes((1, len(name))) + name + b"\x00"
    item += b"\x00" * (-len(item) % 4)  # the item list ends with a null, padded to a word
    sdes = _RTCP_HEADER.pack(0x81, RTCP_SDES, len(item) // 4) + item
    why = reason.encode()[:255]
    bye_body = _U32.pack(ssrc)
    if why:
        bye_body += bytes((len(why),)) + why
        bye_body += b"\x00" * (-len(bye_body) % 4)
    bye = _RTCP_HEADER.pack(0x81, RTCP_BYE, len(bye_body) // 4) + bye_body
    return build_receiver_report(ReceiverReport(ssrc)) + sdes + bye


def has_goodbye(packet: bytes | bytearray | memoryview) -> bool:
    """Whether a compound RTCP packet holds a BYE. Walks the headers only; a malformed
    compound is not a goodbye."""
    n = len(packet)
    at = 0
    while at + 4 <= n:
        if packet[at] & 0xC0 != 0x80:
            return False
        if packet[at + 1] == RTCP_BYE:
            return True
        at += (((packet[at + 2] << 8) | packet[at + 3]) + 1) * 4
    return False


def rewrite_sender_report(
    packet: bytes | bytearray | memoryview,
    ssrc: int,
    rtp_timestamp: int,
    ntp_timestamp: int | None = None,
) -> bytes:
    """Replace the sender SSRC, the RTP timestamp and (when given) the NTP timestamp of the
    leading SR; the rest is untouched."""
    if len(packet) < 28 or packet[0] & 0xC0 != 0x80 or packet[1] != RTCP_SR:
        raise RtpError("not an RTCP sender report")
    if (_U16.unpack_from(packet, 2)[0] + 1) * 4 < 28:
        raise RtpError("RTCP SR length field too small")
    buf = bytearray(packet)
    _U32.pack_into(buf, 4, ssrc & 0xFFFFFFFF)
    _U32.pack_into(buf, 16, rtp_timestamp & 0xFFFFFFFF)
    if ntp_timestamp is not None:
        struct.pack_into("!Q", buf, 8, ntp_timestamp & 0xFFFFFFFFFFFFFFFF)
    return bytes(buf)


# --------------------------------------------------------------------------------------
# Receive statistics
# --------------------------------------------------------------------------------------


class SequenceTracker:
    """Per-stream loss accounting on RTP sequence numbers.

    ``highest`` is the extended (cycle-counting) highest sequence number, -1 before the
    first packet. ``lost`` is the sum of gaps seen moving forward; packets that arrive late
    into a gap are not subtracted because, without a bitmap, they cannot be told apart from
    duplicates.
    """

    # RFC 3550 appendix A.1 values: forward jumps up to MAX_DROPOUT are loss, packets up to
    # MAX_MISORDER behind are late; anything else means the sender restarted its sequence.
    MAX_DROPOUT = 3000
    MAX_MISORDER = 100

    __slots__ = ("highest", "lost", "received", "restarts")

    def __init__(self) -> None:
        self.highest = -1
        self.received = 0
        self.lost = 0
        self.restarts = 0

    def feed(self, seq: int) -> int:
        """Account one packet; return how many packets went missing just before it."""
        seq &= 0xFFFF
        self.received += 1
        highest = self.highest
        if highest < 0:
            self.highest = seq
            return 0
        delta = (seq - highest) & 0xFFFF
        if delta == 0:
            return 0
        if delta <= self.MAX_DROPOUT:
            self.highest = highest + delta
            gap = delta - 1
            self.lost += gap
            return gap
        if 0x10000 - delta <= self.MAX_MISORDER:
            return 0
        # Restart: keep ``highest`` monotonic so consumers computing deltas never go negative.
        self.restarts += 1
        extended = (highest & ~0xFFFF) | seq
        if extended <= highest:
            extended += 0x10000
        self.highest = extended
        return 0
