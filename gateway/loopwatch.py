"""How late the event loop runs, and how many tasks it holds: what a long soak watches for.

A ticker sleeps a fixed interval and records how much later than asked it woke. The worst lag
since start and since the last read (a scrape) are kept, so a stall between two scrapes is
seen even when it is shorter than the scrape interval.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from gateway.tasks import cancel_and_wait


@dataclass
class LoopStats:
    worst_lag: float = 0.0  # seconds, since start
    window_lag: float = 0.0  # seconds, since the last read
    ticks: int = 0


class LoopWatch:
    """Owned by the process's Gateway: ``start`` on its loop, ``stop`` cancels and awaits."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.stats = LoopStats()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def read(self) -> tuple[float, float]:
        """(worst lag since start, worst lag since the previous read), seconds."""
        window, self.stats.window_lag = self.stats.window_lag, 0.0
        return self.stats.worst_lag, window

    def note(self, lag: float) -> None:
        s = self.stats
        s.ticks += 1
        s.window_lag = max(s.window_lag, lag)
        s.worst_lag = max(s.worst_lag, lag)

    @staticmethod
    def tasks() -> int:
        return len(asyncio.all_tasks())

    async def _run(self) -> None:
        while True:
            asked = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            self.note(max(0.0, time.monotonic() - asked))
