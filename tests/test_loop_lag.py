"""No blocking I/O on the event loop (issue #11): 200 RTSP sessions start against the
PostgreSQL backend, with caps (a lease transaction per PLAY), audit and metering, while another
thread holds the database for 200 ms at a time as a busy gRPC worker would. The worst stall of
the gateway's event loop must stay under 20 ms.

A stall is measured as the oversleep of a 5 ms timer on the loop, less its waits for a CPU
(tests/loopstall.py): the loop thread's run-queue delay and the longest of any other thread of
the gateway's (one preempted while holding the GIL keeps the loop waiting). On a shared 2-core
machine other processes' load delays every thread, and that is not the loop waiting for
anything of ours; a synchronous database call waiting on the busy thread's lock is."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cluster_fixtures import cluster_keys
from conftest import make_config, publish_argv, publishing, running_gateway, wait_for
from loopstall import StallMonitor

from gateway.config import BillingConfig, CameraConfig, TenancyConfig

SESSIONS = 200
LIMIT_S = 0.020
HERE = Path(__file__).resolve().parent

SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[tenants]]
id = "police"
name = "Police"
kind = "police"
[[principals]]
id = "encoder"
tenant = "council"
name = "Encoder"
kind = "service"
roles = ["operator"]
digest_password = "enc"
[[principals]]
id = "vms"
tenant = "police"
name = "VMS"
kind = "service"
roles = ["viewer"]
[[cameras]]
id = "street"
owner = "council"
[[grants]]
id = "police-street"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live"]
max_concurrent_streams = 500
"""


def _hold_the_database(db: object, stop: threading.Event) -> None:
    """A control-plane thread that keeps taking the database's lock for 200 ms."""
    while not stop.is_set():
        with db.transaction():  # type: ignore[attr-defined]
            time.sleep(0.2)
        time.sleep(0.05)


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="needs Linux schedstat")
async def test_200_session_starts_never_stall_the_loop(tmp_path: Path, pg_url: str, procs):
    (tmp_path / "seed.toml").write_text(SEED)
    config = replace(
        make_config((CameraConfig(id="street"),), report_interval=1.0),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(tmp_path / "seed.toml"), database=pg_url),
        keys=cluster_keys(tmp_path / "keys"),  # a shared database needs the shared keys
        billing=BillingConfig(enabled=True),
    )
    async with running_gateway(config) as gw:
        await procs(publish_argv(f"rtsp://encoder:enc@127.0.0.1:{gw.port}/street"))
        await publishing(gw, "street")
        tenancy = gw.gateway.tenancy
        assert tenancy is not None and gw.gateway.live is not None
        # One token per viewer, as many VMSs each with their own: each is verified once.
        paths = [
            "street?token="
            + tenancy.issuer.issue(
                tenant="police", subject="vms", roles=["viewer"], ttl=timedelta(minutes=10)
            )
            for _ in range(SESSIONS)
        ]
        clients = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "rtsp_load.py"),
            "127.0.0.1",
            str(gw.port),
            str(SESSIONS),
            *paths,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": f"{HERE}:{os.environ.get('PYTHONPATH', '')}"},
        )
        # Every object made so far (the gateway's and the test harness's, ~220,000) is left out
        # of the garbage collector's full collections from here: one such collection fell in
        # the measured window in 8 of 10 single runs on this machine, 160-181 ms each
        # (gc.callbacks), which is the collector walking the start-up heap, not session starts
        # blocking the loop. Objects the session starts make are still collected, in the window.
        gc.freeze()
        # Measured from here: starting the client process is the test's own work.
        monitor = StallMonitor()
        watching = asyncio.get_running_loop().create_task(monitor.run())
        stop = threading.Event()
        holder = threading.Thread(target=_hold_the_database, args=(tenancy.db, stop))
        holder.start()
        try:
            assert clients.stdout is not None
            line = (await asyncio.wait_for(clients.stdout.readline(), 120)).decode()
            assert line.startswith(f"playing {SESSIONS} "), line
            await wait_for(
                lambda: len(gw.gateway.live.live) >= SESSIONS + 1,  # and the publisher
                30,
                what="every session admitted",
            )
            assert tenancy.caps.streams("police", "police-street") == SESSIONS
        finally:
            stop.set()
            await asyncio.to_thread(holder.join)
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            gc.unfreeze()  # the window is over: the rest of the run collects as usual
            if clients.stdin is not None:
                clients.stdin.close()
            await asyncio.wait_for(clients.wait(), 30)
    print(f"\nloop lag over {SESSIONS} session starts on PostgreSQL: {monitor}")
    assert monitor.samples > 100
    assert monitor.worst < LIMIT_S, f"event loop stalled: {monitor}"
