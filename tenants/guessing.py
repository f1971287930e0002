"""Password guessing, slowed to a crawl without locking anyone out (sans-I/O: every call takes
``now``, seconds on a monotonic clock).

A password (RTSP Basic or Digest, the MediaMTX hook's user and password) is checked only while
both its principal and its source address have had fewer than ``limit`` failed checks in the
last ``window`` seconds. Beyond that the attempt is refused unchecked, right or wrong. Either
way a failure is answered after a delay that doubles with the recent failures (``base_delay`` up
to ``max_delay``), and a correct password checked is answered at once.

A lock-out must not be a weapon: an attacker hammering the police VMS's principal from elsewhere
must not keep the VMS out. So a source that signed in as a principal recently (within
``trusted_for``) is counted apart for that principal, the way OWASP's device cookies work: the
VMS's own address keeps its own allowance, and only the attacker's addresses and any address
the principal never used are throttled. Unknown user names are counted like real ones, so the
limits say nothing about which names exist.

Tables are bounded (``max_keys`` per kind, least recently used first out).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["GuessLimiter", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    check: bool  # False: refuse without checking the password
    delay: float = 0.0  # seconds to wait before answering a refusal


class _Windows:
    """Failure times per key in a sliding window, at most ``limit`` kept per key."""

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._keys: OrderedDict[object, deque[float]] = OrderedDict()

    def recent(self, key: object, now: float) -> int:
        times = self._keys.get(key)
        if times is None:
            return 0
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._keys[key]
            return 0
        return len(times)

    def add(self, key: object, now: float) -> None:
        times = self._keys.get(key)
        if times is None:
            times = self._keys[key] = deque(maxlen=self.limit)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key)
        times.append(now)


class GuessLimiter:
    def __init__(
        self,
        *,
        limit: int = 10,
        window: float = 60.0,
        base_delay: float = 0.5,
        max_delay: float = 4.0,
        trusted_for: float = 7 * 24 * 3600.0,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.trusted_for = trusted_for
        self._principals = _Windows(limit, window, max_keys)
        self._sources = _Windows(limit, window, max_keys)
        self._pairs = _Windows(limit, window, max_keys)  # (principal, source), trusted only
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self.checked_failures = 0  # wrong passwords checked
        self.throttled = 0  # attempts refused unchecked

    def _trusted_pair(self, user: str, source: str, now: float) -> bool:
        seen = self._trusted.get((user, source))
        return seen is not None and now - seen < self.trusted_for

    def _recent(self, user: str, source: str, now: float) -> tuple[int, int]:
        """(failures counted against this attempt's principal allowance, its source's)."""
        if self._trusted_pair(user, source, now):
            mine = self._pairs.recent((user, source), now)
        else:
            mine = self._principals.recent(user, now)
        return mine, self._sources.recent(source, now)

    def _delay(self, failures: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1)))

    def before(self, user: str, source: str, now: float) -> Verdict:
        """May this attempt's password be checked?"""
        with self._lock:
            mine, theirs = self._recent(user, source, now)
            if mine < self.limit and theirs < self.limit:
                return Verdict(True)
            self.throttled += 1
            return Verdict(False, self.max_delay)

    def failed(self, user: str, source: str, now: float) -> float:
        """A checked password was wrong: count it; the delay before answering."""
        with self._lock:
            self.checked_failures += 1
            if self._trusted_pair(user, source, now):
                self._pairs.add((user, source), now)
            else:
                self._principals.add(user, now)
            self._sources.add(source, now)
            return self._delay(max(self._recent(user, source, now)))

    def succeeded(self, user: str, source: str, now: float) -> None:
        """A checked password was right: this source is now trusted for this principal."""
        with self._lock:
            self._trusted[(user, source)] = now
            self._trusted.move_to_end((user, source))
            while len(self._trusted) > self._max_keys:
                self._trusted.popitem(last=False)
