from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocols.rtp import (
    RTCP_SDES,
    ReceiverReport,
    ReportBlock,
    RtcpOther,
    RtpError,
    RtpPacket,
    SenderReport,
    SequenceTracker,
    build_goodbye,
    build_receiver_report,
    build_sender_report,
    has_goodbye,
    is_rtcp,
    parse_rtcp,
    payload_of,
    rewrite_rtp,
    rewrite_sender_report,
    rtp_header,
)

FAST = settings(max_examples=300, deadline=None)
# Structured strategies are costlier per example; fewer still cover the space well.
STRUCTURED = settings(max_examples=100, deadline=None)


def make_rtp(
    *,
    pt: int = 96,
    marker: bool = False,
    seq: int = 1000,
    ts: int = 90000,
    ssrc: int = 0x11223344,
    payload: bytes = b"\x65\x88\x84",
    csrcs: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    return RtpPacket(
        payload_type=pt,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=payload,
        marker=marker,
        csrcs=csrcs,
        extension=extension,
        padding=padding,
    ).serialize()


# --- RTP header ---------------------------------------------------------------------------


def test_rtp_header_plain() -> None:
    pkt = bytes.fromhex("80e00102000015f9deadbeef") + b"\x7c\x85abc"
    assert rtp_header(pkt) == (96, 1, 0x0102, 0x15F9, 0xDEADBEEF, 12)
    assert bytes(payload_of(pkt)) == b"\x7c\x85abc"


def test_rtp_header_csrc_extension_padding() -> None:
    pkt = make_rtp(
        csrcs=(1, 2),
        extension=(0xBEDE, b"\x10\xff\x00\x00"),
        padding=4,
        payload=b"hello",
        marker=True,
    )
    pt, marker, seq, ts, ssrc, offset = rtp_header(pkt)
    assert (pt, marker, seq, ts, ssrc) == (96, 1, 1000, 90000, 0x11223344)
    assert offset == 12 + 8 + 4 + 4
    assert bytes(payload_of(pkt)) == b"hello"
    assert RtpPacket.parse(pkt).serialize() == pkt


def test_rtp_packet_parse_fields() -> None:
    pkt = make_rtp(csrcs=(7,), extension=(0x1000, b""), padding=1, payload=b"x")
    p = RtpPacket.parse(pkt)
    assert p.version == 2
    assert p.csrcs == (7,)
    assert p.extension == (0x1000, b"")
    assert p.padding == 1
    assert p.payload == b"x"
    assert p.marker is False


@pytest.mark.parametrize(
    "pkt",
    [
        b"",
        b"\x80\x60" + bytes(9),  # 11 bytes
        b"\x40\x60" + bytes(10),  # version 1
        b"\xc0\x60" + bytes(10),  # version 3
        b"\x81\x60" + bytes(10),  # CSRC count beyond the packet
        b"\x90\x60" + bytes(10) + b"\xbe\xde",  # extension header truncated
        b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x02" + bytes(4),  # extension length too long
        b"\xa0\x60" + bytes(10) + b"\x00",  # padding count 0
        b"\xa0\x60" + bytes(10) + b"\x00\x10",  # padding longer than the payload
    ],
)
def test_rtp_header_rejects_malformed(pkt: bytes) -> None:
    with pytest.raises(RtpError):
        rtp_header(pkt)
    with pytest.raises(RtpError):
        payload_of(pkt)


def test_padding_exactly_fills_payload() -> None:
    pkt = make_rtp(payload=b"", padding=4)
    assert rtp_header(pkt)[5] == 12
    assert bytes(payload_of(pkt)) == b""


def test_rewrite_rtp() -> None:
    pkt = make_rtp(marker=True, csrcs=(5,), payload=b"payload")
    out = rewrite_rtp(pkt, 0x1_0005, -1, 0x1_2345_6789)
    assert isinstance(out, bytes)
    assert rtp_header(out)[:5] == (96, 1, 5, 0xFFFFFFFF, 0x23456789)
    assert out[:2] == pkt[:2] and out[12:] == pkt[12:]
    assert rewrite_rtp(memoryview(pkt), 1, 2, 3) == rewrite_rtp(bytearray(pkt), 1, 2, 3)
    with pytest.raises(RtpError):
        rewrite_rtp(b"\x80\x60", 1, 2, 3)


@FAST
@given(st.binary(max_size=64))
def test_rtp_header_never_raises_other_errors(data: bytes) -> None:
    try:
        pt, marker, _, _, _, offset = rtp_header(data)
    except RtpError:
        return
    assert 0 <= pt < 128 and marker in (0, 1) and 12 <= offset <= len(data)
    assert len(payload_of(data)) >= 0


@STRUCTURED
@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    ext=st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b * 4)),
    padding=st.integers(0, 255),
    payload=st.binary(max_size=40),
)
def test_rtp_packet_round_trip(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    marker: bool,
    csrcs: tuple[int, ...],
    ext: tuple[int, bytes] | None,
    padding: int,
    payload: bytes,
) -> None:
    pkt = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrcs, ext, padding)
    raw = pkt.serialize()
    assert RtpPacket.parse(raw) == pkt
    assert rtp_header(raw)[:5] == (pt, int(marker), seq, ts, ssrc)
    assert bytes(payload_of(raw)) == payload


def test_is_rtcp_demux() -> None:
    assert is_rtcp(b"\x80\xc8\x00\x06")  # SR (200)
    assert is_rtcp(b"\x80\xc9")  # RR (201)
    assert not is_rtcp(b"\x80\x60")  # RTP PT 96
    assert not is_rtcp(b"\x80\xe0")  # RTP PT 96 with marker = 224
    assert is_rtcp(b"\x80\xdf")
    assert not is_rtcp(b"\x80")
    assert not is_rtcp(b"")


# --- RTCP ---------------------------------------------------------------------------------

BLOCK = ReportBlock(
    ssrc=0xCAFEBABE,
    fraction_lost=25,
    cumulative_lost=-3,
    highest_seq=0x0001_0010,
    jitter=42,
    lsr=0x12345678,
    dlsr=65536,
)


def test_sender_report_round_trip() -> None:
    sr = SenderReport(
        ssrc=0x11223344,
        ntp_timestamp=0xE8F0_1234_8000_0000,
        rtp_timestamp=123456,
        packet_count=1000,
        octet_count=1_200_000,
        reports=[BLOCK],
    )
    raw = build_sender_report(sr)
    assert len(raw) == 52
    assert raw[:4] == b"\x81\xc8\x00\x0c"
    assert parse_rtcp(raw) == [sr]


def test_receiver_report_round_trip() -> None:
    rr = ReceiverReport(ssrc=1, reports=[BLOCK, ReportBlock(2, 0, 7, 3, 4, 5, 6)])
    raw = build_receiver_report(rr)
    assert raw[:4] == b"\x82\xc9\x00\x0d"
    assert parse_rtcp(raw) == [rr]
    empty = ReceiverReport(ssrc=9)
    assert build_receiver_report(empty) == b"\x80\xc9\x00\x01\x00\x00\x00\x09"
    assert parse_rtcp(build_receiver_report(empty)) == [empty]


def _sdes(ssrc: int, cname: bytes) -> bytes:
    item = bytes([1, len(cname)]) + cname + b"\x00"
    item += bytes(-len(item) % 4)
    body = struct.pack("!I", ssrc) + item
    return struct.pack("!BBH", 0x81, RTCP_SDES, len(body) // 4) + body


def test_compound_packet() -> None:
    sr = SenderReport(1, 2, 3, 4, 5)
    sdes = _sdes(1, b"cam@example")
    bye = b"\x81\xcb\x00\x01\x00\x00\x00\x01"
    result = parse_rtcp(build_sender_report(sr) + sdes + bye)
    assert result == [sr, RtcpOther(RTCP_SDES, sdes), RtcpOther(203, bye)]


@pytest.mark.parametrize("reason", ["", "source format changed", "x" * 300])
def test_a_goodbye_is_a_compound_an_rtcp_receiver_accepts(reason: str) -> None:
    # RFC 3550 §6.1: an (empty) report first, then SDES CNAME, then the BYE naming the SSRC.
    packet = build_goodbye(0xDEADBEEF, reason=reason)
    rr, sdes, bye = parse_rtcp(packet)
    assert rr == ReceiverReport(0xDEADBEEF)
    assert isinstance(sdes, RtcpOther) and sdes.packet_type == RTCP_SDES
    assert sdes.raw[8:10] == b"\x01\x08" and sdes.raw[10:18] == b"feedgate"
    assert isinstance(bye, RtcpOther) and bye.packet_type == 203
    assert bye.raw[0] & 0x1F == 1 and bye.raw[4:8] == bytes.fromhex("deadbeef")
    if reason:
        assert bye.raw[9 : 9 + bye.raw[8]] == reason.encode()[:255]
    assert len(packet) % 4 == 0


def test_a_goodbye_is_found_in_a_compound_and_nowhere_else() -> None:
    sr = build_sender_report(SenderReport(1, 2, 3, 4, 5))
    assert has_goodbye(build_goodbye(7))
    assert has_goodbye(sr + b"\x81\xcb\x00\x01\x00\x00\x00\x01")
    assert not has_goodbye(sr)
    assert not has_goodbye(b"")
    assert not has_goodbye(b"\x00\xcb\x00\x01")  # version 0
    assert not has_goodbye(sr + b"\x81\xcb")  # truncated header


def test_padded_final_packet() -> None:
    rr = build_receiver_report(ReceiverReport(5))
    padded = bytes([rr[0] | 0x20, rr[1]]) + struct.pack("!H", 2) + rr[4:] + b"\x00\x00\x00\x04"
    assert parse_rtcp(padded) == [ReceiverReport(5)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9\x00",
        b"\x80\xc9\x00\x05\x00\x00\x00\x01",  # length beyond data
        b"\x40\xc9\x00\x01\x00\x00\x00\x01",  # version 1
        b"\x81\xc9\x00\x01\x00\x00\x00\x01",  # RR claims one block, has none
        b"\x80\xc8\x00\x01\x00\x00\x00\x01",  # SR without sender info
        b"\x80\xc9\x00\x01\x00\x00\x00\x01\x80",  # trailing garbage
        b"\xa0\xc9\x00\x01\x00\x00\x00\x00",  # padding count 0
        b"\xa0\xc9\x00\x01\x00\x00\x00\x09",  # padding beyond body
        b"\xa0\xc9\x00\x01\x00\x00\x00\x04\x80\xc9\x00\x01\x00\x00\x00\x01",  # non-final pad
    ],
)
def test_parse_rtcp_rejects(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_rtcp(data)


@FAST
@given(st.binary(max_size=120))
def test_parse_rtcp_only_raises_rtp_error(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except RtpError:
        pass


@STRUCTURED
@given(
    st.lists(
        st.tuples(
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 255),
            st.integers(-0x800000, 0x7FFFFF),
            st.integers(0, 0xFFFFFFFF),
        ),
        max_size=31,
    ),
    st.integers(0, 2**64 - 1),
)
def test_rtcp_round_trip_property(blocks: list[tuple[int, int, int, int]], ntp: int) -> None:
    reports = [ReportBlock(s, f, c, h, 1, 2, 3) for s, f, c, h in blocks]
    sr = SenderReport(7, ntp, 8, 9, 10, reports)
    rr = ReceiverReport(11, reports)
    assert parse_rtcp(build_sender_report(sr) + build_receiver_report(rr)) == [sr, rr]


def test_cumulative_lost_clamped() -> None:
    rr = ReceiverReport(1, [ReportBlock(1, 0, 10**9, 0, 0, 0, 0)])
    parsed = parse_rtcp(build_receiver_report(rr))[0]
    assert isinstance(parsed, ReceiverReport)
    assert parsed.reports[0].cumulative_lost == 0x7FFFFF


def test_rewrite_sender_report() -> None:
    sr = SenderReport(1, 0xAAAA_BBBB_CCCC_DDDD, 1000, 5, 6, [BLOCK])
    tail = _sdes(1, b"x")
    out = rewrite_sender_report(build_sender_report(sr) + tail, 0x1_0000_0002, -1)
    parsed = parse_rtcp(out)
    assert parsed[0] == SenderReport(2, 0xAAAA_BBBB_CCCC_DDDD, 0xFFFFFFFF, 5, 6, [BLOCK])
    assert parsed[1] == RtcpOther(RTCP_SDES, tail)
    with pytest.raises(RtpError):
        rewrite_sender_report(build_receiver_report(ReceiverReport(1)), 1, 2)
    with pytest.raises(RtpError):
        rewrite_sender_report(b"\x80\xc8\x00\x01" + bytes(24), 1, 2)


# --- SequenceTracker ----------------------------------------------------------------------


def test_tracker_in_order_and_gap() -> None:
    t = SequenceTracker()
    assert t.highest == -1
    assert [t.feed(s) for s in (10, 11, 12, 15, 16)] == [0, 0, 0, 2, 0]
    assert (t.received, t.lost, t.highest) == (5, 2, 16)


def test_tracker_wraparound() -> None:
    t = SequenceTracker()
    assert [t.feed(s) for s in (65533, 65534, 65535, 0, 1)] == [0, 0, 0, 0, 0]
    assert t.highest == 65536 + 1
    assert t.feed(4) == 2
    assert t.lost == 2
    t2 = SequenceTracker()
    t2.feed(65534)
    assert t2.feed(1) == 2  # 65535 and 0 lost across the wrap
    assert t2.highest == 65537


def test_tracker_reorder_and_duplicates() -> None:
    t = SequenceTracker()
    for s in (100, 101, 103):
        t.feed(s)
    assert t.lost == 1
    assert t.feed(102) == 0  # late
    assert t.feed(103) == 0  # duplicate
    assert t.feed(104) == 0
    assert (t.highest, t.received, t.lost) == (104, 6, 1)
    # Late across the wrap boundary.
    t = SequenceTracker()
    t.feed(65535)
    t.feed(1)
    assert t.feed(0) == 0
    assert t.highest == 65537


def test_tracker_restart() -> None:
    t = SequenceTracker()
    t.feed(1000)
    t.feed(1001)
    assert t.feed(40000) == 0  # jump > 3000: new sender, not 38998 losses
    assert t.lost == 0 and t.restarts == 1
    assert t.feed(40001) == 0
    assert t.feed(40003) == 1
    assert t.highest == 40003
    # Restart to a lower number keeps ``highest`` monotonic.
    assert t.feed(5) == 0
    assert t.restarts == 2 and t.highest == 65536 + 5
    assert t.feed(6) == 0 and t.highest == 65536 + 6


@STRUCTURED
@given(st.integers(0, 0xFFFF), st.lists(st.integers(1, 3000), max_size=50))
def test_tracker_forward_steps_property(start: int, steps: list[int]) -> None:
    t = SequenceTracker()
    t.feed(start)
    seq = start
    for step in steps:
        seq += step
        assert t.feed(seq & 0xFFFF) == step - 1
    assert t.highest == seq
    assert t.lost == sum(steps) - len(steps)
