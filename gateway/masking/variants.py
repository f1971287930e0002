"""Masked variants: one shared transcode per (camera, zone set), started by its first viewer
and stopped a little after its last viewer leaves.

A variant lives in the hub as a derived path ``<camera path>~<variant>``; readers of it are
ordinary hub readers, so 1 or 50 viewers of the same variant cost one decode and one encode.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from gateway.masking.transcoder import MaskTranscoder
from gateway.masking.zones import Zone
from gateway.stream.hub import StreamHub
from tenants.model import MaskZone

log = logging.getLogger(__name__)

SEPARATOR = "~"


@dataclass
class _Variant:
    transcoder: MaskTranscoder
    holders: int = 0
    linger: asyncio.TimerHandle | None = None
    stopping: asyncio.Task[None] | None = field(default=None, repr=False)


class VariantManager:
    def __init__(self, hub: StreamHub, *, linger: float = 10.0) -> None:
        self.hub = hub
        self.linger = linger
        self.variants: dict[str, _Variant] = {}
        self.transcodes_started = 0

    @staticmethod
    def derived_path(camera_path: str, variant: str) -> str:
        return f"{camera_path}{SEPARATOR}{variant}"

    def ensure(self, camera_path: str, variant: str, zones: tuple[MaskZone, ...]) -> str:
        """The derived path for this zone set, with its transcoder running. Idempotent."""
        path = self.derived_path(camera_path, variant)
        v = self.variants.get(path)
        if v is None:
            transcoder = MaskTranscoder(
                self.hub.path(camera_path),
                self.hub.path(path),
                tuple(Zone(z.id, z.points) for z in zones),
                name=path,
            )
            transcoder.start()
            self.transcodes_started += 1
            v = self.variants[path] = _Variant(transcoder)
            log.info("variant %s: transcoder started (%d zones)", path, len(zones))
            self._arm(path, v)  # nobody holds it yet: a DESCRIBE alone must not leak it
        return path

    def hold(self, path: str) -> None:
        v = self.variants.get(path)
        if v is None:
            return
        v.holders += 1
        if v.linger is not None:
            v.linger.cancel()
            v.linger = None

    def release(self, path: str) -> None:
        v = self.variants.get(path)
        if v is None:
            return
        v.holders = max(0, v.holders - 1)
        if v.holders == 0:
            self._arm(path, v)

    def _arm(self, path: str, v: _Variant) -> None:
        if v.linger is not None:
            v.linger.cancel()
        loop = asyncio.get_running_loop()
        v.linger = loop.call_later(self.linger, self._expire, path)

    def _expire(self, path: str) -> None:
        v = self.variants.get(path)
        if v is None or v.holders > 0:
            return
        del self.variants[path]
        log.info("variant %s: no viewers for %.0fs, transcoder stopped", path, self.linger)
        v.stopping = asyncio.get_running_loop().create_task(v.transcoder.stop())

    def running(self) -> int:
        return len(self.variants)

    async def stop(self) -> None:
        variants, self.variants = self.variants, {}
        for v in variants.values():
            if v.linger is not None:
                v.linger.cancel()
        await asyncio.gather(
            *(v.transcoder.stop() for v in variants.values()), return_exceptions=True
        )
