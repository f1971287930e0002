"""Specification tests for the sans-I/O playback protocol pieces: a PLAY's replay headers
(gateway.protocols.rtsp_replay: Range clock/npt, Scale, Speed, Rate-Control, Frames, Immediate,
Require onvif-replay, the URL form) and the ONVIF replay RTP header extension
(gateway.protocols.onvif_rtp), from the bytes real clients send, truncated and hostile ones, and
hypothesis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.protocols.onvif_rtp import (
    ONVIF_REPLAY_PROFILE,
    ReplayExtension,
    add_replay_extension,
    datetime_from_ntp,
    ntp_from_datetime,
    read_replay_extension,
)
from gateway.protocols.rtp import RtpError, RtpPacket
from gateway.protocols.rtsp import RtspError, RtspParser
from gateway.protocols.rtsp_replay import (
    Frames,
    FramesMode,
    choose_scale,
    format_clock,
    format_clock_range,
    format_scale,
    parse_play,
    parse_rfc3339,
    parse_url_range,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)


def play(*headers: str) -> object:
    """A PLAY request as a client writes it, parsed by the server's own parser."""
    text = "PLAY rtsp://gw/cam1 RTSP/1.0\r\nCSeq: 5\r\nSession: abc\r\n"
    text += "".join(h + "\r\n" for h in headers) + "\r\n"
    parser = RtspParser()
    events = parser.feed(text.encode())
    assert len(events) == 1
    return events[0]


def parsed(*headers: str):  # type: ignore[no-untyped-def]
    req = play(*headers)
    return parse_play(req.headers)  # type: ignore[attr-defined]


# --- what real clients send ---------------------------------------------------------------


def test_a_live_play_asks_for_nothing_recorded() -> None:
    r = parsed("Range: npt=0.000-")
    assert r.start is None and r.npt_start == 0.0 and not r.onvif and r.scale == 1.0
    assert not parsed().seeks


def test_gstreamer_rtspsrc_clock_range() -> None:
    r = parsed("Range: clock=20261201T101500Z-20261201T103000Z")
    assert r.start == T0 and r.end == T0 + timedelta(minutes=15)
    assert r.seeks and not r.reverse and r.rate_control and r.frames == Frames()


def test_onvif_replay_as_the_streaming_spec_writes_it() -> None:
    r = parsed(
        "Require: onvif-replay",
        "Range: clock=20261201T101500.440Z-",
        "Rate-Control: no",
        "Scale: 4.0",
        "Frames: intra/500",
        "Immediate: yes",
    )
    assert r.onvif and not r.rate_control and r.immediate and r.scale == 4.0
    assert r.start == T0 + timedelta(milliseconds=440) and r.end is None
    assert r.frames == Frames(FramesMode.INTRA, 500)


def test_reverse_replay_names_the_later_instant_first() -> None:
    r = parsed(
        "Require: onvif-replay", "Scale: -1.0", "Range: clock=20261201T103000Z-20261201T101500Z"
    )
    assert r.reverse and r.start == T0 + timedelta(minutes=15) and r.end == T0


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("Range: clock=20261201T103000Z-20261201T101500Z", 457),  # backwards at Scale 1
        ("Range: clock=20261201T101500Z-20261201T101500Z", 457),  # empty
        ("Range: npt=30-10", 457),
        ("Range: smpte=10:00:00-", 457),
        ("Range: clock=20261301T101500Z-", 400),  # month 13
        ("Range: clock=20261201T101500-", 400),  # no Z
        ("Range: clock=19000101T000000Z-", 400),  # before any recording
        ("Range: clock=now-", 400),
        ("Scale: 0", 400),
        ("Scale: fast", 400),
        ("Scale: 1e309", 400),
        ("Scale: nan", 400),
        ("Scale: 1000", 400),
        ("Speed: -2", 400),
        ("Rate-Control: maybe", 400),
        ("Immediate: 1", 400),
        ("Frames: keyframes", 400),
        ("Frames: all/100", 400),
        ("Frames: intra/", 400),
        ("Require: onvif-replay, com.example.teleport", 551),
        ("Require: funky\x7ftag", 400),
    ],
)
def test_bad_values_get_their_status(header: str, status: int) -> None:
    with pytest.raises(RtspError) as err:
        parsed(header)
    assert err.value.status == status


def test_an_unsupported_option_is_named_for_the_unsupported_header() -> None:
    with pytest.raises(RtspError) as err:
        parsed("Require: com.example.teleport,onvif-replay")
    assert "com.example.teleport" in err.value.reason and "onvif" not in err.value.reason


# --- the URL form (ffmpeg, VLC) ---------------------------------------------------------------


def test_url_form_start_only_end_and_duration() -> None:
    assert parse_url_range({"token": "x"}) is None
    assert parse_url_range({"start": "2026-12-01T10:15:00Z"}) == (T0, None)
    assert parse_url_range({"start": "2026-12-01T10:15:00Z", "duration": "90"}) == (
        T0,
        T0 + timedelta(seconds=90),
    )
    # An offset is honoured: 11:15 in Paris in winter is 10:15 UTC.
    assert parse_url_range(
        {"start": "2026-12-01T11:15:00+01:00", "end": "2026-12-01T10:16:00Z"}
    ) == (
        T0,
        T0 + timedelta(minutes=1),
    )


@pytest.mark.parametrize(
    "query",
    [
        {"start": "2026-12-01T10:15:00"},  # no offset: whose 10:15?
        {"start": "2026-12-01 10:15"},
        {"start": "yesterday"},
        {"start": "2026-02-30T10:15:00Z"},
        {"start": "2026-12-01T10:15:00Z", "end": "2026-12-01T10:14:00Z"},
        {"start": "2026-12-01T10:15:00Z", "duration": "0"},
        {"start": "2026-12-01T10:15:00Z", "duration": "-5"},
        {"start": "2026-12-01T10:15:00Z", "duration": "9999999999"},
        {"start": "2026-12-01T10:15:00Z", "duration": "inf"},
        {"start": "2026-12-01T10:15:00Z", "end": "2026-12-01T10:16:00Z", "duration": "5"},
        {"end": "2026-12-01T10:16:00Z"},
    ],
)
def test_url_form_refuses_what_it_cannot_place(query: dict[str, str]) -> None:
    with pytest.raises(RtspError) as err:
        parse_url_range(query)
    assert err.value.status == 400


def test_rfc3339_fractions_beyond_microseconds_are_cut_not_refused() -> None:
    assert parse_rfc3339("2026-12-01T10:15:00.123456789Z") == T0 + timedelta(microseconds=123456)


# --- what the reply says ----------------------------------------------------------------------


def test_reply_values() -> None:
    assert format_clock(T0) == "20261201T101500Z"
    assert format_clock(T0 + timedelta(milliseconds=250)) == "20261201T101500.250Z"
    assert format_clock_range(T0, None) == "clock=20261201T101500Z-"
    assert format_scale(2.0) == "2.0" and format_scale(-0.5) == "-0.5"


@pytest.mark.parametrize(
    ("asked", "chosen"), [(1, 1), (2, 2), (3, 2), (3.5, 4), (8, 4), (0.5, 1), (-2, -2), (-9, -4)]
)
def test_an_unsupported_scale_is_approximated_in_its_direction(asked: float, chosen: float) -> None:
    assert choose_scale(asked, (1, 2, 4)) == chosen


@FAST
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2199, 1, 1)))
def test_clock_ranges_round_trip_to_the_millisecond(naive: datetime) -> None:
    when = naive.replace(tzinfo=UTC, microsecond=naive.microsecond // 1000 * 1000)
    r = parsed(f"Range: {format_clock_range(when, None)}")
    assert r.start == when


@FAST
@given(st.text(max_size=60))
def test_any_header_text_is_a_request_or_a_status(text: str) -> None:
    from gateway.protocols.rtsp import Headers

    for name in ("Range", "Scale", "Speed", "Frames", "Require", "Rate-Control", "Immediate"):
        try:
            parse_play(Headers([(name, text)]))
        except RtspError as exc:
            assert exc.status in (400, 457, 551)


# --- the ONVIF replay header extension --------------------------------------------------------

# A 12-byte H.264 RTP header (PT 96, seq 0x1234, ts 0x01020304, SSRC 0xdeadbeef), then the
# extension as the ONVIF Streaming Spec lays it out: 0xABAC, length 3, NTP, C|D flags, CSeq 7.
PLAIN = bytes.fromhex("80e0123401020304deadbeef") + b"\x65payload"
WITH_EXT = (
    bytes.fromhex("90e0123401020304deadbeef")
    + bytes.fromhex("abac0003")
    + bytes.fromhex("ed00378040000000")
    + bytes.fromhex("a0070000")
    + b"\x65payload"
)


def test_the_extension_bytes_match_the_spec_layout() -> None:
    captured = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=0.25)
    ext = ReplayExtension(ntp_from_datetime(captured), clean_point=True, discontinuity=True, cseq=7)
    assert ext.ntp == (0xED003780 << 32) | 0x40000000
    assert add_replay_extension(PLAIN, ext) == WITH_EXT
    got = read_replay_extension(WITH_EXT)
    assert got == ext and got.captured == captured
    # The server's own RTP parser sees the same thing.
    packet = RtpPacket.parse(WITH_EXT)
    assert packet.extension is not None and packet.extension[0] == ONVIF_REPLAY_PROFILE
    assert packet.payload == b"\x65payload" and packet.sequence == 0x1234
    assert ReplayExtension.unpack(*packet.extension) == ext


def test_each_flag_has_its_bit() -> None:
    for field, bit in (
        ("clean_point", 0x80),
        ("end", 0x40),
        ("discontinuity", 0x20),
        ("terminal", 0x10),
    ):
        ext = ReplayExtension(1, **{field: True})  # type: ignore[arg-type]
        assert ext.pack()[12] == bit
        assert read_replay_extension(add_replay_extension(PLAIN, ext)) == ext


def test_an_existing_extension_is_replaced_and_csrcs_kept() -> None:
    with_csrc = bytes.fromhex("91e0123401020304deadbeef00000001beef000101020304") + b"xy"
    out = add_replay_extension(with_csrc, ReplayExtension(5, cseq=300))
    packet = RtpPacket.parse(out)
    assert packet.csrcs == (1,) and packet.payload == b"xy"
    assert read_replay_extension(out) == ReplayExtension(5, cseq=300 & 0xFF)


def test_other_extensions_are_not_onvif() -> None:
    other = bytes.fromhex("90e0123401020304deadbeefbede000110ff0000") + b"x"
    assert read_replay_extension(other) is None
    assert read_replay_extension(PLAIN) is None


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        PLAIN[:11],
        bytes.fromhex("40e0123401020304deadbeef"),  # RTP version 1
        bytes.fromhex("82e0123401020304deadbeef"),  # two CSRCs promised, none there
        WITH_EXT[:14],  # extension header cut
        WITH_EXT[:20],  # extension words cut
    ],
)
def test_truncated_and_hostile_packets_are_errors(packet: bytes) -> None:
    with pytest.raises(RtpError):
        read_replay_extension(packet)
    with pytest.raises(RtpError):
        add_replay_extension(packet, ReplayExtension(1))


def test_a_short_onvif_extension_is_an_error() -> None:
    short = bytes.fromhex("90e0123401020304deadbeefabac000100000000")
    with pytest.raises(RtpError):
        read_replay_extension(short)


@FAST
@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2035, 12, 31)),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 255),
    st.binary(max_size=64),
    st.integers(0, 15),
)
def test_extension_round_trips(
    naive: datetime, c: bool, e: bool, d: bool, t: bool, cseq: int, payload: bytes, ncsrc: int
) -> None:
    when = naive.replace(tzinfo=UTC)
    assert datetime_from_ntp(ntp_from_datetime(when)) == when
    ext = ReplayExtension(ntp_from_datetime(when), c, e, d, t, cseq)
    packet = RtpPacket(96, 1, 2, 3, payload, csrcs=tuple(range(ncsrc))).serialize()
    out = add_replay_extension(packet, ext)
    assert read_replay_extension(out) == ext
    assert RtpPacket.parse(out).payload == payload


@FAST
@given(st.binary(max_size=80))
def test_any_bytes_are_an_extension_none_or_an_error(data: bytes) -> None:
    try:
        read_replay_extension(data)
    except RtpError:
        pass
