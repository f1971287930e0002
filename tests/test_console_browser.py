"""The console in Debian's Chromium (headless, driven by Playwright) against a real gateway fed
by ffmpeg cameras: signing in with the password form, a 4-tile wall of WHEP players whose
decoded frames keep rising on every tile, a masked tenant's picture black inside its mask where
the owner's is bright, a tile that reconnects by itself when its session drops, the layout
saved per principal, the mask editor, and every page at phone, tablet and desktop widths
(screenshots kept in var/test-artefacts/, see the ``artefacts`` fixture)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from console_site import PASSWORD, Site, console_site

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

WALL = ("depot", "market", "street", "yard")  # the council operator's first four cameras


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with console_site(tmp_path_factory.mktemp("console-browser"), publish=WALL) as s:
        yield s


def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something true; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


@contextmanager
def signed_in(
    browser: Browser, site: Site, who: str, path: str, *, width: int = 1280, height: int = 800
) -> Iterator[Page]:
    """A fresh browser profile that signs in with the password form and lands on ``path``."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.on("dialog", lambda dialog: dialog.accept())
    try:
        page = context.new_page()
        page.goto(site.base + path)
        assert "/console/login" in page.url  # sent to sign in first
        page.fill("input[name=principal]", who)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        assert page.url == site.base + path, page.url
        yield page
    finally:
        context.close()


FRAMES = """() => [...document.querySelectorAll('.tile')].map(t => ({
  camera: t.dataset.camera || null,
  state: t.dataset.state || '',
  frames: t.querySelector('video').getVideoPlaybackQuality().totalVideoFrames,
}))"""

# Mean RGB at (x, y) fractions of the picture, read back from a canvas the video is drawn on.
SAMPLE = """(points) => {
  const v = document.querySelector('.tile video');
  if (!v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  return points.map(([x, y]) => {
    const d = g.getImageData(Math.floor(x * c.width), Math.floor(y * c.height), 1, 1).data;
    return (d[0] + d[1] + d[2]) / 3;
  });
}"""


def playing(page: Page, timeout: float = 45.0) -> list[dict[str, Any]]:
    def tiles() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = page.evaluate(FRAMES)
        return found if all(t["frames"] > 0 for t in found) else None

    return until(tiles, timeout, "every tile to decode frames")  # type: ignore[no-any-return]


def test_chromium_signs_in_and_plays_a_four_tile_wall(
    site: Site, browser: Browser, artefacts: Path
) -> None:
    with signed_in(browser, site, "council-op", "/console/wall") as page:
        first = playing(page)
        assert [t["camera"] for t in first] == list(WALL)
        # Decoded frames keep rising on every tile (15 fps cameras: ~30 more in 2 s).
        before = {t["camera"]: t["frames"] for t in first}
        until(
            lambda: all(t["frames"] >= before[t["camera"]] + 10 for t in page.evaluate(FRAMES)),
            20,
            "frames to keep rising on every tile",
        )
        assert all(t["state"] == "good" for t in page.evaluate(FRAMES))
        # Each tile is one WebRTC session of this principal, audited like any other.
        sessions = [
            s
            for s in site.gateway.control.core.media.sessions()
            if s.protocol == "webrtc" and s.principal == "council-op"
        ]
        assert sorted(s.camera for s in sessions) == list(WALL)
        page.screenshot(path=str(artefacts / "wall-1280.png"))
        full = page.get_by_role("button", name="Full screen")
        full.click()
        until(
            lambda: page.evaluate("document.fullscreenElement && document.fullscreenElement.id"),
            5,
            "the wall to go full screen",
        )
    # Leaving the page ends the sessions (the players DELETE them), within the re-check.
    until(
        lambda: (
            not [
                s for s in site.gateway.control.core.media.sessions() if s.principal == "council-op"
            ]
        ),
        15,
        "the sessions to end",
    )


INSIDE = [(0.80, 0.3), (0.85, 0.5), (0.9, 0.7), (0.75, 0.6)]  # in the shop's mask
OUTSIDE = [(0.2, 0.3), (0.4, 0.6)]


def test_the_masked_tenant_sees_black_where_the_owner_sees_the_picture(
    site: Site, browser: Browser, artefacts: Path
) -> None:
    path = "/console/cameras/street"
    samples: dict[str, list[list[float]]] = {}
    for who in ("guard", "council-op"):
        with signed_in(browser, site, who, path) as page:
            playing(page)
            got: list[list[float]] = []
            for _ in range(5):  # the mask stays on, frame after frame
                values = until(lambda: page.evaluate(SAMPLE, [*INSIDE, *OUTSIDE]), 10, "pixels")
                got.append(values)
                time.sleep(0.3)
            samples[who] = got
            page.screenshot(path=str(artefacts / f"street-{who}.png"))
    for values in samples["guard"]:
        inside, outside = values[: len(INSIDE)], values[len(INSIDE) :]
        assert max(inside) < 40, values  # black: burnt in before it left the gateway
        assert min(outside) > 200, values  # the rest of the picture is there
    for values in samples["council-op"]:
        assert min(values) > 200, values  # the owner's picture is bright in the same places
    # The shop's session was its masked variant, never the original.
    starts = [e for e in site.entries("session_start") if e.principal == "guard"]
    assert starts and all(e.detail.get("variant", "").startswith("masked-") for e in starts)


def test_a_tile_reconnects_by_itself_when_its_session_drops(site: Site, browser: Browser) -> None:
    with signed_in(browser, site, "officer", "/console/wall?tiles=1&cameras=yard") as page:
        playing(page)

        def session() -> Any:
            found = [
                s
                for s in site.gateway.control.core.media.sessions()
                if s.principal == "officer" and s.camera == "yard"
            ]
            return found[0] if len(found) == 1 else None

        dropped = until(session, 10, "the tile's session").id
        # The gateway ends it, as a network drop looks to the browser: its packets stop.
        assert site.gateway.control.core.media.kick(dropped, "test: connection lost")
        until(
            lambda: (s := session()) is not None and s.id != dropped,
            30,
            "the tile to open a new session by itself",
        )
        frames = page.evaluate(FRAMES)[0]["frames"]
        until(
            lambda: page.evaluate(FRAMES)[0]["frames"] > frames + 10,
            20,
            "the picture to move again",
        )
        assert page.evaluate(FRAMES)[0]["state"] == "good"


def test_the_layout_is_saved_for_the_principal(site: Site, browser: Browser) -> None:
    with signed_in(browser, site, "officer", "/console/wall") as page:
        with page.expect_navigation():
            page.get_by_role("button", name="9", exact=True).click()
        assert page.locator(".tile").count() == 9
        page.locator('.tile[data-index="0"] select').select_option("yard")
        until(lambda: site.run(_saved(site, "officer")), 5, "the layout to be saved")
    with signed_in(browser, site, "officer", "/console/wall") as page:  # another browser
        assert page.locator(".tile").count() == 9
        assert page.locator('.tile[data-index="0"]').get_attribute("data-camera") == "yard"


async def _saved(site: Site, who: str) -> Any:
    import asyncio

    from gateway.http.console.layouts import LayoutStore

    layout = await asyncio.to_thread(LayoutStore(site.tenancy.db).get, who)
    return layout is not None and layout.tiles == 9 and layout.cameras[0] == "yard"


def test_the_mask_editor_draws_and_saves_a_polygon(
    site: Site, browser: Browser, artefacts: Path
) -> None:
    with signed_in(browser, site, "council-admin", "/console/masks/yard") as page:
        overlay = page.locator("#mask-editor svg.overlay")
        until(lambda: overlay.bounding_box(), 10, "the editor")
        box = overlay.bounding_box()
        assert box is not None
        for fx, fy in ((0.1, 0.1), (0.4, 0.1), (0.4, 0.5), (0.1, 0.5)):
            page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        assert page.locator("#mask-editor circle.corner").count() == 4
        page.fill("#mask-form input[name=id]", "yard-window")
        page.fill("#mask-form input[name=label]", "Flat window")
        page.check('#mask-form input[value="retail"]')
        page.get_by_role("button", name="Save mask").click()
        until(
            lambda: "Saved yard-window" in (page.locator("#mask-status").text_content() or ""),
            10,
            "the save",
        )
        page.screenshot(path=str(artefacts / "mask-editor.png"))
    [zone] = [z for z in site.tenancy.store.list_masks("yard") if z.id == "yard-window"]
    assert [tuple(round(c, 2) for c in p) for p in zone.points] == [
        (0.1, 0.1),
        (0.4, 0.1),
        (0.4, 0.5),
        (0.1, 0.5),
    ]
    assert {k.value for k in zone.tenant_kinds} == {"retail"} and zone.label == "Flat window"
    [entry] = [e for e in site.entries("mask_changed") if e.detail.get("mask") == "yard-window"]
    assert entry.principal == "council-admin"
    site.rest("council-admin", "DELETE", "/v1/masks/yard-window")


PAGES = (
    "/console",
    "/console/wall",
    "/console/map",
    "/console/masks",
    "/console/grants",
    "/console/principals",
    "/console/sessions",
    "/console/audit",
    "/console/exports",
    "/console/sar",
    "/console/cameras/street",
    "/console/masks/street",
)


@pytest.mark.parametrize("width, height", [(360, 740), (768, 1024), (1920, 1080)])
def test_every_page_fits_phones_tablets_and_desktops(
    site: Site, browser: Browser, artefacts: Path, width: int, height: int
) -> None:
    with signed_in(browser, site, "council-admin", "/console", width=width, height=height) as page:
        for path in PAGES:
            page.goto(site.base + path)
            page.wait_for_load_state()
            if path == "/console/wall":
                playing(page)  # the screenshot shows the pictures
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            name = path.strip("/").replace("/", "-")
            page.screenshot(path=str(artefacts / f"{width}-{name}.png"), full_page=True)
            assert overflow <= 0, (width, path, overflow)
        page.goto(site.base + "/console/wall")
        tiles = page.locator(".tile")
        first = tiles.nth(0).bounding_box()
        assert first is not None and first["width"] <= width
    shots = list(artefacts.glob(f"{width}-*.png"))
    assert len(shots) == len(PAGES) and all(s.stat().st_size > 5000 for s in shots)
