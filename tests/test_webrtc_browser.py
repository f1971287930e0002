"""WHEP in a real browser: Debian's Chromium (headless, driven by Playwright) plays a camera
from a minimal test player (``tests/data/whep-player.html``, not the console) served by the
gateway itself, decodes it, and shows each tenant what its policy allows: the masked tenant's
pixels inside the mask zone are dark where the owner's are bright."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fixtures_browser import CHROMIUM, CHROMIUM_ARGS
from whep_fixtures import SEED, Whep, whep_bench

PLAYER = (Path(__file__).parent / "data" / "whep-player.html").read_text()
HAVE_CHROMIUM = Path(CHROMIUM).exists()
ZONE = ((0.1, 0.1), (0.5, 0.1), (0.5, 0.5), (0.1, 0.5))
INSIDE, OUTSIDE = (0.3, 0.3), (0.75, 0.75)  # fractions of the picture
MASKED_SEED = (
    SEED
    + f"""
[[masks]]
id = "neighbours-window"
camera = "street"
points = {[list(p) for p in ZONE]}
kind = "permanent"
tenant_kinds = ["retail"]
"""
)
# A white picture: what a viewer sees in the zone is the mask, or the camera, and nothing else.
WHITE = "color=c=white:size=320x240:rate=25"


def _routes(app: web.Application) -> None:
    """The test player, ahead of the gateway's own middleware (it is no page of the gateway's:
    only its origin matters, so that its fetches are same-origin as the console's are)."""

    @web.middleware
    async def player(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/test/whep-player.html":
            return web.Response(text=PLAYER, content_type="text/html")
        return await handler(request)  # type: ignore[no-any-return]

    app.middlewares.insert(0, player)


@pytest.fixture
async def street(tmp_path: Path, procs: Any) -> AsyncIterator[Whep]:
    async with whep_bench(
        tmp_path, procs, seed=MASKED_SEED, pattern=WHITE, routes=_routes
    ) as bench:
        yield bench


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """Chromium through Playwright's async API (fixtures_browser's is the sync one): the
    gateway under test runs on this test's own event loop."""
    if not HAVE_CHROMIUM:
        pytest.skip("headless Chromium not installed: apt-get install -y chromium (ops/install.sh)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # Loopback is the only network here; Chromium leaves it out of ICE unless told.
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, "--allow-loopback-in-peer-connection"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def poll(page: Any, script: str, ok: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(script)
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value})")
        await asyncio.sleep(0.1)


async def watch(street: Whep, browser: Any, tenant: str, subject: str) -> tuple[int, int, str]:
    """Chromium plays the street camera as this tenant's viewer; returns the luma it shows
    inside and outside the mask zone once frames keep being decoded, and the hub path it was
    served."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{street.base}/test/whep-player.html")
        result = await page.evaluate(
            "([url, token]) => play(url, token)",
            [f"{street.base}/whep/street", street.token(tenant, subject)],
        )
        assert result["status"] == 201, result
        await poll(page, "state()", lambda s: s == "connected", 15, "the peer connection")
        first = await poll(page, "decodedFrames()", lambda n: n > 0, 15, "a decoded frame")
        # Decoding goes on: a second's worth more frames (the camera sends 25 a second).
        second = await poll(
            page, "decodedFrames()", lambda n: n >= first + 25, 10, "a second of frames"
        )
        inside = await page.evaluate(f"luma({INSIDE[0]}, {INSIDE[1]})")
        outside = await page.evaluate(f"luma({OUTSIDE[0]}, {OUTSIDE[1]})")
        await poll(page, "decodedFrames()", lambda n: n > second, 5, "frames after that")
        (session,) = (s for s in street.webrtc.sessions.values() if s.tenant == tenant)
        return inside, outside, session.stream.name
    finally:
        await context.close()


async def test_chromium_decodes_whep_and_sees_the_mask_only_where_its_tenant_must(
    street: Whep, chromium: Any
) -> None:
    owner_inside, owner_outside, owner_path = await watch(street, chromium, "council", "operator")
    shop_inside, shop_outside, shop_path = await watch(street, chromium, "shop", "guard")
    # The owner sees the camera; the shop (a retail partner, whom the zone is for) sees the
    # same picture with the zone burnt in black.
    assert owner_inside > 200 and owner_outside > 200, (owner_inside, owner_outside)
    assert shop_inside < 40, shop_inside
    assert shop_outside > 200, shop_outside
    # Each played its own hub path: the shop its masked variant, the owner the original.
    assert owner_path == "street"
    assert shop_path.startswith("street~")
