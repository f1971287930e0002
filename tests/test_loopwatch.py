"""The loop watch a soak reads from /metrics: a stall of the event loop is seen, once per read."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time

import pytest
from whep_client import wait_until

from gateway.loopwatch import LoopWatch, where

HAS_SCHEDSTAT = os.path.exists(f"/proc/self/task/{threading.get_native_id()}/schedstat")


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


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # the stall the sampler must name: this function, in this file


async def test_a_stall_is_named_with_the_code_that_held_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.loopwatch")
    watch = LoopWatch(interval=0.02, name_over=0.1)
    watch.start()
    try:
        await wait_until(lambda: watch.stats.ticks >= 2, 10, "the watch to tick")
        _hold_the_loop(0.05)  # under name_over: a lag, but not named or logged
        await wait_until(lambda: watch.stats.ticks >= 4, 10, "the watch to tick again")
        assert watch.stats.stalls_named == 0 and not caplog.records
        _hold_the_loop(0.5)
        await wait_until(lambda: watch.stats.stalls_named == 1, 10, "the stall to be named")
    finally:
        await watch.stop()
    assert watch._thread is None and watch._task is None
    assert watch.stats.worst_where.startswith("tests/test_loopwatch.py:"), watch.stats.worst_where
    assert "_hold_the_loop" in watch.stats.worst_where, watch.stats.worst_where
    [record] = [r for r in caplog.records if r.name == "gateway.loopwatch"]
    line = record.getMessage()
    assert line.startswith("event loop held "), line
    assert "_hold_the_loop" in line and "(worst yet)" in line, line
    if HAS_SCHEDSTAT:
        # Sleeping is neither running nor waiting for a CPU: both stay well under the stall.
        m = re.search(r"of its last (\d+) ms .* was blocked \(GIL, a lock, I/O\) (\d+) ms", line)
        assert m is not None, line
        assert int(m[2]) >= int(m[1]) // 2, line  # asleep: blocked, not running or queued


def test_a_stack_reads_innermost_first_with_project_frames_only() -> None:
    def inner() -> str:
        return where(sys._getframe())

    text = inner()
    assert text.startswith("tests/test_loopwatch.py:"), text
    assert " inner" in text.split(" < ")[0], text
