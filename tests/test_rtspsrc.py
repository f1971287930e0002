"""GStreamer's rtspsrc as a viewer, over TCP and UDP, many times at once (issue #9 finding 3).

The trial saw ``gst-launch-1.0 rtspsrc ... protocols=tcp ! rtph264depay ! h264parse !
avdec_h264 ! fakesink num-buffers=75`` decode every frame, then fail at teardown one run in two
to eight: its PAUSE got "Could not send message. (Received end-of-file)" and it exited 1. That
is a race, so each transport runs 20 clients in parallel, each of which must decode its frames,
PAUSE, TEARDOWN and exit 0, with no session ended by the server.

What it is: a race inside rtspsrc, not a close by the server. Under strace a failing client
sends PAUSE and reads the whole 200 off the socket, then reports "Received end-of-file" for that
PAUSE and for a TEARDOWN it never writes; no read returned 0, and the server counted no deadline,
kick or protocol error. GStreamer's own RTSP server (ops/bench/gst_rtsp_server.py) under the same
load, 20 rtspsrc clients at once, fails the same way: 4 of 160 runs over UDP (0 of 160 over TCP),
where feedgate failed 1 of 160 over UDP. So this test tolerates that one signature (all frames
decoded, then the end-of-file at PAUSE/TEARDOWN) in a few runs, and fails on anything else: a
client that did not decode to the end, a session the server ended by a deadline or a kick, or
a session left behind."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from conftest import gateway, publish_argv, publishing, wait_for  # noqa: F401

RUNS = 20
# rtspsrc's own teardown race (see above), also seen against GStreamer's RTSP server.
RTSPSRC_RACE = "Could not send message. (Received end-of-file)"

pytestmark = pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="needs GStreamer")


def _rtspsrc(url: str, protocol: str) -> list[str]:
    return ["gst-launch-1.0", "rtspsrc", f"location={url}", f"protocols={protocol}",
            "!", "rtph264depay", "!", "h264parse", "!", "avdec_h264",
            "!", "fakesink", "num-buffers=75"]  # fmt: skip


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
async def test_rtspsrc_plays_pauses_and_tears_down_cleanly(gateway, procs, protocol):  # noqa: F811
    await procs(publish_argv(gateway.url("cam1")))
    await publishing(gateway, "cam1")
    server = gateway.gateway.rtsp
    viewers = [await procs(_rtspsrc(gateway.url("cam1"), protocol)) for _ in range(RUNS)]
    codes = await asyncio.gather(*(v.wait(120) for v in viewers))
    failed = [v.text for v, rc in zip(viewers, codes, strict=True) if rc != 0]
    other = [text[-3000:] for text in failed if RTSPSRC_RACE not in text]
    assert not other, f"{len(other)} of {RUNS} failed otherwise:\n{other[0]}"
    assert len(failed) <= RUNS // 5, f"{len(failed)} of {RUNS} hit the rtspsrc teardown race"
    for v in viewers:
        assert "Got EOS from element" in v.text  # it decoded its 75 frames to the end
    # Each viewer's session ended by its TEARDOWN (the publisher's is left): none timed out or
    # was kicked.
    await wait_for(lambda: len(server.sessions) == 1, 10, what="every viewer's session to end")
    assert not any(k.startswith("deadline_") for k, n in server.counters.items() if n)
    assert gateway.hub.get("cam1").counters.readers_dropped == 0
