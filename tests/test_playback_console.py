"""The console's recording timeline in Debian's Chromium (Playwright) against a real gateway
recording an ffmpeg camera: the camera page draws the recorded stretches from /list, a click on
one plays the recording from that instant in the page (a /get MP4 the <video> decodes), audited
as a playback, and "Live" goes back to the live tile."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from console_site import PASSWORD, Site, console_site

from tenants.audit import AuditAction

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with console_site(
        tmp_path_factory.mktemp("console-playback"), publish=("depot",), record=("depot",)
    ) as s:
        yield s


def until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
    return value


def test_the_timeline_plays_a_recorded_stretch(site: Site, browser: Browser, artefacts) -> None:  # type: ignore[no-untyped-def]
    index = site.gateway.playback.index
    until(
        lambda: sum(s.duration.total_seconds() for s in index.segments("depot")) >= 8,
        60,
        "8 s of depot recorded",
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(site.base + "/console/cameras/depot")
        page.fill("input[name=principal]", "council-op")
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("[data-timeline] .bar .span", timeout=20000)
        span = page.locator("[data-timeline] .bar .span").first
        span.scroll_into_view_if_needed()
        box = span.bounding_box()
        assert box is not None
        # A fifth of the way into the recorded stretch.
        bar = page.locator("[data-timeline] .bar").bounding_box()
        assert bar is not None
        page.mouse.click(box["x"] + box["width"] * 0.2, bar["y"] + bar["height"] / 2)
        until(lambda: page.get_attribute("[data-timeline]", "data-playing"), 10, "playback asked")
        until(
            lambda: page.evaluate(
                "() => { const v = document.querySelector('video.playback');"
                " return v.readyState >= 2 && v.currentTime > 0.5 && v.videoWidth > 0; }"
            ),
            30,
            "the recording to play in the page",
        )
        assert page.locator('.tile[data-camera="depot"]').is_hidden()
        page.screenshot(path=str(artefacts / "timeline.png"))
        entries = [e for e in site.entries(AuditAction.PLAYBACK.value)]
        assert any(e.detail.get("protocol") == "http" and e.camera == "depot" for e in entries)
        page.get_by_role("button", name="Live").click()
        assert page.locator('.tile[data-camera="depot"]').is_visible()
        assert page.locator("video.playback").is_hidden()
    finally:
        context.close()
