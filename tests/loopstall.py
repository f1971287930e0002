"""How long an asyncio event loop went without running, less the time its thread waited for a
CPU: the tests' measure of "never stalls the loop".

A stall is the oversleep of a short timer on the loop. On a shared machine other processes'
load delays every thread (seen: 54-68 ms oversleeps failing tests/test_tokens.py's flood test
6 times in 10 at load 14, with nothing of ours blocking); that is not the loop waiting for
anything of ours. So the time the loop's thread spent runnable but not running (its
scheduler run-queue delay, /proc/self/task/<tid>/schedstat) is taken off. What is left is the
loop's own work or a block (a synchronous fetch, a lock, a long callback): what the tests bound.
Where schedstat is missing the raw oversleep is all there is."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field


def run_delay(tid: int) -> float:
    """Seconds thread ``tid`` of this process has spent waiting on a run queue."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class StallMonitor:
    """``async with StallMonitor() as m: ...`` then ``m.worst`` (seconds): the longest the loop
    oversleeps a ``period`` timer, less its thread's run-queue delay over that sleep."""

    period: float = 0.005
    worst: float = 0.0  # stall, less run-queue delay
    worst_raw: float = 0.0  # oversleep as measured
    samples: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def run(self) -> None:
        tid = threading.get_native_id()
        while True:
            t0, q0 = time.perf_counter(), run_delay(tid)
            await asyncio.sleep(self.period)
            over = time.perf_counter() - t0 - self.period
            queued = run_delay(tid) - q0
            self.samples += 1
            self.worst_raw = max(self.worst_raw, over)
            self.worst = max(self.worst, over - queued)

    async def __aenter__(self) -> StallMonitor:
        self._task = asyncio.create_task(self.run())
        await asyncio.sleep(0)  # its first tick is armed before the measured work starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def __str__(self) -> str:
        return (
            f"worst stall {self.worst * 1000:.1f} ms ({self.worst_raw * 1000:.1f} ms before "
            f"run-queue delay), {self.samples} samples"
        )
