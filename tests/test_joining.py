"""Where a joiner starts (issue #9 findings 14 and 15): the GOP cache gives a picture at once,
but never from a keyframe older than ``rtsp.join_max_behind`` (a police officer following an
incident must not watch seconds in the past), and a UDP joiner gets it at once only when it fits
in a receive buffer; otherwise the joiner starts at the next keyframe, at the live edge.

Real peers: ffmpeg publishes a long-GOP camera; the readers are a raw RTSP client over TCP and a
UDP socket with a small receive buffer (the kernel drops what does not fit, as it did for the
trial's UDP readers: RcvbufErrors)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time

import pytest
from conftest import free_udp_pair, make_config, publish_argv, publishing, running_gateway, wait_for
from rtsp_probe import Probe

from gateway.stream.joining import JoinPolicy

GOP_FRAMES = 100  # 4 s at 25 fps
CLOCK = 90_000


@pytest.mark.parametrize(
    ("age", "cached", "udp", "expected"),
    [
        (0.5, 200_000, False, True),  # a recent keyframe: instant start over TCP
        (1.5, 200_000, False, False),  # older than max_behind: wait for the next keyframe
        (0.5, 60_000, True, True),  # a small cache fits a UDP receive buffer
        (0.5, 200_000, True, False),  # a big one would overflow it
        (0.0, 0, False, False),  # nothing cached
    ],
)
def test_a_joiner_starts_from_the_cache_only_when_it_is_recent_and_fits(
    age: float, cached: int, udp: bool, expected: bool
) -> None:
    policy = JoinPolicy(max_behind=1.0, udp_burst_bytes=64 * 1024)
    assert policy.from_cache(age=age, cached_bytes=cached, udp=udp) is expected


async def _old_gop(gw, procs, bitrate: str) -> None:
    await procs(publish_argv(gw.url("cam1"), gop=GOP_FRAMES, bitrate=bitrate))
    await publishing(gw, "cam1", timeout=30)
    stream = gw.hub.get("cam1")
    # Join when the cached keyframe is 2.5 s old: the old hub started joiners that far behind.
    await wait_for(lambda: (stream.gop_age or 0) >= 2.5, 30, what="a 2.5 s old GOP cache")


async def test_a_tcp_joiner_starts_at_most_join_max_behind_behind_live(procs) -> None:
    async with running_gateway(make_config(join_max_behind=1.0)) as gw:
        await _old_gop(gw, procs, "300k")
        probe = await Probe.connect("127.0.0.1", gw.port)
        probe.rtp_times = []
        try:
            assert await probe.play("cam1") == 200
            await wait_for(lambda: len(probe.rtp_times) > 0, 15, what="the first RTP packet")
            first_at, first_ts = probe.rtp_times[0]
            await asyncio.sleep(0.5)
            # Media received within 0.5 s of the first packet, in media seconds: what a
            # real-time player would be behind live by. A 2.5 s old cache burst gives >= 2.5.
            early = [ts for at, ts in probe.rtp_times if at - first_at <= 0.5]
            ahead = max(((ts - first_ts) & 0xFFFFFFFF) / CLOCK for ts in early)
            assert ahead <= 1.0 + 0.5, f"joiner started {ahead:.2f} s behind live"
        finally:
            await probe.close()


async def test_a_udp_joiner_loses_nothing_to_the_gop_burst(procs) -> None:
    async with running_gateway(make_config()) as gw:
        await _old_gop(gw, procs, "2M")
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        port = free_udp_pair()  # RTP on an even port, RTCP on the next (RFC 3550)
        rtp.bind(("127.0.0.1", port))
        seqs: list[int] = []
        loop = asyncio.get_running_loop()
        rtp.setblocking(False)
        loop.add_reader(rtp.fileno(), lambda: _drain(rtp, seqs))
        probe = await Probe.connect("127.0.0.1", gw.port)
        try:
            base = f"rtsp://127.0.0.1:{gw.port}/cam1"
            assert (await probe.request("DESCRIBE", base)).status == 200
            transport = ("Transport", f"RTP/AVP;unicast;client_port={port}-{port + 1}")
            assert (await probe.request("SETUP", f"{base}/trackID=0", (transport,))).status == 200
            assert (await probe.request("PLAY", base)).status == 200
            await wait_for(lambda: len(seqs) >= 300, 20, what="300 RTP packets over UDP")
            lost = sum(((b - a - 1) & 0xFFFF) for a, b in itertools.pairwise(seqs))
            assert lost == 0, f"{lost} packets lost in the first {len(seqs)}"
        finally:
            loop.remove_reader(rtp.fileno())
            rtp.close()
            await probe.close()


def _drain(sock: socket.socket, seqs: list[int]) -> None:
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        try:
            packet = sock.recv(65536)
        except BlockingIOError:
            return
        if len(packet) >= 12:
            seqs.append(int.from_bytes(packet[2:4], "big"))
