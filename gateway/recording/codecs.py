"""The codecs a camera is recorded in (H.264, H.265): what the writer needs of each, the
parameter sets from the SDP, a quick depacketizer for the common H.264 case, the picture
size a segment's MP4 track is declared with and its H.264 ``avcC`` record (sans-I/O).

Samples. H.264 goes to the muxer as MP4 stores it (each NAL unit behind its 4-byte length,
ISO/IEC 14496-15) with the track's ``avcC`` given, so the muxer copies each access unit as it
is; handed Annex B, it scanned every byte for start codes and rewrote it, at every unit. H.265
still goes as Annex B (the muxer builds its ``hvcC``)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.protocols import h264, h265
from gateway.protocols.fragments import NalError
from gateway.stream.tracks import Track

__all__ = ["CODECS", "Codec", "avcc_record", "h264_items", "h264_quick", "h265_resolution",
           "length_prefixed", "picture_size", "sprop_params", "video_track"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Codec:
    name: str  # as in Track.codec
    mux_name: str  # PyAV codec name
    depacketize: Callable[[list[memoryview]], list[bytes]]
    nal_type: Callable[[bytes], int]
    keyframes: frozenset[int]
    params: tuple[int, ...]  # parameter set types a segment must start with, in order
    no_picture: frozenset[int]  # access unit delimiters, SEI: a unit of only these is skipped
    sample: Callable[[Sequence[bytes]], bytes]  # NAL units as the muxer takes a sample of them


def length_prefixed(nals: Sequence[bytes]) -> bytes:
    """NAL units as an MP4 sample holds them: each behind its 4-byte big-endian length."""
    return b"".join([part for n in nals for part in (len(n).to_bytes(4, "big"), n)])


CODECS = {
    "H264": Codec(
        "H264", "h264", h264.depacketize, lambda n: n[0] & 0x1F,
        frozenset({h264.NAL_IDR}), (h264.NAL_SPS, h264.NAL_PPS),
        frozenset({h264.NAL_AUD, h264.NAL_SEI}), length_prefixed,
    ),
    "H265": Codec(
        "H265", "hevc", h265.depacketize, h265.nal_type,
        frozenset(range(h265.NAL_BLA_W_LP, h265.NAL_CRA + 1)),
        (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS),
        frozenset({h265.NAL_AUD, h265.NAL_SEI_PREFIX, 40}), h264.annexb,
    ),
}  # fmt: skip


def video_track(tracks: tuple[Track, ...]) -> Track | None:
    """The track a camera is recorded from: its first H.264 or H.265 video."""
    for t in tracks:
        if t.is_video and t.codec in CODECS:
            return t
    return None


def sprop_params(track: Track) -> dict[int, bytes]:
    """Parameter sets from the SDP (``sprop-parameter-sets``, ``sprop-vps/sps/pps``)."""
    codec = CODECS[track.codec]
    out: dict[int, bytes] = {}
    for line in track.sdp_lines:
        if not line.lower().startswith("a=fmtp:"):
            continue
        for param in line.split(" ", 1)[-1].split(";"):
            key, _, value = param.strip().partition("=")
            if key.lower() not in ("sprop-parameter-sets", "sprop-vps", "sprop-sps", "sprop-pps"):
                continue
            for item in value.split(","):
                item = item.strip()
                try:
                    nal = base64.b64decode(item + "=" * (-len(item) % 4), validate=True)
                except (binascii.Error, ValueError):
                    continue
                if nal and codec.nal_type(nal) in codec.params:
                    out[codec.nal_type(nal)] = nal
    return out


_BYTE = [bytes((i,)) for i in range(256)]


def h264_items(
    items: list[tuple[int, bytes, bool]], track: int
) -> tuple[bytes, list[int], dict[int, bytes], int] | None:
    """:func:`h264_quick` straight from the hub's items (track, RTP packet, is RTCP) when every
    packet of ``track`` has the common 12-byte RTP header (version 2, no padding, extension or
    CSRC): (the sample, its NAL unit types, its SPS/PPS, the RTP time of the unit). One pass,
    one view per FU-A payload (not a view of the packet, then one of its payload) and a FU-A
    run's length summed once at its end; None for anything else, which :func:`h264_quick` and
    the full depacketizer then see."""
    parts: list[bytes | memoryview] = []
    types: list[int] = []
    params: dict[int, bytes] = {}
    fu_at = -1  # where in parts the length of the NAL unit being reassembled goes
    first: bytes | None = None
    try:  # a packet too short for the byte read next raises IndexError: not the common case
        for index, packet, is_rtcp in items:
            if is_rtcp or index != track:
                continue
            if packet[0] != 0x80:
                return None
            if first is None:
                first = packet
            b0 = packet[12]
            t = b0 & 0x1F
            if t == h264.FU_A:
                fu = packet[13]
                if fu & 0x80:
                    if fu_at >= 0:
                        return None
                    nt = fu & 0x1F
                    if nt in (h264.NAL_SPS, h264.NAL_PPS) or not 0 < nt < 24:
                        return None
                    fu_at = len(parts)
                    parts += (b"", _BYTE[(b0 & 0xE0) | nt], memoryview(packet)[14:])
                    types.append(nt)
                elif fu_at < 0:
                    return None
                else:
                    parts.append(memoryview(packet)[14:])
                if fu & 0x40:
                    parts[fu_at] = (sum(map(len, parts[fu_at + 2 :])) + 1).to_bytes(4, "big")
                    fu_at = -1
            elif 0 < t < 24 and fu_at < 0:
                nal = packet[12:]
                parts += (len(nal).to_bytes(4, "big"), nal)
                types.append(t)
                if t in (h264.NAL_SPS, h264.NAL_PPS):
                    params[t] = nal
            else:
                return None
    except IndexError:
        return None
    if fu_at >= 0 or first is None:
        return None
    return b"".join(parts), types, params, int.from_bytes(first[4:8], "big")


def h264_quick(
    payloads: list[memoryview],
) -> tuple[bytes, list[int], dict[int, bytes]] | None:
    """The common case, quickly: single NAL units and complete FU-A runs (what cameras and
    ffmpeg send), straight to what the muxer takes: the access unit as an MP4 sample (one
    join, no NAL unit copied on its own; see :func:`length_prefixed`), its NAL unit types and
    its SPS/PPS. None for anything else (aggregates, a lost fragment, a parameter set split
    over FU-A packets), which the full depacketizer then handles or refuses."""
    parts: list[bytes | memoryview] = []
    types: list[int] = []
    params: dict[int, bytes] = {}
    fu_at = -1  # where in parts the length of the NAL unit being reassembled goes
    fu_size = 0
    for p in payloads:
        if not p:
            return None
        b0 = p[0]
        t = b0 & 0x1F
        if t == h264.FU_A:
            if len(p) < 2:
                return None
            fu = p[1]
            if fu & 0x80:
                if fu_at >= 0:
                    return None
                nt = fu & 0x1F
                if nt in (h264.NAL_SPS, h264.NAL_PPS) or not 0 < nt < 24:
                    return None
                fu_at = len(parts)
                parts += (b"", _BYTE[(b0 & 0xE0) | nt], p[2:])
                fu_size = len(p) - 1
                types.append(nt)
            elif fu_at < 0:
                return None
            else:
                parts.append(p[2:])
                fu_size += len(p) - 2
            if fu & 0x40:
                parts[fu_at] = fu_size.to_bytes(4, "big")
                fu_at = -1
        elif 0 < t < 24 and fu_at < 0:
            parts += (len(p).to_bytes(4, "big"), p)
            types.append(t)
            if t in (h264.NAL_SPS, h264.NAL_PPS):
                params[t] = bytes(p)
        else:
            return None
    if fu_at >= 0:
        return None
    return b"".join(parts), types, params


def avcc_record(sps: bytes, pps: bytes) -> bytes:
    """The ``avcC`` decoder configuration record of one SPS and one PPS (ISO/IEC 14496-15
    §5.3.3.1; 4-byte NAL unit lengths), with the chroma format and bit depths the High
    profiles add, read from the SPS."""
    if len(sps) < 4 or sps[0] & 0x1F != h264.NAL_SPS:
        raise NalError("not an SPS NAL unit")
    out = bytes((1, sps[1], sps[2], sps[3], 0xFF, 0xE1))
    out += len(sps).to_bytes(2, "big") + sps + b"\x01" + len(pps).to_bytes(2, "big") + pps
    if sps[1] in (100, 110, 122, 144):
        r = h264.BitReader(h264.unescape_rbsp(sps[4:]))  # raises NalError when truncated
        r.ue()  # seq_parameter_set_id
        chroma = r.ue()
        if chroma == 3:
            r.u(1)  # separate_colour_plane_flag
        luma, chroma_depth = r.ue(), r.ue()  # bit_depth_*_minus8
        if chroma > 3 or luma > 6 or chroma_depth > 6:
            raise NalError("SPS chroma format or bit depth out of range")
        out += bytes((0xFC | chroma, 0xF8 | luma, 0xF8 | chroma_depth, 0))
    return out


def h265_resolution(sps: bytes) -> tuple[int, int]:
    """Displayed (width, height) from an H.265 SPS NAL unit (its 2-byte header included)."""
    if len(sps) < 4 or h265.nal_type(sps) != h265.NAL_SPS:
        raise NalError("not an H.265 SPS")
    r = h264.BitReader(h264.unescape_rbsp(sps[2:]))
    try:
        r.u(4)  # sps_video_parameter_set_id
        sub_layers = r.u(3)  # sps_max_sub_layers_minus1
        r.u(1)
        r.u(32), r.u(32), r.u(32)  # general profile_tier_level: 96 bits
        profile_present, level_present = [], []
        for _ in range(sub_layers):
            profile_present.append(r.u(1))
            level_present.append(r.u(1))
        if sub_layers:
            for _ in range(sub_layers, 8):
                r.u(2)
        for i in range(sub_layers):
            if profile_present[i]:
                r.u(32), r.u(32), r.u(24)  # 88 bits
            if level_present[i]:
                r.u(8)
        r.ue()  # sps_seq_parameter_set_id
        chroma = r.ue()
        if chroma == 3:
            r.u(1)
        width, height = r.ue(), r.ue()
        if r.u(1):  # conformance window
            sub_w = 2 if chroma in (1, 2) else 1
            sub_h = 2 if chroma == 1 else 1
            left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
            width -= sub_w * (left + right)
            height -= sub_h * (top + bottom)
    except (IndexError, ValueError) as exc:
        raise NalError(f"truncated H.265 SPS: {exc}") from None
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise NalError(f"H.265 SPS gives {width}x{height}")
    return width, height


def picture_size(codec: Codec, params: dict[int, bytes]) -> tuple[int, int]:
    """The picture size from the stream's SPS, or (0, 0) if it cannot be read."""
    try:
        if codec.name == "H264" and h264.NAL_SPS in params:
            return h264.parse_sps_resolution(params[h264.NAL_SPS])
        if codec.name == "H265" and h265.NAL_SPS in params:
            return h265_resolution(params[h265.NAL_SPS])
    except NalError:
        pass
    return (0, 0)
