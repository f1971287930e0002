"""The FAKE camera's picture: a window onto a larger generated scene that follows the fake
PTZ head, encoded with libx264 and published over RTSP (ANNOUNCE/RECORD), e.g. into the
gateway as a pushed camera or into the demo's camera simulator.

The scene's brightness rises from left to right and its colour from top to bottom, with a grid,
so a viewer (or a test) sees pan as a change of brightness, tilt as a change of hue and zoom as
the grid's spacing. Pan -1..1 moves the window across the scene's width, tilt across its height
(up is +1) and zoom 0..1 narrows the window from twice the frame size to half of it.

The frames are encoded and published by an ffmpeg process (the ``imageio-ffmpeg`` binary) fed
raw RGB on its stdin, so codec work and the RTSP handshake stay off the event loop. (PyAV in a
thread does not do: it holds the GIL through the RTSP handshake, so a gateway on the same event
loop could never answer the ANNOUNCE.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import imageio_ffmpeg
import numpy as np

from ops.fakes.onvif_camera import FakePtzHead

log = logging.getLogger(__name__)


def scene(width: int, height: int) -> np.ndarray[Any, Any]:
    """The generated scene (RGB, width x height)."""
    x = np.linspace(16, 235, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = x * (1 - 0.5 * y)
    img[..., 1] = x * 0.8
    img[..., 2] = x * (0.5 + 0.5 * y)
    step = max(8, width // 32)
    img[:, ::step, :] = 255.0
    img[::step, :, :] = 255.0
    return np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))


def window(
    pano: np.ndarray[Any, Any], pan: float, tilt: float, zoom: float, w: int, h: int
) -> np.ndarray[Any, Any]:
    """The w x h view of ``pano`` at this position (nearest-neighbour sampling)."""
    ph, pw = pano.shape[:2]
    scale = 2.0 - 1.5 * min(1.0, max(0.0, zoom))
    ww, wh = min(pw, w * scale), min(ph, h * scale)
    x0 = (pan + 1) / 2 * (pw - ww)
    y0 = (1 - (tilt + 1) / 2) * (ph - wh)
    xs = (x0 + (np.arange(w) + 0.5) * ww / w).astype(np.intp).clip(0, pw - 1)
    ys = (y0 + (np.arange(h) + 0.5) * wh / h).astype(np.intp).clip(0, ph - 1)
    return np.ascontiguousarray(pano[ys][:, xs])


class PanoramaPublisher:
    """Publishes the head's view to ``url`` until :meth:`stop`; starts ffmpeg again (after a
    short pause) if it exits, e.g. because the server dropped it. The task it runs is owned by
    this object: :meth:`stop` cancels it and reaps ffmpeg."""

    RESTART_S = 0.5
    WRITE_TIMEOUT_S = 5.0  # a stalled ffmpeg is killed and started again

    def __init__(
        self,
        head: FakePtzHead,
        url: str,
        *,
        size: tuple[int, int] = (320, 180),
        fps: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.head = head
        self.url = url
        self.size = size
        self.fps = fps
        self.clock = clock
        self.frames = 0  # frames handed to ffmpeg, over every run
        self.runs = 0
        self._pano = scene(size[0] * 4, size[1] * 3)
        self._task: asyncio.Task[None] | None = None

    def command(self) -> list[str]:
        w, h = self.size
        return [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{w}x{h}",
            "-r",
            str(self.fps),
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
            "-g",
            str(self.fps),
            "-bf",
            "0",
            "-f",
            "rtsp",
            "-rtsp_transport",
            "tcp",
            self.url,
        ]

    def frame(self) -> bytes:
        """The picture at the head's position now."""
        pan, tilt, zoom = self.head.position(self.clock())
        return window(self._pano, pan, tilt, zoom, *self.size).tobytes()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="panorama")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self._publish()
            except (OSError, TimeoutError) as exc:
                log.info("panorama publisher to %s: %s; starting again", self.url, exc)
            await asyncio.sleep(self.RESTART_S)  # back-off before ffmpeg starts again

    async def _publish(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
        )
        self.runs += 1
        assert proc.stdin is not None
        loop = asyncio.get_running_loop()
        start, n = loop.time(), 0
        try:
            while proc.returncode is None:
                proc.stdin.write(self.frame())
                async with asyncio.timeout(self.WRITE_TIMEOUT_S):
                    await proc.stdin.drain()
                n += 1
                self.frames += 1
                # Frames go out at the frame rate: a timer for pacing, not synchronisation.
                await asyncio.sleep(max(0.0, start + n / self.fps - loop.time()))
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


__all__ = ["PanoramaPublisher", "scene", "window"]
