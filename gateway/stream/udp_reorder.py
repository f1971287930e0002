"""Reordering for one UDP source, pulled or pushed: a
:class:`~gateway.stream.reorder.ReorderBuffer` per track, fed from the datagram callbacks, with
the one timer that gives gaps up at their deadline."""

from __future__ import annotations

import asyncio

from gateway.stream.hub import PathStream
from gateway.stream.reorder import ReorderBuffer


class UdpReorder:
    """Sits between a UDP source's RTP sockets and its hub path; owned by the session that
    receives the source (a pull, or a publisher's RECORD session), which calls :meth:`close`
    before it detaches the source.

    Packets reach the path only while ``source_id`` is its source: what a replaced publisher
    still holds, or what its timer releases after the replacement, belongs to the old source's
    timeline and is dropped rather than mixed into the new one's."""

    def __init__(
        self,
        stream: PathStream,
        tracks: int,
        *,
        window: float,
        max_packets: int,
        source_id: str | None = None,
    ) -> None:
        self.stream = stream
        self.source_id = source_id  # None: set once the source is attached
        self.buffers = [
            ReorderBuffer(window, max_packets=max_packets, counters=stream.reorder)
            for _ in range(tracks)
        ]
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def _emit(self, track: int, packets: list[bytes]) -> None:
        stream = self.stream
        if self.source_id is not None and stream.source_id != self.source_id:
            return
        for p in packets:
            stream.on_rtp(track, p)

    def push(self, track: int, packet: bytes) -> None:
        if self._closed or track >= len(self.buffers) or len(packet) < 12:
            self._emit(track, [packet])  # the hub counts it as bad
            return
        seq = (packet[2] << 8) | packet[3]
        self._emit(track, self.buffers[track].push(seq, packet, self._loop.time()))
        self._arm()

    def _arm(self) -> None:
        deadlines = [d for b in self.buffers if (d := b.deadline()) is not None]
        if not deadlines:
            return
        when = min(deadlines)
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        for track, buffer in enumerate(self.buffers):
            self._emit(track, buffer.due(now))
        self._arm()

    def close(self) -> None:
        """Release what is still held, in order, and stop the timer."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for track, buffer in enumerate(self.buffers):
            self._emit(track, buffer.flush())
