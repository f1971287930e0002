"""Issue #9 finding 1: slow, stalled and silent RTSP peers are closed within their deadlines,
and an address cannot hold more than its share of connections nobody has admitted; sessions
that play for a long time and send only keep-alives are not affected.

The sans-I/O bounds (gateway.protocols.rtsp_deadlines) are driven byte by byte with an
injected clock; the server is driven by hand-written hostile clients over loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from conftest import (
    RunningGateway,
    make_config,
    publish_argv,
    publishing,
    running_gateway,
    wait_for,
)
from rtsp_probe import Probe

from gateway.config import CameraConfig
from gateway.protocols.rtsp import RtspParser, frame
from gateway.protocols.rtsp_deadlines import ConnectionDeadlines, DeadlineLimits, Expiry

LIMITS = DeadlineLimits(head=2.0, body=3.0, idle=5.0)
OPTIONS = b"OPTIONS rtsp://127.0.0.1/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"
ANNOUNCE_HEAD = (
    b"ANNOUNCE rtsp://127.0.0.1/cam1 RTSP/1.0\r\nCSeq: 2\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 400\r\n\r\n"
)


class Peer:
    """A connection's parser and deadlines, fed as the asyncio layer feeds them."""

    def __init__(self, now: float = 0.0) -> None:
        self.parser = RtspParser()
        self.deadlines = ConnectionDeadlines(LIMITS, now)
        self.has_session = False

    def feed(self, data: bytes, now: float) -> None:
        events = self.parser.feed(data)
        self.deadlines.observe(
            self.parser.pending,
            has_session=self.has_session,
            busy=False,
            now=now,
            completed=bool(events),
        )


# ------------------------------------------------------------------------------ sans-I/O bounds


def test_a_silent_connection_runs_out_its_idle_bound() -> None:
    peer = Peer(now=100.0)
    assert peer.deadlines.deadline() == 105.0
    assert peer.deadlines.expired(104.9) is None
    assert peer.deadlines.expired(105.0) is Expiry.IDLE


def test_a_trickled_head_is_bounded_from_its_first_byte() -> None:
    peer = Peer()
    for i, byte in enumerate(OPTIONS[:-1]):
        peer.feed(bytes([byte]), now=1.0 + i * 0.01)
        if 1.0 + i * 0.01 >= 3.0:
            break
    # Every byte arrived well inside the bound, and the bound still ran from the first one.
    assert peer.deadlines.deadline() == 3.0
    assert peer.deadlines.expired(3.0) is Expiry.HEAD


def test_a_stalled_body_is_bounded_from_the_end_of_its_head() -> None:
    peer = Peer()
    peer.feed(ANNOUNCE_HEAD, now=1.0)
    peer.feed(b"v=0\r\n", now=1.5)
    assert peer.deadlines.deadline() == 4.0
    assert peer.deadlines.expired(4.0) is Expiry.BODY


def test_each_request_restarts_the_bound() -> None:
    peer = Peer()
    peer.feed(OPTIONS, now=4.0)
    assert peer.deadlines.deadline() == 9.0  # idle again, from the end of the request
    peer.feed(OPTIONS + OPTIONS[:10], now=8.0)
    assert peer.deadlines.deadline() == 10.0  # a new partial head, from this read


def test_a_session_is_bounded_by_its_own_timeout_not_here() -> None:
    peer = Peer()
    peer.has_session = True
    peer.feed(OPTIONS, now=1.0)
    assert peer.deadlines.deadline() is None
    # A publisher's frame straddling reads on a slow uplink is media, not a slow request.
    peer.feed(frame(0, bytes(1000))[:300], now=2.0)
    assert peer.deadlines.deadline() is None
    # A request trickled inside a session is still a slow request.
    peer.feed(frame(0, bytes(1000))[300:] + OPTIONS[:5], now=3.0)
    assert peer.deadlines.deadline() == 5.0


def test_a_frame_before_any_session_is_bounded_like_a_head() -> None:
    peer = Peer()
    peer.feed(frame(0, bytes(100))[:20], now=1.0)
    assert peer.deadlines.deadline() == 3.0


def test_serving_a_request_stops_the_idle_bound() -> None:
    deadlines = ConnectionDeadlines(LIMITS, 0.0)
    deadlines.observe(None, has_session=False, busy=True, now=1.0)
    assert deadlines.deadline() is None  # a DESCRIBE waiting for its camera is our delay
    deadlines.observe(None, has_session=False, busy=False, now=9.0)
    assert deadlines.deadline() == 14.0


def test_a_session_its_source_ended_is_given_the_session_timeout_to_wind_down() -> None:
    """A codec change ends the session (BYE); the player's PAUSE and TEARDOWN come once the end
    of stream has passed through its pipeline, which on a loaded machine is longer than the
    idle bound. The wind-down runs from the session's end, and keep-alives do not renew it."""
    limits = DeadlineLimits(head=2.0, body=3.0, idle=5.0, wind_down=60.0)
    deadlines = ConnectionDeadlines(limits, 0.0)
    deadlines.observe(None, has_session=True, busy=False, now=1.0)
    deadlines.observe(None, has_session=False, busy=False, now=10.0, winding_down=True)
    assert deadlines.deadline() == 70.0
    assert deadlines.expired(69.9) is None
    # A keep-alive served at 30 s: answered, but the bound still runs from the end at 10 s.
    deadlines.observe(None, has_session=False, busy=True, now=30.0, winding_down=True)
    assert deadlines.deadline() is None
    deadlines.observe(None, has_session=False, busy=False, now=30.1, winding_down=True)
    deadlines.observe(
        None, has_session=False, busy=False, now=30.1, completed=True, winding_down=True
    )
    assert deadlines.deadline() == 70.0
    assert deadlines.expired(70.0) is Expiry.WIND_DOWN
    # Its TEARDOWN at 40 s: idle from then, with the ordinary bound.
    deadlines.observe(None, has_session=False, busy=False, now=40.0, completed=True)
    assert deadlines.deadline() == 45.0
    assert deadlines.expired(45.0) is Expiry.IDLE


# ---------------------------------------------------------------------------- hostile clients

HEAD_S, BODY_S, IDLE_S = 1.0, 1.0, 1.0
# How much later than its deadline a closure may come on a loaded 2-core machine.
SLACK_S = 2.0


@pytest.fixture
async def strict_gw(procs) -> AsyncIterator[RunningGateway]:
    config = make_config(
        (CameraConfig(id="cam1"),),
        request_head_timeout=HEAD_S,
        request_body_timeout=BODY_S,
        idle_timeout=IDLE_S,
        max_unauthenticated_per_ip=4,
    )
    async with running_gateway(config) as gw:
        await procs(publish_argv(gw.url("cam1")))
        await publishing(gw, "cam1")
        yield gw


async def _closed_after(
    reader: asyncio.StreamReader, limit: float, trickle: asyncio.Task[None] | None = None
) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and what it said before."""
    start = time.monotonic()
    said = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(4096), limit):
            said += chunk
    except ConnectionResetError:
        pass
    finally:
        if trickle is not None:
            trickle.cancel()
    return time.monotonic() - start, said


async def test_a_connection_that_says_nothing_is_closed(strict_gw):
    reader, writer = await asyncio.open_connection("127.0.0.1", strict_gw.port)
    took, said = await _closed_after(reader, IDLE_S + SLACK_S + 5)
    writer.close()
    assert IDLE_S - 0.1 <= took <= IDLE_S + SLACK_S
    assert said == b""
    assert strict_gw.gateway.rtsp.counters["deadline_idle"] >= 1


async def test_slowloris_is_closed_however_steadily_it_trickles(strict_gw):
    reader, writer = await asyncio.open_connection("127.0.0.1", strict_gw.port)

    async def trickle() -> None:
        for byte in OPTIONS[:-2]:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)  # the hostile client's own pace, not a synchronisation

    task = asyncio.get_running_loop().create_task(trickle())
    took, said = await _closed_after(reader, HEAD_S + SLACK_S + 5, task)
    writer.close()
    assert took <= HEAD_S + SLACK_S, "closed within the head deadline, not by the trickle's end"
    assert said.startswith(b"RTSP/1.0 408 ")
    assert strict_gw.gateway.rtsp.counters["deadline_head"] >= 1


async def test_a_stalled_body_is_closed(strict_gw):
    reader, writer = await asyncio.open_connection("127.0.0.1", strict_gw.port)
    writer.write(ANNOUNCE_HEAD + b"v=0\r\n")
    took, said = await _closed_after(reader, BODY_S + SLACK_S + 5)
    writer.close()
    assert BODY_S - 0.1 <= took <= BODY_S + SLACK_S
    assert said.startswith(b"RTSP/1.0 408 ")
    assert strict_gw.gateway.rtsp.counters["deadline_body"] >= 1


async def test_a_connection_is_idle_again_after_its_session_ends(strict_gw):
    probe = await Probe.connect("127.0.0.1", strict_gw.port)
    try:
        assert await probe.play("cam1") == 200
        r = await probe.request("TEARDOWN", strict_gw.url("cam1"))
        assert r.status == 200
        start = time.monotonic()
        await asyncio.wait_for(probe._pump, IDLE_S + SLACK_S + 5)  # type: ignore[arg-type]
        assert time.monotonic() - start <= IDLE_S + SLACK_S
    finally:
        await probe.close()


async def test_a_long_session_with_keepalives_only_plays_on(strict_gw):
    """Three times every deadline, with only GET_PARAMETER from the viewer: still playing."""
    probe = await Probe.connect("127.0.0.1", strict_gw.port)
    try:
        assert await probe.play("cam1") == 200
        start = time.monotonic()
        while time.monotonic() - start < 3 * max(HEAD_S, BODY_S, IDLE_S):
            before = probe.media_bytes
            r = await probe.request("GET_PARAMETER", strict_gw.url("cam1"))
            assert r.status == 200
            await asyncio.sleep(0.5)  # a viewer's keep-alive period, not a synchronisation
            assert probe.media_bytes > before, "media keeps flowing"
        assert len(strict_gw.gateway.rtsp.sessions) == 2  # the viewer and the publisher
        assert not any(k.startswith("deadline_") for k in strict_gw.gateway.rtsp.counters)
    finally:
        await probe.close()


async def test_an_address_holds_few_connections_nobody_admitted(procs):
    # Long deadlines here, so the held connections stay open for as long as the test needs.
    config = make_config(
        (CameraConfig(id="cam1"),), idle_timeout=60.0, max_unauthenticated_per_ip=4
    )
    async with running_gateway(config) as gw:
        await procs(publish_argv(gw.url("cam1")))
        await publishing(gw, "cam1")
        connections = gw.gateway.rtsp.connections

        async def unadmitted() -> Probe:
            # OPTIONS asks nobody: answered, the connection is open and still not admitted.
            p = await Probe.connect("127.0.0.1", gw.port)
            assert (await p.request("OPTIONS", gw.url("cam1"))).status == 200
            return p

        async def refused() -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            took, said = await _closed_after(reader, 5)
            writer.close()
            return said.startswith(b"RTSP/1.0 503 ") and took < 2

        held = [await unadmitted() for _ in range(4)]
        try:
            # A fifth connection nobody admitted is refused at once...
            assert await refused()
            # ...but one that signs in (open access admits its DESCRIBE) stops counting, so a
            # viewer in a crowd of silent sockets from its address still gets to play.
            n = len(connections)
            await held.pop().close()
            await wait_for(lambda: len(connections) == n - 1, what="the closed one gone")
            viewer = await Probe.connect("127.0.0.1", gw.port)
            try:
                assert await viewer.play("cam1") == 200
                held.append(await unadmitted())
                assert await refused()
            finally:
                await viewer.close()
        finally:
            for p in held:
                await p.close()
