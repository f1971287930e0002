"""How long an asyncio event loop went without running, less the time it waited for a CPU: the
tests' measure of "never stalls the loop".

A stall is the oversleep of a short timer on the loop. On a shared machine other processes'
load delays every thread; that is not the loop waiting for anything of ours, so two waits for a
CPU are taken off each oversleep (from /proc/self/task/<tid>/schedstat, each thread's time
runnable but not running):

- the loop thread's own run-queue delay (seen: 54-68 ms oversleeps failing
  tests/test_tokens.py's flood test 6 times in 10 at load 14, with nothing of ours blocking);
- the longest run-queue delay of any other thread of this process over that sleep: a thread
  preempted while it holds the GIL keeps the loop waiting for the GIL until it runs again
  (seen: tests/test_loop_lag.py's 200 session starts, 25-76 ms left after the loop's own
  delay at load 14, each beside 80-600 ms queued on a database or executor thread; 8-14 ms left
  after this one).

What is left is the loop's own work or a block (a synchronous database call waiting on a lock
or a socket, a long callback): what the tests bound. A thread sleeping on a lock is not queued,
so a block behind a lock is never taken off. Where schedstat is missing the raw oversleep is
all there is."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from dataclasses import dataclass, field


def run_delay(tid: int | str) -> float:
    """Seconds thread ``tid`` of this process has spent waiting on a run queue."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def run_delays() -> dict[str, float]:
    """Every thread of this process: its run-queue delay so far (seconds)."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    return {tid: run_delay(tid) for tid in tids}


@dataclass
class StallMonitor:
    """``async with StallMonitor() as m: ...`` then ``m.worst`` (seconds): the longest the loop
    oversleeps a ``period`` timer, less the waits for a CPU described above."""

    period: float = 0.005
    worst: float = 0.0  # stall, less run-queue delays
    worst_raw: float = 0.0  # oversleep as measured
    worst_own: float = 0.0  # less only the loop thread's own run-queue delay
    samples: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def run(self) -> None:
        me = str(threading.get_native_id())
        while True:
            t0, q0 = time.perf_counter(), run_delays()
            await asyncio.sleep(self.period)
            over = time.perf_counter() - t0 - self.period
            q1 = run_delays()
            own = q1.get(me, 0.0) - q0.get(me, 0.0)
            others = max((q1[t] - q0[t] for t in q1 if t != me and t in q0), default=0.0)
            self.samples += 1
            self.worst_raw = max(self.worst_raw, over)
            self.worst_own = max(self.worst_own, over - own)
            self.worst = max(self.worst, over - own - others)

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
            f"worst stall {self.worst * 1000:.1f} ms ({self.worst_own * 1000:.1f} ms less only "
            f"the loop thread's run-queue delay, {self.worst_raw * 1000:.1f} ms raw), "
            f"{self.samples} samples"
        )
