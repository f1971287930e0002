"""How the gateway hands freed memory back to the system (glibc only; elsewhere nothing is done).

The hour soak (BENCHMARKS.md, issue #9) found no leak: Python's objects and malloc's in-use heap
stay flat, yet RSS rose in steps at publisher restarts. Each restart's transient (a burst of
frames to every reader, queued per connection while the readers catch up; the masked variants'
codecs) raises glibc's high-water mark, and glibc keeps what is freed below it resident. Two
settings of glibc's allocator bound that:

- ``mmap_threshold``: allocations from this size up get a mapping of their own, returned to the
  system on free. glibc starts at 128 KiB but raises the threshold to the largest block freed
  (up to 32 MiB), so after the first restart a codec's or a queue's large buffers come from the
  heap and stay. Fixing it (mallopt M_MMAP_THRESHOLD) also stops that adjustment of the trim
  threshold, so a heap's free top is given back again.
- ``trim_interval``: every so often ``malloc_trim(0)`` gives back the free pages inside the
  heaps (what the threshold cannot: freed holes below live blocks). It runs in a worker
  thread, never on the event loop: it walks every arena, a few milliseconds for this heap.

Measured in the soak: without either +4.8 % RSS over an hour; see BENCHMARKS.md for with.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
import time
from typing import Annotated, Any

from pydantic import Field
from pydantic.dataclasses import dataclass

from gateway.configtypes import STRICT
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's HEAP_MAX / 2 on 64-bit: mallopt refuses more
SLOW_TRIM = 0.05  # seconds: a trim this long is logged (the loop may have waited on it)


@dataclass(frozen=True, config=STRICT)
class MemoryConfig:
    """The ``[memory]`` config section."""

    # Bytes from which one allocation is its own mapping, given back on free. 0: glibc's
    # default, which adapts upwards and then keeps large freed buffers resident.
    mmap_threshold: Annotated[int, Field(ge=0, le=MAX_MMAP_THRESHOLD)] = 128 * 1024
    # Seconds between two malloc_trim(0) calls (in a worker thread). 0: never.
    trim_interval: Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False)] = 60.0


def glibc() -> Any | None:
    """The C library when it is glibc (the only one whose allocator these settings are for)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        for name in ("gnu_get_libc_version", "mallopt", "malloc_trim"):
            getattr(libc, name)  # musl and the others have no gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    return libc


class MemoryPolicy:
    """Owned by the process's Gateway: ``start`` on its loop applies the threshold and starts
    the trimming; ``stop`` cancels and awaits it."""

    def __init__(self, config: MemoryConfig, libc: Any | None = None) -> None:
        self.config = config
        self.libc = libc if libc is not None else glibc()
        self.threshold_applied = False
        self.trims = 0
        self.worst_trim = 0.0  # seconds
        self._task: asyncio.Task[None] | None = None

    def apply_threshold(self) -> bool:
        """Set M_MMAP_THRESHOLD; True when glibc took it (mallopt returns 1)."""
        if self.libc is None or not self.config.mmap_threshold:
            return False
        ok = bool(self.libc.mallopt(M_MMAP_THRESHOLD, self.config.mmap_threshold) == 1)
        if not ok:
            log.warning("mallopt(M_MMAP_THRESHOLD, %d) refused", self.config.mmap_threshold)
        self.threshold_applied = ok
        return ok

    def trim(self) -> None:
        """One malloc_trim(0): blocking, for a worker thread. It holds each arena's lock while
        it walks it, so a thread that allocates meanwhile (the event loop's) waits: timed."""
        if self.libc is not None:
            t = time.monotonic()
            self.libc.malloc_trim(ctypes.c_size_t(0))
            took = time.monotonic() - t
            self.trims += 1
            self.worst_trim = max(self.worst_trim, took)
            (log.warning if took > SLOW_TRIM else log.debug)("malloc_trim took %.0f ms", took * 1e3)

    def start(self) -> None:
        self.apply_threshold()
        if self.libc is not None and self.config.trim_interval and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="malloc-trim")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.trim_interval)
            await asyncio.to_thread(self.trim)


def freeze_startup_heap() -> int:
    """Move every object alive once the gateway is up into the garbage collector's permanent
    generation, so later full collections leave them out; how many were frozen.

    A serving gateway holds ~220,000 objects from start-up (modules, config, the policy, the
    codecs' Python sides), and a full collection walked them all: 160-181 ms with the event loop
    held (timed with gc.callbacks in tests/test_loop_lag.py). They live as long as the process,
    so there is nothing to find among them. Objects made afterwards are collected as ever.
    Call once per process, after start-up (the collection here is the last full one of them)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
