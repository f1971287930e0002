"""Reordering for one UDP source: a :class:`~gateway.stream.reorder.ReorderBuffer` per track,
fed from the datagram callbacks, with the one timer that gives gaps up at their deadline."""

from __future__ import annotations

import asyncio

from gateway.stream.hub import PathStream
from gateway.stream.reorder import ReorderBuffer


class UdpReorder:
    """Sits between a UDP source's RTP sockets and its hub path; owned by the pull session,
    which calls :meth:`close` before it detaches the source."""

    def __init__(self, stream: PathStream, tracks: int, *, window: float, max_packets: int) -> None:
        self.stream = stream
        self.buffers = [
            ReorderBuffer(window, max_packets=max_packets, counters=stream.reorder)
            for _ in range(tracks)
        ]
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def push(self, track: int, packet: bytes) -> None:
        if self._closed or track >= len(self.buffers) or len(packet) < 12:
            self.stream.on_rtp(track, packet)  # the hub counts it as bad
            return
        seq = (packet[2] << 8) | packet[3]
        for p in self.buffers[track].push(seq, packet, self._loop.time()):
            self.stream.on_rtp(track, p)
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
            for p in buffer.due(now):
                self.stream.on_rtp(track, p)
        self._arm()

    def close(self) -> None:
        """Release what is still held, in order, and stop the timer."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for track, buffer in enumerate(self.buffers):
            for p in buffer.flush():
                self.stream.on_rtp(track, p)
