"""Privacy masks: polygon rasterisation, hostile zone JSON, and the mask transcoder end to end
with real ffmpeg as camera and viewers."""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import FFMPEG, frames_of, publishing, read_argv, wait_for

from gateway.masking.transcoder import MaskTranscoder
from gateway.masking.zones import (
    MaskRaster,
    Zone,
    ZoneError,
    chroma_mask,
    rasterize,
    zones_from_json,
)
from gateway.protocols.rtp import rtp_header
from gateway.stream.hub import PathStream, Reader


def box(zid: str, x0: float, y0: float, x1: float, y1: float) -> Zone:
    return Zone(zid, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


# ---- rasterisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(320, 240), (1280, 720)])
def test_square_zone_covers_exactly_its_pixels(width, height):
    mask = rasterize((box("sq", 0.25, 0.25, 0.75, 0.75),), width, height)
    expected = np.zeros((height, width), bool)
    expected[height // 4 : height * 3 // 4, width // 4 : width * 3 // 4] = True
    assert mask.shape == (height, width)
    assert (mask == expected).all()


def test_pixels_partly_inside_are_masked():
    # Edges through the middle of pixels 10 and 29: both count, since half of each is private.
    mask = rasterize((box("sq", 0.105, 0.105, 0.295, 0.295),), 100, 100)
    expected = np.zeros((100, 100), bool)
    expected[10:30, 10:30] = True
    assert (mask == expected).all()


def _inside(px: np.ndarray, py: np.ndarray, poly: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon, vectorised over points (reference implementation)."""
    inside = np.zeros(px.shape, bool)
    for (ax, ay), (bx, by) in zip(poly, poly[1:] + poly[:1], strict=True):
        crosses = (ay > py) != (by > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = ax + (py - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (px < xc)
    return inside


def test_triangle_is_covered_conservatively():
    tri = Zone("tri", ((0.1, 0.1), (0.9, 0.2), (0.3, 0.8)))
    w, h = 320, 240
    mask = rasterize((tri,), w, h)
    poly = [(x * w, y * h) for x, y in tri.points]
    # Reference: 8x8 sub-samples per pixel; any sub-sample inside means the pixel is private.
    sub = (np.arange(8) + 0.5) / 8
    ys, xs = np.mgrid[0:h, 0:w]
    hit = np.zeros((h, w), bool)
    for dy in sub:
        for dx in sub:
            hit |= _inside(xs + dx, ys + dy, poly)
    assert (mask >= hit).all(), "a pixel with private content was left unmasked"
    # Not over-masking: everything masked is within one pixel of the polygon.
    near = np.zeros((h, w), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(hit, dy, axis=0), dx, axis=1)
    assert (near >= mask).all()
    area = 0.5 * abs(
        sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1], strict=True))
    )
    assert area <= mask.sum() <= area * 1.1


def test_normalised_zones_survive_resolution_changes():
    zones = (
        Zone("a", ((0.1234, 0.2345), (0.6789, 0.111), (0.8, 0.77), (0.3, 0.9))),
        box("b", 0.01, 0.61, 0.173, 0.987),
    )
    small = rasterize(zones, 640, 360)
    large = rasterize(zones, 1280, 720)
    # A pixel at half resolution covers 2x2 pixels at full resolution: it is private exactly
    # when one of those is.
    assert (small == large.reshape(360, 2, 640, 2).any(axis=(1, 3))).all()
    raster = MaskRaster(zones)
    assert raster.masks(1280, 720)[0].pixels == int(large.sum())
    assert raster.masks(640, 360)[0].pixels == int(small.sum())


def test_chroma_covers_any_masked_luma_pixel():
    luma = np.zeros((5, 7), bool)
    luma[3, 6] = True  # odd size: the last chroma sample covers a single column/row
    chroma = chroma_mask(luma)
    assert chroma.shape == (3, 4)
    assert chroma[1, 3] and chroma.sum() == 1


def test_apply_fills_black_in_place_and_leaves_the_rest():
    frame = av.VideoFrame(64, 48, "yuv420p")
    for plane in frame.planes:
        np.frombuffer(plane, np.uint8)[:] = 200
    MaskRaster((box("z", 0.25, 0.5, 0.5, 1.0),)).apply(frame)
    yuv = frame.to_ndarray()  # (72, 64): Y, then U and V rows
    y = yuv[:48]
    assert (y[24:48, 16:32] == 16).all()
    y[24:48, 16:32] = 200
    assert (y == 200).all()
    u = yuv[48:60].reshape(24, 32)
    v = yuv[60:72].reshape(24, 32)
    for plane in (u, v):
        assert (plane[12:24, 8:16] == 128).all()
        assert (plane == 128).sum() == 12 * 8


def test_zones_from_json_accepts_a_plain_list():
    zones = zones_from_json('[{"id": "door", "points": [[0, 0], [0.5, 0], [0.5, 1]]}]')
    assert zones == (Zone("door", ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0))),)


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "not json",
        '[{"id": "a", "points": [[0, 0], [1, 0]]}]',  # two points
        '[{"id": "a", "points": [[0, 0], [1, 0], [1, 1.5]]}]',  # out of range
        '[{"id": "a", "points": [[0, 0], [1, 0], [-0.1, 1]]}]',
        '[{"id": "a", "points": [[0, 0], [1, 0], [NaN, 1]]}]',
        '[{"id": "a", "points": [[0, 0], [1, 0], [Infinity, 1]]}]',
        '[{"id": "a", "points": [[0, 0], [1, 0], [1e400, 1]]}]',
        '[{"id": "a", "points": [[0, 0], [1, 0], ["1", 1]]}]',
        '[{"id": "a", "points": [[0, 0], [1, 0], [true, 1]]}]',
        '[{"id": "a", "points": [[0, 0], [1, 0], [1, 1, 1]]}]',
        '[{"id": "a", "points": [[0, 0], [0.5, 0.5], [1, 1]]}]',  # no area
        '[{"id": "a", "points": [[0, 0], [1, 0], [1, 1]], "extra": 1}]',
        '[{"id": "a", "id": "b", "points": [[0, 0], [1, 0], [1, 1]]}]',
        '[{"id": "", "points": [[0, 0], [1, 0], [1, 1]]}]',
        '[{"id": "a\\nb", "points": [[0, 0], [1, 0], [1, 1]]}]',
        '[{"id": 5, "points": [[0, 0], [1, 0], [1, 1]]}]',
        '[{"id": "a", "points": [[0, 0], [1, 0], [1, 1]]},'
        ' {"id": "a", "points": [[0, 0], [1, 0], [1, 1]]}]',  # duplicate id
        '[{"id": "a", "points": ' + str([[0, 0], [1, 0]] + [[1, 1]] * 63) + "}]",  # 65 points
        "[" + ",".join(f'{{"id": "z{i}", "points": [[0,0],[1,0],[1,1]]}}' for i in range(33)) + "]",
        "[" * 100_000,
    ],
)
def test_hostile_zone_json_is_refused(text):
    with pytest.raises(ZoneError):
        zones_from_json(text)


def test_zone_constructor_validates_too():
    with pytest.raises(ZoneError):
        Zone("a", ((0.0, 0.0), (1.0, 0.0), (math.nan, 1.0)))
    with pytest.raises(ZoneError):
        Zone("a", ((0.0, 0.0), (1.0, 0.0)))


# ---- the transcoder, end to end --------------------------------------------------------------

W, H = 640, 360
# The server refuses "~" paths by name (variants are reached through the policy's routing), so
# these tests publish the derived stream under a plain name and read it directly.
MASKED = "cam1-masked"
ZONES = (
    box("house", 0.1, 0.1, 0.35, 0.5),
    Zone("garden", ((0.6, 0.3), (0.95, 0.45), (0.8, 0.9))),
)


async def _still_image(tmp_path: Path) -> Path:
    still = tmp_path / "still.png"
    proc = await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
        "-i", f"testsrc2=size={W}x{H}", "-frames:v", "1", str(still),
    )  # fmt: skip
    assert await proc.wait() == 0
    return still


def _publish_still(still: Path, url: str) -> list[str]:
    # Every frame is the same picture, so any frame of the original matches any masked frame.
    return [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
        "-loop", "1", "-framerate", "25", "-i", str(still),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-g", "25", "-bf", "0", "-b:v", "1M", "-f", "rtsp", "-rtsp_transport", "tcp", url,
    ]  # fmt: skip


def _read_raw(url: str, out: Path, frames: int) -> list[str]:
    return [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp",
        "-i", url, "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "yuv420p", str(out),
    ]  # fmt: skip


def _frames(path: Path) -> np.ndarray:
    data = np.fromfile(path, np.uint8)
    size = W * H * 3 // 2
    assert data.size >= size and data.size % size == 0, data.size
    return data.reshape(-1, size)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


class _FrameCounter(asyncio.WriteTransport):
    """A hub reader's transport that counts access units (marker bits) on channel 0."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0
        self.ignore = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        at = 0
        while at + 4 <= len(data):
            size = int.from_bytes(data[at + 2 : at + 4], "big")
            if (
                data[at + 1] == 0
                and not self.ignore
                and rtp_header(data[at + 4 : at + 4 + size])[1]
            ):
                self.frames += 1
            at += 4 + size

    def is_closing(self) -> bool:
        return False  # the hub stops writing to a transport that is


async def test_masked_path_is_black_inside_zones_and_faithful_outside(gateway, procs, tmp_path):
    still = await _still_image(tmp_path)
    await procs(_publish_still(still, gateway.url("cam1")))
    await publishing(gateway, "cam1")
    source, target = gateway.hub.path("cam1"), gateway.hub.path(MASKED)
    tx = MaskTranscoder(source, target, ZONES, name=MASKED)
    tx.start()
    try:
        await wait_for(lambda: target.has_source, 10, what="masked path to be published")
        fmtp = next(line for line in target.tracks[0].sdp_lines if line.startswith("a=fmtp"))
        assert "packetization-mode=1" in fmtp and "sprop-parameter-sets=" in fmtp
        masked_raw, original_raw = tmp_path / "masked.yuv", tmp_path / "original.yuv"
        masked = await procs(_read_raw(gateway.url(MASKED), masked_raw, 10))
        original = await procs(_read_raw(gateway.url("cam1"), original_raw, 10))
        assert await masked.wait(20) == 0, masked.text
        assert await original.wait(20) == 0, original.text
    finally:
        await tx.stop()
    assert not tx.running

    inside = rasterize(ZONES, W, H)
    # The transcoder blacks out whole 8x8 tiles (so no codec ringing fringes the zones);
    # everything outside those tiles must match the original.
    luma_mask, chroma = tx.raster.masks(W, H)
    assert (luma_mask.mask >= inside).all()
    assert luma_mask.mask.sum() < inside.sum() * 1.3
    outside = ~luma_mask.mask
    reference = _frames(original_raw)[-1][: W * H].reshape(H, W)
    frames = _frames(masked_raw)
    assert len(frames) == 10
    for frame in frames:
        y = frame[: W * H].reshape(H, W)
        u = frame[W * H : W * H * 5 // 4].reshape(H // 2, W // 2)
        assert int(y[inside].max()) <= 20, "private pixels leaked"
        # Chroma inside the zones, away from their edges, is neutral (no colour leaks).
        core = chroma.mask & np.roll(chroma.mask, 2, 0) & np.roll(chroma.mask, -2, 0)
        core &= np.roll(core, 2, 1) & np.roll(core, -2, 1)
        assert np.abs(u[core].astype(int) - 128).max() <= 6
        assert _psnr(y[outside], reference[outside]) > 30
    counters = tx.counters
    assert counters.frames_out >= 10
    assert counters.frames_decoded <= counters.frames_in
    assert counters.encode_seconds > 0
    assert 0 < counters.last_latency < 1.0
    assert target.source_id is None  # stop() detached the derived path


async def test_ten_viewers_share_one_transcode(gateway, procs, tmp_path):
    still = await _still_image(tmp_path)
    await procs(_publish_still(still, gateway.url("cam1")))
    await publishing(gateway, "cam1")
    source, target = gateway.hub.path("cam1"), gateway.hub.path(MASKED)
    tx = MaskTranscoder(source, target, ZONES, name=MASKED)
    tx.start()
    # A probe beside the transcoder counts the source's access units; both skip the replayed
    # GOP cache the hub sends to a new reader.
    probe = _FrameCounter()
    probe.ignore = True
    source.add_reader(Reader(channels=(0,), transport=probe))
    probe.ignore = False
    try:
        await wait_for(lambda: target.has_source, 10, what="masked path to be published")
        viewers = [
            await procs(read_argv(gateway.url(MASKED), seconds=3, decode=False)) for _ in range(10)
        ]
        await wait_for(lambda: len(target.readers) == 10, 10, what="10 masked viewers")
        transcoders = [t for t in threading.enumerate() if t.name.startswith("mask-")]
        assert len(transcoders) == 1
        assert len(source.readers) == 2  # the transcoder and the probe: viewers read the target
        for v in viewers:
            assert await v.wait(20) == 0, v.text
            assert frames_of(v.text) >= 50, v.text
    finally:
        await tx.stop()
    c = tx.counters
    # One decode per source frame, not one per viewer.
    assert abs(c.frames_in - probe.frames) <= 1, (c.frames_in, probe.frames)
    assert c.frames_decoded <= c.frames_in
    assert c.frames_decoded >= c.frames_in - c.frames_dropped - 2
    assert c.frames_out <= c.frames_in
    assert c.frames_out > 50


def test_block_growth_covers_whole_tiles():
    raster = MaskRaster((box("z", 0.105, 0.105, 0.295, 0.295),), block=8)
    luma, _chroma = raster.masks(100, 100)
    expected = np.zeros((100, 100), bool)
    expected[8:32, 8:32] = True  # pixels 10..29 touch the tiles starting at 8, 16 and 24
    assert (luma.mask == expected).all()


def _rtp(seq: int, ts: int, nal: bytes, marker: bool = True) -> bytes:
    return (
        bytes((0x80, (0x80 if marker else 0) | 96))
        + seq.to_bytes(2, "big")
        + (ts.to_bytes(4, "big") + b"\x00\x00\x00\x01" + nal)
    )


async def test_a_worker_that_falls_behind_loses_whole_gops_not_memory():
    # The worker is never started: the queue fills and the loop side must drop, not block.
    source = PathStream("cam")
    for i in range(31):  # the hub has measured the camera (25 fps, 10-frame GOPs)
        source.video_stats.add(i * 3600, 1000, i % 10 == 0)
    tx = MaskTranscoder(source, PathStream("cam-masked"), ZONES, name="t", queue_size=3)
    idr, slice_ = b"\x65" + b"\x00" * 20, b"\x41" + b"\x00" * 20
    seq = 0
    for gop in range(3):
        for i in range(10):
            seq += 1
            tx._on_packet(_rtp(seq, (gop * 10 + i) * 3600, idr if i == 0 else slice_))
    c = tx.counters
    assert c.frames_in == 30
    assert tx._queue.qsize() == 3  # the first GOP's first three frames
    assert c.frames_dropped == 27
    assert c.gops_dropped == 1  # counted once per fall-behind, then skipping to keyframes
    # A lost packet breaks the access unit it belongs to: dropped, then wait for a keyframe.
    while not tx._queue.empty():
        tx._queue.get_nowait()
    tx._on_packet(_rtp(seq + 1, 400 * 3600, idr))
    tx._on_packet(_rtp(seq + 3, 401 * 3600, slice_))  # seq + 2 lost
    tx._on_packet(_rtp(seq + 4, 402 * 3600, slice_))
    assert tx._queue.qsize() == 1
    assert c.frames_dropped == 29
