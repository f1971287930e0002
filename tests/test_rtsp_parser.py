"""Specification tests for gateway.protocols.rtsp: the sans-I/O RTSP 1.0 parser and helpers."""

from __future__ import annotations

import string
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.protocols.rtsp import (
    DEFAULT_LIMITS,
    STATUS_PHRASES,
    Event,
    Headers,
    InterleavedFrame,
    Limits,
    Request,
    Response,
    RtspError,
    RtspParser,
    format_request,
    format_response,
    frame,
)
from gateway.protocols.rtsp_headers import (
    RangeSpec,
    RtpInfoEntry,
    TransportSpec,
    format_range,
    format_rtp_info,
    format_session,
    format_transport,
    parse_cseq,
    parse_range,
    parse_rtp_info,
    parse_session,
    parse_transport,
    split_uri,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- fixtures
# What ffmpeg 6.1 (Lavf60.16.100) sends when playing rtsp://127.0.0.1:8554/cam1 over TCP.

FFMPEG_OPTIONS = (
    b"OPTIONS rtsp://127.0.0.1:8554/cam1 RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: Lavf60.16.100\r\n\r\n"
)
FFMPEG_DESCRIBE = (
    b"DESCRIBE rtsp://127.0.0.1:8554/cam1 RTSP/1.0\r\n"
    b"Accept: application/sdp\r\n"
    b"CSeq: 2\r\n"
    b"User-Agent: Lavf60.16.100\r\n"
    b"\r\n"
)
FFMPEG_SETUP = (
    b"SETUP rtsp://127.0.0.1:8554/cam1/trackID=0 RTSP/1.0\r\n"
    b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
    b"CSeq: 3\r\n"
    b"User-Agent: Lavf60.16.100\r\n"
    b"\r\n"
)
FFMPEG_PLAY = (
    b"PLAY rtsp://127.0.0.1:8554/cam1/ RTSP/1.0\r\n"
    b"Range: npt=0.000-\r\n"
    b"CSeq: 4\r\n"
    b"User-Agent: Lavf60.16.100\r\n"
    b"Session: 5f3a1c9e0b7d2a64\r\n"
    b"\r\n"
)
FFMPEG_EXCHANGE = FFMPEG_OPTIONS + FFMPEG_DESCRIBE + FFMPEG_SETUP + FFMPEG_PLAY

SDP = (
    b"v=0\r\n"
    b"o=- 0 0 IN IP4 127.0.0.1\r\n"
    b"s=No Name\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"a=tool:libavformat 60.16.100\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"a=rtpmap:96 H264/90000\r\n"
    b"a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAKKzZQHgCJ+Xv/AAAAwAEAAADAPA8YMZY,"
    b"aOvjyyLA; profile-level-id=640028\r\n"
    b"a=control:streamid=0\r\n"
)

# ffmpeg publishing with -f rtsp -rtsp_transport tcp.
FFMPEG_ANNOUNCE = (
    b"ANNOUNCE rtsp://127.0.0.1:8554/cam1 RTSP/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"CSeq: 2\r\n"
    b"User-Agent: Lavf60.16.100\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)
FFMPEG_RECORD_SETUP = (
    b"SETUP rtsp://127.0.0.1:8554/cam1/streamid=0 RTSP/1.0\r\n"
    b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n"
    b"CSeq: 3\r\n"
    b"User-Agent: Lavf60.16.100\r\n"
    b"\r\n"
)

DESCRIBE_RESPONSE = (
    b"RTSP/1.0 200 OK\r\n"
    b"CSeq: 2\r\n"
    b"Content-Base: rtsp://127.0.0.1:8554/cam1/\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

RTP_PACKET = bytes.fromhex("8060 1234 00000000 deadbeef") + b"\x65" + bytes(range(200))
RTCP_SR = bytes.fromhex("80c8 0006 deadbeef") + bytes(20)

MIXED_STREAM = (
    FFMPEG_ANNOUNCE
    + FFMPEG_RECORD_SETUP
    + frame(0, RTP_PACKET)
    + frame(1, RTCP_SR)
    + frame(0, b"")
    + b"GET_PARAMETER rtsp://127.0.0.1:8554/cam1/ RTSP/1.0\r\n"
    b"CSeq: 5\r\nSession: 5f3a1c9e0b7d2a64\r\n\r\n"
    + frame(0, RTP_PACKET)
    + DESCRIBE_RESPONSE
    + frame(2, b"\r\n\r\n$\x00\x00\x01")
)


def parse_all(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[Event]:
    return RtspParser(limits).feed(data)


def parse_one(data: bytes) -> Event:
    events = parse_all(data)
    assert len(events) == 1, events
    return events[0]


def parse_error(data: bytes, limits: Limits = DEFAULT_LIMITS) -> RtspError:
    with pytest.raises(RtspError) as info:
        RtspParser(limits).feed(data)
    return info.value


def feed_chunks(chunks: list[bytes], limits: Limits = DEFAULT_LIMITS) -> list[Event]:
    parser = RtspParser(limits)
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def request(*headers: bytes, start: bytes = b"OPTIONS * RTSP/1.0", body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


# --------------------------------------------------------------------------- real exchanges


def test_ffmpeg_options_is_parsed() -> None:
    req = parse_one(FFMPEG_OPTIONS)
    assert req == Request(
        "OPTIONS",
        "rtsp://127.0.0.1:8554/cam1",
        "RTSP/1.0",
        Headers([("CSeq", "1"), ("User-Agent", "Lavf60.16.100")]),
        b"",
    )
    assert req.cseq == "1"


def test_ffmpeg_describe_is_parsed() -> None:
    req = parse_one(FFMPEG_DESCRIBE)
    assert isinstance(req, Request)
    assert req.method == "DESCRIBE"
    assert req.headers.get("accept") == "application/sdp"
    assert req.cseq == "2"


def test_ffmpeg_setup_transport_is_interleaved_tcp() -> None:
    req = parse_one(FFMPEG_SETUP)
    assert isinstance(req, Request)
    value = req.headers.get("Transport")
    assert value is not None
    (spec,) = parse_transport(value)
    assert spec.is_tcp and spec.interleaved == (0, 1) and spec.mode == "PLAY"
    assert split_uri(req.uri) == ("cam1/trackID=0", "", {})


def test_ffmpeg_play_carries_session_and_range() -> None:
    req = parse_one(FFMPEG_PLAY)
    assert isinstance(req, Request)
    assert parse_session(req.headers.get("session") or "") == ("5f3a1c9e0b7d2a64", None)
    rng = parse_range(req.headers.get("Range") or "")
    assert rng.unit == "npt" and rng.start_seconds == 0.0 and rng.end is None


def test_whole_ffmpeg_exchange_in_one_chunk_gives_four_requests() -> None:
    events = parse_all(FFMPEG_EXCHANGE)
    assert [e.method for e in events if isinstance(e, Request)] == [
        "OPTIONS",
        "DESCRIBE",
        "SETUP",
        "PLAY",
    ]
    assert [e.cseq for e in events if isinstance(e, Request)] == ["1", "2", "3", "4"]


def test_announce_with_sdp_body() -> None:
    req = parse_one(FFMPEG_ANNOUNCE)
    assert isinstance(req, Request)
    assert req.method == "ANNOUNCE"
    assert req.body == SDP
    assert req.headers.get("Content-Type") == "application/sdp"


def test_record_setup_mode_is_record() -> None:
    req = parse_one(FFMPEG_RECORD_SETUP)
    assert isinstance(req, Request)
    (spec,) = parse_transport(req.headers.get("Transport") or "")
    assert spec.mode == "RECORD"


def test_response_with_body() -> None:
    resp = parse_one(DESCRIBE_RESPONSE)
    assert isinstance(resp, Response)
    assert (resp.version, resp.status, resp.reason) == ("RTSP/1.0", 200, "OK")
    assert resp.cseq == "2"
    assert resp.body == SDP
    assert resp.headers.get("content-base") == "rtsp://127.0.0.1:8554/cam1/"


def test_response_reason_may_contain_spaces_or_be_empty() -> None:
    resp = parse_one(b"RTSP/1.0 454 Session Not Found\r\nCSeq: 9\r\n\r\n")
    assert isinstance(resp, Response) and resp.reason == "Session Not Found"
    resp = parse_one(b"RTSP/1.0 200\r\nCSeq: 9\r\n\r\n")
    assert isinstance(resp, Response) and resp.status == 200 and resp.reason == ""


def test_response_without_cseq_is_accepted() -> None:
    resp = parse_one(b"RTSP/1.0 503 Service Unavailable\r\n\r\n")
    assert isinstance(resp, Response) and resp.cseq is None


MIXED_EVENTS = RtspParser().feed(MIXED_STREAM)


def test_requests_interleaved_with_frames() -> None:
    events = parse_all(MIXED_STREAM)
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "Request",
        "Request",
        "InterleavedFrame",
        "InterleavedFrame",
        "InterleavedFrame",
        "Request",
        "InterleavedFrame",
        "Response",
        "InterleavedFrame",
    ]
    assert events[2] == InterleavedFrame(0, RTP_PACKET)
    assert events[3] == InterleavedFrame(1, RTCP_SR)
    assert events[4] == InterleavedFrame(0, b"")
    assert events[8] == InterleavedFrame(2, b"\r\n\r\n$\x00\x00\x01")


def test_every_two_way_split_of_mixed_stream_gives_identical_events() -> None:
    expected = parse_all(MIXED_STREAM)
    for i in range(len(MIXED_STREAM) + 1):
        assert feed_chunks([MIXED_STREAM[:i], MIXED_STREAM[i:]]) == expected, i


def test_one_byte_at_a_time_gives_identical_events() -> None:
    expected = parse_all(MIXED_STREAM)
    parser = RtspParser()
    events: list[Event] = []
    for i in range(len(MIXED_STREAM)):
        events += parser.feed(MIXED_STREAM[i : i + 1])
    assert events == expected
    assert parser.buffered == 0


@FAST
@given(st.lists(st.integers(0, len(MIXED_STREAM)), max_size=12))
def test_any_chunking_gives_identical_events(cuts: list[int]) -> None:
    points = sorted(cuts)
    bounds = zip([0, *points], [*points, len(MIXED_STREAM)], strict=True)
    chunks = [MIXED_STREAM[a:b] for a, b in bounds]
    assert feed_chunks(chunks) == MIXED_EVENTS


def test_back_to_back_frames_fast_path() -> None:
    frames = [frame(i % 4, bytes([i % 256]) * (i * 37 % 1500)) for i in range(500)]
    events = parse_all(b"".join(frames))
    assert len(events) == 500
    assert all(isinstance(e, InterleavedFrame) for e in events)
    assert events[7] == InterleavedFrame(3, bytes([7]) * (7 * 37 % 1500))


def test_zero_length_frame_is_allowed() -> None:
    assert parse_all(b"$\x05\x00\x00") == [InterleavedFrame(5, b"")]


def test_largest_frame_is_65535_bytes() -> None:
    payload = bytes(65535)
    assert parse_all(frame(255, payload)) == [InterleavedFrame(255, payload)]


def test_frame_payload_is_bytes_even_when_buffered() -> None:
    parser = RtspParser()
    assert parser.feed(b"$\x00\x00\x03a") == []
    (ev,) = parser.feed(b"bc")
    assert isinstance(ev, InterleavedFrame) and type(ev.payload) is bytes


def test_bare_lf_line_endings_are_accepted() -> None:
    req = parse_one(b"OPTIONS * RTSP/1.0\nCSeq: 7\nUser-Agent: curl\n\n")
    assert isinstance(req, Request) and req.cseq == "7"
    assert req.headers.items() == [("CSeq", "7"), ("User-Agent", "curl")]


def test_mixed_crlf_and_lf_line_endings_are_accepted() -> None:
    req = parse_one(b"OPTIONS * RTSP/1.0\r\nCSeq: 7\nUser-Agent: x\r\n\n")
    assert isinstance(req, Request) and req.headers.get("user-agent") == "x"


def test_stray_crlf_between_messages_is_ignored() -> None:
    events = parse_all(b"\r\n" + FFMPEG_OPTIONS + b"\r\n\r\n" + FFMPEG_DESCRIBE)
    assert [e.cseq for e in events if isinstance(e, Request)] == ["1", "2"]


def test_unknown_method_is_parsed_not_rejected() -> None:
    req = parse_one(request(b"CSeq: 1", start=b"FROBNICATE rtsp://h/cam1 RTSP/1.0"))
    assert isinstance(req, Request) and req.method == "FROBNICATE"


def test_header_values_are_trimmed_and_case_insensitive() -> None:
    req = parse_one(request(b"cseq:   3  ", b"X-Thing:\tvalue with\ttab "))
    assert isinstance(req, Request)
    assert req.cseq == "3"
    assert req.headers.get("X-THING") == "value with\ttab"
    assert "x-thing" in req.headers and "nope" not in req.headers and 3 not in req.headers


def test_repeated_headers_keep_order() -> None:
    req = parse_one(request(b"CSeq: 1", b"Require: a", b"X: 1", b"require: b"))
    assert isinstance(req, Request)
    assert req.headers.get_all("REQUIRE") == ["a", "b"]
    assert req.headers.get("Require") == "a"
    assert req.headers.get("missing", "dflt") == "dflt"


def test_non_utf8_header_value_falls_back_to_latin1() -> None:
    req = parse_one(request(b"CSeq: 1", b"X-Name: caf\xe9"))
    assert isinstance(req, Request) and req.headers.get("X-Name") == "caf\xe9"


def test_utf8_uri_is_decoded() -> None:
    req = parse_one(request(b"CSeq: 1", start="DESCRIBE rtsp://h/kamera-ü RTSP/1.0".encode()))
    assert isinstance(req, Request) and req.uri == "rtsp://h/kamera-ü"


def test_duplicate_equal_content_length_is_accepted() -> None:
    req = parse_one(request(b"CSeq: 1", b"Content-Length: 2", b"Content-Length: 2", body=b"hi"))
    assert isinstance(req, Request) and req.body == b"hi"


def test_content_length_zero_gives_empty_body() -> None:
    events = parse_all(request(b"CSeq: 1", b"Content-Length: 0") + frame(0, b"x"))
    assert isinstance(events[0], Request) and events[0].body == b""
    assert events[1] == InterleavedFrame(0, b"x")


# --------------------------------------------------------------------------- truncated input


@pytest.mark.parametrize(
    "partial",
    [
        b"OPT",
        b"OPTIONS * RTSP/1.0\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r",
        FFMPEG_ANNOUNCE[:-1],
        b"$",
        b"$\x00",
        b"$\x00\x00",
        b"$\x00\x00\x05abcd",
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 10\r\n\r\n12345",
    ],
)
def test_truncated_input_gives_no_event_and_no_error(partial: bytes) -> None:
    parser = RtspParser()
    assert parser.feed(partial) == []
    assert parser.buffered > 0


def test_buffered_drops_to_zero_once_message_completes() -> None:
    parser = RtspParser()
    parser.feed(FFMPEG_ANNOUNCE[:100])
    assert parser.buffered == 100
    assert len(parser.feed(FFMPEG_ANNOUNCE[100:])) == 1
    assert parser.buffered == 0


# --------------------------------------------------------------------------- limits


def headers_of_size(n: int) -> list[bytes]:
    return [b"CSeq: 1"] + [b"X-H%d: v" % i for i in range(n - 1)]


def test_255_headers_are_accepted() -> None:
    req = parse_one(request(*headers_of_size(255)))
    assert isinstance(req, Request) and len(req.headers) == 255


def test_256_headers_is_400() -> None:
    assert parse_error(request(*headers_of_size(256))).status == 400


def test_header_name_of_512_bytes_is_accepted() -> None:
    req = parse_one(request(b"CSeq: 1", b"X" * 512 + b": v"))
    assert isinstance(req, Request)


def test_header_name_over_512_bytes_is_400() -> None:
    assert parse_error(request(b"CSeq: 1", b"X" * 513 + b": v")).status == 400


def test_header_value_of_2048_bytes_is_accepted() -> None:
    req = parse_one(request(b"CSeq: 1", b"X: " + b"v" * 2048))
    assert isinstance(req, Request)


def test_header_value_over_2048_bytes_is_400() -> None:
    assert parse_error(request(b"CSeq: 1", b"X: " + b"v" * 2049)).status == 400


def test_uri_of_2048_bytes_is_accepted() -> None:
    uri = b"rtsp://h/" + b"a" * (2048 - 9)
    req = parse_one(request(b"CSeq: 1", start=b"DESCRIBE " + uri + b" RTSP/1.0"))
    assert isinstance(req, Request) and len(req.uri) == 2048


def test_uri_over_2048_bytes_is_414() -> None:
    uri = b"rtsp://h/" + b"a" * 2040
    err = parse_error(request(b"CSeq: 1", start=b"DESCRIBE " + uri + b" RTSP/1.0"))
    assert err.status == 414


def test_body_of_exactly_128_kib_is_accepted() -> None:
    body = b"x" * (128 * 1024)
    req = parse_one(request(b"CSeq: 1", b"Content-Length: %d" % len(body), body=body))
    assert isinstance(req, Request) and req.body == body


def test_body_over_128_kib_is_413() -> None:
    # Rejected on the header alone: the parser must not wait for (or buffer) the body.
    err = parse_error(request(b"CSeq: 1", b"Content-Length: 131073"))
    assert err.status == 413


@pytest.mark.parametrize("value", [b"abc", b"-1", b"+5", b"1.0", b"5 5", b"0x10", b"", b"5,5"])
def test_content_length_not_plain_decimal_is_400(value: bytes) -> None:
    assert parse_error(request(b"CSeq: 1", b"Content-Length: " + value)).status == 400


def test_content_length_duplicated_with_different_values_is_400() -> None:
    err = parse_error(request(b"CSeq: 1", b"Content-Length: 2", b"Content-Length: 3", body=b"hi"))
    assert err.status == 400


def test_huge_content_length_is_413_not_overflow() -> None:
    assert parse_error(request(b"CSeq: 1", b"Content-Length: 99999999999")).status == 413


def test_duplicated_cseq_is_400() -> None:
    assert parse_error(request(b"CSeq: 1", b"CSeq: 1")).status == 400


def test_duplicated_session_is_400() -> None:
    assert parse_error(request(b"CSeq: 1", b"Session: a", b"session: b")).status == 400


def test_missing_cseq_on_request_is_400() -> None:
    assert parse_error(request(b"User-Agent: x")).status == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"OPTIONS * RTSP/1.0\x00\r\nCSeq: 1\r\n\r\n",
        b"OPTI\x00ONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        b"OPTIONS *\x01 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\x00\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\x1bb\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\x7fb\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\rb\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nX\x0b: 1\r\nCSeq: 1\r\n\r\n",
    ],
)
def test_control_characters_in_head_are_400(raw: bytes) -> None:
    assert parse_error(raw).status == 400


def test_header_line_without_colon_is_400() -> None:
    assert parse_error(request(b"CSeq: 1", b"NoColonHere")).status == 400


def test_whitespace_before_colon_is_400() -> None:
    assert parse_error(request(b"CSeq : 1")).status == 400


def test_obsolete_line_folding_is_400() -> None:
    assert parse_error(request(b"CSeq: 1", b"X: a", b" continued")).status == 400
    assert parse_error(request(b"CSeq: 1", b"X: a", b"\tcontinued")).status == 400


@pytest.mark.parametrize("version", [b"RTSP/2.0", b"RTSP/1.1", b"HTTP/1.1", b"RTSP/0.9"])
def test_request_version_other_than_rtsp_1_0_is_505(version: bytes) -> None:
    err = parse_error(request(b"CSeq: 1", start=b"OPTIONS * " + version))
    assert err.status == 505


def test_response_version_other_than_rtsp_1_0_is_505() -> None:
    assert parse_error(b"RTSP/2.0 200 OK\r\nCSeq: 1\r\n\r\n").status == 505


@pytest.mark.parametrize(
    "start",
    [b"OPTIONS * RTSP", b"OPTIONS *", b"OPTIONS  * RTSP/1.0", b"OPTIONS * RTSP/1.0 extra"],
)
def test_malformed_request_line_is_400(start: bytes) -> None:
    assert parse_error(request(b"CSeq: 1", start=start)).status == 400


@pytest.mark.parametrize(
    "start", [b"RTSP/1.0 2000 OK", b"RTSP/1.0 OK", b"RTSP/1.0 099 Low", b"RTSP/1.0"]
)
def test_malformed_status_line_is_400(start: bytes) -> None:
    assert parse_error(start + b"\r\nCSeq: 1\r\n\r\n").status == 400


def test_invalid_method_token_is_400() -> None:
    assert parse_error(request(b"CSeq: 1", start=b"OPT(IONS * RTSP/1.0")).status == 400


def test_non_utf8_uri_is_400() -> None:
    assert parse_error(request(b"CSeq: 1", start=b"DESCRIBE rtsp://h/\xff RTSP/1.0")).status == 400


def test_unterminated_header_block_is_400_before_blank_line() -> None:
    parser = RtspParser()
    parser.feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n")
    line = b"X-Pad: " + b"p" * 2000 + b"\r\n"
    with pytest.raises(RtspError) as info:
        for _ in range(10_000):
            parser.feed(line)
            assert parser.buffered <= DEFAULT_LIMITS.max_head
    assert info.value.status == 400


def test_start_line_over_limit_is_400_without_newline() -> None:
    parser = RtspParser()
    parser.feed(b"DESCRIBE rtsp://h/" + b"a" * 4000)
    with pytest.raises(RtspError) as info:
        parser.feed(b"a" * 100)
    assert info.value.status == 400


def test_start_line_over_limit_is_400_with_newline() -> None:
    raw = request(b"CSeq: 1", start=b"DESCRIBE rtsp://h/" + b"a" * 5000 + b" RTSP/1.0")
    assert parse_error(raw).status == 400


def test_custom_limits_are_honoured() -> None:
    small = Limits(max_headers=2, max_uri=20, max_body=4)
    assert parse_error(request(b"CSeq: 1", b"A: 1", b"B: 2"), small).status == 400
    assert parse_error(request(b"CSeq: 1", b"Content-Length: 5"), small).status == 413
    err = parse_error(request(b"CSeq: 1", start=b"DESCRIBE rtsp://h/0123456789abc RTSP/1.0"), small)
    assert err.status == 414


def test_raw_rtp_without_dollar_framing_is_rejected_immediately() -> None:
    assert parse_error(RTP_PACKET).status == 400


def test_error_carries_cseq_when_known() -> None:
    err = parse_error(request(b"CSeq: 42", b"Content-Length: 999999"))
    assert err.status == 413 and err.cseq == "42"
    assert str(err).startswith("413")


def test_parser_is_dead_after_error() -> None:
    parser = RtspParser()
    with pytest.raises(RtspError) as first:
        parser.feed(b"OPTIONS * RTSP/1.0\r\n\r\n")
    with pytest.raises(RtspError) as second:
        parser.feed(FFMPEG_OPTIONS)
    assert second.value is first.value
    assert parser.buffered == 0


def test_messages_before_the_bad_one_are_lost_with_the_error() -> None:
    # feed() raises instead of returning partial events; callers close the connection anyway.
    with pytest.raises(RtspError):
        RtspParser().feed(FFMPEG_OPTIONS + b"BAD\x00\r\n\r\n")


# --------------------------------------------------------------------------- hostile input


@FAST
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_only_ever_raise_rtsp_error(chunks: list[bytes]) -> None:
    parser = RtspParser()
    try:
        for chunk in chunks:
            parser.feed(chunk)
            assert parser.buffered <= DEFAULT_LIMITS.max_buffered
    except RtspError:
        pass


VALID_MESSAGES = [
    FFMPEG_OPTIONS,
    FFMPEG_DESCRIBE,
    FFMPEG_SETUP,
    FFMPEG_PLAY,
    FFMPEG_ANNOUNCE,
    DESCRIBE_RESPONSE,
    frame(0, RTP_PACKET),
]


@st.composite
def mutated_message(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_MESSAGES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"\r\n", b"\n", b":", b" ", b"$", b"\x00", b"\r"]))
        elif op == "delete" and data:
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 40))]
    return bytes(data)


@FAST
@given(mutated_message(), st.integers(1, 64))
def test_mutated_valid_messages_only_ever_raise_rtsp_error(data: bytes, step: int) -> None:
    parser = RtspParser()
    try:
        for i in range(0, len(data), step):
            parser.feed(data[i : i + step])
    except RtspError as exc:
        assert 400 <= exc.status <= 599
        with pytest.raises(RtspError):
            parser.feed(b"")


def test_endless_garbage_line_is_bounded() -> None:
    parser = RtspParser()
    with pytest.raises(RtspError):
        for _ in range(1000):
            parser.feed(b"A" * 1000)
            assert parser.buffered <= DEFAULT_LIMITS.max_buffered


def test_partial_body_is_bounded_by_max_body() -> None:
    parser = RtspParser()
    parser.feed(request(b"CSeq: 1", b"Content-Length: 131072") + b"x" * 131071)
    assert parser.buffered == 131071 <= DEFAULT_LIMITS.max_buffered


def test_dollar_inside_body_is_body_not_frame() -> None:
    req = parse_one(request(b"CSeq: 1", b"Content-Length: 4", body=b"$\x00\x00\x00"))
    assert isinstance(req, Request) and req.body == b"$\x00\x00\x00"


# --------------------------------------------------------------------------- serializers


def test_format_request_adds_content_length_and_round_trips() -> None:
    raw = format_request(
        "ANNOUNCE",
        "rtsp://127.0.0.1:8554/cam1",
        [("CSeq", "2"), ("Content-Type", "application/sdp")],
        SDP,
    )
    assert raw.startswith(b"ANNOUNCE rtsp://127.0.0.1:8554/cam1 RTSP/1.0\r\nCSeq: 2\r\n")
    req = parse_one(raw)
    assert isinstance(req, Request)
    assert req.body == SDP
    assert req.headers.get("Content-Length") == str(len(SDP))


def test_format_request_without_body_has_no_content_length() -> None:
    raw = format_request("OPTIONS", "*", [("CSeq", "1")])
    assert raw == b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"


def test_format_request_replaces_caller_content_length() -> None:
    raw = format_request("SET_PARAMETER", "*", [("CSeq", "1"), ("Content-Length", "99")], b"ab")
    assert raw.count(b"Content-Length") == 1 and b"Content-Length: 2\r\n" in raw


def test_format_response_uses_status_phrase_table() -> None:
    raw = format_response(454, [("CSeq", "5")])
    assert raw == b"RTSP/1.0 454 Session Not Found\r\nCSeq: 5\r\n\r\n"


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (200, "OK"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (413, "Request Entity Too Large"),
        (414, "Request-URI Too Large"),
        (454, "Session Not Found"),
        (455, "Method Not Valid in This State"),
        (459, "Aggregate Operation Not Allowed"),
        (461, "Unsupported Transport"),
        (500, "Internal Server Error"),
        (501, "Not Implemented"),
        (503, "Service Unavailable"),
        (505, "RTSP Version Not Supported"),
    ],
)
def test_status_phrases_cover_rfc_2326_codes(status: int, phrase: str) -> None:
    assert STATUS_PHRASES[status] == phrase
    resp = parse_one(format_response(status, [("CSeq", "1")]))
    assert isinstance(resp, Response) and (resp.status, resp.reason) == (status, phrase)


def test_format_response_with_body_and_custom_reason_round_trips() -> None:
    raw = format_response(200, [("CSeq", "2"), ("Content-Type", "application/sdp")], SDP, "Fine")
    resp = parse_one(raw)
    assert isinstance(resp, Response)
    assert resp.reason == "Fine" and resp.body == SDP


@pytest.mark.parametrize(
    "headers",
    [
        [("X", "a\r\nInjected: yes")],
        [("X", "a\nb")],
        [("Bad Name", "v")],
        [("X:", "v")],
        [("", "v")],
    ],
)
def test_format_refuses_header_injection(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        format_response(200, headers)
    with pytest.raises(ValueError):
        format_request("OPTIONS", "*", headers)


def test_format_request_refuses_bad_method_or_uri() -> None:
    with pytest.raises(ValueError):
        format_request("GET THIS", "*", [])
    with pytest.raises(ValueError):
        format_request("OPTIONS", "rtsp://h/a b", [])
    with pytest.raises(ValueError):
        format_request("OPTIONS", "", [])


def test_frame_layout() -> None:
    assert frame(1, b"abc") == b"$\x01\x00\x03abc"
    assert frame(0, b"") == b"$\x00\x00\x00"
    assert frame(7, bytes(300))[:4] == b"$\x07" + struct.pack(">H", 300)


@pytest.mark.parametrize(("channel", "size"), [(256, 1), (-1, 1), (0, 65536)])
def test_frame_rejects_out_of_range(channel: int, size: int) -> None:
    with pytest.raises(ValueError):
        frame(channel, bytes(size))


@FAST
@given(st.integers(0, 255), st.binary(max_size=2000))
def test_frame_round_trips_through_parser(channel: int, payload: bytes) -> None:
    assert parse_all(frame(channel, payload)) == [InterleavedFrame(channel, payload)]


def test_headers_equality_and_repr() -> None:
    a = Headers([("CSeq", "1")])
    b = Headers()
    b.add("CSeq", "1")
    assert a == b and a != Headers([("cseq", "1")])
    assert "CSeq" in repr(a)
    assert list(a) == [("CSeq", "1")]


# --------------------------------------------------------------------------- Transport


def test_parse_transport_ffmpeg_udp() -> None:
    (spec,) = parse_transport("RTP/AVP/UDP;unicast;client_port=50508-50509")
    assert spec == TransportSpec(profile="RTP/AVP/UDP", client_port=(50508, 50509))
    assert not spec.is_tcp


def test_parse_transport_alternatives_keep_client_order() -> None:
    specs = parse_transport(
        "RTP/AVP/TCP;unicast;interleaved=0-1, RTP/AVP;unicast;client_port=5000-5001"
    )
    assert [s.profile for s in specs] == ["RTP/AVP/TCP", "RTP/AVP"]
    assert specs[0].is_tcp and not specs[1].is_tcp


def test_parse_transport_quoted_mode_is_unquoted_and_upper_cased() -> None:
    (spec,) = parse_transport('RTP/AVP/TCP;unicast;interleaved=2-3;mode="RECORD"')
    assert spec.mode == "RECORD" and spec.interleaved == (2, 3)
    (spec,) = parse_transport("RTP/AVP/TCP;interleaved=0-1;mode=record")
    assert spec.mode == "RECORD"


def test_parse_transport_server_reply_fields() -> None:
    (spec,) = parse_transport(
        "RTP/AVP;unicast;destination=10.0.0.2;source=10.0.0.1;"
        "client_port=5000-5001;server_port=6970-6971;ssrc=0A1b2C3d"
    )
    assert spec.destination == "10.0.0.2" and spec.source == "10.0.0.1"
    assert spec.server_port == (6970, 6971) and spec.ssrc == "0A1B2C3D"


def test_parse_transport_multicast_and_ttl_and_unknown_params() -> None:
    (spec,) = parse_transport(
        "RTP/AVP;multicast;destination=224.2.0.1;port=3456-3457;ttl=16;append"
    )
    assert not spec.unicast and spec.ttl == 16
    assert spec.other == (("port", "3456-3457"), ("append", None))


def test_single_port_means_rtp_and_next_rtcp() -> None:
    (spec,) = parse_transport("RTP/AVP;unicast;client_port=5000")
    assert spec.client_port == (5000, 5001)
    (spec,) = parse_transport("RTP/AVP/TCP;interleaved=4")
    assert spec.interleaved == (4, 5)


def test_unknown_profile_is_returned_for_the_server_to_refuse() -> None:
    specs = parse_transport(
        "RTP/SAVP;unicast;client_port=5000-5001,RTP/AVP;unicast;client_port=5000"
    )
    assert [s.profile for s in specs] == ["RTP/SAVP", "RTP/AVP"]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "RTP",
        "RTP/AVP;client_port=70000-70001",
        "RTP/AVP;client_port=65535",
        "RTP/AVP;client_port=a-b",
        "RTP/AVP;client_port=-1",
        "RTP/AVP/TCP;interleaved=256-257",
        "RTP/AVP/TCP;interleaved=255",
        "RTP/AVP;ttl=300",
        "RTP/AVP;ssrc=xyz",
        'RTP/AVP;mode="PLAY',
        "RTP/AVP;unicast=yes",
        "RTP/AVP;bad param=1",
        "RTP/AVP;mode=",
    ],
)
def test_parse_transport_junk_is_400(value: str) -> None:
    with pytest.raises(RtspError) as info:
        parse_transport(value)
    assert info.value.status == 400


def test_format_transport_server_reply() -> None:
    spec = TransportSpec(profile="RTP/AVP/TCP", interleaved=(0, 1), ssrc="DEADBEEF")
    assert format_transport(spec) == "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=DEADBEEF"
    rec = TransportSpec(profile="RTP/AVP/TCP", interleaved=(0, 1), mode="RECORD")
    assert format_transport(rec) == "RTP/AVP/TCP;unicast;interleaved=0-1;mode=RECORD"


pairs = st.tuples(st.integers(0, 65535), st.integers(0, 65535))
channels = st.tuples(st.integers(0, 255), st.integers(0, 255))
safe_text = st.text(string.ascii_letters + string.digits + ' .:-_/"\\;,=', min_size=1, max_size=20)


transport_specs = st.builds(
    TransportSpec,
    profile=st.sampled_from(["RTP/AVP", "RTP/AVP/TCP", "RTP/AVP/UDP"]),
    unicast=st.booleans(),
    interleaved=st.none() | channels,
    client_port=st.none() | pairs,
    server_port=st.none() | pairs,
    mode=st.sampled_from(["PLAY", "RECORD"]),
    ssrc=st.none() | st.text("0123456789ABCDEF", min_size=1, max_size=8),
    destination=st.none() | safe_text,
    source=st.none() | safe_text,
    ttl=st.none() | st.integers(0, 255),
    other=st.lists(
        st.tuples(st.sampled_from(["port", "append", "layers", "x-custom"]), st.none() | safe_text),
        max_size=2,
    ).map(tuple),
)


@FAST
@given(st.lists(transport_specs, min_size=1, max_size=2))
def test_transport_round_trips(specs: list[TransportSpec]) -> None:
    assert parse_transport(", ".join(format_transport(s) for s in specs)) == specs


@FAST
@given(st.text(max_size=120))
def test_parse_transport_only_raises_rtsp_error(value: str) -> None:
    try:
        parse_transport(value)
    except RtspError:
        pass


# --------------------------------------------------------------------------- Session


def test_parse_session_with_timeout() -> None:
    assert parse_session("5f3a1c9e0b7d2a64;timeout=60") == ("5f3a1c9e0b7d2a64", 60)
    assert parse_session(" abc ; timeout = 30 ") == ("abc", 30)
    assert parse_session("abc;other=1") == ("abc", None)


@pytest.mark.parametrize(
    "value",
    ["", ";timeout=60", "a" * 65, "has space", "a/b", 'ab"c', "abc;timeout=x", "a;timeout=-1"],
)
def test_parse_session_junk_is_400(value: str) -> None:
    with pytest.raises(RtspError) as info:
        parse_session(value)
    assert info.value.status == 400


def test_format_session() -> None:
    assert format_session("abc", None) == "abc"
    assert format_session("abc", 60) == "abc;timeout=60"
    with pytest.raises(ValueError):
        format_session("bad id", None)


@FAST
@given(
    st.text("abcdefXYZ0123456789$-_.+", min_size=1, max_size=64),
    st.none() | st.integers(0, 2**31 - 1),
)
def test_session_round_trips(session_id: str, timeout: int | None) -> None:
    assert parse_session(format_session(session_id, timeout)) == (session_id, timeout)


# --------------------------------------------------------------------------- Range


@pytest.mark.parametrize(
    ("value", "start", "end", "start_s", "end_s"),
    [
        ("npt=0.000-", "0.000", None, 0.0, None),
        ("npt=now-", "now", None, None, None),
        ("npt=12.5-20", "12.5", "20", 12.5, 20.0),
        ("npt=1:02:03.5-", "1:02:03.5", None, 3723.5, None),
        ("npt=0:00:10-0:01:00", "0:00:10", "0:01:00", 10.0, 60.0),
        ("npt=-20", "", "20", None, 20.0),
        ("npt=5", "5", None, 5.0, None),
        ("NPT = 3 - 4 ;time=19970123T143720Z", "3", "4", 3.0, 4.0),
    ],
)
def test_parse_npt_range(
    value: str, start: str, end: str | None, start_s: float | None, end_s: float | None
) -> None:
    spec = parse_range(value)
    assert spec == RangeSpec("npt", start, end, start_s, end_s)


def test_parse_clock_range_gives_utc_datetime() -> None:
    spec = parse_range("clock=19961108T142300Z-19961108T143520.25Z")
    assert spec.unit == "clock" and spec.start_seconds is None
    assert spec.start_datetime == datetime(1996, 11, 8, 14, 23, tzinfo=UTC)
    assert spec.end_datetime == datetime(1996, 11, 8, 14, 35, 20, 250000, tzinfo=UTC)


def test_npt_range_has_no_datetime() -> None:
    assert parse_range("npt=0-").start_datetime is None


def test_parse_smpte_range() -> None:
    spec = parse_range("smpte=10:07:00-10:07:33:05.01")
    assert (spec.unit, spec.start, spec.end) == ("smpte", "10:07:00", "10:07:33:05.01")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "npt",
        "npt=-",
        "npt=abc-",
        "npt=1:60:00-",
        "npt=1:00:60-",
        "npt=-5-",
        "frames=1-2",
        "clock=19961308T142300Z-",
        "clock=1996-11-08-",
        "smpte=1:2-",
    ],
)
def test_parse_range_junk_is_400(value: str) -> None:
    with pytest.raises(RtspError) as info:
        parse_range(value)
    assert info.value.status == 400


npt_times = st.one_of(
    st.just("now"),
    st.integers(0, 10**6).map(str),
    st.builds(lambda s, f: f"{s}.{f:03d}", st.integers(0, 10**6), st.integers(0, 999)),
    st.builds(
        lambda h, m, s: f"{h}:{m:02d}:{s:02d}",
        st.integers(0, 99),
        st.integers(0, 59),
        st.integers(0, 59),
    ),
)
clock_times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.strftime("%Y%m%dT%H%M%SZ")
)


@FAST
@given(
    st.one_of(
        st.tuples(st.just("npt"), npt_times, st.none() | npt_times),
        st.tuples(st.just("clock"), clock_times, st.none() | clock_times),
    )
)
def test_range_round_trips(parts: tuple[str, str, str | None]) -> None:
    unit, start, end = parts
    spec = parse_range(f"{unit}={start}-{end or ''}")
    assert (spec.unit, spec.start, spec.end) == parts
    assert parse_range(format_range(spec)) == spec


# --------------------------------------------------------------------------- RTP-Info


def test_parse_rtp_info_typical_server_reply() -> None:
    value = (
        "url=rtsp://127.0.0.1:8554/cam1/trackID=0;seq=17393;rtptime=2913386711,"
        "url=rtsp://127.0.0.1:8554/cam1/trackID=1;seq=2;rtptime=0"
    )
    assert parse_rtp_info(value) == [
        RtpInfoEntry("rtsp://127.0.0.1:8554/cam1/trackID=0", 17393, 2913386711),
        RtpInfoEntry("rtsp://127.0.0.1:8554/cam1/trackID=1", 2, 0),
    ]


def test_parse_rtp_info_tolerates_commas_semicolons_and_quotes_in_urls() -> None:
    value = 'url="rtsp://h/a,b";seq=1, url=rtsp://h/c;d;rtptime=5;x-ext=1'
    assert parse_rtp_info(value) == [
        RtpInfoEntry("rtsp://h/a,b", 1, None),
        RtpInfoEntry("rtsp://h/c;d", None, 5),
    ]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "seq=1",
        "url=;seq=1",
        "url=rtsp://h/a;seq=65536",
        "url=rtsp://h/a;rtptime=4294967296",
        "url=rtsp://h/a;seq=x",
    ],
)
def test_parse_rtp_info_junk_is_400(value: str) -> None:
    with pytest.raises(RtspError) as info:
        parse_rtp_info(value)
    assert info.value.status == 400


rtp_urls = st.builds(
    lambda host, path: f"rtsp://{host}/{path}",
    st.sampled_from(["127.0.0.1:8554", "cam.example", "[::1]:554"]),
    st.text("abcxyz0123456789/=_-.", max_size=30),
)


@FAST
@given(
    st.lists(
        st.builds(
            RtpInfoEntry,
            rtp_urls,
            st.none() | st.integers(0, 0xFFFF),
            st.none() | st.integers(0, 0xFFFFFFFF),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_rtp_info_round_trips(entries: list[RtpInfoEntry]) -> None:
    assert parse_rtp_info(format_rtp_info(entries)) == entries


# --------------------------------------------------------------------------- CSeq, URIs


def test_parse_cseq() -> None:
    assert parse_cseq("1") == 1
    assert parse_cseq(" 42 ") == 42
    for bad in (None, "", "-1", "1.5", "abc", "99999999999"):
        with pytest.raises(RtspError) as info:
            parse_cseq(bad)
        assert info.value.status == 400


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("rtsp://127.0.0.1:8554/cam1", ("cam1", "", {})),
        ("rtsp://127.0.0.1:8554/cam1/", ("cam1", "", {})),
        ("rtsp://h/cam1/trackID=0", ("cam1/trackID=0", "", {})),
        (
            "rtsps://h:322/site/cam1?token=abc&x=1&x=2",
            ("site/cam1", "token=abc&x=1&x=2", {"token": "abc", "x": "1"}),
        ),
        ("RTSP://user:pw@[::1]:554/cam%201", ("cam 1", "", {})),
        ("rtsp://h", ("", "", {})),
        ("*", ("", "", {})),
    ],
)
def test_split_uri(uri: str, expected: tuple[str, str, dict[str, str]]) -> None:
    assert split_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "/cam1",
        "cam1",
        "http://h/cam1",
        "rtsp:///cam1",
        "rtsp://h:99999/cam1",
        "rtsp://h:port/cam1",
        "rtsp://[::1/cam1",
        "rtsp://h/ca m1",
        "rtsp://h/cam%ff",
        "rtsp://h/cam%0a",
        "",
    ],
)
def test_split_uri_rejects_everything_else_with_400(uri: str) -> None:
    with pytest.raises(RtspError) as info:
        split_uri(uri)
    assert info.value.status == 400


@FAST
@given(st.text(max_size=80))
def test_split_uri_only_raises_rtsp_error(uri: str) -> None:
    try:
        split_uri(uri)
    except RtspError:
        pass


@FAST
@given(st.text(max_size=80))
def test_header_value_parsers_only_raise_rtsp_error(value: str) -> None:
    for parse in (parse_session, parse_range, parse_rtp_info, parse_cseq):
        try:
            parse(value)
        except RtspError:
            pass
