"""The camera map's geometry, drawn as SVG with no map tiles from anywhere: cameras' WGS84
positions projected onto the page (equirectangular, with longitude shrunk by the cosine of the
middle latitude, which over a borough is within a fraction of a per cent of a true map),
a grid of round-numbered latitudes and longitudes, and a scale bar in metres. Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MapView", "Placed", "project"]

WIDTH, HEIGHT = 1000.0, 750.0  # the SVG's view box (the page's .map box is 4:3)
MARGIN = 60.0
MIN_SPAN_M = 300.0  # one camera alone, or several on one corner, still show a street's width
M_PER_DEG = 111_320.0  # metres per degree of latitude (and of longitude at the equator)
_STEPS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_SCALES_M = (50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)


@dataclass(frozen=True)
class Placed:
    key: str
    x: float
    y: float


@dataclass(frozen=True)
class GridLine:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str


@dataclass(frozen=True)
class MapView:
    width: float
    height: float
    points: tuple[Placed, ...]
    grid: tuple[GridLine, ...]
    scale_px: float
    scale_label: str


def _step(span_deg: float) -> float:
    """A round grid step giving about four to eight lines across ``span_deg``."""
    for step in _STEPS:
        if span_deg / step <= 8:
            return step
    return _STEPS[-1]


def project(positions: Sequence[tuple[str, float, float]]) -> MapView | None:
    """Place ``(key, latitude, longitude)`` points on the view box; None without any."""
    if not positions:
        return None
    lats = [p[1] for p in positions]
    lons = [p[2] for p in positions]
    mid_lat = (min(lats) + max(lats)) / 2
    shrink = max(math.cos(math.radians(mid_lat)), 0.01)
    # Spans in metres on the ground, at least MIN_SPAN_M, in the view box's shape.
    span_y = max((max(lats) - min(lats)) * M_PER_DEG, MIN_SPAN_M)
    span_x = max((max(lons) - min(lons)) * M_PER_DEG * shrink, MIN_SPAN_M)
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    per_px = max(span_x / inner_w, span_y / inner_h)  # metres per view-box unit
    centre_lat = (min(lats) + max(lats)) / 2
    centre_lon = (min(lons) + max(lons)) / 2

    def x_of(lon: float) -> float:
        return WIDTH / 2 + (lon - centre_lon) * M_PER_DEG * shrink / per_px

    def y_of(lat: float) -> float:
        return HEIGHT / 2 - (lat - centre_lat) * M_PER_DEG / per_px

    points = tuple(Placed(k, round(x_of(lon), 1), round(y_of(lat), 1)) for k, lat, lon in positions)
    # The grid over the whole view box: round latitudes and longitudes.
    lat_lo = centre_lat - HEIGHT / 2 * per_px / M_PER_DEG
    lat_hi = centre_lat + HEIGHT / 2 * per_px / M_PER_DEG
    lon_lo = centre_lon - WIDTH / 2 * per_px / (M_PER_DEG * shrink)
    lon_hi = centre_lon + WIDTH / 2 * per_px / (M_PER_DEG * shrink)
    grid: list[GridLine] = []
    step = _step(max(lat_hi - lat_lo, lon_hi - lon_lo))
    digits = max(0, -math.floor(math.log10(step)))
    lat = math.ceil(lat_lo / step) * step
    while lat <= lat_hi:
        y = round(y_of(lat), 1)
        grid.append(GridLine(0.0, y, WIDTH, y, f"{lat:.{digits}f}°"))
        lat += step
    lon = math.ceil(lon_lo / step) * step
    while lon <= lon_hi:
        x = round(x_of(lon), 1)
        grid.append(GridLine(x, 0.0, x, HEIGHT, f"{lon:.{digits}f}°"))
        lon += step
    # A scale bar of a round length, at most a quarter of the width.
    metres = next((m for m in reversed(_SCALES_M) if m / per_px <= WIDTH / 4), _SCALES_M[0])
    label = f"{metres // 1000} km" if metres >= 1000 else f"{metres} m"
    return MapView(WIDTH, HEIGHT, points, tuple(grid), round(metres / per_px, 1), label)
