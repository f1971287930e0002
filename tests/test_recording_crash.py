"""kill -9 of a recording `feedgate serve`, then a restart: the index and the files agree, at
most about a second is lost, the downtime is a gateway_restart gap, and the recording reads
across it."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from conftest import Proc, free_port, free_udp_pair, publish_argv, wait_for

from gateway.recording import fmp4
from gateway.recording.index import GapReason, RecordingIndex
from tenants.db import Database

CONFIG = """
data_dir = "var"
[rtsp]
host = "127.0.0.1"
port = {rtsp}
rtp_port = {rtp}
[http]
host = "127.0.0.1"
port = {http}
[grpc]
port = 0
[recording]
outage_after = 1.0
check_interval = 0.5
[[cameras]]
id = "cam1"
source = "push"
record = true
segment_seconds = 30.0
"""


def open_index(tmp_path: Path) -> RecordingIndex:
    return RecordingIndex(
        Database.open(f"sqlite:///{tmp_path}/var/feedgate.db"), tmp_path / "var" / "recordings"
    )


async def test_kill_9_while_recording_loses_at_most_a_fragment(
    tmp_path: Path, procs: Callable[[list[str]], Awaitable[Proc]]
) -> None:
    rtsp = free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(CONFIG.format(rtsp=rtsp, rtp=free_udp_pair(), http=free_port()))
    serve = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)]
    url = f"rtsp://127.0.0.1:{rtsp}/cam1"
    gateway = await procs(serve)
    await wait_for(lambda: "feedgate listening" in gateway.text, 60, what="the gateway")
    index = open_index(tmp_path)
    camera = await procs(publish_argv(url))

    def fragments() -> int:
        rows = index.db.query("SELECT COUNT(*) FROM recording_fragments")
        return int(rows[0][0])

    await wait_for(lambda: fragments() >= 4, 40, what="four fragments indexed")
    gateway.kill(signal.SIGKILL)
    killed_at = time.time()
    await gateway.wait()
    camera.kill()
    await camera.wait()
    crashed = index.open_segments()
    assert len(crashed) == 1  # it was being written
    torn = index.file(crashed[0])

    gateway = await procs(serve)
    await wait_for(lambda: index.open_segments() != crashed, 30, what="reconciliation")
    await wait_for(lambda: "feedgate listening" in gateway.text, 60, what="the gateway again")
    after = index.segment(crashed[0].id)
    assert after is not None and after.closed
    lost = killed_at - after.end.timestamp()
    # What was lost: the fragment being built (at most 1 s of media) and the last packets in
    # flight; the kill's own timing on a loaded machine adds a little.
    print(f"kill -9: {lost:.2f} s of media lost")
    assert lost < 1.6, f"{lost:.2f} s lost"
    data = torn.read_bytes()
    facts = fmp4.scan(data)
    assert facts.sound_length == len(data) == after.bytes
    assert [(f.offset, f.length) for f in index.fragments(after.id)] == [
        (b.offset, b.length) for b, _m in facts.fragments
    ]

    camera = await procs(publish_argv(url))
    await wait_for(lambda: len(index.segments("cam1")) >= 2 and index.gaps("cam1") != [], 40,
                   what="recording again after the restart")  # fmt: skip
    await wait_for(lambda: len(index.fragments(index.segments("cam1")[-1].id)) >= 2, 40,
                   what="fragments after the restart")  # fmt: skip
    gap = index.gaps("cam1")[0]
    assert gap.reason is GapReason.GATEWAY_RESTART and gap.start == after.end
    new = index.segments("cam1")[-1]
    assert gap.end == new.start
    # Reading across the gap: from before it to after it, in order, every fragment whole.
    frags = index.fragments_from("cam1", after.end - (after.end - after.start) / 2, new.end)
    assert {f.segment for f in frags} == {after.id, new.id}
    assert [f.start for f in frags] == sorted(f.start for f in frags)
    for f in frags:
        seg = index.segment(f.segment)
        assert seg is not None
        with index.file(seg).open("rb") as fh:
            fh.seek(f.offset)
            chunk = fh.read(f.length)
        assert [k for k, *_ in fmp4.boxes(chunk)] == [b"moof", b"mdat"]
    assert len(index.spans("cam1", after.start, new.end)) == 2
    camera.kill()
    gateway.kill(signal.SIGTERM)
    assert await gateway.wait(30) == 0
