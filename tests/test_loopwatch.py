"""The loop watch a soak reads from /metrics: a stall of the event loop is seen, once per read."""

from __future__ import annotations

import time

from whep_client import wait_until

from gateway.loopwatch import LoopWatch


def _stall(seconds: float) -> None:
    time.sleep(seconds)  # the stall under test: blocks the loop it is called from


async def test_a_blocked_loop_shows_as_lag_since_start_and_since_the_last_read() -> None:
    watch = LoopWatch(interval=0.02)
    watch.start()
    try:
        await wait_until(lambda: watch.stats.ticks >= 2, 10, "the watch to tick")
        watch.read()
        _stall(0.3)
        await wait_until(lambda: watch.stats.window_lag > 0, 10, "the stall to be noted")
        worst, window = watch.read()
        assert window >= 0.25 and worst >= 0.25
        # A read starts the next window afresh; the worst since start stays.
        assert watch.stats.window_lag == 0.0 and watch.stats.worst_lag == worst
        assert watch.tasks() >= 2  # this test and the ticker
    finally:
        await watch.stop()
    assert watch._task is None
