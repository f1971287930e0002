"""A camera's recording as playback reads it: the index's fragments and segment files, read in
a worker thread (every method here but :meth:`RecordedSource.run` blocks)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

from gateway.playback.media import (
    MediaError,
    RecordedFormat,
    RecordedUnit,
    Unreachable,
    read_file_range,
    read_format,
    read_fragment,
)
from gateway.recording.index import Fragment, RecordingIndex, Segment

__all__ = ["Cache", "RecordedSource"]

T = TypeVar("T")
# Fragments listed per index query when walking a range.
PAGE = 256

# segment id -> (its init, its format, its file, its start: where both tracks' zero lies)
Cache = dict[str, tuple[bytes, RecordedFormat, Path, datetime]]


@dataclass
class RecordedSource:
    """The recording of one camera, read in a worker thread: index queries and file reads."""

    index: RecordingIndex
    camera: str
    executor: Executor | None = None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(fn, *args))

    def _init(self, segment: Segment) -> bytes:
        try:
            return read_file_range(self.index.file(segment), 0, segment.init_length)
        except MediaError:
            reason = self.index.unreachable(segment)
            if reason is not None:
                raise Unreachable(reason) from None
            raise

    def format_at(self, when: datetime | None) -> RecordedFormat | None:
        """Blocking: the format of the recording at ``when`` (None: the latest segment's)."""
        if when is None:
            lo, hi = datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
        else:
            lo, hi = when - timedelta(days=1), when + timedelta(days=1)
        segments = self.index.segments(self.camera, lo, hi)
        if not segments:
            return None
        after = [s for s in segments if when is not None and s.end > when]
        return read_format(self._init(after[0] if after else segments[-1]))

    def read(self, fragment: Fragment, cache: Cache) -> list[RecordedUnit]:
        """Blocking: one fragment's access units (its segment's init read once per feed)."""
        init, fmt, path, start = self._cached(fragment, cache)
        data = read_file_range(path, fragment.offset, fragment.length)
        return read_fragment(init, data, fragment.start, fmt, segment_start=start)

    def init_and_format(self, segment: Segment) -> tuple[bytes, RecordedFormat]:
        init = self._init(segment)
        return init, read_format(init)

    def fragment_bytes(self, fragment: Fragment, cache: Cache) -> tuple[bytes, bytes]:
        """(the segment's init, the fragment's moof + mdat)."""
        got = self._cached(fragment, cache)
        return got[0], read_file_range(got[2], fragment.offset, fragment.length)

    def _cached(
        self, fragment: Fragment, cache: Cache
    ) -> tuple[bytes, RecordedFormat, Path, datetime]:
        got = cache.get(fragment.segment)
        if got is None:
            segment = self.index.segment(fragment.segment)
            if segment is None:
                raise MediaError("segment deleted")
            init, fmt = self.init_and_format(segment)
            got = (init, fmt, self.index.file(segment), segment.start)
            cache.clear()  # one segment at a time: bounded
            cache[fragment.segment] = got
        return got

    def walk(self, start: datetime, end: datetime) -> Iterator[Fragment]:
        """Every fragment from the key frame at or before ``start`` up to ``end``, in order,
        paging through the index."""
        last: tuple[datetime, str, int] | None = None
        at = start
        while True:
            page = self.index.fragments_from(self.camera, at, end, limit=PAGE)
            fresh = [f for f in page if last is None or (f.start, f.segment, f.seq) > last]
            if not fresh:
                return
            for f in fresh:
                last = (f.start, f.segment, f.seq)
                yield f
            at = fresh[-1].end

    def gap_between(self, end: datetime, start: datetime) -> bool:
        """Whether the recorder recorded a gap between ``end`` and ``start``."""
        return any(
            g.start < start and g.end > end
            for g in self.index.gaps(self.camera, end - timedelta(seconds=1), start)
        )

    def still_recording(self) -> bool:
        return any(s.camera == self.camera for s in self.index.open_segments())
