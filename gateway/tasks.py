"""Task ownership helpers."""

from __future__ import annotations

import asyncio
from typing import Any


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
