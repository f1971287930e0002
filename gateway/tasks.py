"""Task ownership helpers."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel tasks we own and wait until they have finished.

    Unlike ``with suppress(CancelledError): await task``, this never swallows a cancellation
    aimed at the *caller*: asyncio.wait() does not raise the tasks' exceptions, so a
    CancelledError arriving here can only be our own, and it propagates.
    """
    live = [t for t in tasks if t is not None and not t.done()]
    for t in live:
        t.cancel()
    if live:
        await asyncio.wait(live)


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
