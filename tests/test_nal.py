from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocols import h264, h265
from gateway.protocols.h264 import NalError

FUZZ = settings(max_examples=300, deadline=None)
STRUCTURED = settings(max_examples=100, deadline=None)

# Real x264 parameter sets (the ffmpeg SDP fixture in test_sdp uses the same SPS).
SPS_720P_HIGH = bytes.fromhex("6764001facd9405005ba10000003001000000303c0f1831960")
PPS = bytes.fromhex("68ebe3cb22c0")
IDR = b"\x65\x88\x84\x00\x33\xff" + bytes(range(40))
NON_IDR = b"\x41\x9a\x02\x03"
SEI = b"\x06\x05\x01\x02\x80"


def stap_a(*nals: bytes, header: int = 0x78) -> bytes:
    return bytes([header]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_a(nal: bytes, start: bool, end: bool, chunk: bytes | None = None) -> bytes:
    fu = (nal[0] & 0x1F) | (0x80 if start else 0) | (0x40 if end else 0)
    return bytes([(nal[0] & 0xE0) | 28, fu]) + (nal[1:] if chunk is None else chunk)


# --- H.264 inspection ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "types", "key", "params"),
    [
        (IDR, [5], True, False),
        (NON_IDR, [1], False, False),
        (SPS_720P_HIGH, [7], False, True),
        (PPS, [8], False, True),
        (stap_a(SPS_720P_HIGH, PPS), [7, 8], False, True),
        (stap_a(SPS_720P_HIGH, PPS, IDR), [7, 8, 5], True, True),
        (stap_a(SEI, NON_IDR), [6, 1], False, False),
        (fu_a(IDR, True, False, IDR[1:10]), [5], True, False),
        (fu_a(IDR, False, False, IDR[10:20]), [], False, False),
        (fu_a(IDR, False, True, IDR[20:]), [], False, False),
        (fu_a(NON_IDR, True, False), [1], False, False),
        # STAP-B: 16-bit DON after the header.
        (b"\x79\x00\x07" + stap_a(SPS_720P_HIGH, IDR)[1:], [7, 5], True, True),
        # MTAP16: DONB, then size (covering DOND + 16-bit TS offset + NAL).
        (b"\x7a\x00\x01" + struct.pack("!HBH", len(IDR) + 3, 0, 0) + IDR, [5], True, False),
        # MTAP24: 24-bit TS offset.
        (b"\x7b\x00\x01" + struct.pack("!HBHB", len(PPS) + 4, 0, 0, 0) + PPS, [8], False, True),
        # FU-B start fragment with DON.
        (bytes([0x7D, 0x85]) + b"\x00\x09" + IDR[1:], [5], True, False),
        # Reserved types.
        (b"\x00abc", [], False, False),
        (b"\x1eabc", [], False, False),
        (b"\x1fabc", [], False, False),
    ],
)
def test_h264_inspection(payload: bytes, types: list[int], key: bool, params: bool) -> None:
    assert h264.nal_types(payload) == types
    assert h264.is_keyframe_packet(payload) is key
    assert h264.is_parameter_set_packet(payload) is params
    # The offset form must agree, as used with a whole RTP packet.
    rtp = bytes(12) + payload
    assert h264.nal_types(rtp, 12) == types
    assert h264.is_keyframe_packet(rtp, 12) is key
    assert h264.is_parameter_set_packet(memoryview(rtp), 12) is params


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x7c",  # FU-A with 1 byte
        b"\x7d",  # FU-B with 1 byte
        b"\x78",  # STAP-A header only
        b"\x78\x00",  # truncated size
        b"\x78\x00\x20\x65\x88",  # size beyond payload
        b"\x78\x00\x00\x00\x01\x65",  # zero-size unit
        b"\x7a\x00",  # MTAP16 header truncated
        b"\x7a\x00\x01\x00\x03\x00\x00\x00",  # MTAP unit with no NAL after TS offset
        b"\x7b\x00\x01\x00\x04\x00\x00\x00",  # MTAP24 truncated TS offset
    ],
)
def test_h264_hostile_payloads_do_not_raise(payload: bytes) -> None:
    assert h264.nal_types(payload) == []
    assert h264.is_keyframe_packet(payload) is False
    assert h264.is_parameter_set_packet(payload) is False
    assert h264.nal_types(payload, 100) == []


def test_h264_stap_a_stops_at_bad_unit() -> None:
    # A well-formed unit followed by one that overruns: only the complete one is reported,
    # so an IDR header hiding in a truncated unit never counts as a keyframe.
    payload = stap_a(SPS_720P_HIGH) + b"\x00\x40\x65\x88"
    assert h264.nal_types(payload) == [7]
    assert h264.is_keyframe_packet(payload) is False
    with pytest.raises(NalError):
        h264.depacketize([payload])


@FUZZ
@given(st.binary(max_size=48), st.integers(0, 50))
def test_h264_inspection_never_raises(payload: bytes, offset: int) -> None:
    types = h264.nal_types(payload, offset)
    assert all(0 <= t < 32 for t in types)
    assert h264.is_keyframe_packet(payload, offset) == (5 in types)
    h264.is_parameter_set_packet(payload, offset)
    try:
        h264.depacketize([payload])
    except NalError:
        pass


# --- H.264 reassembly ---------------------------------------------------------------------


def test_h264_depacketize_modes() -> None:
    big = b"\x65" + bytes(range(256)) * 12
    frags = h264.packetize(big, mtu=1000)
    assert len(frags) == 4
    assert all(len(f) <= 1000 for f in frags)
    assert frags[0][:2] == b"\x7c\x85" and frags[-1][1] == 0x45 and frags[1][1] == 0x05
    payloads = [stap_a(SPS_720P_HIGH, PPS), SEI, *frags, NON_IDR]
    assert h264.depacketize(payloads) == [SPS_720P_HIGH, PPS, SEI, big, NON_IDR]
    # NRI bits of the reconstructed header come from the FU indicator.
    assert h264.depacketize([fu_a(b"\x25abc", True, True)]) == [b"\x25abc"]
    stap_b = b"\x79\x00\x07" + stap_a(SPS_720P_HIGH, IDR)[1:]
    assert h264.depacketize([stap_b]) == [SPS_720P_HIGH, IDR]
    mtap = b"\x7a\x00\x01" + struct.pack("!HBH", len(IDR) + 3, 0, 0) + IDR
    assert h264.depacketize([mtap]) == [IDR]
    fu_b = bytes([0x7D, 0x85]) + b"\x00\x09" + IDR[1:10]
    assert h264.depacketize([fu_b, fu_a(IDR, False, True, IDR[10:])]) == [IDR]
    assert h264.depacketize([b"\x1ereserved", IDR]) == [IDR]


@pytest.mark.parametrize(
    "payloads",
    [
        [b""],
        [b"\x7c"],
        [fu_a(IDR, False, True)],  # end without start
        [fu_a(IDR, True, False, IDR[1:5])],  # start without end
        [fu_a(IDR, True, False, IDR[1:5]), fu_a(IDR, True, True, IDR[5:])],  # double start
        [fu_a(IDR, True, False, IDR[1:5]), NON_IDR],  # interrupted
        [fu_a(IDR, True, False, IDR[1:5]), fu_a(NON_IDR, False, True, b"x")],  # type change
        [fu_a(IDR, True, False, IDR[1:5]), bytes([0x7D, 0x45, 0, 0])],  # FU-B continuation
        [b"\x7d\x85\x00"],  # FU-B start without DON
        [b"\x78"],
        [b"\x78\x00\x05\x65"],
        [b"\x78\x00"],
        [b"\x7a\x00\x01\x00\x02\x00\x00"],
    ],
)
def test_h264_depacketize_rejects(payloads: list[bytes]) -> None:
    with pytest.raises(NalError):
        h264.depacketize(payloads)


@STRUCTURED
@given(
    st.lists(
        st.tuples(st.integers(1, 23), st.integers(0, 3), st.binary(max_size=3000)),
        min_size=1,
        max_size=6,
    ),
    st.integers(3, 1500),
)
def test_h264_packetize_round_trip(units: list[tuple[int, int, bytes]], mtu: int) -> None:
    nals = [bytes([(nri << 5) | t]) + body for t, nri, body in units]
    payloads = [p for nal in nals for p in h264.packetize(nal, mtu)]
    assert all(len(p) <= mtu for p in payloads)
    assert h264.depacketize(payloads) == nals


def test_h264_packetize_errors() -> None:
    with pytest.raises(NalError):
        h264.packetize(b"")
    with pytest.raises(ValueError):
        h264.packetize(IDR, mtu=2)
    assert h264.packetize(IDR, mtu=len(IDR)) == [IDR]


def test_annexb_round_trip() -> None:
    stream = h264.annexb([SPS_720P_HIGH, PPS, IDR])
    assert stream.startswith(b"\x00\x00\x00\x01\x67")
    assert h264.split_annexb(stream) == [SPS_720P_HIGH, PPS, IDR]
    # 3-byte start codes and trailing_zero_8bits.
    assert h264.split_annexb(b"\x00\x00\x01\x67\x01\x00\x00\x00\x00\x01\x68\x02") == [
        b"\x67\x01",
        b"\x68\x02",
    ]
    assert h264.split_annexb(b"garbage") == []


def test_unescape_rbsp() -> None:
    assert h264.unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03") == b"\x00\x00\x01\x00\x00"
    assert h264.unescape_rbsp(b"\x00\x00\x03\x00\x00\x03\x00") == b"\x00\x00\x00\x00\x00"
    assert h264.unescape_rbsp(b"\x01\x02") == b"\x01\x02"


# --- SPS parsing --------------------------------------------------------------------------


def test_parse_sps_fixture() -> None:
    assert h264.parse_sps_resolution(SPS_720P_HIGH) == (1280, 720)


def test_parse_sps_baseline_hand_built() -> None:
    # Baseline 176x144 (QCIF): profile 66, no high-profile fields, poc type 2, no cropping.
    w = _BitWriter()
    w.u(66, 8).u(0xC0, 8).u(30, 8)
    w.ue(0)  # sps id
    w.ue(0)  # log2_max_frame_num_minus4
    w.ue(2)  # poc type
    w.ue(1)  # max refs
    w.u(0, 1)
    w.ue(10).ue(8)  # 11x9 macroblocks
    w.u(1, 1).u(1, 1).u(0, 1).u(1, 1)  # frame_mbs_only, 8x8, no crop, vui flag
    assert h264.parse_sps_resolution(b"\x67" + w.rbsp()) == (176, 144)


def test_parse_sps_poc_type_1_and_interlaced_crop() -> None:
    w = _BitWriter()
    w.u(77, 8).u(0, 8).u(40, 8)
    w.ue(0).ue(0)
    w.ue(1)  # poc type 1
    w.u(0, 1).se(-2).se(3).ue(2).se(1).se(-1)
    w.ue(4).u(0, 1)
    w.ue(119).ue(33)  # 120 MBs wide, 34 map units (field pairs) high
    w.u(0, 1).u(1, 1)  # frame_mbs_only=0, mb_adaptive
    w.u(1, 1)  # direct_8x8
    w.u(1, 1).ue(0).ue(0).ue(0).ue(2)  # crop bottom 2 units of 4 lines
    w.u(0, 1)
    assert h264.parse_sps_resolution(b"\x67" + w.rbsp()) == (1920, 1080)


def _high_sps(chroma_format_idc: int, separate_planes: bool) -> bytes:
    # x264 signals custom matrices in the PPS, so SPS scaling lists need a hand-built SPS.
    w = _BitWriter()
    w.u(100 if chroma_format_idc < 3 else 244, 8).u(0, 8).u(40, 8)
    w.ue(0)
    w.ue(chroma_format_idc)
    if chroma_format_idc == 3:
        w.u(int(separate_planes), 1)
    w.ue(2).ue(2).u(0, 1)  # 10-bit, no bypass
    w.u(1, 1)  # seq_scaling_matrix_present_flag
    for i in range(12 if chroma_format_idc == 3 else 8):
        if i == 1:
            w.u(1, 1)
            w.se(-8)  # next scale 0 on the first entry: use the default matrix
        elif i in (0, 6, 9):
            w.u(1, 1)
            for j in range(16 if i < 6 else 64):
                w.se(3 if j % 2 == 0 else -2)
        else:
            w.u(0, 1)
    w.ue(4)  # log2_max_frame_num_minus4
    w.ue(0).ue(6)  # poc type 0, lsb bits
    w.ue(3).u(0, 1)
    w.ue(119).ue(67)  # 1920x1088 coded
    w.u(1, 1).u(1, 1)  # frame_mbs_only, direct_8x8
    w.u(1, 1).ue(1).ue(2).ue(0).ue(3)  # crop L1 R2 T0 B3 (units)
    w.u(0, 1)
    return b"\x67" + w.rbsp()


@pytest.mark.parametrize(
    ("chroma", "separate", "expected"),
    [
        (1, False, (1920 - 2 * 3, 1088 - 2 * 3)),  # 4:2:0: crop units 2x2
        (2, False, (1920 - 2 * 3, 1088 - 3)),  # 4:2:2: 2x1
        (3, False, (1920 - 3, 1088 - 3)),  # 4:4:4 with 12 scaling lists: 1x1
        (3, True, (1920 - 3, 1088 - 3)),  # separate planes, ChromaArrayType 0
        (0, False, (1920 - 3, 1088 - 3)),  # monochrome
    ],
)
def test_parse_sps_high_profile_scaling_lists(
    chroma: int, separate: bool, expected: tuple[int, int]
) -> None:
    assert h264.parse_sps_resolution(_high_sps(chroma, separate)) == expected


def test_parse_sps_with_emulation_prevention() -> None:
    # Lots of zero bits (ue(0) is a single 1 bit, but ue(2**k - 1) has k zeros) force
    # 00 00 0x runs that an encoder must escape.
    w = _BitWriter()
    w.u(66, 8).u(0, 8).u(0, 8)
    w.ue(0).ue(0).ue(2).ue(0).u(0, 1)
    w.ue(2**20 - 1).ue(2**19 - 1)
    w.u(1, 1).u(0, 1).u(0, 1)
    raw = w.rbsp()
    escaped = bytearray()
    zeros = 0
    for b in raw:
        if zeros >= 2 and b <= 3:
            escaped.append(3)
            zeros = 0
        escaped.append(b)
        zeros = zeros + 1 if b == 0 else 0
    assert bytes(escaped) != raw
    assert h264.parse_sps_resolution(b"\x67" + bytes(escaped)) == (2**20 * 16, 2**19 * 16)


@pytest.mark.parametrize(
    "sps",
    [
        b"",
        b"\x68\x64\x00\x1f",  # not an SPS
        b"\x67\x64",
        SPS_720P_HIGH[:6],  # truncated
        b"\x67\x64\x00\x1f" + bytes(8),  # Exp-Golomb code longer than 32 bits
    ],
)
def test_parse_sps_rejects(sps: bytes) -> None:
    with pytest.raises(NalError):
        h264.parse_sps_resolution(sps)


@FUZZ
@given(st.binary(max_size=40))
def test_parse_sps_only_raises_nal_error(body: bytes) -> None:
    try:
        w, h = h264.parse_sps_resolution(b"\x67" + body)
    except NalError:
        return
    assert w > 0 and h > 0


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, value: int, n: int) -> _BitWriter:
        self.bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))
        return self

    def ue(self, value: int) -> _BitWriter:
        code = value + 1
        return self.u(0, code.bit_length() - 1).u(code, code.bit_length())

    def se(self, value: int) -> _BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = [*self.bits, 1]  # rbsp_stop_one_bit
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


# --- ffmpeg-generated streams ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:  # no bundled binary for this platform
        pytest.skip(f"no ffmpeg binary: {exc}")


def _encode(ffmpeg: str, out: Path, size: str, codec_args: list[str], fmt: str) -> list[bytes]:
    cmd = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate=25",
        "-frames:v",
        "2",
        *codec_args,
        "-f",
        fmt,
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        if "Unknown encoder" in stderr or "Encoder not found" in stderr:
            pytest.skip(f"encoder unavailable in bundled ffmpeg: {stderr[:200]}")
        pytest.fail(f"ffmpeg failed: {stderr[:500]}")
    return h264.split_annexb(out.read_bytes())


X264 = ["-c:v", "libx264", "-preset", "ultrafast"]


@pytest.mark.parametrize(
    ("size", "extra", "expected"),
    [
        ("1280x720", ["-pix_fmt", "yuv420p"], (1280, 720)),
        # 1080 is not a multiple of 16: the SPS codes 1088 and crops 8 lines.
        ("1920x1080", ["-pix_fmt", "yuv420p"], (1920, 1080)),
        # Odd crop on both axes in 4:2:0 (crop units of 2).
        ("1918x1078", ["-pix_fmt", "yuv420p"], (1918, 1078)),
        # High 4:4:4 (profile 244, chroma_format_idc 3, crop units of 1) with odd sizes.
        ("1279x719", ["-pix_fmt", "yuv444p"], (1279, 719)),
        # Interlaced coding: frame_mbs_only_flag = 0 doubles map-unit height and crop unit.
        ("1920x1080", ["-pix_fmt", "yuv420p", "-flags", "+ildct+ilme"], (1920, 1080)),
        # High 4:2:2 (profile 122): horizontal crop unit 2, vertical crop unit 1.
        ("1280x719", ["-pix_fmt", "yuv422p"], (1280, 719)),
    ],
)
def test_sps_resolution_from_ffmpeg(
    ffmpeg: str, tmp_path: Path, size: str, extra: list[str], expected: tuple[int, int]
) -> None:
    nals = _encode(ffmpeg, tmp_path / "out.264", size, [*X264, *extra], "h264")
    types = [n[0] & 0x1F for n in nals]
    assert h264.NAL_SPS in types and h264.NAL_PPS in types and h264.NAL_IDR in types
    sps = nals[types.index(h264.NAL_SPS)]
    assert h264.parse_sps_resolution(sps) == expected
    # The stream also exercises packetize → inspection → depacketize on real slices.
    idr = nals[types.index(h264.NAL_IDR)]
    payloads = h264.packetize(idr, mtu=1200)
    assert h264.is_keyframe_packet(payloads[0])
    assert not any(h264.is_keyframe_packet(p) for p in payloads[1:])
    assert h264.depacketize(payloads) == [idr]


def test_h265_stream_from_ffmpeg(ffmpeg: str, tmp_path: Path) -> None:
    args = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"]
    nals = _encode(ffmpeg, tmp_path / "out.265", "1280x720", args, "hevc")
    types = [h265.nal_type(n) for n in nals]
    assert types[:3] == [h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS]
    irap = [n for n in nals if 16 <= h265.nal_type(n) <= 21]
    assert irap, types
    for nal in nals:
        payloads = h265.packetize(nal, mtu=1000)
        assert h265.nal_types(payloads[0]) == [h265.nal_type(nal)]
        assert h265.is_keyframe_packet(payloads[0]) == (16 <= h265.nal_type(nal) <= 21)
        assert h265.depacketize(payloads) == [nal]
    ap = _h265_ap(*nals[:3])
    assert h265.nal_types(ap) == [32, 33, 34]
    assert h265.is_parameter_set_packet(ap)
    assert h265.depacketize([ap]) == nals[:3]


# --- H.265 ---------------------------------------------------------------------------------

VPS = b"\x40\x01\x0c\x01\xff\xff"
SPS265 = b"\x42\x01\x01\x01\x60"
PPS265 = b"\x44\x01\xc1\x72"
IDR265 = b"\x26\x01\xaf\x06\xb8" + bytes(range(30))  # IDR_W_RADL (19)
CRA265 = b"\x2a\x01\xaf"  # CRA (21)
TRAIL265 = b"\x02\x01\xd0\x09"  # TRAIL_R (1)


def _h265_ap(*nals: bytes, donl: bool = False) -> bytes:
    out = b"\x60\x01"
    for i, n in enumerate(nals):
        if donl:
            out += b"\x00\x05" if i == 0 else b"\x01"
        out += struct.pack("!H", len(n)) + n
    return out


def _h265_fu(nal: bytes, start: bool, end: bool, chunk: bytes) -> bytes:
    t = h265.nal_type(nal)
    hdr = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]])
    return hdr + bytes([t | (0x80 if start else 0) | (0x40 if end else 0)]) + chunk


@pytest.mark.parametrize(
    ("payload", "types", "key", "params"),
    [
        (IDR265, [19], True, False),
        (CRA265, [21], True, False),
        (b"\x20\x01\x00", [16], True, False),  # BLA_W_LP
        (b"\x2c\x01\x00", [22], False, False),  # reserved IRAP 22: not signalled as key
        (TRAIL265, [1], False, False),
        (VPS, [32], False, True),
        (_h265_ap(VPS, SPS265, PPS265), [32, 33, 34], False, True),
        (_h265_ap(SPS265, IDR265), [33, 19], True, True),
        (_h265_fu(IDR265, True, False, IDR265[2:10]), [19], True, False),
        (_h265_fu(IDR265, False, True, IDR265[10:]), [], False, False),
        (_h265_fu(TRAIL265, True, False, b"x"), [1], False, False),
        (b"\x64\x01\x00\x00", [], False, False),  # PACI
    ],
)
def test_h265_inspection(payload: bytes, types: list[int], key: bool, params: bool) -> None:
    assert h265.nal_types(payload) == types
    assert h265.is_keyframe_packet(payload) is key
    assert h265.is_parameter_set_packet(payload) is params
    rtp = bytes(12) + payload
    assert h265.nal_types(rtp, 12) == types
    assert h265.is_keyframe_packet(rtp, 12) is key


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x26", b"\x62\x01", b"\x60\x01", b"\x60\x01\x00", b"\x60\x01\x00\x30\x26\x01"],
)
def test_h265_hostile_payloads_do_not_raise(payload: bytes) -> None:
    assert h265.nal_types(payload) == []
    assert h265.is_keyframe_packet(payload) is False
    assert h265.is_parameter_set_packet(payload) is False


def test_h265_donl() -> None:
    ap = _h265_ap(SPS265, IDR265, donl=True)
    assert h265.nal_types(ap, donl=True) == [33, 19]
    assert h265.is_keyframe_packet(ap, donl=True)
    assert h265.depacketize([ap], donl=True) == [SPS265, IDR265]
    single = IDR265[:2] + b"\x00\x07" + IDR265[2:]
    assert h265.depacketize([single], donl=True) == [IDR265]
    start = _h265_fu(IDR265, True, False, b"\x00\x08" + IDR265[2:10])
    end = _h265_fu(IDR265, False, True, IDR265[10:])
    assert h265.depacketize([start, end], donl=True) == [IDR265]


def test_h265_depacketize_and_packetize() -> None:
    big = IDR265 * 100
    frags = h265.packetize(big, mtu=1200)
    assert len(frags) == 3 and all(len(f) <= 1200 for f in frags)
    assert frags[0][:3] == bytes([0x62, 0x01, 0x80 | 19])
    assert frags[-1][2] == 0x40 | 19
    got = h265.depacketize([_h265_ap(VPS, SPS265, PPS265), *frags, TRAIL265])
    assert got == [VPS, SPS265, PPS265, big, TRAIL265]
    assert h265.depacketize([b"\x64\x01\x00\x00", TRAIL265]) == [TRAIL265]  # PACI ignored


@pytest.mark.parametrize(
    "payloads",
    [
        [b""],
        [b"\x26"],
        [b"\x62\x01"],
        [_h265_fu(IDR265, False, True, b"x")],
        [_h265_fu(IDR265, True, False, b"x")],
        [_h265_fu(IDR265, True, False, b"x"), _h265_fu(TRAIL265, False, True, b"y")],
        [_h265_fu(IDR265, True, False, b"x"), TRAIL265],
        [b"\x60\x01"],
        [b"\x60\x01\x00\x09\x26\x01"],
        [b"\x60\x01\x00\x01\x26"],
    ],
)
def test_h265_depacketize_rejects(payloads: list[bytes]) -> None:
    with pytest.raises(NalError):
        h265.depacketize(payloads)


@FUZZ
@given(st.binary(max_size=48), st.integers(0, 20), st.booleans())
def test_h265_inspection_never_raises(payload: bytes, offset: int, donl: bool) -> None:
    types = h265.nal_types(payload, offset, donl)
    assert all(0 <= t < 64 for t in types)
    assert h265.is_keyframe_packet(payload, offset, donl) == any(16 <= t <= 21 for t in types)
    h265.is_parameter_set_packet(payload, offset, donl)
    try:
        h265.depacketize([payload], donl=donl)
    except NalError:
        pass


@STRUCTURED
@given(
    st.lists(
        st.tuples(st.integers(0, 47), st.integers(0, 63), st.binary(max_size=3000)),
        min_size=1,
        max_size=6,
    ),
    st.integers(4, 1500),
)
def test_h265_packetize_round_trip(units: list[tuple[int, int, bytes]], mtu: int) -> None:
    nals = [
        bytes([(t << 1) | (layer >> 5), ((layer & 0x1F) << 3) | 1]) + b for t, layer, b in units
    ]
    payloads = [p for nal in nals for p in h265.packetize(nal, mtu)]
    assert all(len(p) <= mtu for p in payloads)
    assert h265.depacketize(payloads) == nals


def test_h265_packetize_errors() -> None:
    with pytest.raises(NalError):
        h265.packetize(b"\x26")
    with pytest.raises(ValueError):
        h265.packetize(IDR265, mtu=3)
