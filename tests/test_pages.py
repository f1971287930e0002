"""The shared page frame (``base.html``, ``feedgate.css``) as the console will use it: ten
sections of navigation, a wall of 1 to 16 players, cards and wide tables, laid out in headless
Chromium on a 360 px phone, a tablet, a desktop and wall displays; autoescape and undefined
names; a stylesheet that fetches nothing from elsewhere."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp_jinja2
import jinja2
import pytest
from aiohttp import web

from gateway.http.pages import STATIC_DIR, NavItem, render, setup_pages

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SECTIONS = ("Cameras", "Wall", "Map", "Masks", "Grants", "Principals", "Sessions", "Audit",
            "Finance", "Public figures")  # fmt: skip


def probe_app() -> web.Application:
    app = web.Application()
    setup_pages(app)
    env = aiohttp_jinja2.get_env(app)
    env.loader = jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(Path(__file__).with_name("templates")), env.loader]  # type: ignore[list-item]
    )

    async def probe(request: web.Request) -> web.Response:
        tiles = int(request.query.get("tiles", "16"))
        wall = request.query.get("wall") == "1"
        nav = tuple(NavItem(s.lower(), s, f"/{s.lower().replace(' ', '-')}") for s in SECTIONS)
        return render(
            request,
            "console_probe.html",
            {
                "title": "Wall",
                "network": request.query.get("network", "London Borough of Testford"),
                "section": "Control room",
                "who": {
                    "principal": "control-room-operator-7",
                    "tenant": "council",
                    "tenant_name": "London Borough of Testford",
                    "sign_out": "/logout",
                },
                "nav": nav,
                "current": "wall",
                "body_class": "wall" if wall else "",
                "tiles": tiles,
                "wall": wall,
            },
        )

    app.router.add_get("/probe", probe)
    return app


@contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """``app`` on a free loopback port, run by its own event loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serving(probe_app()) as url:
        yield url


def _columns(page: Page) -> int:
    return int(
        page.evaluate(
            "new Set([...document.querySelectorAll('.tile')].map(t => t.offsetLeft)).size"
        )
    )


def _no_overflow(page: Page) -> int:
    return int(page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    ))  # fmt: skip


# (width, height, tiles per row for 4, 9 and 16 tiles)
SCREENS = ((360, 740, (2, 2, 2)), (768, 1024, (2, 3, 4)), (1280, 800, (2, 3, 4)),
           (1920, 1080, (2, 3, 4)), (3840, 2160, (2, 3, 4)))  # fmt: skip


def test_the_frame_fits_every_screen_with_the_consoles_sections(
    base: str, browser: Browser, tmp_path: Path
) -> None:
    for width, height, columns in SCREENS:
        context = browser.new_context(viewport={"width": width, "height": height})
        try:
            page = context.new_page()
            for tiles, cols in zip((4, 9, 16), columns, strict=True):
                page.goto(f"{base}/probe?tiles={tiles}")
                assert _no_overflow(page) <= 0, (width, tiles)
                assert _columns(page) == cols, (width, tiles)
            page.screenshot(path=str(tmp_path / f"console-{width}.png"), full_page=True)
            # Every section is reachable: on a phone the row scrolls sideways, in its own box.
            links = page.locator("nav.tabs a")
            assert links.all_inner_texts() == list(SECTIONS)
            last = links.last
            last.scroll_into_view_if_needed()
            box = last.bounding_box()
            assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= width + 1
            assert _no_overflow(page) <= 0
            assert page.locator("nav.tabs a.on").inner_text() == "Wall"
            # Tiles keep the camera's 16:9 off the wall.
            tile = page.locator(".tile").first.bounding_box()
            assert tile is not None and abs(tile["width"] / tile["height"] - 16 / 9) < 0.02
        finally:
            context.close()


def test_the_wall_fills_the_screen_and_is_dark(base: str, browser: Browser, tmp_path: Path) -> None:
    for width, height in ((1920, 1080), (3840, 2160)):
        context = browser.new_context(viewport={"width": width, "height": height})
        try:
            page = context.new_page()
            page.goto(f"{base}/probe?tiles=16&wall=1")
            assert _columns(page) == 4 and _no_overflow(page) <= 0
            grid = page.locator(".tiles").bounding_box()
            assert grid is not None
            assert grid["width"] >= width * 0.98
            assert height * 0.85 <= grid["y"] + grid["height"] <= height, grid
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(13, 16, 20)"
            page.screenshot(path=str(tmp_path / f"wall-{width}.png"))
        finally:
            context.close()


def test_values_are_escaped_and_the_stylesheet_is_served(base: str, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(f"{base}/probe?network=%3Cscript%3Ewindow.pwned%3D1%3C%2Fscript%3E")
        assert response is not None and response.ok
        assert page.evaluate("window.pwned") is None
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt; CCTV network" in page.content()
        assert page.locator("header.top script").count() == 0
        css = page.locator("link[rel=stylesheet]").get_attribute("href")
        assert css is not None and re.fullmatch(r"/static/feedgate\.css\?v=[\w%-]+", css)
        answer = page.request.get(base + css)
        assert answer.ok and answer.headers["content-type"].startswith("text/css")
        assert response.headers["content-security-policy"].startswith("default-src 'none';")
    finally:
        context.close()


def test_an_undefined_name_in_a_template_is_an_error() -> None:
    app = web.Application()
    setup_pages(app)
    env = aiohttp_jinja2.get_env(app)
    assert env.autoescape is True
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ nobody_set_this }}").render()


def test_the_stylesheet_fetches_nothing_from_elsewhere() -> None:
    css = (STATIC_DIR / "feedgate.css").read_text()
    assert "@import" not in css and "@font-face" not in css
    assert not re.search(r"url\(|https?:", css)
