"""How late the event loop runs, and how many tasks it holds: what a long soak watches for.

A ticker sleeps a fixed interval and records how much later than asked it woke. The worst lag
since start and since the last read (a scrape) are kept, so a stall between two scrapes is
seen even when it is shorter than the scrape interval.

A lag alone does not say what held the loop. A sampler thread looks at the loop's thread
whenever the ticker is overdue by ``name_over`` and notes the code it is in (its innermost
frame and innermost project frames); when the stall ends it is logged once with the site seen
most and how the thread spent the stall (/proc schedstat: running, waiting for a CPU, or
neither: blocked in a system call or waiting for the GIL another thread holds). On a shared
machine "waiting for a CPU" is other processes' load, not ours. The worst stall's site stays
in ``stats.worst_where``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import FrameType

from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_PROJECT = ("/gateway/", "/tenants/", "/billing/")
# What a file name says before "asyncio/events.py" or "gateway/stream/hub.py".
_PREFIX = re.compile(
    r"^.*?/(?:site-packages|lib/python3\.\d+)/|^.*/(?=(?:gateway|tenants|billing|tests|ops)/)"
)
LOG_EVERY = 60.0  # seconds: at most one stall line this often, unless it is a new worst


@dataclass
class LoopStats:
    worst_lag: float = 0.0  # seconds, since start
    window_lag: float = 0.0  # seconds, since the last read
    ticks: int = 0
    worst_where: str = ""  # the code the loop was in during the worst named stall
    stalls_named: int = 0


def where(frame: FrameType | None) -> str:
    """A stack in one line: the innermost frame, then up to three innermost project frames."""
    parts: list[str] = []
    first = True
    while frame is not None and len(parts) < 4:
        name = frame.f_code.co_filename
        if first or any(p in name for p in _PROJECT):
            parts.append(f"{_PREFIX.sub('', name)}:{frame.f_lineno} {frame.f_code.co_name}")
        first = False
        frame = frame.f_back
    return " < ".join(parts)


def _schedstat(tid: int) -> tuple[int, int]:
    """(ns running, ns runnable but waiting for a CPU) of a thread; zeros without /proc."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            run, wait = f.read().split()[:2]
        return int(run), int(wait)
    except (OSError, ValueError):
        return 0, 0


class LoopWatch:
    """Owned by the process's Gateway: ``start`` on its loop, ``stop`` cancels and awaits."""

    def __init__(self, interval: float = 0.1, name_over: float = 0.1) -> None:
        self.interval = interval
        self.name_over = name_over  # a stall this long is named (0: never)
        self.stats = LoopStats()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_tick = time.monotonic()
        # The stall in progress, as the sampler saw it: sites, and schedstat at its start.
        self._sites: Counter[str] = Counter()
        self._sched0: tuple[int, int] | None = None
        self._sched0_at = 0.0
        self._logged_at = 0.0
        self._native_id = 0  # the loop thread's, for its schedstat

    def start(self) -> None:
        if self._task is None:
            self._last_tick = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-watch")
        if self._thread is None and self.name_over > 0:
            self._stop.clear()
            self._native_id = threading.get_native_id()
            self._thread = threading.Thread(
                target=self._sample,
                args=(threading.get_ident(),),
                name="loop-watch-sampler",
                daemon=True,
            )
            self._thread.start()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._thread is not None:
            self._stop.set()
            await asyncio.to_thread(self._thread.join, 5.0)
            self._thread = None

    def read(self) -> tuple[float, float]:
        """(worst lag since start, worst lag since the previous read), seconds."""
        window, self.stats.window_lag = self.stats.window_lag, 0.0
        return self.stats.worst_lag, window

    def note(self, lag: float) -> None:
        s = self.stats
        s.ticks += 1
        s.window_lag = max(s.window_lag, lag)
        new_worst = lag > s.worst_lag
        s.worst_lag = max(s.worst_lag, lag)
        sites, self._sites = self._sites, Counter()
        sched0, self._sched0 = self._sched0, None
        if not sites or lag < self.name_over:
            return
        site, seen = sites.most_common(1)[0]
        s.stalls_named += 1
        if new_worst:
            s.worst_where = site
        now = time.monotonic()
        if not new_worst and now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        how = ""
        if sched0 is not None and sched0 != (0, 0):
            run, wait = _schedstat(self._native_id)
            ran, waited = (run - sched0[0]) / 1e6, (wait - sched0[1]) / 1e6
            span = (now - self._sched0_at) * 1000
            blocked = max(0.0, span - ran - waited)
            how = (
                f"; of its last {span:.0f} ms the loop's thread ran {ran:.0f} ms, waited for a"
                f" CPU {waited:.0f} ms, was blocked (GIL, a lock, I/O) {blocked:.0f} ms"
            )
        log.warning(
            "event loop held %.0f ms%s; in %s (%d of %d samples)%s",
            lag * 1000,
            " (worst yet)" if new_worst else "",
            site,
            seen,
            sum(sites.values()),
            how,
        )

    @staticmethod
    def tasks() -> int:
        return len(asyncio.all_tasks())

    def _sample(self, ident: int) -> None:
        """The sampler thread: wakes every name_over / 2 and looks only when the loop is late."""
        period = self.name_over / 2
        while not self._stop.wait(period):
            late = time.monotonic() - self._last_tick - self.interval
            if late < self.name_over:
                continue
            frame = sys._current_frames().get(ident)
            if frame is None:
                continue
            if self._sched0 is None:
                self._sched0_at = time.monotonic()
                self._sched0 = _schedstat(self._native_id)
            self._sites[where(frame)] += 1
            del frame

    async def _run(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            asked = self._last_tick + self.interval
            await asyncio.sleep(self.interval)
            self.note(max(0.0, time.monotonic() - asked))
