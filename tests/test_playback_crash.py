"""kill -9 of `feedgate serve` while it records, then a restart on the same data: /list shows
the stretch it was down as a gap, /get cuts across it cleanly, and an ONVIF client plays back
across it, the first frame after it flagged as a discontinuity (issue #13 acceptance, faults)."""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import ClientSession
from conftest import Proc, free_port, free_udp_pair, publish_argv, wait_for
from export_fixtures import ffprobe
from test_playback_recorded import onvif_across
from test_playback_rtsp import iso


async def test_playback_across_a_kill_9(tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    rtsp, http = free_port(), free_port()
    cfg = tmp_path / "feedgate.toml"
    cfg.write_text(
        'data_dir = "var"\n'
        f'[rtsp]\nhost = "127.0.0.1"\nport = {rtsp}\nrtp_port = {free_udp_pair()}\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n[grpc]\nport = 0\n'
        "[recording]\noutage_after = 1.0\n"
        '[[cameras]]\nid = "cam1"\nsource = "push"\nrecord = true\nsegment_seconds = 2.0\n'
    )
    serve = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)]
    base = f"http://127.0.0.1:{http}"

    async def start() -> Proc:
        gateway = await procs(serve)
        await wait_for(lambda: "feedgate listening" in gateway.text, 30, what="the gateway")
        await procs(publish_argv(f"rtsp://127.0.0.1:{rtsp}/cam1", gop=25))
        return gateway

    async with ClientSession() as session:
        spans: list[dict[str, object]] = []

        async def listed(n: int, seconds: float) -> bool:
            async with session.get(f"{base}/list", params={"path": "cam1"}) as r:
                if r.status != 200:
                    return False
                spans[:] = json.loads(await r.read())
            return len(spans) >= n and float(spans[-1]["duration"]) >= seconds  # type: ignore[arg-type]

        async def until(n: int, seconds: float, what: str) -> None:
            import asyncio
            import time

            deadline = time.monotonic() + 60
            while not await listed(n, seconds):
                assert time.monotonic() < deadline, f"timed out waiting for {what}: {spans}"
                await asyncio.sleep(0.2)

        gateway = await start()
        await until(1, 4, "4 s recorded")
        gateway.kill(signal.SIGKILL)
        await gateway.wait(10)
        gateway = await start()
        await until(2, 3, "recording after the restart")
        before, after = spans[-2], spans[-1]
        end_before = datetime.fromisoformat(str(before["start"])) + timedelta(
            seconds=float(before["duration"])  # type: ignore[arg-type]
        )
        start_after = datetime.fromisoformat(str(after["start"]))
        # At most about a second is lost: the fragment being written when it was killed,
        # plus the restart itself.
        assert start_after > end_before
        # /get across the gap is one clean file.
        frm = end_before - timedelta(seconds=2)
        to = (start_after - frm).total_seconds() + 2
        async with session.get(
            f"{base}/get", params={"path": "cam1", "start": iso(frm), "duration": f"{to:.3f}"}
        ) as r:
            assert r.status == 200
            (tmp_path / "across.mp4").write_bytes(await r.read())
        got = ffprobe(tmp_path / "across.mp4")
        assert got.errors == "" and got.frames >= 80, got
    exts = await onvif_across(rtsp, end_before - timedelta(seconds=1), to - 1)
    times = [e.captured for e in exts]
    assert times == sorted(times) and times[0] < end_before and times[-1] >= start_after
    assert any(e.discontinuity and e.captured >= start_after - timedelta(seconds=0.1) for e in exts)
    gateway.kill(signal.SIGTERM)
