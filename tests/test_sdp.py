from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocols.h264 import parse_sps_resolution
from gateway.protocols.h265 import nal_type
from gateway.protocols.sdp import (
    MAX_SDP_BYTES,
    MediaDescription,
    RtpMap,
    SdpError,
    SessionDescription,
    format_sdp,
    h264_sprop_parameter_sets,
    h265_sprop,
    parse_sdp,
    resolve_control,
)

# What ffmpeg's RTSP muxer (libavformat sdp.c) announces for H.264 + AAC.
FFMPEG_SDP = (
    "v=0\r\n"
    "o=- 0 0 IN IP4 127.0.0.1\r\n"
    "s=No Name\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "a=tool:libavformat 60.16.100\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 packetization-mode=1; "
    "sprop-parameter-sets=Z2QAH6zZQFAFuhAAAAMAEAAAAwPA8YMZYA==,aOvjyyLA; "
    "profile-level-id=64001F\r\n"
    "a=control:streamid=0\r\n"
    "m=audio 0 RTP/AVP 97\r\n"
    "b=AS:128\r\n"
    "a=rtpmap:97 MPEG4-GENERIC/44100/2\r\n"
    "a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
    "indexdeltalength=3; config=121056E500\r\n"
    "a=control:streamid=1\r\n"
)

# A Hikvision-style camera: H.265 with sprop-vps/sps/pps, absolute controls, an ONVIF
# metadata track, LF-only line endings and a couple of vendor attributes/lines.
CAMERA_SDP = """v=0
o=- 1109162014219182 1109162014219192 IN IP4 192.168.1.64
s=Media Presentation
e=NONE
b=AS:5050
t=0 0
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/?transportmode=unicast
m=video 0 RTP/AVP 96
c=IN IP4 0.0.0.0
b=AS:5000
a=recvonly
a=x-dimensions:1280,720
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=1?transportmode=unicast
a=rtpmap:96 H265/90000
a=fmtp:96 sprop-vps=QAEMAf//BAgAAAMAnggAAAMAAF2VlAk=; \
sprop-sps=QgEBBAgAAAMAnggAAAMAAF2QAFAQBaLLKypSYXgLcCAgAEAAAAMAQAAABkI=; sprop-pps=RAHAcxgwGJA=
a=Media_header:MEDIAINFO=494D4B48010300000400050000000000000000000000000000000000;
a=appversion:1.0
m=audio 0 RTP/AVP 8
c=IN IP4 0.0.0.0
b=AS:50
a=recvonly
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=2?transportmode=unicast
a=Media_header:MEDIAINFO=494D4B48010300000400050000000000000000000000000000000000;
m=application 0 RTP/AVP 107
c=IN IP4 0.0.0.0
b=AS:50
a=recvonly
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=4?transportmode=unicast
a=rtpmap:107 vnd.onvif.metadata/90000
"""

GSTREAMER_SDP = (
    "v=0\r\n"
    "o=- 1188340656180883 1 IN IP4 127.0.0.1\r\n"
    "s=Session streamed with GStreamer\r\n"
    "i=rtsp-server\r\n"
    "t=0 0\r\n"
    "a=tool:GStreamer\r\n"
    "a=type:broadcast\r\n"
    "a=range:npt=now-\r\n"
    "a=control:rtsp://127.0.0.1:8554/test\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "b=AS:2097\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=framerate:30\r\n"
    "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z2QAH6zZQFAFuhAAAAMAEAAAAwPA8YMZYA,"
    "aOvjyyLA;profile-level-id=64001f;level-asymmetry-allowed=1\r\n"
    "a=control:stream=0\r\n"
    "a=ts-refclk:local\r\n"
    "a=mediaclk:sender\r\n"
)


def test_parse_ffmpeg_sdp() -> None:
    sd = parse_sdp(FFMPEG_SDP)
    assert sd.version == 0
    assert sd.origin == "- 0 0 IN IP4 127.0.0.1"
    assert sd.name == "No Name"
    assert sd.connection == "IN IP4 127.0.0.1"
    assert sd.timing == "0 0"
    assert sd.attributes == [("tool", "libavformat 60.16.100")]
    assert sd.control is None
    video, audio = sd.media
    assert (video.media, video.port, video.proto, video.formats) == ("video", 0, "RTP/AVP", ["96"])
    assert video.payload_type == 96
    assert video.codec == "H264"
    assert video.clock_rate == 90000
    assert video.control == "streamid=0"
    assert video.rtpmap() == {96: RtpMap("H264", 90000, None)}
    fmtp = video.fmtp()[96]
    assert fmtp["packetization-mode"] == "1"
    assert fmtp["profile-level-id"] == "64001F"
    sps, pps = h264_sprop_parameter_sets(video)
    assert sps[0] & 0x1F == 7 and pps[0] & 0x1F == 8
    assert parse_sps_resolution(sps) == (1280, 720)

    assert audio.codec == "MPEG4-GENERIC"
    assert audio.rtpmap()[97] == RtpMap("MPEG4-GENERIC", 44100, 2)
    assert audio.clock_rate == 44100
    assert audio.bandwidths == ["AS:128"]
    assert audio.fmtp()[97]["config"] == "121056E500"
    assert audio.fmtp()[97]["sizelength"] == "13"
    assert h264_sprop_parameter_sets(audio) == []
    # Canonical input formats back byte for byte.
    assert format_sdp(sd) == FFMPEG_SDP
    assert parse_sdp(FFMPEG_SDP.encode()) == sd


def test_parse_camera_h265_sdp() -> None:
    sd = parse_sdp(CAMERA_SDP.encode())
    base = "rtsp://192.168.1.64:554/Streaming/Channels/101/?transportmode=unicast"
    assert sd.control == base
    assert ("e", "NONE") in sd.other and ("b", "AS:5050") in sd.other
    video, audio, meta = sd.media
    assert video.codec == "H265" and video.clock_rate == 90000
    assert video.connection == "IN IP4 0.0.0.0"
    assert video.get("x-dimensions") == "1280,720"
    assert video.get("recvonly") is None and ("recvonly", None) in video.attributes
    sprop = h265_sprop(video)
    assert [nal_type(n) for n in sprop["sprop-vps"]] == [32]
    assert [nal_type(n) for n in sprop["sprop-sps"]] == [33]
    assert [nal_type(n) for n in sprop["sprop-pps"]] == [34]
    # Absolute controls are used verbatim.
    assert resolve_control(base, video.control) == video.control
    # Static payload type 8 without a=rtpmap.
    assert audio.codec == "PCMA" and audio.clock_rate == 8000
    assert audio.rtpmap() == {8: RtpMap("PCMA", 8000, 1)}
    assert meta.codec == "VND.ONVIF.METADATA"
    assert h265_sprop(audio) == {"sprop-vps": [], "sprop-sps": [], "sprop-pps": []}


def test_parse_gstreamer_sdp() -> None:
    sd = parse_sdp(GSTREAMER_SDP)
    assert ("i", "rtsp-server") in sd.other
    (video,) = sd.media
    # Unpadded base64 is accepted.
    sps, _ = h264_sprop_parameter_sets(video)
    assert parse_sps_resolution(sps) == (1280, 720)
    assert resolve_control(sd.control or "", video.control) == "rtsp://127.0.0.1:8554/test/stream=0"
    assert format_sdp(sd) == GSTREAMER_SDP


@pytest.mark.parametrize("text", [FFMPEG_SDP, CAMERA_SDP, GSTREAMER_SDP])
def test_round_trip(text: str) -> None:
    sd = parse_sdp(text)
    out = format_sdp(sd)
    assert "\r\n" in out and "\n" not in out.replace("\r\n", "")
    assert parse_sdp(out) == sd
    assert format_sdp(parse_sdp(out)) == out


def test_format_orders_lines_per_rfc() -> None:
    sd = parse_sdp("v=0\na=x\nb=AS:1\nt=0 0\nc=IN IP4 1.2.3.4\nu=http://x\ns=n\no=o\nz=0 0\n")
    assert format_sdp(sd).split("\r\n")[:-1] == [
        "v=0",
        "o=o",
        "s=n",
        "u=http://x",
        "c=IN IP4 1.2.3.4",
        "b=AS:1",
        "t=0 0",
        "z=0 0",
        "a=x",
    ]


def test_format_from_scratch() -> None:
    sd = SessionDescription(
        origin="- 1 1 IN IP4 10.0.0.1",
        timing="0 0",
        media=[
            MediaDescription(
                "video",
                0,
                "RTP/AVP",
                ["96"],
                attributes=[("rtpmap", "96 H264/90000"), ("sendonly", None)],
            )
        ],
    )
    assert format_sdp(sd) == (
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns= \r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=sendonly\r\n"
    )
    bad = SessionDescription(attributes=[("control", "x\r\nm=evil 0 RTP/AVP 0")])
    with pytest.raises(SdpError):
        format_sdp(bad)


def test_tolerant_details() -> None:
    sd = parse_sdp(
        "\ufeffv=0\r\n\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=x\r\nt=0 0\r\n"
        "m=video 5004/2 RTP/AVP 96 97\r\n"
        "a=control:trackID=1  \r\n"  # trailing whitespace
        "a=RTPMAP:97 h264/90000\r\n"
        "a=rtpmap:96 garbage\r\n"  # malformed: skipped
        "a=fmtp:97 Packetization-Mode=1;;flag\r\n"
        "q=unknown line type\r\n"
        "a=:odd\r\n"
    )
    (md,) = sd.media
    assert (md.port, md.port_count, md.formats) == (5004, 2, ["96", "97"])
    assert md.control == "trackID=1"
    assert md.rtpmap() == {97: RtpMap("H264", 90000)}
    assert md.codec is None  # first format 96 has no usable rtpmap
    assert md.clock_rate is None
    assert md.fmtp() == {97: {"packetization-mode": "1", "flag": ""}}
    assert md.other == [("q", "unknown line type")]
    assert ("", "odd") in md.attributes
    assert "m=video 5004/2 RTP/AVP 96 97" in format_sdp(sd)
    assert parse_sdp(format_sdp(sd)) == sd


def test_media_without_rtp_formats() -> None:
    sd = parse_sdp("v=0\nm=application 9 TCP/BFCP *\n")
    assert sd.media[0].payload_type is None
    assert sd.media[0].codec is None and sd.media[0].clock_rate is None


@pytest.mark.parametrize(
    ("base", "control", "expected"),
    [
        ("rtsp://cam/live", None, "rtsp://cam/live"),
        ("rtsp://cam/live", "*", "rtsp://cam/live"),
        ("rtsp://cam/live", "", "rtsp://cam/live"),
        ("rtsp://cam/live", "trackID=0", "rtsp://cam/live/trackID=0"),
        ("rtsp://cam/live/", "trackID=0", "rtsp://cam/live/trackID=0"),
        ("rtsp://cam:554/live.sdp", " streamid=1 ", "rtsp://cam:554/live.sdp/streamid=1"),
        ("rtsp://cam/live", "rtsp://other:8554/x/track1", "rtsp://other:8554/x/track1"),
        ("rtsp://cam/live", "RTSP://Other/x", "RTSP://Other/x"),
        ("rtsp://cam/live", "rtsps://cam/x", "rtsps://cam/x"),
        # Dahua: Content-Base carries the query then "/"; controls are appended verbatim.
        (
            "rtsp://10.0.0.2:554/cam/realmonitor?channel=1&subtype=0/",
            "trackID=0",
            "rtsp://10.0.0.2:554/cam/realmonitor?channel=1&subtype=0/trackID=0",
        ),
        # Path-absolute control replaces the path but keeps credentials and port.
        ("rtsp://u:p@cam:554/a/b", "/track1", "rtsp://u:p@cam:554/track1"),
    ],
)
def test_resolve_control(base: str, control: str | None, expected: str) -> None:
    assert resolve_control(base, control) == expected


@pytest.mark.parametrize(
    "data",
    [
        "",
        "\r\n\r\n",
        "o=- 0 0 IN IP4 1.1.1.1\r\nv=0\r\n",  # v= not first
        "v=x\r\n",
        "v=0\r\nv=0\r\n",
        "v=0\r\no=a\r\no=b\r\n",
        "v=0\r\ns=a\r\ns=b\r\n",
        "v=0\r\nthis is not sdp\r\n",
        "v=0\r\n1=digit type\r\n",
        "v=0\r\nm=video 0 RTP/AVP\r\n",  # no formats
        "v=0\r\nm=video abc RTP/AVP 96\r\n",
        "v=0\r\nm=video 70000 RTP/AVP 96\r\n",
        "v=0\r\nm=video -1 RTP/AVP 96\r\n",
        "v=0\r\nm=video \u0663 RTP/AVP 96\r\n",  # Arabic-Indic digit: int() would take it
        "v=0\r\nm=video 0/0 RTP/AVP 96\r\n",
        "v=0\r\nm=video 0/ RTP/AVP 96\r\n",
        "v=0\r\na=x\x00y\r\n",
        "v=0\r\na=x\ry\r\n",
        "v=0\r\nm=video 0 RTP/AVP 96\r\nv=0\r\n",
        b"v=0\r\ns=\xff\xfe\r\n",
        b"v=0\r\n" + b"a=" + b"x" * MAX_SDP_BYTES,
        "v=0\r\n" + "a=\u00e9" * (MAX_SDP_BYTES // 3),  # under the limit in chars, not bytes
        "v=0\n" + "a=x\n" * 4096,
        "v=0\n" + "m=video 0 RTP/AVP 96\n" * 65,
    ],
)
def test_hostile_inputs(data: str | bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(data)


def test_limits_are_inclusive() -> None:
    assert len(parse_sdp("v=0\n" + "m=video 0 RTP/AVP 96\n" * 64).media) == 64
    assert len(parse_sdp("v=0\n" + "a=x\n" * 4095).attributes) == 4095


def test_non_text_input() -> None:
    with pytest.raises(SdpError):
        parse_sdp(12345)  # type: ignore[arg-type]


def test_bad_sprop_base64() -> None:
    md = parse_sdp(
        "v=0\nm=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
        "a=fmtp:96 sprop-parameter-sets=Z2Q!!,aOvj\n"
    ).media[0]
    with pytest.raises(SdpError):
        h264_sprop_parameter_sets(md)
    md.attributes[1] = ("fmtp", "96 sprop-parameter-sets=Z")  # impossible length
    with pytest.raises(SdpError):
        h264_sprop_parameter_sets(md)


FUZZ = settings(max_examples=300, deadline=None)


def _exercise(sd: SessionDescription) -> None:
    _ = sd.control
    for md in sd.media:
        _ = (md.control, md.payload_type, md.codec, md.clock_rate, md.rtpmap(), md.fmtp())
        try:
            h264_sprop_parameter_sets(md)
            h265_sprop(md)
        except SdpError:
            pass


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_random_input_only_raises_sdp_error(data: str | bytes) -> None:
    try:
        sd = parse_sdp(data)
    except SdpError:
        return
    _exercise(sd)


_VALUE = st.text(
    alphabet=st.characters(exclude_characters="\r\n\x00", exclude_categories=["Cs"]),
    max_size=20,
)
_LINE = st.one_of(
    st.tuples(st.sampled_from("osctbiuepzkrxa"), _VALUE).map(lambda t: f"{t[0]}={t[1]}"),
    st.tuples(
        st.sampled_from(["rtpmap", "fmtp", "control", "recvonly"]),
        st.sampled_from(["96", "97", "8", "x"]),
        _VALUE,
    ).map(lambda t: f"a={t[0]}:{t[1]} {t[2]}"),
    st.tuples(
        st.sampled_from(["video", "audio"]),
        st.integers(0, 70000),
        st.sampled_from(["96", "0", "8 96", "*"]),
    ).map(lambda t: f"m={t[0]} {t[1]} RTP/AVP {t[2]}"),
)


@FUZZ
@given(st.lists(_LINE, max_size=25), st.sampled_from(["\n", "\r\n"]))
def test_sdp_like_input_round_trips(lines: list[str], eol: str) -> None:
    try:
        sd = parse_sdp(eol.join(["v=0", *lines]) + eol)
    except SdpError:
        return
    _exercise(sd)
    out = format_sdp(sd)
    assert parse_sdp(out) == sd
    assert format_sdp(parse_sdp(out)) == out
