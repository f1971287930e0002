"""A track control written after the URL's query is read as the track, not as part of the query.

Clients that build each SETUP URL as the DESCRIBE URL plus '/trackID=N' put the control after
the query when the viewer's URL carries its token there: ``rtsp://gw/cam?token=T/trackID=0``.
Read naively, the token is ``T/trackID=0`` and a viewer whose DESCRIBE was admitted is refused
401 at SETUP; a publisher (ffmpeg ANNOUNCEs ``?token=T`` and SETUPs ``?token=T/streamid=1``)
and a playback URL (``&start=…/trackID=0``) have the same shape."""

from __future__ import annotations

import pytest
from conftest import RunningGateway
from rtsp_probe import Probe
from test_access import tenancy_gw, token  # noqa: F401 - the tenancy's gateway, its tokens

from gateway.protocols.rtsp import Headers, Request
from gateway.rtsp.handlers import parse_uri
from gateway.rtsp.reply import RtspReply


def parsed(uri: str) -> tuple[str, dict[str, str]]:
    return parse_uri(Request("SETUP", uri, "RTSP/1.0", Headers()))


@pytest.mark.parametrize(
    ("uri", "path", "query"),
    [
        ("rtsp://gw/cam1?token=T/trackID=0", "cam1/trackID=0", {"token": "T"}),
        ("rtsp://gw/cam1?token=T/streamid=1", "cam1/streamid=1", {"token": "T"}),
        ("rtsp://gw/cam1?token=T/stream=0", "cam1/stream=0", {"token": "T"}),
        ("rtsp://gw/cam1?token=T/track1", "cam1/track1", {"token": "T"}),
        ("rtsp://gw/cam1?token=T/trackID%3D1", "cam1/trackID=1", {"token": "T"}),
        (
            "rtsp://gw/cam1?token=a.b-c_d&purpose=x/streamid=0",
            "cam1/streamid=0",
            {"token": "a.b-c_d", "purpose": "x"},
        ),
        (
            "rtsp://gw/cam1?token=T&start=2026-12-01T10:15:00Z/trackID=0",
            "cam1/trackID=0",
            {"token": "T", "start": "2026-12-01T10:15:00Z"},
        ),
        # Where clients normally put it, and no control at all: unchanged.
        ("rtsp://gw/cam1/trackID=0?token=T", "cam1/trackID=0", {"token": "T"}),
        ("rtsp://gw/cam1?token=T", "cam1", {"token": "T"}),
        ("rtsp://gw/cam1", "cam1", {}),
        # A '/' inside a value that is not shaped like a control stays in the value.
        ("rtsp://gw/cam1?purpose=fraud/theft", "cam1", {"purpose": "fraud/theft"}),
        ("rtsp://gw/cam1?a=1/b=2&c=3", "cam1", {"a": "1/b=2", "c": "3"}),
    ],
)
def test_a_control_after_the_query_moves_onto_the_path(
    uri: str, path: str, query: dict[str, str]
) -> None:
    assert parsed(uri) == (path, query)


def test_a_hostile_tail_is_still_refused_as_a_bad_uri() -> None:
    with pytest.raises(RtspReply) as refused:
        parsed("rtsp://gw/cam1?token=T/trackID=0\x00")
    assert refused.value.status == 400


async def test_a_viewer_whose_setup_puts_the_track_after_its_token_plays(
    tenancy_gw: RunningGateway,  # noqa: F811 - the fixture imported above
) -> None:
    gw = tenancy_gw
    base = f"rtsp://127.0.0.1:{gw.port}/street?token={token(gw, 'police', 'officer-1')}"
    probe = await Probe.connect("127.0.0.1", gw.port)
    try:
        assert (await probe.request("DESCRIBE", base)).status == 200
        transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
        setup = await probe.request("SETUP", f"{base}/trackID=0", (transport,))
        assert setup.status == 200, setup
        assert (await probe.request("PLAY", base)).status == 200
    finally:
        await probe.close()
