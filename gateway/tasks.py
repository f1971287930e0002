"""Task ownership helpers."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)


# How long a cancelled task may take to finish before it is cancelled again (see below).
RECANCEL_AFTER = 5.0


async def cancel_and_wait(
    *tasks: asyncio.Task[Any] | None, recancel_after: float = RECANCEL_AFTER
) -> None:
    """Cancel tasks we own and wait until they have finished.

    Unlike ``with suppress(CancelledError): await task``, this never swallows a cancellation
    aimed at the *caller*: asyncio.wait() does not raise the tasks' exceptions, so a
    CancelledError arriving here can only be our own, and it propagates.

    A task still running ``recancel_after`` seconds later is cancelled again (with a warning):
    Python 3.11's ``asyncio.wait_for``, which redis-py wraps around every socket write, returns
    normally when the cancellation lands just as the write completes, and a loop that carries
    on after it would otherwise be waited for forever (a cluster node's stop hung so).
    """
    pending = {t for t in tasks if t is not None and not t.done()}
    for t in pending:
        t.cancel()
    while pending:
        _done, pending = await asyncio.wait(pending, timeout=recancel_after)
        for t in pending:
            log.warning(
                "task %s still runs %.1fs after it was cancelled; cancelling it again",
                t.get_name(),
                recancel_after,
            )
            t.cancel()


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to stop and the request was lost.

    Call it once per round of a long-lived loop that survives errors: a cancellation that
    Python 3.11's ``asyncio.wait_for`` swallowed (inside redis-py, for one) leaves
    ``Task.cancelling()`` set, and the loop must end on it rather than run on forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# A shutdown that has not finished by then is stuck (a peer that will not let go, a wedged
# worker thread): exit anyway, loudly, rather than hold the ports forever.
SHUTDOWN_DEADLINE = 30.0


def arm_shutdown_watchdog(deadline: float = SHUTDOWN_DEADLINE) -> None:
    def force() -> None:
        log.error("shutdown did not finish in %.0fs; exiting now", deadline)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(deadline, force)
    timer.daemon = True
    timer.start()
