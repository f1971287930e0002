"""Sans-I/O H.265/HEVC RTP payload helpers (RFC 7798).

Same contract as :mod:`gateway.protocols.h264`: inspection functions never raise and accept an
``offset`` into the RTP packet; :func:`depacketize` and :func:`packetize` raise
:class:`NalError`.

``donl=True`` must be passed when the SDP signals ``sprop-max-don-diff`` > 0, because then
every single-NAL packet, aggregation packet and first fragment carries a 16-bit DONL field
(RFC 7798 §4.4) that shifts the layout.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.protocols.fragments import FragmentAssembler, NalError, fragment
from gateway.protocols.h264 import Buffer, annexb, split_annexb

__all__ = [
    "AP",
    "FU",
    "NAL_BLA_W_LP",
    "NAL_CRA",
    "NAL_PPS",
    "NAL_SPS",
    "NAL_VPS",
    "PACI",
    "NalError",
    "annexb",
    "depacketize",
    "is_keyframe_packet",
    "is_parameter_set_packet",
    "nal_type",
    "nal_types",
    "packetize",
    "split_annexb",
]

NAL_BLA_W_LP = 16
NAL_IDR_W_RADL = 19
NAL_IDR_N_LP = 20
NAL_CRA = 21
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_SEI_PREFIX = 39
AP = 48
FU = 49
PACI = 50


def nal_type(nal: Buffer) -> int:
    """Type of a raw NAL unit (first header byte)."""
    return (nal[0] >> 1) & 0x3F


def _ap_types(payload: Buffer, at: int, end: int, donl: bool) -> list[int]:
    types = []
    first = True
    while True:
        if donl:
            # DONL (2 bytes) before the first unit, DOND (1 byte) before the others.
            at += 2 if first else 1
        first = False
        if at + 2 > end:
            break
        size = (payload[at] << 8) | payload[at + 1]
        at += 2
        if size < 2 or at + size > end:
            break
        types.append((payload[at] >> 1) & 0x3F)
        at += size
    return types


def nal_types(payload: Buffer, offset: int = 0, donl: bool = False) -> list[int]:
    """NAL unit types carried by one RTP payload; [] for anything malformed.

    A fragmentation unit reports its inner type only on the start fragment.
    """
    end = len(payload)
    if offset + 2 > end:
        return []
    t = (payload[offset] >> 1) & 0x3F
    if t < AP:
        return [t]
    if t == FU:
        if offset + 2 < end and payload[offset + 2] & 0x80:
            return [payload[offset + 2] & 0x3F]
        return []
    if t == AP:
        return _ap_types(payload, offset + 2, end, donl)
    # PACI (50) and the unassigned 51..63 are not worth decoding for a relay.
    return []


def is_keyframe_packet(payload: Buffer, offset: int = 0, donl: bool = False) -> bool:
    """True if the payload is, starts, or aggregates an IRAP picture (types 16..21)."""
    n = len(payload)
    if offset + 2 > n:
        return False
    t = (payload[offset] >> 1) & 0x3F
    if 16 <= t <= 21:
        return True
    if t == FU:
        if offset + 2 >= n:
            return False
        fu = payload[offset + 2]
        return bool(fu & 0x80) and 16 <= (fu & 0x3F) <= 21
    if t == AP:
        for inner in _ap_types(payload, offset + 2, n, donl):
            if 16 <= inner <= 21:
                return True
    return False


def is_parameter_set_packet(payload: Buffer, offset: int = 0, donl: bool = False) -> bool:
    """True if the payload carries a VPS, SPS or PPS."""
    for t in nal_types(payload, offset, donl):
        if NAL_VPS <= t <= NAL_PPS:
            return True
    return False


def depacketize(payloads: Iterable[Buffer], donl: bool = False) -> list[bytes]:
    """Reassemble one access unit's RTP payloads (in sequence order) into NAL units.

    DON values are skipped, not used for reordering; PACI packets are ignored.
    """
    out: list[bytes] = []
    fragments = FragmentAssembler()
    for raw in payloads:
        p = bytes(raw)
        if len(p) < 2:
            raise NalError("RTP payload shorter than the HEVC payload header")
        t = (p[0] >> 1) & 0x3F
        if t == FU:
            if len(p) < 3:
                raise NalError("FU payload without FU header")
            fu = p[2]
            start = bool(fu & 0x80)
            inner = fu & 0x3F
            body_at = 5 if donl and start else 3
            if len(p) < body_at:
                raise NalError("FU start fragment without DONL")
            header = bytes(((p[0] & 0x81) | (inner << 1), p[1]))
            nal = fragments.feed(start, bool(fu & 0x40), inner, header, p[body_at:])
            if nal is not None:
                out.append(nal)
            continue
        fragments.interrupted()
        if t < AP:
            if donl:
                if len(p) < 4:
                    raise NalError("single NAL packet without DONL")
                out.append(p[:2] + p[4:])
            else:
                out.append(p)
        elif t == AP:
            _split_ap(p, donl, out)
    fragments.finish()
    return out


def _split_ap(p: bytes, donl: bool, out: list[bytes]) -> None:
    at = 2
    end = len(p)
    first = True
    if at >= end:
        raise NalError("empty aggregation packet")
    while at < end:
        if donl:
            at += 2 if first else 1
        first = False
        if at + 2 > end:
            raise NalError("truncated aggregation unit size")
        size = (p[at] << 8) | p[at + 1]
        at += 2
        if size < 2:
            raise NalError("aggregation unit shorter than a NAL header")
        if at + size > end:
            raise NalError("aggregation unit exceeds payload")
        out.append(p[at : at + size])
        at += size


def packetize(nal: Buffer, mtu: int = 1200) -> list[bytes]:
    """RTP payloads for one NAL unit: itself if it fits in ``mtu``, else FUs (no DONL)."""
    nal = bytes(nal)
    if len(nal) < 2:
        raise NalError("NAL unit shorter than its 2-byte header")
    if len(nal) <= mtu:
        return [nal]
    if mtu < 4:
        raise ValueError("mtu too small for FU fragmentation")
    header = bytes(((nal[0] & 0x81) | (FU << 1), nal[1]))
    return fragment(header, (nal[0] >> 1) & 0x3F, memoryview(nal)[2:], mtu - 3)
