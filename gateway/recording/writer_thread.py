"""The recorder's writer threads: each writes some cameras, fed units through a bounded queue
by the event loop (:mod:`gateway.recording.service`), and owns those cameras'
:class:`~gateway.recording.writer.CameraWriter` s. Nothing here runs on the event loop except
:meth:`WriterThread.offer` and :meth:`WriterThread.post` (an append under a lock)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.recording.audio import AudioFormat, audio_track
from gateway.recording.codecs import video_track
from gateway.recording.index import GapReason
from gateway.recording.writer import CameraWriter, Unit, WriterCounters
from gateway.stream.tracks import Track

log = logging.getLogger(__name__)

__all__ = ["TICK", "WriterThread"]

TICK = 0.05  # how long a writer thread lets units gather before it takes them


class WriterThread:
    """One thread writing some cameras, fed through a bounded queue."""

    def __init__(
        self,
        name: str,
        max_bytes: int,
        make: Callable[[str, Track, tuple[Track, AudioFormat] | None], CameraWriter],
    ):
        self.name = name
        self.max_bytes = max_bytes
        self._make = make
        self._cv = threading.Condition()
        self._items: deque[tuple[str, str, Any]] = deque()
        self.queued_bytes = 0
        self.writers: dict[str, CameraWriter] = {}
        self._tracks: dict[str, tuple[tuple[Track, ...], Track | None, Any]] = {}
        # Counters of writers replaced or stopped, per camera, so totals never go back.
        self.retired: dict[str, WriterCounters] = {}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def offer(self, camera: str, unit: Unit, after_loss: GapReason | None) -> bool:
        with self._cv:
            if self.queued_bytes + unit.size > self.max_bytes:
                return False
            self.queued_bytes += unit.size
            self._items.append(("unit", camera, (unit, after_loss)))
            # Units are taken a tick's worth at a time rather than one wake-up each (a thread
            # switch per access unit cost more than muxing it); a fuller queue wakes it early.
            if len(self._items) == 1 or (
                self.queued_bytes > self.max_bytes >> 3 >= self.queued_bytes - unit.size
            ):
                self._cv.notify()
        return True

    def post(self, kind: str, camera: str = "", arg: Any = None) -> None:
        with self._cv:
            self._items.append((kind, camera, arg))
            self._cv.notify()

    def stop(self) -> None:
        """Close every segment and end the thread (blocks until it has)."""
        self.post("exit")
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items:
                    self._cv.wait()
                if self._items[-1][0] == "unit" and self.queued_bytes <= self.max_bytes >> 3:
                    self._cv.wait(TICK)  # let a tick's units gather (a post wakes it at once)
                batch = list(self._items)
                self._items.clear()
            touched: set[str] = set()
            for kind, camera, arg in batch:
                try:
                    if kind == "unit":
                        unit, after_loss = arg
                        with self._cv:
                            self.queued_bytes -= unit.size
                        self._unit(camera, unit, after_loss)
                        touched.add(camera)
                    elif kind == "idle":
                        for writer in self.writers.values():
                            writer.idle(arg)
                            writer.flush_index()
                    elif kind == "stop":
                        self._retire(camera, arg)
                    elif kind == "exit":
                        for cam in list(self.writers):
                            self._retire(cam, GapReason.GATEWAY_RESTART)
                        return
                except Exception:
                    log.exception("recording %s: writer failed", camera or self.name)
                    self.writers.pop(camera, None)
            for camera in touched:
                touched_writer = self.writers.get(camera)
                if touched_writer is None:
                    continue
                try:
                    touched_writer.flush_index()
                except Exception:
                    log.exception("recording %s: index write failed", camera)

    def _unit(self, camera: str, unit: Unit, after_loss: GapReason | None) -> None:
        writer = self.writers.get(camera)
        known = self._tracks.get(camera)
        if known is None or known[0] is not unit.tracks:
            # The tracks tuple is the path's own until it changes: read the SDP once per change.
            known = self._tracks[camera] = (
                unit.tracks,
                video_track(unit.tracks),
                audio_track(unit.tracks),
            )
        _t, track, audio = known
        if track is None:
            return
        if writer is not None and (
            writer.track.codec != track.codec
            or writer.track.index != track.index
            or writer.audio != audio  # a camera that gains, loses or changes its audio
        ):
            self._retire(camera, GapReason.CAMERA_OUTAGE)
            writer = None
        if writer is None:
            writer = self._make(camera, track, audio)
            self.writers[camera] = writer
        if after_loss is not None:
            writer.dropped(after_loss)
        writer.feed(unit)

    def _retire(self, camera: str, reason: GapReason) -> None:
        writer = self.writers.pop(camera, None)
        if writer is None:
            return
        writer.stop(reason)
        total = self.retired.setdefault(camera, WriterCounters())
        for name, value in vars(writer.counters).items():
            setattr(total, name, getattr(total, name) + value)

    def counters(self) -> dict[str, WriterCounters]:
        """Per camera, everything its writers counted (live and retired)."""
        out: dict[str, WriterCounters] = {}
        live = dict(self.writers)
        for cam in set(live) | set(self.retired):
            total = WriterCounters()
            for part in (live.get(cam), self.retired.get(cam)):
                counters = part.counters if isinstance(part, CameraWriter) else part
                if counters is None:
                    continue
                for name, value in vars(counters).items():
                    setattr(total, name, getattr(total, name) + value)
            out[cam] = total
        return out
