"""Many RTSP viewers from one process, for tests and benchmarks that must keep the clients' work
off the gateway's event loop:

    python tests/rtsp_load.py HOST PORT COUNT URL_PATH [URL_PATH ...]

Starts COUNT sessions (DESCRIBE, SETUP, PLAY over TCP interleaved), ``CONCURRENCY`` at a time,
cycling through the given paths (which carry their own ``?token=``), prints ``playing N`` with
the statuses that were not 200 once all are answered, and holds the sessions until its stdin
closes."""

from __future__ import annotations

import asyncio
import collections
import sys

from rtsp_probe import Probe

CONCURRENCY = 20


async def main(host: str, port: int, count: int, paths: list[str]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)
    probes: list[Probe] = []
    failures: collections.Counter[int] = collections.Counter()

    async def one(i: int) -> None:
        async with gate:
            probe = await Probe.connect(host, port)
            probes.append(probe)
            status = await probe.play(paths[i % len(paths)], timeout=30)
            if status != 200:
                failures[status] += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    print(f"playing {count - sum(failures.values())} failed {dict(failures)}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for probe in probes:
        await probe.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))
