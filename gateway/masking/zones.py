"""Privacy masks: polygon zones in normalised coordinates, rasterised per frame size and burnt
into decoded frames as solid black.

A zone is a polygon whose points are fractions of the picture's width and height, so one set of
zones fits every resolution a camera (or its sub-stream) may send. :class:`MaskRaster` turns the
zones into pixel masks for a frame size once and caches them; :meth:`MaskRaster.apply` then
fills those pixels of a PyAV ``VideoFrame`` in place through numpy views of its planes.

Rasterisation is conservative: a pixel is masked when any positive area of it lies inside a zone
(pixel centres inside the polygon, even-odd rule, plus every pixel whose interior a polygon edge
passes through). A chroma sample is masked when any of the four luma pixels it covers is, so no
colour of a private area bleeds out at a boundary either.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_POINTS",
    "MAX_ZONES",
    "MaskRaster",
    "PlaneMask",
    "Zone",
    "ZoneError",
    "chroma_mask",
    "grow_to_blocks",
    "rasterize",
    "zones_from_json",
]

MAX_POINTS = 64
MAX_ZONES = 32
MAX_JSON_BYTES = 64 * 1024
MAX_FRAME_SIDE = 8192
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
# Pixel coordinates are snapped to 1/256 pixel so that 0.1 * 1280 lands on 128, not just past it
# (which would mask a whole extra column). The shift is far below anything visible.
_SNAP = 256.0

BoolArray = npt.NDArray[np.bool_]


class ZoneError(ValueError):
    """A zone definition that cannot be used as a privacy mask."""


@dataclass(frozen=True)
class Zone:
    """One mask polygon; ``points`` are ``(x, y)`` in 0..1 of the picture's width and height."""

    id: str
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.fullmatch(self.id):
            raise ZoneError(
                f"zone id {self.id!r}: 1-64 characters of letters, digits, '_', '.', ':', '-'"
            )
        try:
            raw = list(self.points)
        except TypeError:
            raise ZoneError(f"zone {self.id}: points must be a sequence of (x, y)") from None
        if not 3 <= len(raw) <= MAX_POINTS:
            raise ZoneError(f"zone {self.id}: needs 3 to {MAX_POINTS} points, got {len(raw)}")
        norm: list[tuple[float, float]] = []
        for i, p in enumerate(raw):
            if isinstance(p, str | bytes) or not hasattr(p, "__len__") or len(p) != 2:
                raise ZoneError(f"zone {self.id}: point {i} is not an (x, y) pair")
            for v in p:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise ZoneError(f"zone {self.id}: point {i} has a non-numeric coordinate")
                if not math.isfinite(v) or not 0.0 <= v <= 1.0:
                    raise ZoneError(f"zone {self.id}: point {i} coordinate {v!r} not in 0..1")
            norm.append((float(p[0]), float(p[1])))
        # Stored as a tuple of float pairs whatever sequence was given (lists from JSON/DB rows).
        pts = tuple(norm)
        object.__setattr__(self, "points", pts)
        # Shoelace area: a degenerate (collinear) polygon would mask nothing at all.
        area2 = 0.0
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
            area2 += x0 * y1 - x1 * y0
        if abs(area2) < 1e-12:
            raise ZoneError(f"zone {self.id}: polygon has no area")


def _reject_constant(name: str) -> Any:
    raise ZoneError(f"zones JSON: {name} is not a number")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ZoneError(f"zones JSON: duplicate key {k!r}")
        out[k] = v
    return out


def zones_from_json(text: str | bytes) -> tuple[Zone, ...]:
    """Parse ``[{"id": "door", "points": [[x, y], ...]}, ...]`` strictly.

    Refused: more than 64 KiB, NaN/Infinity, duplicate keys, unknown keys, more than
    ``MAX_ZONES`` zones, duplicate ids, and any zone :class:`Zone` itself refuses.
    """
    if len(text) > MAX_JSON_BYTES:
        raise ZoneError(f"zones JSON larger than {MAX_JSON_BYTES} bytes")
    try:
        data = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ZoneError(f"zones JSON: {exc}") from None
    if not isinstance(data, list):
        raise ZoneError("zones JSON: expected a list of zones")
    if len(data) > MAX_ZONES:
        raise ZoneError(f"zones JSON: at most {MAX_ZONES} zones, got {len(data)}")
    zones: list[Zone] = []
    seen: set[str] = set()
    for n, item in enumerate(data):
        if not isinstance(item, dict):
            raise ZoneError(f"zone {n}: expected an object")
        if set(item) != {"id", "points"}:
            extra = sorted(set(item) - {"id", "points"})
            missing = sorted({"id", "points"} - set(item))
            raise ZoneError(f"zone {n}: unknown keys {extra}, missing keys {missing}")
        zid, raw = item["id"], item["points"]
        if not isinstance(zid, str):
            raise ZoneError(f"zone {n}: id must be a string")
        if zid in seen:
            raise ZoneError(f"zone {zid}: duplicate id")
        seen.add(zid)
        if not isinstance(raw, list) or len(raw) > MAX_POINTS:
            raise ZoneError(f"zone {zid}: points must be a list of at most {MAX_POINTS} pairs")
        points: list[tuple[float, float]] = []
        for i, p in enumerate(raw):
            if not isinstance(p, list) or len(p) != 2:
                raise ZoneError(f"zone {zid}: point {i} must be [x, y]")
            x, y = p
            for v in (x, y):
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise ZoneError(f"zone {zid}: point {i} has a non-numeric coordinate")
            points.append((float(x), float(y)))
        zones.append(Zone(zid, tuple(points)))
    return tuple(zones)


# --------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------


def _open_cover(
    lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Half-open index ranges ``[start, end)`` of unit cells whose open interior meets
    the closed interval ``[lo, hi]``."""
    start = np.floor(lo)
    end = np.ceil(hi)
    point = lo == hi
    end = np.where(point, np.where(start == lo, start, start + 1.0), end)
    return start.astype(np.int64), end.astype(np.int64)


def rasterize(zones: tuple[Zone, ...], width: int, height: int) -> BoolArray:
    """Boolean ``(height, width)`` mask: pixels any part of which lies inside a zone."""
    if not (0 < width <= MAX_FRAME_SIDE and 0 < height <= MAX_FRAME_SIDE):
        raise ValueError(f"frame size {width}x{height} out of range")
    # Row/column span starts (+1) and ends (-1); a cumulative sum > 0 marks covered pixels.
    diff = np.zeros((height, width + 1), np.int32)
    rows_all: list[npt.NDArray[np.int64]] = []
    starts_all: list[npt.NDArray[np.int64]] = []
    ends_all: list[npt.NDArray[np.int64]] = []
    yc = np.arange(height, dtype=np.float64) + 0.5
    for zone in zones:
        pts = np.asarray(zone.points, dtype=np.float64)
        xs = np.round(pts[:, 0] * width * _SNAP) / _SNAP
        ys = np.round(pts[:, 1] * height * _SNAP) / _SNAP
        x0, y0 = xs, ys
        x1, y1 = np.roll(xs, -1), np.roll(ys, -1)

        # 1. Pixel centres inside the polygon (even-odd), scanline by scanline.
        ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
        cross = (yc[:, None] >= ylo) & (yc[:, None] < yhi)  # (rows, edges), half-open rule
        dy = np.where(y1 != y0, y1 - y0, 1.0)
        xcross = x0 + (yc[:, None] - y0) / dy * (x1 - x0)
        xcross = np.sort(np.where(cross, xcross, np.inf), axis=1)
        count = cross.sum(axis=1)
        for k in range(0, xcross.shape[1] - 1, 2):
            valid = k + 1 < count
            if not valid.any():
                break
            rows = np.nonzero(valid)[0]
            left, right = xcross[rows, k], xcross[rows, k + 1]
            # Centre i + 0.5 in [left, right)
            rows_all.append(rows)
            starts_all.append(np.ceil(left - 0.5).astype(np.int64))
            ends_all.append(np.ceil(right - 0.5).astype(np.int64))

        # 2. Pixels whose open interior an edge passes through (partly inside pixels).
        for ax, ay, bx, by in zip(x0, y0, x1, y1, strict=True):
            if ay == by:
                if ay != math.floor(ay):
                    lo, hi = np.array([min(ax, bx)]), np.array([max(ax, bx)])
                    s, e = _open_cover(lo, hi)
                    rows_all.append(np.array([math.floor(ay)], np.int64))
                    starts_all.append(s)
                    ends_all.append(e)
                continue
            ymin, ymax = min(ay, by), max(ay, by)
            rows = np.arange(math.floor(ymin), math.ceil(ymax), dtype=np.int64)
            ya = np.maximum(rows.astype(np.float64), ymin)
            yb = np.minimum(rows.astype(np.float64) + 1.0, ymax)
            slope = (bx - ax) / (by - ay)
            xa = ax + (ya - ay) * slope
            xb = ax + (yb - ay) * slope
            s, e = _open_cover(np.minimum(xa, xb), np.maximum(xa, xb))
            rows_all.append(rows)
            starts_all.append(s)
            ends_all.append(e)

    if rows_all:
        rows = np.concatenate(rows_all)
        starts = np.clip(np.concatenate(starts_all), 0, width)
        ends = np.clip(np.concatenate(ends_all), 0, width)
        keep = (rows >= 0) & (rows < height) & (ends > starts)
        rows, starts, ends = rows[keep], starts[keep], ends[keep]
        np.add.at(diff, (rows, starts), 1)
        np.add.at(diff, (rows, ends), -1)
    covered: BoolArray = np.cumsum(diff, axis=1)[:, :width] > 0
    return covered


def chroma_mask(luma: BoolArray) -> BoolArray:
    """4:2:0 chroma mask: a chroma sample is masked when any luma pixel it covers is."""
    h, w = luma.shape
    ch, cw = (h + 1) // 2, (w + 1) // 2
    padded = np.zeros((ch * 2, cw * 2), np.bool_)
    padded[:h, :w] = luma
    out: BoolArray = np.asarray(padded.reshape(ch, 2, cw, 2).any(axis=(1, 3)), np.bool_)
    return out


# --------------------------------------------------------------------------------------
# Application to frames
# --------------------------------------------------------------------------------------

# Filling costs, measured with ops/bench/bench_masking.py --apply on this kind of machine: a
# rectangle (slice assignment) about 1.5 us whatever its size, a boolean-mask assignment about
# 0.35 ns per pixel of the mask's bounding box. Flat index arrays measured slower than both.
_RECT_NS = 1500.0
_BOX_PIXEL_NS = 0.35


class PlaneMask:
    """A plane's mask prepared for filling: a few rectangles (exact cover) when the zones are
    boxes, else a boolean mask over the zones' bounding box, whichever is cheaper."""

    __slots__ = ("box", "box_mask", "mask", "pixels", "rects")

    def __init__(self, mask: BoolArray) -> None:
        self.mask = mask
        self.pixels = int(mask.sum())
        rects = _rectangles(mask) if self.pixels else []
        self.box = (0, 0, 0, 0)
        self.box_mask: BoolArray | None = None
        if self.pixels:
            ys = np.nonzero(mask.any(axis=1))[0]
            xs = np.nonzero(mask.any(axis=0))[0]
            y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
            if len(rects) * _RECT_NS > (y1 - y0) * (x1 - x0) * _BOX_PIXEL_NS:
                self.box = (y0, y1, x0, x1)
                self.box_mask = np.ascontiguousarray(mask[y0:y1, x0:x1])
                rects = []
        self.rects = rects

    def fill(self, buf: npt.NDArray[np.uint8], stride: int, value: int) -> None:
        """Fill masked pixels of a 1-D plane buffer (rows of ``stride`` bytes)."""
        if not self.pixels:
            return
        rows = buf[: self.mask.shape[0] * stride].reshape(-1, stride)
        if self.box_mask is not None:
            y0, y1, x0, x1 = self.box
            rows[y0:y1, x0:x1][self.box_mask] = value
            return
        for y0, y1, x0, x1 in self.rects:
            rows[y0:y1, x0:x1] = value


def _rectangles(mask: BoolArray) -> list[tuple[int, int, int, int]]:
    """Cover a mask exactly with ``(y0, y1, x0, x1)`` rectangles: each row's runs, merged with
    the run directly above when it has the same columns."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    ys, xs = np.nonzero(edges)
    kinds = edges[ys, xs]
    open_runs: dict[tuple[int, int], int] = {}  # (x0, x1) -> start row, for the previous row
    rects: list[tuple[int, int, int, int]] = []
    runs_by_row: dict[int, list[tuple[int, int]]] = {}
    starts = xs[kinds > 0]
    ends = xs[kinds < 0]
    run_rows = ys[kinds > 0]
    for y, x0, x1 in zip(run_rows.tolist(), starts.tolist(), ends.tolist(), strict=True):
        runs_by_row.setdefault(y, []).append((x0, x1))
    prev_row = -2
    for y in sorted(runs_by_row):
        current = runs_by_row[y]
        still: dict[tuple[int, int], int] = {}
        for run in current:
            if y == prev_row + 1 and run in open_runs:
                still[run] = open_runs.pop(run)
            else:
                still[run] = y
        for (x0, x1), y0 in open_runs.items():
            rects.append((y0, prev_row + 1, x0, x1))
        open_runs = still
        prev_row = y
    for (x0, x1), y0 in open_runs.items():
        rects.append((y0, prev_row + 1, x0, x1))
    return rects


def grow_to_blocks(mask: BoolArray, block: int) -> BoolArray:
    """The mask grown outwards to whole ``block`` x ``block`` tiles of the picture's grid."""
    if block <= 1:
        return mask
    h, w = mask.shape
    bh, bw = -(-h // block), -(-w // block)
    padded = np.zeros((bh * block, bw * block), np.bool_)
    padded[:h, :w] = mask
    tiles = np.asarray(padded.reshape(bh, block, bw, block).any(axis=(1, 3)), np.bool_)
    grown: BoolArray = np.repeat(np.repeat(tiles, block, axis=0), block, axis=1)[:h, :w]
    return grown


class MaskRaster:
    """Zones rasterised per frame size (cached), filled black into yuv420p frames in place.

    ``block`` > 1 grows the masks to whole tiles of that size (8 for an encoder: an 8x8 luma
    tile is a whole 4x4 chroma transform block). Privacy does not depend on it, since pixels
    are black before the encoder sees them; but a transform block straddling a zone edge
    rings public pixels' quantisation error into the zone (measured: luma up to 35 five pixels
    deep at 640x360, against 16-17 with 8x8 tiles), which reads as a grey fringe inside.
    """

    __slots__ = ("_cache", "block", "zones")

    def __init__(self, zones: tuple[Zone, ...], *, block: int = 1) -> None:
        if len(zones) > MAX_ZONES:
            raise ZoneError(f"at most {MAX_ZONES} zones")
        if not 1 <= block <= 64:
            raise ValueError("block must be 1..64")
        self.zones = zones
        self.block = block
        self._cache: dict[tuple[int, int], tuple[PlaneMask, PlaneMask]] = {}

    def masks(self, width: int, height: int) -> tuple[PlaneMask, PlaneMask]:
        """(luma, chroma) masks for a frame size."""
        key = (width, height)
        cached = self._cache.get(key)
        if cached is None:
            luma = grow_to_blocks(rasterize(self.zones, width, height), self.block)
            cached = (PlaneMask(luma), PlaneMask(chroma_mask(luma)))
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = cached
        return cached

    def apply(self, frame: Any) -> None:
        """Fill the zones black in a PyAV ``VideoFrame`` (yuv420p or yuvj420p), in place.

        Decoded frames usually share their buffers with the decoder's reference pictures;
        they are made writable first (a copy only when shared), or the decoder would
        predict later frames from the masked picture.
        """
        fmt = frame.format.name
        if fmt == "yuv420p":
            black_y = 16
        elif fmt == "yuvj420p":
            black_y = 0
        else:
            raise ValueError(f"unsupported pixel format {fmt!r}: convert to yuv420p first")
        if not self.zones:
            return
        luma, chroma = self.masks(frame.width, frame.height)
        if not luma.pixels:
            return
        frame.make_writable()
        planes = frame.planes
        for plane, mask, value in (
            (planes[0], luma, black_y),
            (planes[1], chroma, 128),
            (planes[2], chroma, 128),
        ):
            buf = np.frombuffer(plane, np.uint8)
            mask.fill(buf, plane.line_size, value)
