"""A playback session's state and pacing, sans-I/O: what the client asked for (the last PLAY's
position, Scale, Frames and Rate-Control), where the session is in the recording, and when
each recorded access unit is due. The server's code feeds it events and ``now`` and does what
the answers say; nothing here reads a clock, a file or a socket.

States (the transitions are one table, :data:`TRANSITIONS`)::

    READY --play--> PLAYING --pause--> PAUSED --play--> PLAYING
    PLAYING --end--> ENDED (the range's end or the recording's)   ENDED --play--> PLAYING
    any --teardown--> CLOSED

A PLAY that names a position (a clock or npt Range, or the URL's start on the first PLAY) is a
seek there; a PLAY without one resumes from the last unit sent. Either way the pacing is
re-anchored and the first unit sent is the key frame at or before that instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.protocols.rtsp_replay import Frames, FramesMode, ReplayRequest, choose_scale

__all__ = [
    "SUPPORTED_SCALES",
    "TRANSITIONS",
    "Event",
    "Pacer",
    "PlaybackPosition",
    "PlaybackState",
    "StateError",
]

#: Forward speeds served; a Scale between them is answered with the nearest (RFC 2326 §12.34).
SUPPORTED_SCALES = (1.0, 2.0, 4.0)
# A unit is never due further ahead than this after the previous one (a gap in the recording
# is skipped, not waited through; ONVIF's D flag tells the client).
MAX_WAIT = 1.0


class PlaybackState(StrEnum):
    READY = "ready"
    PLAYING = "playing"
    PAUSED = "paused"
    ENDED = "ended"
    CLOSED = "closed"


class Event(StrEnum):
    PLAY = "play"
    PAUSE = "pause"
    END = "end"
    TEARDOWN = "teardown"


class StateError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_S, _E = PlaybackState, Event
TRANSITIONS: Mapping[PlaybackState, Mapping[Event, PlaybackState]] = {
    _S.READY: {_E.PLAY: _S.PLAYING, _E.PAUSE: _S.READY, _E.TEARDOWN: _S.CLOSED},
    _S.PLAYING: {
        _E.PLAY: _S.PLAYING,  # a PLAY while playing seeks (ONVIF allows it without PAUSE)
        _E.PAUSE: _S.PAUSED,
        _E.END: _S.ENDED,
        _E.TEARDOWN: _S.CLOSED,
    },
    _S.PAUSED: {_E.PLAY: _S.PLAYING, _E.PAUSE: _S.PAUSED, _E.TEARDOWN: _S.CLOSED},
    _S.ENDED: {_E.PLAY: _S.PLAYING, _E.PAUSE: _S.ENDED, _E.TEARDOWN: _S.CLOSED},
    _S.CLOSED: {},
}


@dataclass(frozen=True, slots=True)
class PlaybackPosition:
    """Where and how one PLAY plays: from ``start`` (the key frame at or before it goes first)
    to ``end``; ``generation`` rises with every seek so stale units are recognised."""

    start: datetime
    end: datetime | None
    scale: float
    frames: Frames
    rate_control: bool
    generation: int
    cseq: int = 0


@dataclass
class Pacer:
    """The session's state, position and pacing clock."""

    origin: datetime  # the first PLAY's start: npt ranges count from here
    end: datetime | None = None  # the URL's end, if it named one
    state: PlaybackState = PlaybackState.READY
    position: PlaybackPosition | None = None
    # The capture time of the last unit sent: a resume continues after it.
    last_sent: datetime | None = None
    # Pacing anchor: the capture time played at monotonic ``_anchor_mono``.
    _anchor_capture: datetime | None = field(default=None, repr=False)
    _anchor_mono: float = 0.0
    _last_due: float = 0.0
    _last_intra: datetime | None = None
    generation: int = 0

    def apply(self, event: Event) -> PlaybackState:
        after = TRANSITIONS[self.state].get(event)
        if after is None:
            raise StateError(455, f"{event.value} not valid while {self.state.value}")
        self.state = after
        return after

    def play(self, req: ReplayRequest, now: float, cseq: int = 0) -> PlaybackPosition:
        """A PLAY: seek (it names a position) or resume, with its Scale and Frames."""
        if TRANSITIONS[self.state].get(Event.PLAY) is None:
            raise StateError(455, f"PLAY not valid while {self.state.value}")
        if req.reverse:
            raise StateError(456, "reverse playback is not supported; use a positive Scale")
        scale = choose_scale(req.scale, SUPPORTED_SCALES)
        if req.start is not None:
            start = req.start
        elif req.npt_start is not None:
            start = self.origin + timedelta(seconds=req.npt_start)
        elif self.position is None or self.last_sent is None:
            start = self.origin if self.position is None else self.position.start
        else:
            start = self.last_sent
        end = req.end
        if end is None and req.npt_end is not None:
            end = self.origin + timedelta(seconds=req.npt_end)
        if end is None:
            end = self.end if self.position is None else self.position.end
        if end is not None and end <= start:
            raise StateError(457, "the range ends before it starts")
        # Every PLAY starts at a key frame: a resume repeats what it paused in since the last
        # key frame rather than leaving the player without a reference picture.
        self.generation += 1
        self.last_sent = None
        frames = req.frames
        if scale > 1 and frames.mode is FramesMode.ALL and req.onvif and not req.rate_control:
            frames = Frames(FramesMode.INTRA)  # ONVIF fast forward without pacing: key frames
        self.position = PlaybackPosition(
            start, end, scale, frames, req.rate_control, self.generation, cseq & 0xFF
        )
        self._anchor_capture = None
        self._last_intra = None
        self.apply(Event.PLAY)
        self._last_due = now
        return self.position

    def pause(self) -> None:
        self.apply(Event.PAUSE)
        self._anchor_capture = None

    def ended(self) -> None:
        if self.state is PlaybackState.PLAYING:
            self.apply(Event.END)

    def teardown(self) -> None:
        self.apply(Event.TEARDOWN)

    def wants(self, captured: datetime, keyframe: bool) -> bool:
        """Whether this unit is sent at all (Frames: intra keeps key frames, at most one per
        interval of recording)."""
        pos = self.position
        if pos is None:
            return False
        if pos.end is not None and captured >= pos.end:
            return False
        if pos.frames.mode is not FramesMode.INTRA:
            return True
        if not keyframe:
            return False
        if pos.frames.interval_ms and self._last_intra is not None:
            if captured - self._last_intra < timedelta(milliseconds=pos.frames.interval_ms):
                return False
        return True

    def past_end(self, captured: datetime) -> bool:
        pos = self.position
        return pos is not None and pos.end is not None and captured >= pos.end

    def due(self, captured: datetime, now: float) -> float:
        """The monotonic time to send a unit captured at ``captured`` (``now`` or earlier: at
        once). The first unit after a PLAY anchors the clock; a jump forward of the recording
        (a gap) re-anchors after at most :data:`MAX_WAIT`."""
        pos = self.position
        if pos is None or not pos.rate_control:
            return now
        if self._anchor_capture is None:
            self._anchor_capture, self._anchor_mono = captured, now
            return now
        at = self._anchor_mono + (captured - self._anchor_capture).total_seconds() / pos.scale
        if at < self._last_due - MAX_WAIT or at > self._last_due + MAX_WAIT:
            # A gap or a step back in the recording: carry on from the last unit's time.
            self._anchor_capture, self._anchor_mono = captured, self._last_due
            at = self._last_due
        return at

    def sent(self, captured: datetime, due: float, keyframe: bool) -> None:
        self.last_sent = captured
        self._last_due = max(self._last_due, due)
        if keyframe:
            self._last_intra = captured
