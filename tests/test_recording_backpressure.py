"""A slow disk never slows the camera or live readers: while the writer is stuck, the hub keeps
delivering, the recorder's queue stays within recording.queue_bytes, units are dropped to the
next keyframe and counted, and once the writer catches up the loss is a writer_overrun gap."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from conftest import make_config, wait_for
from recording_fixtures import T0, TRACK, h264_access_units, rtp_units

from gateway.config import CameraConfig, RecordingConfig
from gateway.recording.index import GapReason
from gateway.recording.service import Recorder
from gateway.recording.writer import CameraWriter
from gateway.stream.hub import Reader, StreamHub


class _Counting:
    """A live reader's transport: takes every write at once."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def is_closing(self) -> bool:
        return False


async def test_a_stuck_writer_drops_to_a_gap_and_never_holds_the_hub(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        make_config((CameraConfig(id="cam", record=True),)),
        data_dir=str(tmp_path),
        recording=RecordingConfig(
            queue_bytes=1 << 20, writer_threads=1, low_water="0%", critical="0%"
        ),
    )
    clock = [T0]
    hub = StreamHub()
    rec = Recorder(cfg, hub, clock=lambda: clock[0])
    stuck = threading.Event()
    released = threading.Event()
    make = rec._make_writer

    class SlowDisk(CameraWriter):
        def feed(self, unit):  # type: ignore[no-untyped-def]
            if stuck.is_set():
                released.wait(30)  # a write that takes as long as the test wants
            super().feed(unit)

    def slow_writer(camera: str, track: object) -> CameraWriter:
        w = make(camera, track)  # type: ignore[arg-type]
        w.__class__ = SlowDisk
        return w

    rec._make_writer = slow_writer  # type: ignore[method-assign]
    stream = hub.path("cam")
    stream.attach_source("src", (TRACK,))
    viewer = _Counting()
    await rec.start()
    stream.add_reader(Reader(channels=(0,), transport=viewer))  # type: ignore[arg-type]
    try:
        units = list(rtp_units(h264_access_units(12.0, gop=25, size="1280x720")))
        slowest = 0.0
        for i, (items, _key, _ts) in enumerate(units):
            clock[0] = T0 + i / 25
            if i == 75:
                stuck.set()  # the disk stops answering at 3 s
            t = time.perf_counter()
            for _track, packet, _rtcp in items:
                stream.on_rtp(0, packet)
            slowest = max(slowest, time.perf_counter() - t)
            if i == 200:
                assert rec.queued_bytes() <= 1 << 20
                assert rec.dropped()["cam"] > 0  # dropped, and counted
                stuck.clear()
                released.set()  # the disk is back at 8 s
                await wait_for(lambda: rec.queued_bytes() == 0, 20, what="the queue drained")
            if i > 200 and i % 5 == 0:
                # Faster than real time, so give the writer the time real time would.
                await wait_for(lambda: rec.queued_bytes() < 1 << 19, 20, what="the writer")
            if i % 25 == 0:
                await asyncio.sleep(0)
        # The live reader got every unit; the hub never waited for the recorder.
        assert viewer.bytes >= sum(len(p) for items, _k, _t in units for _tr, p, _r in items)
        assert slowest < 0.5, slowest
    finally:
        released.set()
        await rec.stop()
    from gateway.recording.index import RecordingIndex
    from tenants.db import Database

    index = RecordingIndex(Database.open(cfg.database_url), cfg.recording_dir)
    gaps = index.gaps("cam")
    # One gap or several (whole GOPs that found room in the queue meanwhile are recorded
    # between them), every one a writer overrun: from where the writer had got to when the disk
    # stuck (the thread may lag the hub a little) to the first keyframe after it came back.
    assert gaps and {g.reason for g in gaps} == {GapReason.WRITER_OVERRUN}
    # What the queue holds when the disk stops is written once it is back, so the first gap
    # starts where the 1 MiB bound filled: soon after 3 s when the writer lagged the hub (3.92 s
    # seen under load), near 7.8 s when it had kept up (about 4.5 s of this 720p stream fit in
    # 1 MiB; seen in a full run). Either way it is inside the 5 s the disk was stuck.
    assert datetime.fromtimestamp(T0, UTC) < gaps[0].start < datetime.fromtimestamp(T0 + 8, UTC)
    assert gaps[-1].end <= datetime.fromtimestamp(T0 + 9, UTC)
    spans = index.spans(
        "cam", datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 13, UTC)
    )
    assert len(spans) == len(gaps) + 1
    assert spans[-1].end == datetime.fromtimestamp(T0 + 12, UTC)  # to the end, once it caught up
