"""A playback session's feed (gateway.playback.feed): a recording written by real ffmpeg and
indexed by the recorder's RecordingIndex goes out through a real hub path from the key frame at
or before the asked instant, paced by the recording divided by Scale, with ONVIF's replay
extension carrying each frame's capture time; gaps are skipped and flagged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from conftest import wait_for
from export_fixtures import index_segment, write_segment

from gateway.playback.feed import PlaybackFeed, recorded_track
from gateway.playback.recorded import RecordedSource
from gateway.playback.state import Pacer
from gateway.protocols import h264
from gateway.protocols.onvif_rtp import ReplayExtension, read_replay_extension
from gateway.protocols.rtp import RtpPacket
from gateway.protocols.rtsp import Headers
from gateway.protocols.rtsp_replay import parse_play
from gateway.recording.index import RecordingIndex
from gateway.stream.hub import PathStream, Reader
from tenants.db import Database

T0 = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingIndex]:
    """cam1: 10 s from T0 and, after a 50 s outage, 10 s more from T0 + 60 s. GOP 1 s."""
    root = tmp_path_factory.mktemp("rec")
    db = Database.open(f"sqlite://{root / 'feedgate.db'}")
    index = RecordingIndex(db, root)
    write_segment(root / "cam1-a.mp4", 10)
    write_segment(root / "cam1-b.mp4", 10, source="smptebars=size=320x240:rate=25")
    index_segment(index, "cam1", "cam1-a", root / "cam1-a.mp4", T0)
    index_segment(index, "cam1", "cam1-b", root / "cam1-b.mp4", T0 + timedelta(seconds=60))
    yield index
    db.close()


class FakeClock:
    """Monotonic time that moves only when the feed sleeps: pacing checked exactly."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class Viewer:
    """A hub reader that keeps every RTP packet with the fake clock's time of arrival."""

    def __init__(self, stream: PathStream, clock: FakeClock) -> None:
        self.packets: list[tuple[float, bytes]] = []
        self.clock = clock
        self.reader = Reader(channels=(0,), sink=self.sink)
        stream.add_reader(self.reader)

    def sink(self, items: list[tuple[int, bytes, bool]], is_key: bool) -> tuple[int, int]:
        for _track, packet, is_rtcp in items:
            if not is_rtcp:
                self.packets.append((self.clock(), packet))
        return len(items), sum(len(p) for _, p, _ in items)

    def frames(self) -> list[tuple[float, ReplayExtension | None, list[RtpPacket]]]:
        """Access units as received: (arrival, first packet's ONVIF extension, packets)."""
        out: list[tuple[float, ReplayExtension | None, list[RtpPacket]]] = []
        current: list[RtpPacket] = []
        first_at = 0.0
        first_ext: ReplayExtension | None = None
        for at, data in self.packets:
            if not current:
                first_at, first_ext = at, read_replay_extension(data)
            packet = RtpPacket.parse(data)
            current.append(packet)
            if packet.marker:
                out.append((first_at, first_ext, current))
                current = []
        return out


async def play(
    index: RecordingIndex, *headers: tuple[str, str]
) -> tuple[PlaybackFeed, Viewer, FakeClock]:
    clock = FakeClock()
    source = RecordedSource(index, "cam1")
    fmt = await source.run(source.format_at, T0)
    assert fmt is not None
    stream = PathStream("cam1~playback-test")
    pacer = Pacer(origin=T0)
    req = parse_play(Headers(headers))
    feed = PlaybackFeed(
        source,
        stream,
        recorded_track(fmt),
        pacer,
        onvif=req.onvif,
        clock=clock,
        sleep=clock.sleep,
    )
    position = pacer.play(req, clock(), cseq=9)
    feed.play(position)
    viewer = Viewer(stream, clock)
    assert feed.task is not None
    await asyncio.wait_for(feed.task, 60)
    return feed, viewer, clock


async def test_play_from_an_instant_starts_at_its_key_frame_with_capture_times(
    recording: RecordingIndex,
) -> None:
    feed, viewer, _clock = await play(
        recording,
        ("Require", "onvif-replay"),
        ("Range", "clock=20261201T101503.500Z-20261201T101506Z"),
    )
    frames = viewer.frames()
    # From the key frame at 3 s (before 3.5 s) to the last frame before 6 s: 75 frames.
    assert feed.first_sent == T0 + timedelta(seconds=3)
    assert len(frames) == 75
    exts = [ext for _, ext, _ in frames]
    assert all(ext is not None for ext in exts)
    captured = [ext.captured for ext in exts if ext is not None]
    assert captured[0] == T0 + timedelta(seconds=3)
    assert captured[-1] == T0 + timedelta(seconds=5.96)
    assert captured == sorted(captured)
    first = exts[0]
    assert first is not None and first.clean_point and first.discontinuity and first.cseq == 9
    # Clean points are exactly the key frames (one a second), and they carry SPS/PPS in band.
    keys = [i for i, (_, ext, _) in enumerate(frames) if ext is not None and ext.clean_point]
    assert keys == [0, 25, 50]
    nal_types = h264.nal_types(frames[0][2][0].payload)
    assert nal_types[0] == 7
    # The 13 frames before the asked instant go at once, the first after it (3.52 s) with
    # them; from there the recording's own pace.
    arrivals = [at for at, _, _ in frames]
    assert arrivals[13] == arrivals[0]
    assert arrivals[-1] - arrivals[13] == pytest.approx(5.96 - 3.52, abs=1e-6)
    # RTP time follows capture time on the 90 kHz clock.
    ts = [pkts[0].timestamp for _, _, pkts in frames]
    assert (ts[-1] - ts[0]) % (1 << 32) == round(2.96 * 90000)


@pytest.mark.parametrize("scale", [2, 4])
async def test_scale_plays_faster_by_its_factor(recording: RecordingIndex, scale: int) -> None:
    _feed, viewer, _clock = await play(
        recording, ("Scale", str(scale)), ("Range", "clock=20261201T101500Z-20261201T101508Z")
    )
    frames = viewer.frames()
    assert len(frames) == 200
    duration = frames[-1][0] - frames[0][0]
    assert duration == pytest.approx(7.96 / scale, abs=1e-6)


async def test_fast_forward_key_frames_only(recording: RecordingIndex) -> None:
    _feed, viewer, _clock = await play(
        recording,
        ("Require", "onvif-replay"),
        ("Scale", "4"),
        ("Frames", "intra"),
        ("Range", "clock=20261201T101500Z-20261201T101510Z"),
    )
    frames = viewer.frames()
    assert len(frames) == 10
    assert all(ext is not None and ext.clean_point for _, ext, _ in frames)
    assert frames[-1][0] - frames[0][0] == pytest.approx(9 / 4, abs=1e-6)


async def test_a_gap_is_skipped_and_flagged(recording: RecordingIndex) -> None:
    _feed, viewer, _clock = await play(
        recording,
        ("Require", "onvif-replay"),
        ("Range", "clock=20261201T101508Z-20261201T101602Z"),
        ("Rate-Control", "no"),
    )
    frames = viewer.frames()
    exts = [ext for _, ext, _ in frames if ext is not None]
    assert len(exts) == len(frames) == 50 + 50
    before, after = exts[49], exts[50]
    assert before.captured == T0 + timedelta(seconds=9.96)
    assert after.captured == T0 + timedelta(seconds=60) and after.discontinuity
    # E is on the last packet of the stretch before the gap.
    last_packet = frames[49][2][-1]
    assert last_packet.extension is not None
    assert ReplayExtension.unpack(*last_packet.extension).end
    # Without rate control nothing waits: the whole minute goes at once.
    assert frames[-1][0] == frames[0][0]


async def test_a_seek_cancels_the_old_play_and_starts_at_the_new_key_frame(
    recording: RecordingIndex,
) -> None:
    clock = FakeClock()
    source = RecordedSource(recording, "cam1")
    fmt = await source.run(source.format_at, T0)
    assert fmt is not None
    stream = PathStream("cam1~playback-seek")
    pacer = Pacer(origin=T0)
    feed = PlaybackFeed(source, stream, recorded_track(fmt), pacer, clock=clock, sleep=clock.sleep)
    feed.play(pacer.play(parse_play(Headers([("Range", "clock=20261201T101500Z-")])), clock()))
    # The seek must land on a play that is running: wait until it has sent its first unit.
    await wait_for(lambda: feed.first_sent is not None, 10, what="the first play to send")
    feed.play(
        pacer.play(
            parse_play(Headers([("Range", "clock=20261201T101604.2Z-20261201T101606Z")])), clock()
        )
    )
    assert feed.task is not None
    await asyncio.wait_for(feed.task, 60)
    assert feed.first_sent == T0 + timedelta(seconds=64)
    await feed.stop()
    assert not stream.has_source


async def test_the_recording_format_describes_the_track(recording: RecordingIndex) -> None:
    source = RecordedSource(recording, "cam1")
    fmt = source.format_at(None)
    assert fmt is not None
    track = recorded_track(fmt)
    assert track.codec == "H264" and "sprop-parameter-sets=" in track.sdp_lines[1]
    assert RecordedSource(recording, "nobody").format_at(T0) is None
