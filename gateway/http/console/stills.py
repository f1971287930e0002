"""Cameras' stills for the console: one keyframe from the hub's GOP cache, decoded with PyAV in
a worker thread, the viewer's masks burnt in at full size before anything is scaled or encoded
(a masked tenant's still never holds what its masks hide), then scaled down and encoded as JPEG.

Stills are cached per camera and mask set for ``ttl`` seconds, so a page of thumbnails costs at
most one decode per camera and mask set per ``ttl``, however many people look at it; one decode
runs at a time, and a request for a still being made waits for that one. The cache is bounded
(``max_entries``, least recently used out).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from fractions import Fraction

import av

from gateway.masking.zones import MaskRaster, Zone
from gateway.stream.hub import Reader, StreamHub
from gateway.webrtc.track import Passthrough, sprop_parameter_sets
from tenants.model import MaskZone

log = logging.getLogger(__name__)

__all__ = ["Stills", "render_still"]

WIDTH = 480  # a card is at most this wide on a desktop
SOURCE_WAIT = 3.0  # for a camera pulled on demand to start
KEY_WAIT = 4.0  # for a keyframe when the GOP cache has none (a GOP is usually 1-2 s)


def render_still(unit: bytes, zones: tuple[MaskZone, ...], width: int = WIDTH) -> bytes | None:
    """An Annex-B H.264 keyframe (with its SPS and PPS) as a JPEG at most ``width`` wide, with
    ``zones`` filled black first. None when it does not decode. Blocking: run it in a thread."""
    decoder = av.CodecContext.create("h264", "r")
    try:
        frames = list(decoder.decode(av.Packet(unit))) or list(decoder.decode(None))
    except av.FFmpegError as exc:
        log.info("still: keyframe did not decode: %s", exc)
        return None
    if not frames:
        return None
    frame = frames[0]
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    if zones:
        MaskRaster(tuple(Zone(z.id, z.points) for z in zones)).apply(frame)
    w = min(width, frame.width) // 2 * 2
    h = max(2, round(w * frame.height / frame.width / 2) * 2)
    small = frame.reformat(width=w, height=h, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    packets = list(encoder.encode(small)) + list(encoder.encode(None))
    return bytes(packets[0]) if packets else None


class Stills:
    """The stills of this process's cameras (``known``: a camera path this gateway serves;
    ``on_demand``: start pulling a camera that is pulled only while watched)."""

    def __init__(
        self,
        hub: StreamHub,
        *,
        known: Callable[[str], bool],
        on_demand: Callable[[str], None] | None = None,
        ttl: float = 10.0,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.known = known
        self.on_demand = on_demand
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, bytes | None]] = OrderedDict()
        self._making: dict[tuple[str, str], asyncio.Task[bytes | None]] = {}
        self._decoder = asyncio.Semaphore(1)
        self.decoded = 0  # stills made (for tests and metrics)

    async def jpeg(self, camera: str, variant: str, zones: tuple[MaskZone, ...]) -> bytes | None:
        """The camera's still for viewers of ``variant`` (the policy decision's mask set, whose
        ``zones`` are burnt in), or None when the camera has no picture now."""
        key = (camera, variant)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self.clock():
            self._cache.move_to_end(key)
            return hit[1]
        task = self._making.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._make(camera, zones))
            self._making[key] = task
            task.add_done_callback(lambda _t: self._done(key, _t))
        # A viewer who goes away does not cancel the still others wait for.
        return await asyncio.shield(task)

    def _done(self, key: tuple[str, str], task: asyncio.Task[bytes | None]) -> None:
        self._making.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        self._cache[key] = (self.clock() + self.ttl, task.result())
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _make(self, camera: str, zones: tuple[MaskZone, ...]) -> bytes | None:
        unit = await self.keyframe(camera)
        if unit is None:
            return None
        async with self._decoder:
            still = await asyncio.to_thread(render_still, unit, zones)
        self.decoded += still is not None
        return still

    async def keyframe(self, camera: str) -> bytes | None:
        """The camera's latest keyframe as one Annex-B unit with its parameter sets, from the
        GOP cache (or the next one to arrive), through a reader that is gone again at once."""
        if not self.known(camera):
            return None
        stream = self.hub.get(camera)
        if (stream is None or not stream.has_source) and self.on_demand is not None:
            self.on_demand(camera)
            stream = self.hub.get(camera)
        if stream is None or not await stream.wait_source(SOURCE_WAIT):
            return None
        video = next((t for t in stream.tracks if t.is_video and t.codec == "H264"), None)
        if video is None:
            return None  # H.265 and others: the card shows no picture
        sps, pps = sprop_parameter_sets(video)
        packer = Passthrough(camera, video.index, sps=sps, pps=pps)
        found: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def sink(items: list[tuple[int, bytes, bool]], is_key: bool) -> tuple[int, int]:
            if not found.done():
                unit = packer.unit(items, is_key)
                if unit is not None and unit.is_key:
                    found.set_result(bytes(unit.packet))
            return 0, 0  # nothing is sent anywhere: the path's counters stay as they are

        reader = Reader(channels=(0,), sink=sink)
        stream.add_reader(reader)  # the cached GOP goes to the sink at once
        try:
            return await asyncio.wait_for(found, KEY_WAIT)
        except TimeoutError:
            return None
        finally:
            stream.remove_reader(reader)
