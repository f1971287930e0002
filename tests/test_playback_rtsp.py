"""Playback on the camera's RTSP URL (gateway.playback.rtsp) with real clients: ffmpeg and
ffprobe through the URL form, an ONVIF replay client through Require/Range: clock/Rate-Control
(its frames' capture times read from the 0xABAC extension), PAUSE then PLAY seeking, GStreamer's
rtspsrc in ONVIF mode seeking to a clock time; refusals 403 and audited; a masked tenant's
playback burnt in; the playback seconds on the ledger equal what was served."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import FFMPEG, wait_for
from export_fixtures import ffprobe, luma_frames, psnr
from playback_world import ZONE, World, playback_world
from rtsp_probe import Probe

from billing.model import Metric
from gateway.masking.zones import Zone, rasterize
from gateway.playback.rtsp import RtspPlayback
from gateway.protocols.onvif_rtp import ReplayExtension, read_replay_extension
from gateway.protocols.rtsp import InterleavedFrame, Response
from gateway.protocols.rtsp_replay import format_clock
from tenants.audit import AuditAction
from tenants.months import month_of

GST_PYTHON = "/usr/bin/python3"


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class OnvifProbe(Probe):
    """An ONVIF replay client: keeps each RTP packet's replay extension."""

    exts: list[ReplayExtension]

    async def _read(self) -> None:
        self.exts = []
        while data := await self.reader.read(65536):
            for event in self.parser.feed(data):
                if isinstance(event, InterleavedFrame):
                    if event.channel == 0:
                        ext = read_replay_extension(event.payload)
                        if ext is not None:
                            self.exts.append(ext)
                elif isinstance(event, Response):
                    self.responses.put_nowait(event)


async def started(world: World) -> RtspPlayback:
    return RtspPlayback(world.gw.gateway.rtsp, world.service)


async def test_ffmpeg_and_ffprobe_play_a_range_through_the_url_form(tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    async with playback_world(tmp_path, http=False) as world:
        playback = await started(world)
        token = world.token("council", "operator")
        start = world.recent + timedelta(seconds=2.5)
        url = world.gw.url(f"cam1?token={token}&start={iso(start)}")
        # ffprobe on the loop's own terms: the gateway serves it from this event loop.
        probe = await procs(
            [
                "ffprobe",
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-show_streams",
                "-of",
                "json",
                url,
            ]
        )
        assert await probe.wait(60) == 0, probe.text
        stream = json.loads(probe.text)["streams"][0]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240)
        out = tmp_path / "played.mp4"
        p = await procs(
            [FFMPEG, "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-t", "3",
             "-c", "copy", "-y", str(out)]
        )  # fmt: skip
        assert await p.wait(60) == 0, p.text
        got = ffprobe(out)
        assert got.errors == "" and got.codec == "h264" and got.frames >= 70, got
        # The first frame is the key frame at 2 s: within one GOP of the asked 2.5 s.
        first = luma_frames(out, 1)[0]
        original = luma_frames(world.index.root / "cam1-recent.mp4", 51)
        best = max(range(len(original)), key=lambda i: psnr(original[i], first))
        assert best == 50 and psnr(original[best], first) > 40
        await wait_for(lambda: not playback.sessions, 10, what="the session to end")
        entries = world.audit(AuditAction.PLAYBACK)  # ffprobe's look, then ffmpeg's
        assert len(entries) == 2
        for e in entries:
            assert (e.tenant, e.detail["protocol"]) == ("council", "rtsp")
            assert e.detail["from"] == format_clock(start)
        assert not world.audit(AuditAction.SESSION_START)  # a playback is not a live view
        # What was served is what the ledger holds as playback.
        metering = world.gw.gateway.metering
        assert metering is not None
        period = month_of(world.recent, world.gw.gateway.config.zone)

        def played() -> int:
            return metering.ledger.usage("council", period)[Metric.PLAYBACK_SECONDS]

        await wait_for(lambda: played() > 0, 10, what="playback on the ledger")
        await wait_for(
            lambda: played() == round(playback.served_seconds * 1000), 10, what="all of it"
        )
        assert 2500 <= played() <= 8000
        assert metering.ledger.usage("council", period)[Metric.LIVE_SECONDS] == 0


async def test_onvif_replay_seeks_with_capture_times(tmp_path: Path) -> None:
    async with playback_world(tmp_path, http=False) as world:
        await started(world)
        token = world.token("council", "operator")
        probe = await OnvifProbe.connect("127.0.0.1", world.gw.port)
        try:
            base = f"rtsp://127.0.0.1:{world.gw.port}/cam1"
            onvif = (("Require", "onvif-replay"),)
            r = await probe.request("DESCRIBE", f"{base}?token={token}", onvif)
            assert r.status == 200 and b"H264/90000" in r.body
            r = await probe.request(
                "SETUP",
                f"{base}/trackID=0",
                (*onvif, ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")),
            )
            assert r.status == 200
            asked = world.recent + timedelta(seconds=3.5)
            r = await probe.request(
                "PLAY",
                base,
                (*onvif, ("Range", f"clock={format_clock(asked)}-"), ("Rate-Control", "no")),
            )
            assert r.status == 200
            key = world.recent + timedelta(seconds=3)
            assert r.headers.get("Range") == f"clock={format_clock(key)}-"
            assert r.headers.get("Rate-Control") == "no" and r.headers.get("Scale") == "1.0"
            await wait_for(lambda: len(probe.exts) > 50, 10, what="replayed packets")
            first = probe.exts[0]
            assert first.captured == key and first.clean_point and first.discontinuity
            assert key <= first.captured <= asked  # within one GOP of the asked instant
            # PAUSE, then PLAY a new Range: a seek, tagged with the new PLAY's CSeq.
            assert (await probe.request("PAUSE", base, onvif)).status == 200
            await asyncio.sleep(0.2)
            seen = len(probe.exts)
            again = world.recent + timedelta(seconds=7.2)
            r = await probe.request(
                "PLAY", base, (*onvif, ("Range", f"clock={format_clock(again)}-"))
            )
            assert r.status == 200
            cseq = probe.cseq & 0xFF
            await wait_for(
                lambda: any(e.cseq == cseq for e in probe.exts[seen:]),
                10,
                what="the seek's packets",
            )
            after = [e for e in probe.exts[seen:] if e.cseq == cseq]
            assert after[0].captured == world.recent + timedelta(seconds=7)
            assert after[0].discontinuity
            # Bad replay headers are 4xx and the session carries on.
            r = await probe.request("PLAY", base, (("Scale", "fast"),))
            assert r.status == 400
            r = await probe.request("PLAY", base, (("Require", "com.example.teleport"),))
            assert r.status == 551 and r.headers.get("Unsupported") == "com.example.teleport"
            r = await probe.request("PLAY", base, (("Scale", "-1"),))
            assert r.status == 456
        finally:
            await probe.close()


async def test_refusals_over_rtsp_are_403_and_audited(tmp_path: Path) -> None:
    async with playback_world(tmp_path, http=False) as world:
        await started(world)
        police = world.token("police", "investigator")
        shop = world.token("shop", "operator")
        cases = [
            (f"cam1?token={shop}&start={iso(world.recent)}", 403),
            (f"cam1?token={police}&start={iso(world.recent)}", 403),  # no purpose
            (f"cam1?token={police}&purpose=incident-7&start={iso(world.old)}", 403),  # too old
            (f"cam1?start={iso(world.recent)}", 401),
            (f"nope?start={iso(world.recent)}", 401),
            (f"cam1?token={police}&purpose=incident-7&start={iso(world.recent)}", 200),
        ]
        for path, status in cases:
            probe = await Probe.connect("127.0.0.1", world.gw.port)
            try:
                assert await probe.play(path) == status, path
            finally:
                await probe.close()
        reasons = [
            e.detail["reason"]
            for e in world.audit(AuditAction.DENIED)
            if e.detail.get("action") == "playback"
        ]
        assert any("no grant gives shop playback" in r for r in reasons), reasons
        assert any("purpose" in r for r in reasons)
        assert any("footage older than 86400s" in r for r in reasons)
        await wait_for(
            lambda: len(world.audit(AuditAction.PLAYBACK)) == 1, 10, what="the police playback"
        )
        (entry,) = world.audit(AuditAction.PLAYBACK)
        assert (entry.tenant, entry.purpose) == ("police", "incident-7")


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="GStreamer not installed")
async def test_gstreamer_rtspsrc_seeks_by_clock(tmp_path: Path) -> None:
    async with playback_world(tmp_path, http=False) as world:
        await started(world)
        token = world.token("council", "operator")
        target = world.recent + timedelta(seconds=4.4)
        script = tmp_path / "seek.py"
        script.write_text(GST_SEEK)
        url = world.gw.url(f"cam1?token={token}&start={iso(world.recent)}")
        proc = await asyncio.create_subprocess_exec(
            GST_PYTHON, str(script), url, str(int((target - EPOCH_1900).total_seconds() * 1e9)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        text = out.decode()
        assert proc.returncode == 0, text
        result = json.loads(text.strip().splitlines()[-1])
        assert result["frames_after_seek"] >= 10, text
        # Its seek was a PLAY with Range: clock= at the target, after the first PLAY's.
        await wait_for(lambda: bool(world.audit(AuditAction.SESSION_END)), 10, what="its end")
        (end,) = world.audit(AuditAction.SESSION_END)
        assert end.detail["ranges"][-1].startswith(f"clock={format_clock(target)[:15]}")


EPOCH_1900 = datetime(1900, 1, 1, tzinfo=UTC)

GST_SEEK = r"""
import json, sys, time
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
url, target = sys.argv[1], int(sys.argv[2])
pipe = Gst.parse_launch(
    f"rtspsrc name=src location={url} onvif-mode=true protocols=tcp latency=0 "
    "! rtph264depay ! h264parse ! avdec_h264 ! fakesink name=sink signal-handoffs=true sync=false"
)
frames = {"before": 0, "after": 0}
state = {"seeked": False}
def handoff(sink, buf, pad):
    frames["after" if state["seeked"] else "before"] += 1
pipe.get_by_name("sink").connect("handoff", handoff)
pipe.set_state(Gst.State.PLAYING)
bus = pipe.get_bus()
deadline = time.monotonic() + 60
while frames["before"] < 5 and time.monotonic() < deadline:
    msg = bus.timed_pop_filtered(100 * Gst.MSECOND, Gst.MessageType.ERROR)
    if msg:
        print(msg.parse_error()); sys.exit(1)
state["seeked"] = True
ok = pipe.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH, target)
while frames["after"] < 10 and time.monotonic() < deadline:
    msg = bus.timed_pop_filtered(100 * Gst.MSECOND, Gst.MessageType.ERROR)
    if msg:
        print(msg.parse_error()); sys.exit(1)
pipe.set_state(Gst.State.NULL)
print(json.dumps({"seek": ok, "frames_after_seek": frames["after"]}))
"""


async def test_a_masked_tenants_playback_is_burnt_in(tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    async with playback_world(tmp_path, http=False) as world:
        await started(world)
        police = world.token("police", "investigator")
        start = iso(world.recent + timedelta(seconds=1))
        url = world.gw.url(f"cam2?token={police}&purpose=incident-7&start={start}")
        out = tmp_path / "masked.mp4"
        p = await procs(
            [FFMPEG, "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-frames:v", "25",
             "-c", "copy", "-y", str(out)]
        )  # fmt: skip
        assert await p.wait(90) == 0, p.text
        masked = luma_frames(out, 25)
        original = luma_frames(world.index.root / "cam2-recent.mp4", 250)
        assert len(masked) >= 20
        h, w = masked[0].shape
        zone = rasterize((Zone("home", ZONE),), w, h)
        ys, xs = np.nonzero(zone)
        inner = np.zeros_like(zone)
        inner[ys.min() + 4 : ys.max() - 4, xs.min() + 4 : xs.max() - 4] = True
        for frame in masked[2:]:
            assert float(frame[inner].max()) <= 24.0  # dark inside the zone
            best = max(psnr(o[~zone], frame[~zone]) for o in original)
            assert best >= 30.0  # and the recording's own picture outside it
        assert float(original[30][inner].mean()) > 40.0


async def test_hostile_playback_requests_get_4xx_while_a_playback_plays_on(tmp_path: Path) -> None:
    async with playback_world(tmp_path, http=False) as world:
        await started(world)
        token = world.token("council", "operator")
        viewer = await OnvifProbe.connect("127.0.0.1", world.gw.port)
        try:
            assert await viewer.play(f"cam1?token={token}&start={iso(world.recent)}") == 200
            await wait_for(lambda: len(viewer.exts) > 10, 10, what="the viewer playing")
            cases = [
                (f"cam1?token={token}&start=yesterday", 400),
                (f"cam1?token={token}&start={iso(world.recent)}&duration=-5", 400),
                (f"cam1?token={token}&start={iso(world.recent)}&end={iso(world.old)}", 400),
                (f"cam1?token={token}&start=2026-12-01T10:15:00", 400),  # no offset
                (f"nope?token={token}&start={iso(world.recent)}", 404),
                # Nothing recorded within a day of it: 404.
                (f"cam1?token={token}&start={iso(world.recent - timedelta(days=9))}", 404),
            ]
            for path, status in cases:
                probe = await Probe.connect("127.0.0.1", world.gw.port)
                try:
                    assert await probe.play(path) == status, path
                finally:
                    await probe.close()
            hostile = await Probe.connect("127.0.0.1", world.gw.port)
            try:
                base = (
                    f"rtsp://127.0.0.1:{world.gw.port}/cam1?token={token}&start={iso(world.recent)}"
                )
                assert (await hostile.request("DESCRIBE", base)).status == 200
                transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
                r = await hostile.request("SETUP", f"{base.split('?')[0]}/trackID=0", (transport,))
                assert r.status == 200
                for headers, status in (
                    ((("Range", "clock=99999999T999999Z-"),), 400),
                    ((("Range", "clock=20261201T101500Z-20261201T101400Z"),), 457),
                    ((("Scale", "1e308"),), 400),
                    ((("Frames", "intra/" + "9" * 40),), 400),
                    ((("Rate-Control", "sometimes"),), 400),
                    ((("Require", "x" * 300),), 400),
                ):
                    got = await hostile.request("PLAY", base.split("?")[0], headers)
                    assert got.status == status, (headers, got.status)
            finally:
                await hostile.close()
            seen = len(viewer.exts)
            await wait_for(lambda: len(viewer.exts) > seen + 10, 10, what="the viewer playing on")
        finally:
            await viewer.close()
