"""The RTSP server against hostile and careless peers, over real loopback TCP.

Every test runs with an ffmpeg camera publishing to cam1 and a healthy viewer session playing it.
Whatever a hostile connection does, the answer is the right status (and, for framing errors, a
clean close of that connection only), and the healthy viewer keeps playing: its hub reader keeps
sending packets and the viewer keeps receiving them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from conftest import (
    RunningGateway,
    make_config,
    publish_argv,
    publishing,
    running_gateway,
    wait_for,
)

from gateway.protocols.rtsp import InterleavedFrame, Response, RtspParser
from gateway.protocols.rtsp_headers import parse_rtp_info, parse_session
from gateway.rtsp.server import RtspServer
from gateway.sources.rtsp_client import RtspClient
from gateway.stream.hub import PathStream, Reader

TCP_TRANSPORT = "RTP/AVP/TCP;unicast;interleaved=0-1"
SDP = (
    b"v=0\r\n"
    b"o=- 0 0 IN IP4 127.0.0.1\r\n"
    b"s=test\r\n"
    b"t=0 0\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"a=rtpmap:96 H264/90000\r\n"
    b"a=control:streamid=0\r\n"
)


# ---- a raw RTSP peer ---------------------------------------------------------------------------


class Raw:
    """One TCP connection speaking RTSP byte by byte; a background task reads everything the
    server sends, queues its responses and counts its interleaved frames per channel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = RtspParser()
        # Each response with the number of channel-0 frames that had arrived before it.
        self.responses: asyncio.Queue[tuple[Response, int]] = asyncio.Queue()
        self.frames: collections.Counter[int] = collections.Counter()
        self.first_packet: dict[int, bytes] = {}
        self.eof = asyncio.Event()
        self.reset = False
        self.parse_error: Exception | None = None
        self.cseq = 0
        self._task = asyncio.get_running_loop().create_task(self._pump())

    @classmethod
    async def open(cls, gw: RunningGateway) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        return cls(reader, writer)

    async def _pump(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.parser.feed(data):
                    if isinstance(event, Response):
                        self.responses.put_nowait((event, self.frames[0]))
                    elif isinstance(event, InterleavedFrame):
                        self.frames[event.channel] += 1
                        self.first_packet.setdefault(event.channel, event.payload)
        except (ConnectionResetError, BrokenPipeError):
            self.reset = True
        except Exception as exc:  # the server sent something our parser rejects
            self.parse_error = exc
        finally:
            self.eof.set()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def send_request(
        self, method: str, uri: str, *headers: tuple[str, str], body: bytes = b""
    ) -> str:
        self.cseq += 1
        cseq = str(self.cseq)
        head = f"{method} {uri} RTSP/1.0\r\nCSeq: {cseq}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        self.send(head.encode() + b"\r\n" + body)
        return cseq

    async def response(self, timeout: float = 10.0) -> Response:
        return (await self.response_with_frames(timeout))[0]

    async def response_with_frames(self, timeout: float = 10.0) -> tuple[Response, int]:
        get = asyncio.get_running_loop().create_task(self.responses.get())
        eof = asyncio.get_running_loop().create_task(self.eof.wait())
        try:
            done, _ = await asyncio.wait(
                {get, eof}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            eof.cancel()
        if get in done:
            return get.result()
        get.cancel()
        if not self.responses.empty():
            return self.responses.get_nowait()
        raise AssertionError(
            "connection closed without a response" if self.eof.is_set() else "no response"
        )

    async def request(
        self, method: str, uri: str, *headers: tuple[str, str], body: bytes = b""
    ) -> Response:
        cseq = self.send_request(method, uri, *headers, body=body)
        resp = await self.response()
        assert resp.cseq == cseq, (resp, cseq)
        return resp

    async def setup(
        self, url: str, *headers: tuple[str, str], transport: str = TCP_TRANSPORT
    ) -> str:
        resp = await self.request("SETUP", f"{url}/trackID=0", ("Transport", transport), *headers)
        assert resp.status == 200, resp
        return session_id(resp)

    async def setup_and_play(self, url: str) -> str:
        sid = await self.setup(url)
        resp = await self.request("PLAY", url, ("Session", sid))
        assert resp.status == 200, resp
        return sid

    async def closed_by_server(self, timeout: float = 5.0) -> None:
        """The server closed the connection cleanly (FIN, not reset) within the deadline."""
        await asyncio.wait_for(self.eof.wait(), timeout)
        assert not self.reset, "server reset the connection instead of closing it"
        assert self.parse_error is None, self.parse_error

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def session_id(resp: Response) -> str:
    value = resp.headers.get("Session")
    assert value is not None, resp
    return parse_session(value)[0]


async def rejected_and_closed(gw: RunningGateway, data: bytes) -> Response:
    """Send `data` on a fresh connection; expect exactly one response and then a clean close."""
    raw = await Raw.open(gw)
    try:
        raw.send(data)
        resp = await raw.response()
        await raw.closed_by_server()
        assert raw.responses.empty(), "more than one response"
        assert resp.headers.get("Connection") == "close"
        return resp
    finally:
        await raw.close()


# ---- the stage: a camera, a healthy viewer ----------------------------------------------------


@dataclass
class Healthy:
    """A well-behaved viewer (gateway.sources.rtsp_client) playing cam1 over TCP, counting
    packets."""

    client: RtspClient = field(init=False)
    seqs: list[int] = field(default_factory=list)  # RTP sequence numbers received on track 0
    received: int = 0

    def on_packet(self, channel: int, payload: bytes) -> None:
        self.received += 1
        if channel == 0:
            self.seqs.append(int.from_bytes(payload[2:4], "big"))


async def start_healthy(gw: RunningGateway) -> Healthy:
    healthy = Healthy()
    healthy.client = client = RtspClient(gw.url("cam1"), on_packet=healthy.on_packet)
    await client.connect()
    described = await client.describe()
    await client.setup(described.base_url, "trackID=0", 0)
    await client.play()
    return healthy


@dataclass
class Stage:
    gw: RunningGateway
    healthy: Healthy
    caplog: pytest.LogCaptureFixture

    @property
    def url(self) -> str:
        return self.gw.url("cam1")

    @property
    def server(self) -> RtspServer:
        return self.gw.gateway.rtsp

    @property
    def stream(self) -> PathStream:
        stream = self.gw.hub.get("cam1")
        assert stream is not None
        return stream

    def healthy_reader(self) -> Reader:
        sid = self.healthy.client.session
        assert sid is not None
        session = self.server.sessions.get(sid)
        assert session is not None, "the healthy viewer's session is gone"
        assert session.state == "playing", session.state
        assert session.reader is not None
        return session.reader

    async def assert_healthy_playing(self, packets: int = 5) -> None:
        """The healthy viewer is still attached and both sides see packets keep flowing."""
        closed = self.healthy.client.closed
        assert closed is not None and not closed.done(), "the healthy viewer was disconnected"
        reader = self.healthy_reader()
        assert reader in self.stream.readers
        sent, received = reader.packets_sent, self.healthy.received
        await wait_for(
            lambda: (
                reader.packets_sent >= sent + packets
                and self.healthy.received >= received + packets
            ),
            10,
            what="the healthy viewer to keep receiving packets",
        )
        assert reader.packets_dropped == 0

    def errors_logged(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}" for r in self.caplog.records if r.levelno >= logging.ERROR
        ]


@pytest.fixture
async def stage(gateway, procs, caplog) -> AsyncIterator[Stage]:
    caplog.set_level(logging.INFO)
    await procs(publish_argv(gateway.url("cam1")))
    await publishing(gateway, "cam1")
    healthy = await start_healthy(gateway)
    st = Stage(gateway, healthy, caplog)
    await st.assert_healthy_playing(packets=1)
    yield st
    await healthy.client.close()
    assert st.errors_logged() == []


# ---- 1. hostile input --------------------------------------------------------------------------


def options(url: str, *extra: str, cseq: str = "1") -> bytes:
    lines = [f"OPTIONS {url} RTSP/1.0", f"CSeq: {cseq}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_3000_byte_header_value_is_400_and_closes(stage):
    resp = await rejected_and_closed(stage.gw, options(stage.url, "X-Junk: " + "a" * 3000))
    assert resp.status == 400
    assert resp.cseq == "1"
    await stage.assert_healthy_playing()


async def test_300_headers_is_400_and_closes(stage):
    extra = [f"X-H{i}: v" for i in range(300)]
    resp = await rejected_and_closed(stage.gw, options(stage.url, *extra))
    assert resp.status == 400
    await stage.assert_healthy_playing()


async def test_a_duplicated_cseq_is_400(stage):
    resp = await rejected_and_closed(stage.gw, options(stage.url, "CSeq: 2", cseq="1"))
    assert resp.status == 400
    await stage.assert_healthy_playing()


async def test_a_nul_byte_in_a_header_is_400(stage):
    resp = await rejected_and_closed(stage.gw, options(stage.url, "User-Agent: evil\x00agent"))
    assert resp.status == 400
    await stage.assert_healthy_playing()


@pytest.mark.parametrize("length", ["abc", "-1"])
async def test_a_malformed_content_length_is_400(stage, length):
    resp = await rejected_and_closed(stage.gw, options(stage.url, f"Content-Length: {length}"))
    assert resp.status == 400
    assert resp.cseq == "1"
    await stage.assert_healthy_playing()


async def test_a_body_over_128_kib_is_413(stage):
    head = (
        f"ANNOUNCE {stage.url} RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {128 * 1024 + 1}\r\n\r\n"
    ).encode()
    # The server refuses on the header alone; the start of the body is already on its way.
    resp = await rejected_and_closed(stage.gw, head + b"v=0\r\n" + b"x" * 1000)
    assert resp.status == 413
    assert resp.cseq == "1"
    await stage.assert_healthy_playing()


async def test_a_uri_over_2048_bytes_is_414(stage):
    uri = stage.url + "/" + "a" * 2100
    resp = await rejected_and_closed(stage.gw, options(uri))
    assert resp.status == 414
    assert resp.cseq == "1"
    await stage.assert_healthy_playing()


async def test_an_unsupported_rtsp_version_is_505(stage):
    data = f"OPTIONS {stage.url} RTSP/2.0\r\nCSeq: 1\r\n\r\n".encode()
    resp = await rejected_and_closed(stage.gw, data)
    assert resp.status == 505
    assert resp.cseq == "1"
    await stage.assert_healthy_playing()


async def test_random_binary_garbage_is_400_and_closes(stage):
    rng = random.Random(2326)
    # Never starting with '$' (that would be an interleaved frame) or a token character.
    garbage = b"\xff" + rng.randbytes(4096)
    resp = await rejected_and_closed(stage.gw, garbage)
    assert resp.status == 400
    assert stage.server.counters["protocol_errors"] == 1
    await stage.assert_healthy_playing()


async def test_a_peer_vanishing_mid_interleaved_frame_is_closed_quietly(stage):
    baseline = len(stage.server.connections)
    raw = await Raw.open(stage.gw)
    await wait_for(
        lambda: len(stage.server.connections) == baseline + 1,
        5,
        what="the server to accept the connection",
    )
    raw.send(b"$\x00\xff\xff" + b"\x80" * 1000)  # claims 65535 bytes, sends 1004
    raw.writer.write_eof()
    await raw.closed_by_server()
    assert raw.responses.empty(), "the server answered a frame it never fully received"
    await raw.close()
    await wait_for(
        lambda: len(stage.server.connections) == baseline, 5, what="the connection to be released"
    )
    assert stage.server.counters["protocol_errors"] == 0
    assert stage.errors_logged() == []
    await stage.assert_healthy_playing()


async def test_an_unknown_method_is_501_and_the_connection_stays_usable(stage):
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request("FROBNICATE", stage.url)
        assert resp.status == 501
        resp = await raw.request("OPTIONS", stage.url)
        assert resp.status == 200
        assert "DESCRIBE" in (resp.headers.get("Public") or "")
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_pipelined_requests_are_answered_in_order(stage):
    raw = await Raw.open(stage.gw)
    try:
        cseqs = ["7", "3", "11"]
        raw.send(b"".join(options(stage.url, cseq=c) for c in cseqs))
        answers = [await raw.response() for _ in cseqs]
        assert [r.cseq for r in answers] == cseqs
        assert [r.status for r in answers] == [200, 200, 200]
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


# ---- 2. session rules --------------------------------------------------------------------------


async def test_setting_up_the_same_track_twice_is_455(stage):
    raw = await Raw.open(stage.gw)
    try:
        sid = await raw.setup(stage.url)
        resp = await raw.request(
            "SETUP",
            f"{stage.url}/trackID=0",
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=2-3"),
            ("Session", sid),
        )
        assert resp.status == 455
        # The session is as it was: its one track still plays.
        resp = await raw.request("PLAY", stage.url, ("Session", sid))
        assert resp.status == 200
        await wait_for(lambda: raw.frames[0] > 10, 10, what="the session to play")
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_play_with_an_unknown_session_is_454(stage):
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request("PLAY", stage.url, ("Session", "0123456789abcdef"))
        assert resp.status == 454
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_a_session_id_is_only_valid_on_its_own_connection(stage):
    a = await Raw.open(stage.gw)
    b = await Raw.open(stage.gw)
    try:
        sid = await a.setup_and_play(stage.url)
        for method in ("PLAY", "PAUSE", "GET_PARAMETER", "TEARDOWN"):
            resp = await b.request(method, stage.url, ("Session", sid))
            assert resp.status == 454, (method, resp)
        # A's session is untouched: still playing, still receiving.
        session = stage.server.sessions[sid]
        assert session.state == "playing"
        assert session.reader in stage.stream.readers
        frames = a.frames[0]
        await wait_for(lambda: a.frames[0] > frames + 10, 10, what="A to keep receiving")
    finally:
        await a.close()
        await b.close()
    await stage.assert_healthy_playing()


async def test_play_without_setup_is_454(stage):
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request("PLAY", stage.url)
        assert resp.status == 454
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_setup_of_a_nonexistent_track_is_404(stage):
    before = set(stage.server.sessions)
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request("SETUP", f"{stage.url}/trackID=5", ("Transport", TCP_TRANSPORT))
        assert resp.status == 404
        assert resp.headers.get("Session") is None
        assert set(stage.server.sessions) == before, "a refused SETUP left a session behind"
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_describe_of_an_unknown_path_is_404(stage):
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request(
            "DESCRIBE", stage.gw.url("nosuchcam"), ("Accept", "application/sdp")
        )
        assert resp.status == 404
        assert resp.body == b""
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_setup_offering_only_multicast_is_461(stage):
    before = set(stage.server.sessions)
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request(
            "SETUP",
            f"{stage.url}/trackID=0",
            ("Transport", "RTP/AVP;multicast;destination=239.1.2.3;port=5000-5001;ttl=16"),
        )
        assert resp.status == 461
        assert resp.headers.get("Session") is None
        assert set(stage.server.sessions) == before, "a refused SETUP left a session behind"
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


@pytest.mark.parametrize(
    ("client_port", "status"),
    [
        ("0-0", 461),  # issue #9.2: was answered 200 client_port=0-0, and PLAY succeeded
        ("0", 461),
        ("5001-5002", 461),  # an odd RTP port
        ("6000-5998", 461),  # reversed
        ("6000-6000", 461),  # no room for RTCP
        ("65536-65537", 400),
        ("5000-70000", 400),
    ],
)
async def test_setup_with_an_unusable_client_port_is_refused_and_creates_no_session(
    stage, client_port, status
):
    before = set(stage.server.sessions)
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request(
            "SETUP",
            f"{stage.url}/trackID=0",
            ("Transport", f"RTP/AVP;unicast;client_port={client_port}"),
        )
        assert resp.status == status
        assert resp.headers.get("Session") is None
        assert set(stage.server.sessions) == before, "a refused SETUP left a session behind"
        # Nothing to PLAY: no session was made for those ports.
        assert (await raw.request("PLAY", stage.url)).status == 454
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_teardown_ends_the_session(stage):
    raw = await Raw.open(stage.gw)
    try:
        sid = await raw.setup_and_play(stage.url)
        reader = stage.server.sessions[sid].reader
        assert reader in stage.stream.readers
        resp = await raw.request("TEARDOWN", stage.url, ("Session", sid))
        assert resp.status == 200
        assert sid not in stage.server.sessions
        assert reader not in stage.stream.readers
        # The id is dead on its own connection too.
        resp = await raw.request("PLAY", stage.url, ("Session", sid))
        assert resp.status == 454
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_pause_stops_the_packets_and_play_resumes_them(stage):
    raw = await Raw.open(stage.gw)
    try:
        sid = await raw.setup_and_play(stage.url)
        session = stage.server.sessions[sid]
        await wait_for(lambda: raw.frames[0] > 10, 10, what="the session to play")
        paused_reader = session.reader
        assert paused_reader is not None
        raw.send_request("PAUSE", stage.url, ("Session", sid))
        resp, frames_at_pause = await raw.response_with_frames()
        assert resp.status == 200
        sent_at_pause = paused_reader.packets_sent
        assert paused_reader not in stage.stream.readers
        # Time passes (the healthy viewer gets 50 packets); nothing more reaches the paused one,
        # not even on the wire after the PAUSE response.
        await stage.assert_healthy_playing(packets=50)
        assert paused_reader.packets_sent == sent_at_pause
        assert raw.frames[0] == frames_at_pause
        resp = await raw.request("PLAY", stage.url, ("Session", sid))
        assert resp.status == 200
        assert session.state == "playing"
        assert session.reader in stage.stream.readers
        await wait_for(
            lambda: raw.frames[0] > frames_at_pause + 10, 10, what="packets after resuming"
        )
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_get_parameter_answers_200_and_refreshes_the_session(stage):
    raw = await Raw.open(stage.gw)
    try:
        sid = await raw.setup(stage.url)
        session = stage.server.sessions[sid]
        before = session.last_activity
        resp = await raw.request("GET_PARAMETER", stage.url, ("Session", sid))
        assert resp.status == 200
        assert session_id(resp) == sid
        assert session.last_activity > before
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_describe_names_track_controls_and_the_content_base(stage):
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request("DESCRIBE", stage.url, ("Accept", "application/sdp"))
        assert resp.status == 200
        assert resp.headers.get("Content-Type") == "application/sdp"
        assert resp.headers.get("Content-Base") == stage.url + "/"
        sdp = resp.body.decode()
        assert "m=video 0 RTP/AVP 96" in sdp
        assert "a=control:trackID=0" in sdp.splitlines()
        assert "a=control:*" in sdp.splitlines()
        # The control resolves against the Content-Base to a URL SETUP accepts.
        base = resp.headers.get("Content-Base")
        resp = await raw.request("SETUP", f"{base}trackID=0", ("Transport", TCP_TRANSPORT))
        assert resp.status == 200
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_play_gives_rtp_info_matching_the_first_packet(stage):
    raw = await Raw.open(stage.gw)
    try:
        sid = await raw.setup(stage.url)
        resp = await raw.request("PLAY", stage.url, ("Session", sid))
        assert resp.status == 200
        entries = parse_rtp_info(resp.headers.get("RTP-Info") or "")
        assert [e.url for e in entries] == [f"{stage.url}/trackID=0"]
        (entry,) = entries
        assert entry.seq is not None and entry.rtptime is not None
        await wait_for(lambda: 0 in raw.first_packet, 10, what="the first packet")
        first = raw.first_packet[0]
        assert int.from_bytes(first[2:4], "big") == entry.seq
        assert int.from_bytes(first[4:8], "big") == entry.rtptime
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_idle_sessions_time_out_but_kept_alive_and_publishing_ones_do_not(procs, caplog):
    async with running_gateway(make_config(session_timeout=1.0)) as gw:
        await procs(publish_argv(gw.url("cam1")))
        await publishing(gw, "cam1")
        server = gw.gateway.rtsp
        stream = gw.hub.get("cam1")
        source = stream.source_id
        url = gw.url("cam1")
        kept, idle_player, idle_ready = [await Raw.open(gw) for _ in range(3)]
        keepalive = None
        try:
            kept_sid = await kept.setup_and_play(url)

            async def keep_alive() -> None:
                while True:  # a well-behaved client pings well inside the timeout
                    kept.send_request("GET_PARAMETER", url, ("Session", kept_sid))
                    await asyncio.sleep(0.25)

            keepalive = asyncio.get_running_loop().create_task(keep_alive())
            play_sid = await idle_player.setup_and_play(url)
            ready_sid = await idle_ready.setup(url)
            idle_reader = server.sessions[play_sid].reader
            await wait_for(
                lambda: play_sid not in server.sessions and ready_sid not in server.sessions,
                5,
                what="the idle sessions to time out",
            )
            assert idle_reader not in stream.readers
            await idle_player.closed_by_server()
            # The publisher sends no keep-alive requests: its media keeps its session alive.
            assert stream.source_id == source
            assert server.counters["sessions_timed_out"] == 2
            # The kept-alive session outlived them and still receives.
            assert kept_sid in server.sessions
            frames = kept.frames[0]
            await wait_for(lambda: kept.frames[0] > frames + 25, 10, what="kept-alive packets")
            assert kept_sid in server.sessions
            assert stream.source_id == source
        finally:
            if keepalive is not None:
                keepalive.cancel()
            for raw in (kept, idle_player, idle_ready):
                await raw.close()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


# ---- 3. publishing rules -----------------------------------------------------------------------


async def test_announce_to_an_unknown_path_is_404(stage):
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request(
            "ANNOUNCE", stage.gw.url("nosuchcam"), ("Content-Type", "application/sdp"), body=SDP
        )
        assert resp.status == 404
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/sdpx"])
async def test_announce_without_an_sdp_content_type_is_415(stage, content_type):
    raw = await Raw.open(stage.gw)
    headers = [] if content_type is None else [("Content-Type", content_type)]
    try:
        resp = await raw.request("ANNOUNCE", stage.url, *headers, body=SDP)
        assert resp.status == 415
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


@pytest.mark.parametrize(
    "body",
    [
        b"this is not an SDP",
        b"v=0\r\nm=video\r\n",
        b"v=0\r\nm=video 0 RTP/AVP\r\n",
        b"v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\n",
        b"v=zero\r\n",
        b"v=0\r\ns=no media\r\n",
        bytes(range(256)) * 4,
    ],
    ids=["prose", "short-m", "no-pt", "savpf", "bad-version", "no-media", "binary"],
)
async def test_announce_with_a_garbage_sdp_is_400(stage, body):
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request(
            "ANNOUNCE", stage.url, ("Content-Type", "application/sdp"), body=body
        )
        assert resp.status == 400
        # A failed ANNOUNCE leaves nothing to SETUP for recording.
        resp = await raw.request(
            "SETUP",
            f"{stage.url}/streamid=0",
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"),
        )
        assert resp.status == 455
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_record_without_setup_is_refused(stage):
    source = stage.stream.source_id
    raw = await Raw.open(stage.gw)
    try:
        resp = await raw.request("RECORD", stage.url)
        assert resp.status in (454, 455)
        resp = await raw.request(
            "ANNOUNCE", stage.url, ("Content-Type", "application/sdp"), body=SDP
        )
        assert resp.status == 200
        resp = await raw.request("RECORD", stage.url)
        assert resp.status in (454, 455)
        # The camera's own publisher is still the source.
        assert stage.stream.source_id == source
    finally:
        await raw.close()
    await stage.assert_healthy_playing()


async def test_a_second_publisher_replaces_the_first_and_readers_keep_playing(stage, procs):
    first_source = stage.stream.source_id
    first_publisher = next(s for s in stage.server.sessions.values() if s.mode == "record")
    reader = stage.healthy_reader()
    await procs(publish_argv(stage.url, pattern="smptebars"))
    await wait_for(
        lambda: stage.stream.source_id not in (None, first_source),
        15,
        what="the second publisher to take over",
    )
    # The first publisher's session is over: its packets no longer reach the path.
    await wait_for(
        lambda: first_publisher.id not in stage.server.sessions,
        5,
        what="the replaced publisher's session to end",
    )
    assert stage.healthy_reader() is reader
    assert stage.stream.counters.readers_dropped == 0
    # Readers see one continuous stream from the new camera: consecutive sequence numbers.
    start = len(stage.healthy.seqs)
    await stage.assert_healthy_playing(packets=100)
    seqs = stage.healthy.seqs[start:]
    gaps = [(b - a) % 65536 for a, b in itertools.pairwise(seqs)]
    assert set(gaps) == {1}, collections.Counter(gaps)


# ---- 4. many connections at once ---------------------------------------------------------------


async def test_200_concurrent_connections_each_get_their_options_answered(stage):
    baseline = len(stage.server.connections)

    async def one(i: int) -> tuple[str, str | None]:
        reader, writer = await asyncio.open_connection("127.0.0.1", stage.gw.port)
        try:
            writer.write(options(stage.url, cseq=str(i)))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        lines = head.decode().split("\r\n")
        cseq = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("CSeq:")), None)
        return lines[0], cseq

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert [status for status, _ in results] == ["RTSP/1.0 200 OK"] * 200
    assert [cseq for _, cseq in results] == [str(i) for i in range(200)]
    await wait_for(
        lambda: len(stage.server.connections) == baseline,
        10,
        what="the 200 connections to be released",
    )
    await stage.assert_healthy_playing()
