"""Playback of what the gateway itself recorded (the recorder's writer and index, wired to
playback by the Gateway): a pushed ffmpeg camera is recorded, restarted (a gap) and recorded
again; /list shows the gap, /get cuts a range ffprobe reads, ffmpeg plays a range through the
URL form, and an ONVIF client plays across the gap (flagged) and, after a gateway restart, across
the restart's gap too."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from conftest import FFMPEG, make_config, publish_argv, publishing, running_gateway, wait_for
from export_fixtures import ffprobe
from test_playback_rtsp import OnvifProbe, iso

from gateway.config import CameraConfig, Config, RecordingConfig
from gateway.http.app import make_http_app
from gateway.protocols.rtsp_replay import format_clock
from gateway.recording.index import RecordingIndex, Span


def recorded_config(tmp_path: Path) -> Config:
    cfg = make_config((CameraConfig(id="cam1", record=True, segment_seconds=2.0),))
    return dataclasses.replace(
        cfg, data_dir=str(tmp_path), recording=RecordingConfig(outage_after=1.0)
    )


def recorded(index: RecordingIndex) -> float:
    return sum(s.duration.total_seconds() for s in index.segments("cam1"))


async def onvif_across(port: int, start, seconds: float):  # type: ignore[no-untyped-def]
    probe = await OnvifProbe.connect("127.0.0.1", port)
    try:
        base = f"rtsp://127.0.0.1:{port}/cam1"
        onvif = (("Require", "onvif-replay"),)
        assert (await probe.request("DESCRIBE", base, onvif)).status == 200
        transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
        assert (
            await probe.request("SETUP", f"{base}/trackID=0", (*onvif, transport))
        ).status == 200
        end = start + timedelta(seconds=seconds)
        r = await probe.request(
            "PLAY",
            base,
            (
                *onvif,
                ("Range", f"clock={format_clock(start)}-{format_clock(end)}"),
                ("Rate-Control", "no"),
            ),
        )
        assert r.status == 200
        await wait_for(
            lambda: bool(probe.exts) and probe.exts[-1].captured >= end - timedelta(seconds=0.5),
            20,
            what="the range played",
        )
        return list(probe.exts)
    finally:
        await probe.close()


async def test_the_gateways_own_recording_plays_back_across_its_gaps(tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    cfg = recorded_config(tmp_path)
    async with running_gateway(cfg) as gw:
        index = gw.gateway.recorder.index
        assert gw.gateway.playback is not None and gw.gateway.playback.index is index
        pub = await procs(publish_argv(gw.url("cam1"), gop=25))
        await publishing(gw, "cam1")
        await wait_for(lambda: recorded(index) >= 4, 30, what="4 s recorded")
        pub.kill()
        hub = gw.gateway.hub
        await wait_for(lambda: not hub.paths["cam1"].has_source, 10, what="the camera gone")
        await asyncio.sleep(2)  # the scenario, not a synchronisation: a 2 s camera outage
        pub = await procs(publish_argv(gw.url("cam1"), gop=25))

        def spans() -> list[Span]:
            segs = index.segments("cam1")
            return index.spans("cam1", segs[0].start, segs[-1].end) if segs else []

        await wait_for(
            lambda: len(spans()) >= 2 and spans()[-1].duration.total_seconds() >= 3,
            30,
            what="a second run recorded",
        )
        first, second = spans()[:2]
        gap = (first.end, second.start)
        assert gap[1] - gap[0] >= timedelta(seconds=1.5)

        app = make_http_app(gw.gateway)
        app.cleanup_ctx.clear()
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with ClientSession() as http:
                base = str(server.make_url("")).rstrip("/")
                async with http.get(f"{base}/list", params={"path": "cam1"}) as r:
                    listed = json.loads(await r.read())
                assert len(listed) == 2  # the camera restart is a gap
                async with http.get(
                    f"{base}/get",
                    params={
                        "path": "cam1",
                        "start": iso(first.start + timedelta(seconds=1)),
                        "duration": "2",
                    },
                ) as r:
                    assert r.status == 200
                    (tmp_path / "cut.mp4").write_bytes(await r.read())
                got = ffprobe(tmp_path / "cut.mp4")
                assert got.errors == "" and abs(got.duration - 2) <= 1.0, got
        finally:
            await server.close()

        out = tmp_path / "played.mp4"
        url = gw.url(f"cam1?start={iso(first.start + timedelta(seconds=1))}")
        p = await procs(
            [
                FFMPEG,
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
                url,
                "-t",
                "2",
                "-c",
                "copy",
                "-y",
                str(out),
            ]
        )
        assert await p.wait(60) == 0, p.text
        assert ffprobe(out).frames >= 40

        exts = await onvif_across(
            gw.port, gap[0] - timedelta(seconds=1.5), (gap[1] - gap[0]).total_seconds() + 3
        )
        times = [e.captured for e in exts]
        assert times == sorted(times)
        jump = next(
            i for i in range(1, len(exts)) if times[i] - times[i - 1] > timedelta(seconds=0.5)
        )
        assert exts[jump].discontinuity and times[jump] >= gap[1] - timedelta(seconds=0.1)
        pub.kill()
        await pub.wait(10)
    # The gateway stops and starts again (cleanly, in a fraction of a second): playback
    # crosses the restart, with frames from both runs in order, and flagged where the recorder
    # recorded the restart as a gap. (A kill -9 restart: tests/test_playback_crash.py.)
    async with running_gateway(cfg) as gw:
        index = gw.gateway.recorder.index
        restarted = datetime.now(UTC)
        pub = await procs(publish_argv(gw.url("cam1"), gop=25))
        await wait_for(
            lambda: spans()[-1].end >= restarted + timedelta(seconds=3),
            30,
            what="recording after the restart",
        )
        exts = await onvif_across(gw.port, restarted - timedelta(seconds=3), 5)
        times = [e.captured for e in exts]
        assert times == sorted(times)
        assert times[0] < restarted - timedelta(seconds=1) and times[-1] > restarted + timedelta(
            seconds=1
        )
        gaps = index.gaps(
            "cam1", restarted - timedelta(seconds=10), restarted + timedelta(seconds=10)
        )
        for gap in gaps:
            assert any(
                e.discontinuity and e.captured >= gap.end - timedelta(seconds=0.1) for e in exts
            )
        pub.kill()
