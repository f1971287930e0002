"""GStreamer's rtspsrc in ONVIF mode plays a recording with sound (issue #13 scope 2,
playaudio): it gets both pads, a video one and an audio one, decodes pictures (avdec_h264) and
sound (avdec_aac) from the recorded range, then seeks by clock (a PLAY with ``Range: clock=``)
and decodes both again from there."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from test_playback_audio import recorded

from gateway.protocols.rtsp_replay import format_clock

GST_PYTHON = "/usr/bin/python3"
EPOCH_1900 = datetime(1900, 1, 1, tzinfo=UTC)

pytestmark = pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="needs GStreamer")


async def test_rtspsrc_gets_both_pads_and_decodes_both_across_a_clock_seek(
    tmp_path: Path, procs: Any
) -> None:
    async with recorded(tmp_path, procs, segments=4) as rec:
        start = rec.closed[0].start + timedelta(seconds=0.2)
        target = rec.closed[2].start + timedelta(seconds=1.4)
        playback = rec.gw.gateway.rtsp.playback
        ranges: list[list[str]] = []  # each session's PLAY ranges, kept as it ends
        ended = playback.ended

        def keep(session: Any) -> None:
            pb = playback.sessions.get(session.id)
            if pb is not None:
                ranges.append(list(pb.ranges))
            ended(session)

        playback.ended = keep
        script = tmp_path / "both.py"
        script.write_text(GST_BOTH)
        url = rec.url(start)
        ns = int((target - EPOCH_1900).total_seconds() * 1e9)
        proc = await asyncio.create_subprocess_exec(
            GST_PYTHON, str(script), url, str(ns),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 100)
        text = out.decode()
        assert proc.returncode == 0, text
        result = json.loads(text.strip().splitlines()[-1])
        assert sorted(result["pads"]) == ["audio", "video"], text
        before, after = result["before"], result["after"]
        assert before["video"] >= 5 and before["audio"] >= 5, text
        # After the seek: pictures and sound decoded again (a second of each at least).
        assert after["video"] >= 25 and after["audio"] >= 40, text
        assert result["seek"], text
        # Its seek was a PLAY with a clock Range at the target, after the first PLAY's.
        await wait_for(lambda: bool(ranges), 10, what="its session to end")
        (played,) = ranges
        assert len(played) >= 2 and played[0].startswith(f"clock={format_clock(start)[:15]}")
        assert played[-1].startswith(f"clock={format_clock(target)[:15]}"), played


GST_BOTH = r"""
import json, sys, time
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
url, target = sys.argv[1], int(sys.argv[2])
pipe = Gst.Pipeline()
src = Gst.ElementFactory.make("rtspsrc")
src.set_property("location", url)
src.set_property("onvif-mode", True)
src.set_property("protocols", "tcp")
src.set_property("latency", 0)
pipe.add(src)
counts = {"before": {"video": 0, "audio": 0}, "after": {"video": 0, "audio": 0}}
state = {"seeked": False}
pads = []
BRANCH = {
    "video": ["rtph264depay", "h264parse", "avdec_h264"],
    "audio": ["rtpmp4gdepay", "aacparse", "avdec_aac"],
}
def on_pad(element, pad):
    caps = pad.get_current_caps() or pad.query_caps(None)
    media = caps.get_structure(0).get_string("media")
    if media not in BRANCH or media in pads:
        return
    pads.append(media)
    chain = [Gst.ElementFactory.make(n) for n in BRANCH[media]]
    sink = Gst.ElementFactory.make("fakesink")
    sink.set_property("signal-handoffs", True)
    sink.set_property("sync", False)
    def handoff(s, buf, p, media=media):
        counts["after" if state["seeked"] else "before"][media] += 1
    sink.connect("handoff", handoff)
    for e in [*chain, sink]:
        pipe.add(e)
        e.sync_state_with_parent()
    for a, b in zip([*chain], [*chain[1:], sink]):
        a.link(b)
    pad.link(chain[0].get_static_pad("sink"))
src.connect("pad-added", on_pad)
pipe.set_state(Gst.State.PLAYING)
bus = pipe.get_bus()
deadline = time.monotonic() + 80
def pump(until):
    while not until() and time.monotonic() < deadline:
        msg = bus.timed_pop_filtered(100 * Gst.MSECOND, Gst.MessageType.ERROR)
        if msg:
            print(msg.parse_error()); sys.exit(1)
pump(lambda: min(counts["before"].values()) >= 5)
state["seeked"] = True
ok = pipe.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH, target)
pump(lambda: counts["after"]["video"] >= 25 and counts["after"]["audio"] >= 40)
pipe.set_state(Gst.State.NULL)
print(json.dumps({"seek": ok, "pads": pads, **counts}))
"""
