"""The public transparency page: the anonymised monthly figures of ``tenants.transparency``,
served without a token at ``/transparency`` (HTML) and ``/transparency/<YYYY-MM>.json``.

Reports are built off the event loop and kept for a minute (an hour for a month that is over,
whose activity no longer changes), so a page fetched often costs one build a minute at most,
whoever asks. The page is ``templates/transparency.html``; an error names no part of the
request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any, NoReturn

from aiohttp import web

from gateway.http import pages
from tenants.db import Database
from tenants.months import (
    DEFAULT_ZONE,
    add_months,
    month_bounds,
    month_days,
    month_of,
    previous_month,
)
from tenants.transparency import ACTIVITIES, monthly_report, publishable

__all__ = ["PUBLIC_PREFIX", "add_transparency_routes"]

PUBLIC_PREFIX = "/transparency"
CACHE_SECONDS = 60.0
CACHE_SECONDS_PAST = 3600.0
CACHE_PERIODS = 36
_BAD_MONTH = "The month must be written as YYYY-MM, e.g. 2026-10."
_NOT_BEGUN = "That month has not begun: there are no figures for it yet."

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
    zone: tzinfo = DEFAULT_ZONE,
) -> None:
    """``viewing_ms(period)``: metered live + playback milliseconds per tenant (billing), for
    the same months: `zone`'s, the deployment's."""
    pages.setup_pages(app)
    cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
    lock = asyncio.Lock()
    # Its own connection where it can have one, so a month's scan never holds the one the
    # gateway's audit appends use.
    own: list[Database] = []

    def build(period: str) -> dict[str, Any]:
        if not own:
            own.append(db if db.url.endswith(":memory:") else Database.open(db.url))
        hours = viewing_ms(period) if viewing_ms is not None else None
        return publishable(monthly_report(own[0], period, viewing_ms_by_tenant=hours, zone=zone))

    async def close(app: web.Application) -> None:
        for conn in own:
            if conn is not db:
                conn.close()

    app.on_cleanup.append(close)

    def month(request: web.Request, period: str) -> datetime:
        """The end of the month asked for, or an error: a bad month is 400; one that has not
        begun is 404, with nothing to count and no reason to build anything."""
        try:
            start, end = month_bounds(period, zone)
        except ValueError:
            fail(request, 400, _BAD_MONTH)
        if start > datetime.now(UTC):
            fail(request, 404, _NOT_BEGUN)
        return end

    def fail(request: web.Request, status: int, message: str) -> NoReturn:
        if request.path.endswith(".json"):
            raise (web.HTTPBadRequest if status == 400 else web.HTTPNotFound)(text=message)
        pages.fail(request, status, message, context={"section": "Published figures"})

    async def report(period: str, end: datetime) -> dict[str, Any]:
        async with lock:  # one build at a time; the others wait for its result
            hit = cache.get(period)
            over = end <= datetime.now(UTC)
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
        period = request.match_info["period"]
        return web.json_response(await report(period, month(request, period)))

    async def page(request: web.Request) -> web.Response:
        period = request.query.get("period") or previous_month(datetime.now(UTC), zone)
        figures = await report(period, month(request, period))
        return pages.render(
            request,
            "transparency.html",
            _context(figures, council, month_of(datetime.now(UTC), zone)),
            headers=pages.page_headers(cache=f"public, max-age={int(CACHE_SECONDS)}"),
        )

    app.router.add_get(PUBLIC_PREFIX, page)
    app.router.add_get(PUBLIC_PREFIX + "/{period}.json", as_json)


def _context(report: dict[str, Any], council: str, this_month: str) -> dict[str, Any]:
    kinds = report["by_organisation_kind"]
    columns = ["organisations", "grants", *ACTIVITIES]
    if any("viewing_hours" in v for v in kinds.values()):
        columns.append("viewing_hours")
    period = report["period"]
    first, _ = month_days(period)
    following = add_months(period, 1)
    return {
        "title": f"CCTV network: published figures for {period}",
        "section": "Published figures",
        "period": period,
        "month": f"{first:%B %Y}",
        "prev": _month_link(add_months(period, -1), "← "),
        "next": _month_link(following, "", " →") if following <= this_month else None,
        "council": council,
        "suppression": report["suppression"].capitalize(),
        "cameras": report["cameras"],
        "masked": report["cameras_with_privacy_masks"],
        "labels": [_LABELS[c] for c in columns],
        "rows": [
            (kind.capitalize(), [entry.get(c, "") for c in columns])
            for kind, entry in kinds.items()
        ],
        "sar": report.get("subject_access_requests"),
        "recording": report.get("recording"),
        "generated_at": report["generated_at"],
        "json_href": f"{PUBLIC_PREFIX}/{period}.json",
    }


def _month_link(period: str, before: str, after: str = "") -> dict[str, str]:
    first, _ = month_days(period)
    return {"label": f"{before}{first:%B %Y}{after}", "href": f"{PUBLIC_PREFIX}?period={period}"}
