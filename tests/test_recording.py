"""Recording with real ffmpeg cameras: a pushed camera's access units become fragmented MP4
segments that ffprobe reads cleanly, indexed fragment by fragment at their byte offsets, and a
camera restart shows as a gap, never stitched."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import imageio_ffmpeg
from conftest import (
    Proc,
    make_config,
    publish_argv,
    publishing,
    running_gateway,
    wait_for,
)

from gateway.config import CameraConfig, Config, RecordingConfig
from gateway.recording.fmp4 import boxes
from gateway.recording.index import GapReason, RecordingIndex
from tenants.db import Database

FFPROBE = str(Path(imageio_ffmpeg.get_ffmpeg_exe()).with_name("ffprobe"))


def _ffprobe() -> str:
    import shutil

    return shutil.which("ffprobe") or FFPROBE


def recording_config(tmp_path: Path, **recording: object) -> Config:
    cfg = make_config(
        (CameraConfig(id="cam1", record=True, segment_seconds=2.0), CameraConfig(id="live")),
    )
    return dataclasses.replace(
        cfg,
        data_dir=str(tmp_path),
        # The product's outage_after (3 s): with 1 s, a loop held 1.2 s on a loaded machine
        # (seen in a full run) put a second camera_outage gap where the camera never paused.
        recording=RecordingConfig(**recording),  # type: ignore[arg-type]
    )


async def metrics_text(gw: object) -> str:
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.http.app import make_http_app

    app = make_http_app(gw.gateway)  # type: ignore[attr-defined]
    app.cleanup_ctx.clear()  # the test runs this gateway already
    async with TestClient(TestServer(app)) as client:
        return await (await client.get("/metrics")).text()


def probe(path: Path) -> tuple[dict[str, object], str]:
    out = subprocess.run(
        [_ffprobe(), "-v", "error", "-show_entries", "format=duration:stream=codec_name,width,"
         "height,nb_read_frames", "-count_frames", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return json.loads(out.stdout or "{}"), out.stderr


async def test_a_pushed_camera_is_recorded_in_fragments_ffprobe_reads(
    tmp_path: Path, procs: object
) -> None:
    cfg = recording_config(tmp_path)
    async with running_gateway(cfg) as gw:
        start = procs  # type: ignore[assignment]
        pub: Proc = await start(publish_argv(gw.url("cam1"), gop=25))  # type: ignore[operator]
        await publishing(gw, "cam1")
        index = gw.gateway.recorder.index

        def closed() -> int:
            return sum(1 for s in index.segments("cam1") if s.closed)

        await wait_for(lambda: closed() >= 2, 30, what="two closed segments")
        text = await metrics_text(gw)
        assert "feedgate_recording_disk_state 0.0" in text
        assert "feedgate_recording_stopped 0.0" in text
        assert 'feedgate_recording_retention_days{camera="cam1",source="default"} 31.0' in text
        written = re.search(r'feedgate_recording_bytes_written_total\{camera="cam1"\} (\S+)', text)
        assert written is not None and float(written.group(1)) > 0
        assert 'feedgate_recording_dropped_units_total{camera="cam1"}' in text
        pub.kill()
    # Read back through a connection of our own, as playback would.
    index = RecordingIndex(Database.open(cfg.database_url), cfg.recording_dir)
    segments = index.segments("cam1")
    assert len(segments) >= 2 and all(s.closed for s in segments)
    assert index.segments("live") == []  # not recorded
    for seg in segments:
        path = index.file(seg)
        data = path.read_bytes()
        assert seg.bytes == len(data)
        assert data[4:8] == b"ftyp" and data[seg.init_length + 4 : seg.init_length + 8] == b"moof"
        frags = index.fragments(seg.id)
        assert frags and frags[0].keyframe and frags[0].start == seg.start
        assert frags[-1].end == seg.end
        for a, b in itertools.pairwise(frags):
            assert a.offset + a.length == b.offset  # back to back in the file
            assert abs((b.start - a.end).total_seconds()) < 0.001  # and in time
        for f in frags:
            kinds = [k for k, *_ in boxes(data[f.offset : f.offset + f.length])]
            assert kinds == [b"moof", b"mdat"]
            assert timedelta(0) < f.end - f.start <= timedelta(seconds=1.05)
        info, errors = probe(path)
        assert errors == "", errors
        stream = info["streams"][0]  # type: ignore[index]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240)
        duration = float(info["format"]["duration"])  # type: ignore[index]
        assert abs(duration - seg.duration.total_seconds()) < 0.1
    # Segments of one run are contiguous: one span.
    first, last = segments[0], segments[-1]
    closed_last = [s for s in segments if s.closed][-1]
    spans = index.spans("cam1", first.start, closed_last.end)
    assert len(spans) == 1 and spans[0].start == first.start
    assert last.closed


async def test_a_camera_restart_shows_as_a_gap(tmp_path: Path, procs: object) -> None:
    cfg = recording_config(tmp_path)
    start = procs  # type: ignore[assignment]
    async with running_gateway(cfg) as gw:
        index = gw.gateway.recorder.index
        pub: Proc = await start(publish_argv(gw.url("cam1")))  # type: ignore[operator]
        await publishing(gw, "cam1")
        await wait_for(lambda: len(index.segments("cam1")) >= 1, 20, what="a first segment")
        pub.kill()
        await pub.wait()
        # The source goes quiet: its run ends and its segment is closed.
        await wait_for(
            lambda: all(s.closed for s in index.segments("cam1")), 20, what="segment closed"
        )
        stopped = index.last_end("cam1")
        await wait_for(lambda: not gw.hub.path("cam1").has_source, what="the source gone")
        pub2: Proc = await start(publish_argv(gw.url("cam1")))  # type: ignore[operator]
        await publishing(gw, "cam1")
        await wait_for(lambda: index.gaps("cam1") != [], 20, what="a gap after the restart")
        await wait_for(
            lambda: (
                len(index.spans("cam1", index.segments()[0].start, index.segments()[-1].end)) == 2
            ),
            20,
            what="two spans",
        )
        pub2.kill()
    index = RecordingIndex(Database.open(cfg.database_url), cfg.recording_dir)
    gaps = index.gaps("cam1")
    assert len(gaps) == 1 and gaps[0].reason is GapReason.CAMERA_OUTAGE
    assert stopped is not None and gaps[0].start == stopped
    spans = index.spans("cam1", index.segments()[0].start, index.segments()[-1].end)
    assert spans[0].end == gaps[0].start and spans[1].start == gaps[0].end


async def test_a_gateway_restart_under_a_second_is_a_gap_not_stitched(
    tmp_path: Path, procs: object
) -> None:
    """The recorder stops and a new one starts within a second while the camera keeps
    publishing (a clean restart of the recording): the stretch between is a gateway_restart
    gap, /list's spans break there, and the GOP the hub replays to the new recorder (captured
    before the restart) is not written over the previous run's time."""
    from gateway.recording.service import Recorder

    cfg = recording_config(tmp_path)
    start = procs  # type: ignore[assignment]
    async with running_gateway(cfg) as gw:
        first = gw.gateway.recorder
        index = RecordingIndex(Database.open(cfg.database_url), cfg.recording_dir)
        # A 2 s GOP: the keyframe the hub has cached at the restart is older than it.
        pub: Proc = await start(publish_argv(gw.url("cam1"), gop=50))  # type: ignore[operator]
        await publishing(gw, "cam1")
        await wait_for(
            lambda: any(index.fragments(s.id) for s in index.segments("cam1")),
            20,
            what="a first fragment",
        )
        await first.stop()
        stopped = index.last_end("cam1")
        assert stopped is not None
        began = time.monotonic()
        second = Recorder(cfg, gw.hub)
        gw.gateway.recorder = second  # the gateway stops it
        await second.start()
        restart = time.monotonic() - began

        def resumed() -> bool:
            return any(s.start > stopped and index.fragments(s.id) for s in index.segments("cam1"))

        await wait_for(resumed, 20, what="recording after the restart")
        await gw.gateway.recorder.stop()
        gw.gateway.recorder = None
        pub.kill()
    segments = index.segments("cam1")
    after = [s for s in segments if s.start >= stopped]
    assert after, f"nothing recorded after the restart ({restart:.2f} s)"
    gaps = index.gaps("cam1")
    assert [(g.start, g.reason) for g in gaps] == [(stopped, GapReason.GATEWAY_RESTART)]
    assert gaps[0].end == after[0].start > stopped
    spans = index.spans("cam1", segments[0].start, segments[-1].end)
    assert len(spans) == 2 and spans[0].end == stopped and spans[1].start == gaps[0].end
    for seg in after:  # nothing of the new run lies over the old one
        assert all(f.start > stopped for f in index.fragments(seg.id))
    for seg in segments:
        assert seg.start >= stopped or seg.end <= stopped
