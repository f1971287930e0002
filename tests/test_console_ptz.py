"""Steering a camera from its tile in the console, in Debian's Chromium (headless, Playwright),
against a real gateway whose camera "street" is steered through a FAKE ONVIF camera: dragging
the pad pans and tilts it and letting go stops it, the wheel zooms, a preset is saved and gone
to, the panel shows who holds control (the lock-state event stream) and tells the operator when
the police take it, and a viewer without the ptz right gets no controls. The page's calls are
the REST API's, with the session cookie and the page's CSRF value, and without that value the
same call is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from console_site import Site, console_site
from test_console_browser import signed_in, until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

POLICE_PTZ = """
[[grants]]
id = "police-ptz"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live", "ptz"]
"""
PAGE = "/console/cameras/street"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console-ptz")
    with console_site(tmp, ptz_camera="street", seed_extra=POLICE_PTZ) as s:
        yield s


def position(site: Site) -> tuple[float, float, float]:
    return site.ptz.head.position(time.time())  # type: ignore[no-any-return]


def holder(page: Page) -> str:
    return str(page.locator(".ptz-holder").inner_text())


def said(page: Page) -> str:
    return str(page.locator(".ptz-said").inner_text())


def test_the_operator_steers_from_the_tile_and_sees_who_holds_control(
    site: Site, browser: Browser, artefacts: Path
) -> None:
    with signed_in(browser, site, "council-op", PAGE) as page:
        until(lambda: page.locator("[data-ptz-camera]").get_attribute("data-ready") == "yes",
              15, "the PTZ panel")  # fmt: skip
        until(lambda: "Nobody" in holder(page), 10, "the lock state (free)")

        # Drag from the pad's centre to the upper right: the camera pans right and tilts up.
        page.locator(".ptz-pad").scroll_into_view_if_needed()
        box = page.locator(".ptz-pad").bounding_box()
        assert box is not None
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + box["width"] * 0.4, cy - box["height"] * 0.25, steps=5)
        until(lambda: site.ptz.head.moving(time.time()), 10, "the camera to move")
        until(lambda: site.ptz.head.velocity[0] > 0.5 and site.ptz.head.velocity[1] > 0.2,
              10, "the drag's velocity")  # fmt: skip
        until(lambda: "Steered by council" in holder(page), 10, "the holder shown")
        time.sleep(0.8)  # held longer than one move's Timeout: the page keeps refreshing it
        assert site.ptz.head.moving(time.time())
        page.mouse.up()
        until(lambda: not site.ptz.head.moving(time.time()), 10, "the camera to stop")
        pan, tilt, zoom = position(site)
        assert pan > 0.3 and tilt > 0.1, (pan, tilt)

        # The wheel zooms in, a tenth at a time.
        page.mouse.move(cx, cy)
        page.mouse.wheel(0, -100)
        until(lambda: abs(position(site)[2] - (zoom + 0.1)) < 1e-6, 10, "the zoom")

        # Save this position as a preset, move away, go back to it.
        saved = position(site)
        page.fill("form.ptz-save input[name=name]", "Bus stop")
        page.get_by_role("button", name="Save preset").click()
        until(lambda: page.locator(".ptz-presets button", has_text="Bus stop").count() == 1,
              10, "the preset listed")  # fmt: skip
        page.get_by_role("button", name="Home").click()
        until(lambda: position(site) == (0.0, 0.0, 0.0), 10, "the camera at home")
        page.locator(".ptz-presets button", has_text="Bus stop").click()
        until(lambda: position(site) == saved, 10, "the camera back at the preset")
        page.screenshot(path=str(artefacts / "ptz-1280.png"))

        # The police (higher priority) take the camera: the operator is told, and by whom.
        status, body = site.rest(
            "officer", "POST", "/v1/cameras/street/ptz/move",
            {"kind": "absolute", "pan": -0.5, "tilt": 0, "zoom": 0},
        )  # fmt: skip
        assert status == 200, body
        until(lambda: "Steered by police" in holder(page), 10, "the new holder shown")
        until(lambda: "Control taken by police" in said(page), 10, "the operator told why")
        # ...and a move from the tile is refused, saying who holds it (not the person).
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx - 30, cy, steps=2)
        until(lambda: "controlled by police" in said(page), 10, "the refusal shown")
        page.mouse.up()
        assert position(site) == (-0.5, 0.0, 0.0)

        # The same call from the page without its CSRF value is not the signed-in user's: it is
        # refused (403, as every API call is that carries the cookie without it).
        status = page.evaluate(
            """async () => (await fetch('/v1/cameras/street/ptz/move', {method: 'POST',
              headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({kind: 'absolute', pan: 0.9, tilt: 0, zoom: 0})})).status"""
        )
        assert status == 403
        assert position(site) == (-0.5, 0.0, 0.0)
        page.set_viewport_size({"width": 360, "height": 740})
        page.screenshot(path=str(artefacts / "ptz-360.png"), full_page=True)


def test_a_viewer_without_the_ptz_right_gets_no_controls(site: Site, browser: Browser) -> None:
    with signed_in(browser, site, "guard", PAGE) as page:
        page.wait_for_selector(".tile[data-camera=street]")
        assert page.locator("[data-ptz-camera]").count() == 0
        status = page.evaluate(
            """async () => (await fetch('/v1/cameras/street/ptz/status')).status"""
        )
        assert status == 403


def test_the_wall_steers_the_tile_whose_steer_button_was_pressed(
    site: Site, browser: Browser, artefacts: Path
) -> None:
    # The police may steer "street" (their ptz grant) but only watch "yard".
    with signed_in(browser, site, "officer", "/console/wall?tiles=4&cameras=street,yard") as page:
        street = page.locator('.tile[data-camera="street"]')
        until(lambda: street.locator("button[data-steer]").count() == 1, 15, "a Steer button")
        assert page.locator('.tile[data-camera="yard"] button[data-steer]').count() == 0
        assert page.locator("[data-ptz-camera]").is_hidden()
        street.locator("button[data-steer]").click()
        panel = page.locator("[data-ptz-camera]")
        until(lambda: panel.get_attribute("data-ready") == "yes", 15, "the panel for street")
        assert panel.get_attribute("data-ptz-camera") == "street"
        page.get_by_role("button", name="Home").click()
        until(lambda: position(site) == (0.0, 0.0, 0.0), 10, "street at home")
        until(lambda: "Steered by police" in holder(page), 10, "the holder shown")
        # The wheel over the steered tile zooms that camera.
        page.locator(".ptz-pad").scroll_into_view_if_needed()
        street.scroll_into_view_if_needed()
        box = street.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -100)
        until(lambda: abs(position(site)[2] - 0.1) < 1e-6, 10, "street zoomed in")
        page.screenshot(path=str(artefacts / "wall-ptz-1280.png"), full_page=True)
        # Choosing another camera for that tile puts the panel away.
        street.locator("select").select_option("yard")
        until(lambda: panel.is_hidden(), 10, "the panel put away")
        assert page.locator("button[data-steer]").count() == 0
