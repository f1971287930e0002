"""The picture follows the camera: a FAKE ONVIF camera publishes its view into the gateway, an
ffmpeg RTSP viewer watches it through the gateway, and a move through the REST API changes
what the viewer sees."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from conftest import FFMPEG
from ptz_world import fake_camera, ptz_gateway

from gateway.config import PtzConfig
from ops.fakes.panorama import PanoramaPublisher, scene, window

W, H = 160, 90


def expected_luma(pan: float, tilt: float = 0.0, zoom: float = 0.0) -> float:
    """The mean brightness (BT.601 luma, as ffmpeg's gray output) of the view at a position."""
    rgb = window(scene(W * 4, H * 3), pan, tilt, zoom, W, H).astype(np.float64)
    return float((rgb @ np.array([0.299, 0.587, 0.114])).mean())


def test_the_window_follows_pan_tilt_and_zoom() -> None:
    pano = scene(W * 4, H * 3)
    left, right = window(pano, -1, 0, 0, W, H), window(pano, 1, 0, 0, W, H)
    assert right.mean() > left.mean() + 60  # brighter to the right
    up, down = window(pano, 0, 1, 0, W, H), window(pano, 0, -1, 0, W, H)
    assert up[..., 2].mean() < down[..., 2].mean()  # bluer towards the bottom
    wide, tele = window(pano, 0, 0, 0, W, H), window(pano, 0, 0, 1, W, H)
    assert (wide == 255).all(axis=2).sum() > (tele == 255).all(axis=2).sum()  # more grid lines


async def test_a_viewer_sees_the_picture_move_after_a_move(tmp_path: Path) -> None:
    async with fake_camera() as cam, ptz_gateway(tmp_path, cam.base, PtzConfig()) as a:
        port = a.gateway.rtsp.port
        publisher = PanoramaPublisher(
            cam.head,
            f"rtsp://council-operator:council-pw@127.0.0.1:{port}/cam1",
            size=(W, H),
            fps=10,
        )
        publisher.start()
        viewer = None
        try:
            token = a.token("council-operator")
            viewer = await asyncio.create_subprocess_exec(
                FFMPEG,
                "-hide_banner",
                "-loglevel",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
                f"rtsp://127.0.0.1:{port}/cam1?token={token}",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "gray",
                "-",
                stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
            )
            assert viewer.stdout is not None

            async def brightness() -> float:
                frame = await asyncio.wait_for(viewer.stdout.readexactly(W * H), 20)
                return float(np.frombuffer(frame, np.uint8).mean())

            at_home, panned = expected_luma(0.0), expected_luma(0.9)
            assert panned > at_home + 25  # the move is one a viewer can see
            before = await brightness()
            assert abs(before - at_home) < 6, (before, at_home)
            s, _, _ = await a.call(
                "council-operator", "POST", "cam1/ptz/move", {"kind": "absolute", "pan": 0.9}
            )
            assert s == 200
            # The next keyframes show the new view (ffmpeg's frames arrive live; poll them).
            deadline = time.monotonic() + 15
            after = before
            while abs(after - panned) >= 6 and time.monotonic() < deadline:
                after = await brightness()
            assert abs(after - panned) < 6, (before, after, panned)
        finally:
            if viewer is not None and viewer.returncode is None:
                viewer.kill()
                await viewer.wait()
            await publisher.stop()
