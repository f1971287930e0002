"""The public transparency page: the anonymised monthly figures of ``tenants.transparency``,
served without a token at ``/transparency`` (HTML) and ``/transparency/<YYYY-MM>.json``.

Reports are built off the event loop and kept for a minute (an hour for a month that is over,
whose activity no longer changes), so a page fetched often costs one build a minute at most,
whoever asks.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tenants.db import Database
from tenants.months import month_bounds, previous_month
from tenants.transparency import ACTIVITIES, monthly_report, publishable

__all__ = ["PUBLIC_PREFIX", "add_transparency_routes"]

PUBLIC_PREFIX = "/transparency"
CACHE_SECONDS = 60.0
CACHE_SECONDS_PAST = 3600.0
CACHE_PERIODS = 36

_LABELS = {
    "organisations": "Organisations",
    "grants": "Grants held",
    "live_views": "Live views",
    "playbacks": "Playbacks",
    "exports": "Exports",
    "mask_lifts": "Privacy masks lifted",
    "refused": "Requests refused",
    "viewing_hours": "Hours of viewing",
}


def add_transparency_routes(
    app: web.Application,
    *,
    db: Database,
    viewing_ms: Callable[[str], dict[str, int]] | None = None,
    council: str = "the council",
) -> None:
    """``viewing_ms(period)``: metered live + playback milliseconds per tenant (billing)."""
    cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
    lock = asyncio.Lock()
    # Its own connection where it can have one, so a month's scan never holds the one the
    # gateway's audit appends use.
    own: list[Database] = []

    def build(period: str) -> dict[str, Any]:
        if not own:
            own.append(db if db.url.endswith(":memory:") else Database.open(db.url))
        hours = viewing_ms(period) if viewing_ms is not None else None
        return publishable(monthly_report(own[0], period, viewing_ms_by_tenant=hours))

    async def close(app: web.Application) -> None:
        for conn in own:
            if conn is not db:
                conn.close()

    app.on_cleanup.append(close)

    async def report(period: str) -> dict[str, Any]:
        try:
            start, _ = month_bounds(period)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        if start > datetime.now(UTC):  # nothing to count, and no reason to build anything
            raise web.HTTPNotFound(text=f"{period} has not begun")
        async with lock:  # one build at a time; the others wait for its result
            hit = cache.get(period)
            over = month_bounds(period)[1] <= datetime.now(UTC)
            ttl = CACHE_SECONDS_PAST if over else CACHE_SECONDS
            if hit is not None and time.monotonic() - hit[0] < ttl:
                return hit[1]
            result = await asyncio.to_thread(build, period)
            cache[period] = (time.monotonic(), result)
            cache.move_to_end(period)
            while len(cache) > CACHE_PERIODS:
                cache.popitem(last=False)
            return result

    async def as_json(request: web.Request) -> web.Response:
        return web.json_response(await report(request.match_info["period"]))

    async def page(request: web.Request) -> web.Response:
        period = request.query.get("period") or previous_month(datetime.now(UTC))
        return web.Response(
            text=_render(await report(period), council),
            content_type="text/html",
            headers={"Cache-Control": f"public, max-age={int(CACHE_SECONDS)}"},
        )

    app.router.add_get(PUBLIC_PREFIX, page)
    app.router.add_get(PUBLIC_PREFIX + "/{period}.json", as_json)


def _render(report: dict[str, Any], council: str) -> str:
    e = html.escape
    kinds = report["by_organisation_kind"]
    columns = ["organisations", "grants", *ACTIVITIES]
    if any("viewing_hours" in v for v in kinds.values()):
        columns.append("viewing_hours")
    head = "".join(f"<th>{e(_LABELS[c])}</th>" for c in columns)
    rows = "".join(
        f"<tr><th>{e(kind.capitalize())}</th>"
        + "".join(f"<td>{e(str(entry.get(c, '')))}</td>" for c in columns)
        + "</tr>"
        for kind, entry in kinds.items()
    )
    period = e(report["period"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>CCTV network: published figures for {period}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;margin:2rem;max-width:72rem}}
table{{border-collapse:collapse}}th,td{{border:1px solid #999;padding:.3rem .6rem}}
td{{text-align:right}}</style></head>
<body><h1>CCTV network: published figures for {period}</h1>
<p>How {e(council)}'s CCTV network was shared in {period}, by kind of organisation. No
organisation, person or camera is named. {e(report["suppression"].capitalize())}.</p>
<p>Cameras: <strong>{report["cameras"]}</strong>, of which
<strong>{report["cameras_with_privacy_masks"]}</strong> carry privacy masks over private
property.</p>
<table id="figures"><thead><tr><th>Kind of organisation</th>{head}</tr></thead>
<tbody>{rows}</tbody></table>
<p>Generated {e(report["generated_at"])}. Machine-readable:
<a href="/transparency/{period}.json">/transparency/{period}.json</a>.</p>
</body></html>"""
