"""Masked HLS VOD: a masked tenant's playlist lists the same recorded time as anyone's, and its
segments are burnt in on demand.

A tenant whose playback decision names mask zones may not be given the recording's own bytes
(:mod:`gateway.playback.hls` serves those to everyone else). Its playlist lists the same
recorded fragments, grouped into segments (:func:`groups`) of about ``TARGET`` seconds that
start at a key frame and never span a gap or two segment files. Each segment is cut from the
recording and burnt in by the cutter ``/get`` and the exports use
(:func:`gateway.recording.export_cut.cut`: decoded, the zones filled black, libx264) into a
self-contained fragmented MP4: its own initialisation section (``EXT-X-MAP``, ``init.mp4``)
and its ``moof`` + ``mdat`` (``media.mp4``). The groups are computed from the whole segment
file, so every playlist over any window names the same segments and a burnt one is served
again from the cache. The segments of one recorded file share one timeline (their ``tfdt`` is
counted from ``LEAD`` before the file's start), so each follows the last with no discontinuity;
a new file or a gap is one, as in the unmasked playlist.

Bounded: at most ``recording.hls_masked_transcodes`` burns run at once in this process; a
request that finds them all busy waits up to ``recording.hls_masked_wait`` seconds for one,
then gets 503 with ``Retry-After``. Burnt segments are kept in an LRU of at most
``recording.hls_masked_cache_bytes``, keyed by (camera, variant: the digest of the zone set,
segment file, first and last fragment); requests for one key share one burn.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.masking.zones import Zone
from gateway.recording.export_cut import CutError, TimedZone, cut
from gateway.recording.index import Fragment, RecordingIndex, Segment

__all__ = [
    "GAP",
    "LEAD",
    "TARGET",
    "Burnt",
    "Busy",
    "Group",
    "Key",
    "MaskedSegments",
    "burn",
    "groups",
    "masked_playlist",
    "split_init",
]

log = logging.getLogger(__name__)

TARGET = timedelta(seconds=4)  # a masked segment's length (it ends at a key frame past this)
GAP = timedelta(milliseconds=500)  # fragments further apart than this: a discontinuity
# The timeline's zero before the file's start: the encoder's first decode time precedes its
# first picture by its B-frame delay, and a tfdt cannot be negative.
LEAD = timedelta(seconds=10)
BURN_TIMEOUT = 120.0  # a burn already running is waited for this long at most
RETRY_AFTER = "2"

Key = tuple[str, str, str, int, int]


class Busy(Exception):
    """Every transcode slot stayed taken for the whole wait: a 503 with Retry-After."""


@dataclass(frozen=True)
class Group:
    """One masked segment: fragments ``first..last`` (their ``seq``) of one segment file."""

    segment: str
    first: int
    last: int
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class Burnt:
    init: bytes  # ftyp + moov
    media: bytes  # moof + mdat boxes
    seconds: float  # of recording it covers, as played (metered)

    @property
    def size(self) -> int:
        return len(self.init) + len(self.media)


def groups(fragments: Sequence[Fragment], target: timedelta = TARGET) -> list[Group]:
    """A segment file's fragments (in order) as masked segments: a new one at the first key
    frame once the current one holds ``target``, and at the first key frame after a gap.
    Fragments with no time of their own (audio after the last picture) and fragments before a
    key frame (nothing decodes them) belong to none. A later fragment only ever extends the
    last group, so a file still being recorded keeps the groups it had."""
    out: list[Group] = []
    run: list[Fragment] = []
    for f in fragments:
        if f.end <= f.start:
            continue
        if run and (
            f.start - run[-1].end > GAP or (f.keyframe and run[-1].end - run[0].start >= target)
        ):
            out.append(_group(run))
            run = []
        if run or f.keyframe:
            run.append(f)
    if run:
        out.append(_group(run))
    return out


def _group(run: list[Fragment]) -> Group:
    return Group(run[0].segment, run[0].seq, run[-1].seq, run[0].start, run[-1].end)


def _pdt(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def masked_playlist(segments: Sequence[Group], url: Callable[[Group, str], str]) -> str:
    """The VOD playlist of these masked segments (in time order); ``url(group, part)`` names
    its ``init`` or ``media`` part."""
    longest = max(g.seconds for g in segments)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(longest))}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-MEDIA-SEQUENCE:0",
        # Each segment is decodable on its own: it starts at a key frame with its own init.
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    prev: Group | None = None
    for g in segments:
        if prev is not None and (g.segment != prev.segment or g.start - prev.end > GAP):
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f'#EXT-X-MAP:URI="{url(g, "init")}"')
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(g.start)}")
        lines.append(f"#EXTINF:{g.seconds:.3f},")
        lines.append(url(g, "media"))
        prev = g
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def split_init(data: bytes) -> tuple[bytes, bytes]:
    """(ftyp + moov, the moof + mdat boxes) of a fragmented MP4. The muxer's trailing
    ``mfra`` (a seek index for the whole file) means nothing inside a playlist."""
    at, init_end, media = 0, -1, []
    while at + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, at)
        if size == 1:
            size = struct.unpack_from(">Q", data, at + 8)[0]
        elif size == 0:
            size = len(data) - at
        if size < 8 or at + size > len(data):
            raise CutError("burnt segment: a box runs past the end of the file")
        if kind in (b"moof", b"mdat"):
            if init_end < 0:
                init_end = at
            media.append(data[at : at + size])
        at += size
    if init_end < 0:
        raise CutError("burnt segment: no fragment in it")
    return data[:init_end], b"".join(media)


def burn(
    index: RecordingIndex, segment: Segment, group: Group, zones: Sequence[Zone], path: Path
) -> Burnt:
    """Blocking: cut ``group`` of ``segment`` with ``zones`` burnt in (through ``path``, a
    scratch file removed after)."""
    try:
        result = cut(
            index,
            segment.camera,
            group.start,
            group.end,
            path,
            zones=tuple(TimedZone(z) for z in zones),
            fragmented=True,
            timeline=segment.start - LEAD,
        )
        data = path.read_bytes()
    finally:
        path.unlink(missing_ok=True)
    init, media = split_init(data)
    return Burnt(init, media, (result.media_end - result.media_start).total_seconds())


class MaskedSegments:
    """The bounds on masked HLS: the transcode slots, the wait for one, the LRU of burnt
    segments, and one burn per key however many players ask for it at once."""

    def __init__(self, *, transcodes: int, wait: float, cache_bytes: int) -> None:
        self.slots = asyncio.Semaphore(transcodes)
        self.wait = wait
        self.cache_bytes = cache_bytes
        self.cache: OrderedDict[Key, Burnt] = OrderedDict()
        self.cached_bytes = 0
        self.burning: dict[Key, asyncio.Task[Burnt]] = {}
        self.burns = 0  # segments burnt by this process
        self.waiting = 0  # requests waiting for a slot now
        self.refused = 0  # requests answered 503 (no slot within the wait)

    def _hit(self, key: Key) -> Burnt | None:
        got = self.cache.get(key)
        if got is not None:
            self.cache.move_to_end(key)
        return got

    def _keep(self, key: Key, burnt: Burnt) -> None:
        if burnt.size > self.cache_bytes:
            return  # larger than the whole cache: served once, not kept
        old = self.cache.pop(key, None)
        self.cached_bytes -= old.size if old else 0
        self.cache[key] = burnt
        self.cached_bytes += burnt.size
        while self.cached_bytes > self.cache_bytes:
            _, evicted = self.cache.popitem(last=False)
            self.cached_bytes -= evicted.size

    async def get(self, key: Key, make: Callable[[], Awaitable[Burnt]]) -> Burnt:
        """The burnt segment for ``key``: from the cache, from a burn already running, or
        burnt by ``make`` once a slot is free (:class:`Busy` if none frees within the wait)."""
        hit = self._hit(key)
        if hit is not None:
            return hit
        task = self.burning.get(key)
        if task is None:
            try:
                if self.slots.locked():
                    self.waiting += 1
                    try:
                        async with asyncio.timeout(self.wait):
                            await self.slots.acquire()
                    finally:
                        self.waiting -= 1
                else:
                    await self.slots.acquire()
            except TimeoutError:
                self.refused += 1
                raise Busy() from None
            # Another request may have burnt or begun this segment while this one waited.
            hit, task = self._hit(key), self.burning.get(key)
            if hit is not None or task is not None:
                self.slots.release()
                if hit is not None:
                    return hit
            else:
                task = asyncio.create_task(self._burn(key, make), name=f"hls-masked {key[0]}")
                task.add_done_callback(_retrieve)
                self.burning[key] = task
        assert task is not None
        try:
            # Shielded: a player that gives up leaves the burn to finish for the next one
            # (the slot stays taken while its encoder runs).
            return await asyncio.wait_for(asyncio.shield(task), BURN_TIMEOUT)
        except TimeoutError:
            self.refused += 1
            raise Busy() from None

    async def _burn(self, key: Key, make: Callable[[], Awaitable[Burnt]]) -> Burnt:
        try:
            burnt = await make()
            self.burns += 1
            self._keep(key, burnt)
            return burnt
        finally:
            self.burning.pop(key, None)
            self.slots.release()

    async def close(self) -> None:
        """Stop the burns still running (their worker threads end with the playback
        executor) and forget the cache."""
        tasks = list(self.burning.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.cache.clear()
        self.cached_bytes = 0

    def families(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        """For /metrics: what the bounds did (a steady count of refused means too few
        transcodes for the masked players asking)."""
        done = CounterMetricFamily(
            "feedgate_hls_masked_segments",
            "Masked HLS segment burns by outcome: burnt, or refused (503: no transcode free)",
            labels=["outcome"],
        )
        done.add_metric(["burnt"], self.burns)
        done.add_metric(["refused"], self.refused)
        yield done
        yield GaugeMetricFamily(
            "feedgate_hls_masked_transcodes", "Masked HLS burns running", value=len(self.burning)
        )
        yield GaugeMetricFamily(
            "feedgate_hls_masked_waiting",
            "Masked HLS requests waiting for a transcode",
            value=self.waiting,
        )
        yield GaugeMetricFamily(
            "feedgate_hls_masked_cache_bytes",
            "Bytes of burnt masked HLS segments kept",
            value=self.cached_bytes,
        )


def _retrieve(task: asyncio.Task[Burnt]) -> None:
    """A burn every waiter gave up on may still fail: its error is logged here, not lost."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, CutError):
        log.error("masked HLS burn failed", exc_info=exc)
