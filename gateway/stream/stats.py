"""What a path's video is, measured as it arrives: frame rate and bit rate over the last few
seconds (on the RTP clock, so network jitter does not count) and the length of the last
complete GOP. A masked variant starting later opens its encoder with these from its first
frame instead of guessing. Sans-I/O."""

from __future__ import annotations

from collections import deque

_TS_MOD = 1 << 32
_MIN_SPAN = 1.0  # seconds of video before a rate is believed


class VideoStats:
    def __init__(self, rate: int = 90000) -> None:
        self.rate = rate
        self.gop: int | None = None  # frames in the last complete GOP
        self.gops = 0  # complete GOPs seen (the first may have started before the encoder's)
        self._window: deque[tuple[int, int]] = deque(maxlen=256)  # (unwrapped ts, bytes)
        self._ts_last: int | None = None
        self._ts_ext = 0
        self._since_key: int | None = None

    def add(self, ts: int, nbytes: int, is_key: bool) -> None:
        """One access unit: its RTP timestamp, its size and whether it starts a GOP."""
        if self._ts_last is not None:
            delta = (ts - self._ts_last) % _TS_MOD
            if delta >= _TS_MOD // 2:
                delta -= _TS_MOD
            self._ts_ext += delta
        self._ts_last = ts
        self._window.append((self._ts_ext, nbytes))
        if is_key:
            if self._since_key:
                self.gop = self._since_key
                self.gops += 1
            self._since_key = 0
        if self._since_key is not None:
            self._since_key += 1

    def _span(self) -> float:
        if len(self._window) < 2:
            return 0.0
        return (self._window[-1][0] - self._window[0][0]) / self.rate

    @property
    def fps(self) -> float | None:
        span = self._span()
        return (len(self._window) - 1) / span if span >= _MIN_SPAN else None

    @property
    def bitrate(self) -> int | None:
        span = self._span()
        if span < _MIN_SPAN:
            return None
        return int((sum(b for _, b in self._window) - self._window[-1][1]) * 8 / span)

    @property
    def frames_since_key(self) -> int:
        return self._since_key or 0

    @property
    def ready(self) -> bool:
        return self.gops >= 2 and self.fps is not None
