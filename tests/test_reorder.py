"""Finding 16 (issue #9): a UDP camera's reordered packets reach readers in order, whether the
gateway pulls it or it publishes (ANNOUNCE/RECORD) to the gateway.

The reorder buffer is specified on its own first (a table of arrivals, then properties over
any shuffle), then end to end: a camera whose RTP crosses a UDP proxy that reorders 3 % of the
packets, pulled over UDP or pushed by ffmpeg over UDP, read back over TCP (sequence numbers)
and decoded by ffmpeg."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from conftest import make_config, publish_argv, publishing, read_argv, running_gateway, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from udp_faults import rtsp_fault_proxy

from gateway.config import CameraConfig, IngestConfig
from gateway.stream.reorder import Arrival, ReorderBuffer, classify

W = 0.05  # the default window


@pytest.mark.parametrize(
    ("expected", "seq", "kind"),
    [
        (10, 10, Arrival.NEXT),
        (10, 11, Arrival.AHEAD),
        (10, 3010, Arrival.AHEAD),
        (10, 9, Arrival.LATE),
        (10, (10 - 100) % 65536, Arrival.LATE),
        (10, 3011, Arrival.RESTART),
        (10, (10 - 101) % 65536, Arrival.RESTART),
        (65535, 0, Arrival.AHEAD),  # across the wrap
        (0, 65535, Arrival.LATE),
    ],
)
def test_where_an_arrival_falls(expected: int, seq: int, kind: Arrival) -> None:
    assert classify(expected, seq) is kind


def test_in_order_packets_pass_straight_through() -> None:
    buf = ReorderBuffer(W)
    for i in range(100):
        assert buf.push(i, b"%d" % i, 0.0) == [b"%d" % i]
    assert buf.held == 0 and buf.deadline() is None


def test_a_swapped_pair_is_put_back_in_order_at_once() -> None:
    buf = ReorderBuffer(W)
    assert buf.push(1, b"1", 0.0) == [b"1"]
    assert buf.push(3, b"3", 0.001) == []
    assert buf.deadline() == pytest.approx(0.051)
    assert buf.push(2, b"2", 0.002) == [b"2", b"3"]
    assert buf.counters.reordered == 1 and buf.counters.lost == 0


def test_a_gap_is_given_up_after_the_window_and_its_packet_then_dropped_as_late() -> None:
    buf = ReorderBuffer(W)
    buf.push(1, b"1", 0.0)
    buf.push(3, b"3", 0.01)
    buf.push(4, b"4", 0.02)
    assert buf.due(0.05) == []  # 3 has waited 40 ms
    assert buf.due(0.061) == [b"3", b"4"]
    assert buf.counters.lost == 1
    assert buf.push(2, b"2", 0.07) == []  # too late: never relayed after 3 and 4
    assert buf.counters.late == 1


def test_a_full_buffer_gives_its_gap_up_early() -> None:
    buf = ReorderBuffer(W, max_packets=4)
    buf.push(0, b"0", 0.0)
    for seq in range(2, 6):
        assert buf.push(seq, b"%d" % seq, 0.0) == []
    assert buf.push(6, b"6", 0.0) == [b"2", b"3", b"4", b"5", b"6"]
    assert buf.counters.overflows == 1 and buf.counters.lost == 1


def test_a_renumbered_sender_flushes_and_starts_again() -> None:
    buf = ReorderBuffer(W)
    buf.push(100, b"a", 0.0)
    buf.push(102, b"c", 0.0)
    assert buf.push(40000, b"x", 0.0) == [b"c", b"x"]
    assert buf.push(40001, b"y", 0.0) == [b"y"]
    assert buf.counters.restarts == 1


def test_duplicates_of_a_held_packet_are_dropped() -> None:
    buf = ReorderBuffer(W)
    buf.push(0, b"0", 0.0)
    buf.push(2, b"2", 0.0)
    assert buf.push(2, b"2", 0.0) == []
    assert buf.push(1, b"1", 0.0) == [b"1", b"2"]
    assert buf.counters.duplicates == 1


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 65535),
    n=st.integers(1, 300),
    displacement=st.integers(0, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_packets_displaced_within_the_window_come_out_complete_and_in_order(
    start: int, n: int, displacement: int, seed: int
) -> None:
    rng = random.Random(seed)
    # Each packet moves back by up to `displacement` places (never past the first).
    keys = [i + rng.uniform(0, displacement) if i else -1.0 for i in range(n)]
    arrival_order = sorted(range(n), key=lambda i: keys[i])
    buf = ReorderBuffer(W)
    out: list[int] = []
    for t, i in enumerate(arrival_order):
        seq = (start + i) % 65536
        out += [int(p) for p in buf.push(seq, b"%d" % i, t * 0.0001)]
    assert out == list(range(n))
    assert buf.held == 0 and buf.counters.late == 0 and buf.counters.lost == 0


@settings(max_examples=300, deadline=None)
@given(
    # Within 90 of each other: never far enough apart to look like a renumbered sender.
    order=st.lists(st.integers(0, 90), max_size=400),
    gaps=st.lists(st.floats(0, 0.1), min_size=400, max_size=400),
    cap=st.integers(1, 32),
)
def test_whatever_arrives_nothing_goes_out_twice_or_backwards_and_the_buffer_stays_bounded(
    order: list[int], gaps: list[float], cap: int
) -> None:
    buf = ReorderBuffer(W, max_packets=cap)
    now = 0.0
    out: list[int] = []
    for seq, gap in zip(order, gaps, strict=False):
        now += gap
        out += [int(p) for p in buf.due(now)]
        out += [int(p) for p in buf.push(seq, b"%d" % seq, now)]
        assert buf.held <= cap
    out += [int(p) for p in buf.flush()]
    assert len(out) == len(set(out))
    assert out == sorted(out)


async def test_what_a_replaced_sources_reordering_holds_never_reaches_its_successor() -> None:
    from gateway.stream.hub import PathStream
    from gateway.stream.tracks import Track
    from gateway.stream.udp_reorder import UdpReorder

    def rtp(seq: int) -> bytes:
        return bytes((0x80, 96)) + seq.to_bytes(2, "big") + bytes(8) + b"\x65"

    stream = PathStream("cam1")
    tracks = (Track(0, "video", "H264", 90000, 96, ()),)
    stream.attach_source("push:old", tracks)
    reorder = UdpReorder(stream, 1, window=W, max_packets=64, source_id="push:old")
    reorder.push(0, rtp(1))
    reorder.push(0, rtp(3))  # held for the gap at 2
    assert stream.counters.packets_in == 1
    stream.attach_source("push:new", tracks)  # a new publisher takes the path over
    reorder.push(0, rtp(2))
    reorder.close()
    assert stream.counters.packets_in == 1  # neither 2 nor the held 3 crossed over


def _out_of_order(seqs: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(seqs) if (b - a) % 65536 != 1)


async def _read_seqs(url: str, count: int) -> list[int]:
    """The first ``count`` video sequence numbers a TCP reader gets."""
    from gateway.sources.rtsp_client import RtspClient

    seqs: list[int] = []

    def on_packet(channel: int, packet: bytes) -> None:
        if channel == 0:
            seqs.append(int.from_bytes(packet[2:4], "big"))

    client = RtspClient(url, on_packet=on_packet)
    await client.connect()
    try:
        described = await client.describe()
        await client.setup(described.base_url, "trackID=0", 0)
        await client.play()
        await wait_for(lambda: len(seqs) >= count, 30, what=f"{count} packets read")
    finally:
        await client.close()
    return seqs


def _patient(config):
    """The proxy displaces a packet by 20 ms at most, but it shares this test's event loop with
    the gateway: on a loaded machine one stall can carry the gateway's 50 ms deadline past the
    displaced packet's arrival. A 0.5 s window keeps that timing out of what is asserted."""
    return dataclasses.replace(config, ingest=IngestConfig(reorder_window=0.5))


async def test_a_pulled_udp_cameras_reordered_packets_reach_tcp_readers_in_order(procs):
    async with running_gateway(make_config()) as camera:
        await procs(publish_argv(camera.url("cam1"), bitrate="800k", size="640x360"))
        await publishing(camera, "cam1")
        async with rtsp_fault_proxy(camera.port, reorder=0.03, seed=16) as proxy:
            pulled = (CameraConfig(id="street", source=proxy.url("cam1"), transport="udp"),)
            async with running_gateway(_patient(make_config(pulled))) as gw:
                await publishing(gw, "street")
                await _read_in_order(procs, gw, "street", proxy)
                metrics = _metrics(gw)
                assert 'feedgate_late_packets_total{path="street"} 0.0' in metrics


async def test_a_udp_publishers_reordered_packets_reach_tcp_readers_in_order(procs):
    # ffmpeg publishes over UDP through a proxy that swaps 3 % of its RTP packets (no loss):
    # on main, before the publisher's RTP crossed a reorder buffer, the TCP reader saw 120
    # out-of-order sequence numbers in 1,500 packets.
    async with (
        running_gateway(_patient(make_config())) as gw,
        rtsp_fault_proxy(gw.port, reorder=0.03, seed=16, publish=True) as proxy,
    ):
        argv = publish_argv(proxy.url("cam1"), transport="udp", bitrate="800k", size="640x360")
        await procs(argv)
        await publishing(gw, "cam1")
        await _read_in_order(procs, gw, "cam1", proxy)


async def _read_in_order(procs, gw, path: str, proxy) -> None:
    """ffmpeg decodes 6 s of ``path`` without an error while a TCP reader's 1,500 packets come
    in order; the reordering is counted, nothing was late or lost, /metrics says so."""
    viewer = await procs(read_argv(gw.url(path), seconds=6))
    seqs = await _read_seqs(gw.url(path), 1500)
    assert await viewer.wait(30) == 0, viewer.text
    stream = gw.hub.get(path)
    assert proxy.stats.reordered >= 20, proxy.stats
    assert _out_of_order(seqs) == 0, _out_of_order(seqs)
    assert stream.reorder.reordered >= 20, stream.reorder
    assert stream.reorder.late == 0 and stream.reorder.lost == 0, stream.reorder
    errors = [ln for ln in viewer.text.splitlines() if "frame=" not in ln]
    assert errors == [], viewer.text
    held = stream.reorder.reordered
    assert f'feedgate_reordered_packets_total{{path="{path}"}} {held}.0' in _metrics(gw)


def _metrics(gw) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.http.metrics import _GatewayCollector

    registry = CollectorRegistry()
    registry.register(_GatewayCollector(gw.gateway))
    return generate_latest(registry).decode()
