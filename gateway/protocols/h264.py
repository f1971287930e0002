"""Sans-I/O H.264 RTP payload helpers (RFC 6184) and SPS parsing.

Inspection functions (:func:`nal_types`, :func:`is_keyframe_packet`,
:func:`is_parameter_set_packet`) never raise: they see raw network input on the relay's
hot path and a malformed packet must simply count as "not a keyframe". Only
:func:`depacketize`, :func:`packetize` and :func:`parse_sps_resolution`, which produce data
someone will decode, raise :class:`NalError`.

All inspection functions take an optional ``offset`` so the relay can pass the whole RTP
packet plus the payload offset from :func:`gateway.protocols.rtp.rtp_header` without slicing.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.protocols.fragments import FragmentAssembler, NalError, fragment

__all__ = [
    "FU_A",
    "FU_B",
    "MTAP16",
    "MTAP24",
    "NAL_IDR",
    "NAL_PPS",
    "NAL_SPS",
    "STAP_A",
    "STAP_B",
    "BitReader",
    "Buffer",
    "NalError",
    "annexb",
    "depacketize",
    "is_keyframe_packet",
    "is_parameter_set_packet",
    "nal_types",
    "packetize",
    "parse_sps_resolution",
    "split_annexb",
    "unescape_rbsp",
]

Buffer = bytes | bytearray | memoryview

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
STAP_A = 24
STAP_B = 25
MTAP16 = 26
MTAP24 = 27
FU_A = 28
FU_B = 29

_START_CODE = b"\x00\x00\x00\x01"


# --------------------------------------------------------------------------------------
# Inspection (hot path, never raises)
# --------------------------------------------------------------------------------------


def _aggregate_types(payload: Buffer, at: int, end: int, skip: int) -> list[int]:
    """Types inside an aggregation packet whose units start at ``at``.

    ``skip`` is the per-unit prefix between the size field and the NAL header (DOND and TS
    offset for MTAPs), counted inside the size. Parsing stops at the first unit that does
    not fit, so only complete units are reported.
    """
    types = []
    while at + 2 <= end:
        size = (payload[at] << 8) | payload[at + 1]
        at += 2
        if size <= skip or at + size > end:
            break
        types.append(payload[at + skip] & 0x1F)
        at += size
    return types


def nal_types(payload: Buffer, offset: int = 0) -> list[int]:
    """NAL unit types carried by one RTP payload; [] for anything malformed.

    FU-A/FU-B report the inner type only on the start fragment, so each NAL unit is
    reported once per access unit.
    """
    end = len(payload)
    if offset >= end:
        return []
    t = payload[offset] & 0x1F
    if 0 < t < 24:
        return [t]
    if t == FU_A or t == FU_B:
        if offset + 1 < end and payload[offset + 1] & 0x80:
            return [payload[offset + 1] & 0x1F]
        return []
    if t == STAP_A:
        return _aggregate_types(payload, offset + 1, end, 0)
    if t == STAP_B:
        return _aggregate_types(payload, offset + 3, end, 0)
    if t == MTAP16:
        return _aggregate_types(payload, offset + 3, end, 3)
    if t == MTAP24:
        return _aggregate_types(payload, offset + 3, end, 4)
    return []


def is_keyframe_packet(payload: Buffer, offset: int = 0) -> bool:
    """True if the payload is, starts, or aggregates an IDR slice."""
    n = len(payload)
    if offset >= n:
        return False
    t = payload[offset] & 0x1F
    if t == NAL_IDR:
        return True
    if t == FU_A or t == FU_B:
        # S bit set and inner type 5; the reserved R bit is ignored.
        return offset + 1 < n and payload[offset + 1] & 0x9F == 0x85
    if t < STAP_A or t > MTAP24:
        return False
    return NAL_IDR in nal_types(payload, offset)


def is_parameter_set_packet(payload: Buffer, offset: int = 0) -> bool:
    """True if the payload carries an SPS or PPS (alone, aggregated or as a start FU)."""
    for t in nal_types(payload, offset):
        if t == NAL_SPS or t == NAL_PPS:
            return True
    return False


# --------------------------------------------------------------------------------------
# Reassembly and fragmentation
# --------------------------------------------------------------------------------------


def _split_aggregate(p: bytes, at: int, skip: int, out: list[bytes]) -> None:
    end = len(p)
    if at >= end:
        raise NalError("empty aggregation packet")
    while at < end:
        if at + 2 > end:
            raise NalError("truncated aggregation unit size")
        size = (p[at] << 8) | p[at + 1]
        at += 2
        if size <= skip:
            raise NalError("empty aggregation unit")
        if at + size > end:
            raise NalError("aggregation unit exceeds payload")
        out.append(p[at + skip : at + size])
        at += size


def depacketize(payloads: Iterable[Buffer]) -> list[bytes]:
    """Reassemble one access unit's RTP payloads (in sequence order) into NAL units.

    Decoding-order numbers of interleaved mode (STAP-B, MTAP, FU-B) are ignored: payloads
    are taken in the order given. Reserved types 0, 30 and 31 are skipped, as RFC 6184
    §5.4 asks receivers to ignore them.
    """
    out: list[bytes] = []
    fragments = FragmentAssembler()
    for raw in payloads:
        p = bytes(raw)
        if not p:
            raise NalError("empty RTP payload")
        t = p[0] & 0x1F
        if t == FU_A or t == FU_B:
            if len(p) < 2:
                raise NalError("FU payload without FU header")
            fu = p[1]
            start = bool(fu & 0x80)
            body_at = 2
            if t == FU_B:
                if not start:
                    raise NalError("FU-B is only allowed for the first fragment")
                body_at = 4  # 16-bit DON follows the FU header
                if len(p) < body_at:
                    raise NalError("FU-B without DON")
            header = bytes(((p[0] & 0xE0) | (fu & 0x1F),))
            nal = fragments.feed(start, bool(fu & 0x40), fu & 0x1F, header, p[body_at:])
            if nal is not None:
                out.append(nal)
            continue
        fragments.interrupted()
        if 0 < t < 24:
            out.append(p)
        elif t == STAP_A:
            _split_aggregate(p, 1, 0, out)
        elif t == STAP_B:
            _split_aggregate(p, 3, 0, out)
        elif t == MTAP16:
            _split_aggregate(p, 3, 3, out)
        elif t == MTAP24:
            _split_aggregate(p, 3, 4, out)
    fragments.finish()
    return out


def packetize(nal: Buffer, mtu: int = 1200) -> list[bytes]:
    """RTP payloads for one NAL unit: itself if it fits in ``mtu``, else FU-A fragments."""
    nal = bytes(nal)
    if not nal:
        raise NalError("empty NAL unit")
    if len(nal) <= mtu:
        return [nal]
    if mtu < 3:
        raise ValueError("mtu too small for FU-A fragmentation")
    indicator = bytes(((nal[0] & 0xE0) | FU_A,))
    return fragment(indicator, nal[0] & 0x1F, memoryview(nal)[1:], mtu - 2)


def annexb(nals: Iterable[Buffer]) -> bytes:
    """Byte-stream (Annex B) form: every NAL unit prefixed with a 4-byte start code."""
    parts: list[Buffer] = []
    for nal in nals:
        parts.append(_START_CODE)
        parts.append(nal)
    return b"".join(parts)


def split_annexb(data: Buffer) -> list[bytes]:
    """Split an Annex B byte stream on 3- or 4-byte start codes.

    Trailing zero bytes before a start code belong to it (trailing_zero_8bits), so they
    are stripped from the preceding NAL unit.
    """
    data = bytes(data)
    out = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00") if nxt >= 0 else data[start:end]
        if nal:
            out.append(nal)
        i = nxt
    return out


# --------------------------------------------------------------------------------------
# SPS parsing
# --------------------------------------------------------------------------------------


def unescape_rbsp(data: Buffer) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    data = bytes(data)
    if b"\x00\x00\x03" not in data:
        return data
    out = bytearray()
    zeros = 0
    for b in data:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


class BitReader:
    """MSB-first bit reader with Exp-Golomb support over an RBSP."""

    __slots__ = ("_bits", "_pos", "_value")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self._pos = 0

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        pos = self._pos + n
        if pos > self._bits:
            raise NalError("bitstream truncated")
        self._pos = pos
        return (self._value >> (self._bits - pos)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            # Values needing more than 32 bits are not valid in any syntax element we read.
            if zeros > 31:
                raise NalError("Exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) >> 1 if k & 1 else -(k >> 1)

    def bits_left(self) -> int:
        return self._bits - self._pos


# Profiles whose SPS carries chroma_format_idc, bit depths and scaling matrices
# (H.264 §7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt != 0:
            delta = r.se()
            if not -128 <= delta <= 127:
                raise NalError("scaling list delta out of range")
            nxt = (last + delta + 256) % 256
        last = nxt if nxt != 0 else last


def parse_sps_resolution(sps: Buffer) -> tuple[int, int]:
    """Displayed ``(width, height)`` from an SPS NAL unit (header byte included)."""
    if len(sps) < 4 or sps[0] & 0x1F != NAL_SPS:
        raise NalError("not an SPS NAL unit")
    r = BitReader(unescape_rbsp(sps[1:]))
    profile_idc = r.u(8)
    r.u(8)  # constraint flags
    r.u(8)  # level_idc
    if r.ue() > 31:
        raise NalError("seq_parameter_set_id out of range")
    chroma_format_idc = 1
    separate_colour_plane = False
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise NalError("chroma_format_idc out of range")
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        cycle = r.ue()
        if cycle > 255:
            raise NalError("num_ref_frames_in_pic_order_cnt_cycle out of range")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise NalError("pic_order_cnt_type out of range")
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    crop_left = crop_right = crop_top = crop_bottom = 0
    if r.flag():
        crop_left, crop_right, crop_top, crop_bottom = r.ue(), r.ue(), r.ue(), r.ue()

    field_factor = 1 if frame_mbs_only else 2
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    if chroma_array_type == 0:
        crop_unit_x, crop_unit_y = 1, field_factor
    else:
        sub_width = 1 if chroma_format_idc == 3 else 2
        sub_height = 2 if chroma_format_idc == 1 else 1
        crop_unit_x, crop_unit_y = sub_width, sub_height * field_factor
    width = width_mbs * 16 - crop_unit_x * (crop_left + crop_right)
    height = field_factor * height_map_units * 16 - crop_unit_y * (crop_top + crop_bottom)
    if width <= 0 or height <= 0:
        raise NalError("SPS cropping leaves an empty picture")
    return width, height
