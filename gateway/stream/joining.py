"""Where a new reader starts: from the cached GOP at once, or at the next live keyframe.

The GOP cache gives a joiner a picture at once, but it starts it as far behind live as the cached
keyframe is old (up to a whole GOP: ~9 s on a 10 s-GOP camera), and over UDP the cache goes out
faster than a receive buffer drains (the kernel drops the excess: RcvbufErrors). So the cache is
used only when its keyframe is recent (``max_behind``) and, for a UDP reader, only when it is
small enough to be taken in one go (``udp_burst_bytes``); otherwise the reader starts at the next
keyframe, at the live edge, paced by the camera itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JoinPolicy:
    max_behind: float = 2.0  # seconds: the oldest cached keyframe a joiner is started from
    udp_burst_bytes: int = 64 * 1024  # the largest cached GOP sent to a UDP joiner at once

    def from_cache(self, *, age: float, cached_bytes: int, udp: bool) -> bool:
        """Start this joiner from the cached GOP (True) or at the next keyframe (False)."""
        if cached_bytes <= 0 or age > self.max_behind:
            return False
        return not (udp and cached_bytes > self.udp_burst_bytes)
