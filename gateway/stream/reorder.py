"""A bounded reorder (jitter) buffer for RTP arriving over UDP, by sequence number. Sans-I/O.

UDP may deliver a camera's packets out of order; the hub relays packets in the order it gets
them, and a reader over TCP (or a decoder behind it) takes a swapped pair for loss and
corruption. A packet that arrives ahead of a gap waits here until the gap fills or until it
has waited ``window`` seconds, whichever comes first; then the gap is given up as lost and what
follows is released in order. A packet whose place has already been released arrives too late:
it is dropped and counted, never relayed out of order.

Packets that arrive in order pass straight through (no added latency). The caller feeds packets
with ``push(seq, packet, now)``, and calls ``due(now)`` at ``deadline()`` (its own timer); both
return the packets to relay now, in order. Nothing here reads a clock or a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Arrival", "ReorderBuffer", "ReorderCounters", "classify"]

_SEQ_MOD = 1 << 16
# RFC 3550 appendix A.1's bounds: a jump ahead by more than MAX_DROPOUT, or back by more than
# MAX_MISORDER, means the sender restarted its numbering rather than reordered.
MAX_DROPOUT = 3000
MAX_MISORDER = 100


class Arrival(Enum):
    """Where an arriving packet falls relative to the next one to release."""

    NEXT = "next"  # the one expected: release it and whatever follows it in order
    AHEAD = "ahead"  # after a gap: hold it
    LATE = "late"  # behind the released edge: its place is gone
    RESTART = "restart"  # far off: the sender renumbered; release what is held and start again


def classify(expected: int, seq: int) -> Arrival:
    delta = (seq - expected) % _SEQ_MOD
    if delta == 0:
        return Arrival.NEXT
    if delta <= MAX_DROPOUT:
        return Arrival.AHEAD
    if _SEQ_MOD - delta <= MAX_MISORDER:
        return Arrival.LATE
    return Arrival.RESTART


@dataclass
class ReorderCounters:
    reordered: int = 0  # packets that arrived ahead of a gap and were held
    late: int = 0  # packets that arrived after their place was released (dropped)
    lost: int = 0  # sequence numbers given up after the window (never arrived in time)
    duplicates: int = 0  # copies of a packet already held
    overflows: int = 0  # times the buffer was full and a gap was given up early
    restarts: int = 0  # sender renumbering seen


class ReorderBuffer:
    """Reorders one RTP stream. ``window`` in seconds; at most ``max_packets`` are held."""

    def __init__(
        self,
        window: float,
        *,
        max_packets: int = 512,
        counters: ReorderCounters | None = None,
    ) -> None:
        if window < 0 or max_packets < 1:
            raise ValueError("window must be >= 0 and max_packets >= 1")
        self.window = window
        self.max_packets = max_packets
        self.counters = counters if counters is not None else ReorderCounters()
        self._expected: int | None = None
        self._held: dict[int, tuple[float, bytes]] = {}  # seq -> (arrival, packet)

    @property
    def held(self) -> int:
        return len(self._held)

    def deadline(self) -> float | None:
        """When the longest-waiting held packet stops waiting (None: nothing held)."""
        if not self._held:
            return None
        return min(arrival for arrival, _ in self._held.values()) + self.window

    def push(self, seq: int, packet: bytes, now: float) -> list[bytes]:
        seq %= _SEQ_MOD
        expected = self._expected
        if seq == expected and not self._held:
            # Nearly every packet: in order with nothing waiting.
            self._expected = (seq + 1) % _SEQ_MOD
            return [packet]
        if expected is None:
            self._expected = (seq + 1) % _SEQ_MOD
            return [packet]
        kind = classify(expected, seq)
        if kind is Arrival.NEXT:
            out = [packet]
            self._expected = (seq + 1) % _SEQ_MOD
            self._drain(out)
            return out
        if kind is Arrival.LATE:
            self.counters.late += 1
            return []
        if kind is Arrival.RESTART:
            self.counters.restarts += 1
            out = self.flush()
            out.append(packet)
            self._expected = (seq + 1) % _SEQ_MOD
            return out
        if seq in self._held:
            self.counters.duplicates += 1
            return []
        if self.window == 0:
            # Reordering off: give the gap up at once.
            self.counters.lost += (seq - expected) % _SEQ_MOD
            self._expected = (seq + 1) % _SEQ_MOD
            return [packet]
        self._held[seq] = (now, packet)
        self.counters.reordered += 1
        out = []
        if len(self._held) > self.max_packets:
            self.counters.overflows += 1
            self._skip(out)
        return out

    def due(self, now: float) -> list[bytes]:
        """Give up the gaps whose following packets have waited out the window."""
        out: list[bytes] = []
        while self._held:
            deadline = self.deadline()
            if deadline is None or deadline > now:
                break
            self._skip(out)
        return out

    def flush(self) -> list[bytes]:
        """Everything held, in order (the source is going away or renumbered)."""
        out: list[bytes] = []
        while self._held:
            self._skip(out)
        return out

    def _skip(self, out: list[bytes]) -> None:
        """Give up the gap before the first held packet, then release in order from it."""
        expected = self._expected
        assert expected is not None
        first = min(self._held, key=lambda s: (s - expected) % _SEQ_MOD)
        self.counters.lost += (first - expected) % _SEQ_MOD
        self._expected = first
        self._drain(out)

    def _drain(self, out: list[bytes]) -> None:
        held = self._held
        expected = self._expected
        assert expected is not None
        while held:
            item = held.pop(expected, None)
            if item is None:
                break
            out.append(item[1])
            expected = (expected + 1) % _SEQ_MOD
        self._expected = expected
