"""Pull ingest: a pulled camera's loop stops when its owner says so, whatever it is doing."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from pathlib import Path

from conftest import free_port, free_udp_pair, wait_for

from gateway.sources.ingest import PullIngest
from gateway.stream.hub import PathStream


async def test_a_pull_retrying_a_refused_camera_stops_whenever_it_is_cancelled():
    # Nothing listens on this port: every attempt fails at once and the loop retries quickly.
    # Cancelling at random moments hits the instant a refused connect completes; Python 3.11's
    # wait_for turned such a cancel into the connect's error and the loop retried for ever.
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    rng = random.Random(9)
    for attempt in range(200):
        ingest = PullIngest(PathStream("cam"), url, backoff_initial=0.0005, backoff_max=0.001)
        task = asyncio.get_running_loop().create_task(ingest.run())
        await asyncio.sleep(rng.uniform(0.0, 0.02))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        assert done, f"attempt {attempt}: the pull loop outlived its cancel ({ingest.failures})"
        assert task.cancelled()


async def test_sigterm_while_a_pull_source_is_unreachable_exits_promptly(tmp_path: Path, procs):
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
data_dir = "var"
[rtsp]
host = "127.0.0.1"
port = {free_port()}
rtp_port = {free_udp_pair()}
[http]
host = "127.0.0.1"
port = {free_port()}
[[cameras]]
id = "street"
source = "rtsp://127.0.0.1:{free_port()}/street"
"""
    )
    serve = await procs([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)])
    await wait_for(
        lambda: serve.text.count("source failed") >= 2 or serve.proc.returncode is not None,
        20,
        what="the pull to be retrying",
    )
    assert serve.proc.returncode is None, serve.text
    sent = time.monotonic()
    serve.kill(signal.SIGTERM)
    assert await serve.wait(10) == 0, serve.text
    assert time.monotonic() - sent < 3.0, serve.text
    assert "did not finish" not in serve.text
