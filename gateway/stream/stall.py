"""Stall detection for one camera path: a source that stops sending media while it stays
connected (a frozen encoder, a camera whose sensor died) is noticed after a silence relative to
its own frame interval. Sans-I/O: the hub passes ``now``; events come back as values.

The silence allowed is ``max(stall_after, stall_frames x frame interval)``: a few seconds for an
ordinary camera, longer for one sending a frame every few seconds. The state table says what a
check or a packet does in each state; a stall lasts until media flows again, whether or not the
source reconnected meanwhile (one outage, not one per reconnect)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Stall", "StallDetector", "StallEvent", "StallState"]

_MAX_INTERVAL = 60.0  # a frame interval estimate is never believed beyond this


class StallState(Enum):
    IDLE = "idle"  # no source has sent media yet
    LIVE = "live"
    STALLED = "stalled"


class Stall(Enum):
    STARTED = "stalled"
    ENDED = "recovered"


@dataclass(frozen=True)
class StallEvent:
    kind: Stall
    silence: float  # seconds without media when it was noticed (STARTED) or ended (ENDED)


# (state, input) -> next state; "media" is a packet, "silent" a check past the threshold.
_TRANSITIONS: dict[tuple[StallState, str], StallState] = {
    (StallState.IDLE, "media"): StallState.LIVE,
    (StallState.LIVE, "media"): StallState.LIVE,
    (StallState.LIVE, "silent"): StallState.STALLED,
    (StallState.STALLED, "media"): StallState.LIVE,
    (StallState.STALLED, "silent"): StallState.STALLED,
    (StallState.IDLE, "silent"): StallState.IDLE,
}


class StallDetector:
    def __init__(self, *, stall_after: float = 3.0, stall_frames: int = 10) -> None:
        self.stall_after = stall_after
        self.stall_frames = stall_frames
        self.state = StallState.IDLE
        self.last_media: float | None = None
        self.frame_interval: float | None = None  # smoothed seconds between access units
        self.stalls = 0
        self.stalled_since: float | None = None
        self._last_frame: float | None = None

    def frame(self, now: float) -> None:
        """An access unit (or audio packet) arrived: measure the interval between them."""
        last = self._last_frame
        self._last_frame = now
        if last is None or now <= last:
            return
        gap = min(now - last, _MAX_INTERVAL)
        if self.stalled_since is not None and self.state is StallState.STALLED:
            return  # the silence itself is not a frame interval
        fi = self.frame_interval
        self.frame_interval = gap if fi is None else fi + (gap - fi) / 16

    def threshold(self) -> float:
        fi = self.frame_interval or 0.0
        return max(self.stall_after, self.stall_frames * fi)

    def media(self, now: float) -> StallEvent | None:
        """A packet arrived. Returns ENDED when it ends a stall."""
        before = self.state
        self.state = _TRANSITIONS[(before, "media")]
        self.last_media = now
        if before is StallState.STALLED:
            since = self.stalled_since if self.stalled_since is not None else now
            self.stalled_since = None
            self._last_frame = now
            return StallEvent(Stall.ENDED, now - since)
        return None

    def silence(self, now: float) -> float:
        return 0.0 if self.last_media is None else max(0.0, now - self.last_media)

    def check(self, now: float) -> StallEvent | None:
        """Called periodically. Returns STARTED when the silence crosses the threshold."""
        if self.state is not StallState.LIVE:
            return None
        silence = self.silence(now)
        if silence < self.threshold():
            return None
        self.state = _TRANSITIONS[(self.state, "silent")]
        self.stalls += 1
        self.stalled_since = self.last_media
        return StallEvent(Stall.STARTED, silence)

    def reset(self) -> None:
        """The path stopped on purpose (its source went away cleanly): not an outage."""
        if self.state is StallState.LIVE:
            self.state = StallState.IDLE
            self.last_media = None
            self._last_frame = None
