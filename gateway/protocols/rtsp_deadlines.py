"""Sans-I/O deadlines for one RTSP connection: how long a peer may take over a request's head,
over its body, and before its first (or next) request while it holds no session.

A slowloris peer that trickles a request line byte by byte, one that announces a
``Content-Length`` and stalls, and one that connects and says nothing each tie up a socket
for as long as the server lets them; these three bounds close them. A connection with a
session is bounded by the session's own timeout instead, so a viewer that plays for hours and
sends only keep-alives is never cut off here, and neither is a publisher whose interleaved
frames straddle reads on a slow uplink (its media is its session's proof of life).

A connection whose session its source ended (a codec change: gateway.rtsp.goodbye) holds no
session but is still owed its wind-down: the client's PAUSE and TEARDOWN come only after the end
of stream has passed through its jitter buffer and pipeline, seconds later on a loaded machine.
It gets the session's timeout for them, counted from the session's end and not renewed by its
keep-alives; once it has said TEARDOWN it is idle again.

The asyncio layer reports what the connection is doing after every read and every handled
request (:meth:`ConnectionDeadlines.observe`), arms one timer at :meth:`deadline`, and when
it fires asks :meth:`expired`. Times are monotonic seconds passed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.protocols.rtsp import Pending

__all__ = ["ConnectionDeadlines", "DeadlineLimits", "Expiry"]


class Expiry(StrEnum):
    """Which bound a connection overran (the words go into the log line)."""

    HEAD = "request head"
    BODY = "request body"
    IDLE = "idle without a session"
    WIND_DOWN = "winding down a session its source ended"


@dataclass(frozen=True)
class DeadlineLimits:
    head: float  # first byte of a message -> its blank line (or, sessionless, a '$' frame's end)
    body: float  # end of the head -> end of the Content-Length body
    idle: float  # nothing pending, nothing being served, no session -> the next request
    # a session ended by its source -> the client's TEARDOWN of it (the session timeout)
    wind_down: float = 60.0


class ConnectionDeadlines:
    def __init__(self, limits: DeadlineLimits, now: float) -> None:
        self.limits = limits
        # The bound that runs now and since when; a fresh connection waits for its first request.
        self._running: Expiry | None = Expiry.IDLE
        self._since = now
        self._winding_since: float | None = None  # when its last ended session ended

    def observe(
        self,
        pending: Pending | None,
        *,
        has_session: bool,
        busy: bool,
        now: float,
        completed: bool = False,
        winding_down: bool = False,
    ) -> None:
        """What the connection is doing now: ``pending`` from the parser; ``has_session`` when
        it holds a session; ``busy`` while a request is queued or being served (a DESCRIBE
        waiting for a camera is our delay, not the peer's); ``completed`` when the bytes just
        read finished at least one message, so a partial one after it is a new message with a
        bound of its own; ``winding_down`` while a session its source ended awaits the
        client's TEARDOWN."""
        if not winding_down:
            self._winding_since = None
        elif self._winding_since is None:
            self._winding_since = now
        running: Expiry | None
        if pending is Pending.BODY:
            running = Expiry.BODY
        elif pending is Pending.MESSAGE or (pending is Pending.FRAME and not has_session):
            running = Expiry.HEAD
        elif pending is None and not (has_session or busy):
            running = Expiry.WIND_DOWN if winding_down else Expiry.IDLE
        else:
            running = None
        if running is not self._running or (completed and running is not None):
            self._running = running
            self._since = now

    def _limit(self, running: Expiry) -> float:
        if running is Expiry.HEAD:
            return self.limits.head
        if running is Expiry.BODY:
            return self.limits.body
        return self.limits.idle

    def deadline(self) -> float | None:
        """When the running bound runs out, or None while none runs (a session is open, or a
        request is being served)."""
        if self._running is None:
            return None
        if self._running is Expiry.WIND_DOWN and self._winding_since is not None:
            return self._winding_since + self.limits.wind_down
        return self._since + self._limit(self._running)

    def expired(self, now: float) -> Expiry | None:
        """The bound the connection has overrun at ``now``, if any."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        return self._running
