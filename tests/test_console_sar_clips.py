"""The redaction editor plays any recorded stretch of a subject access request's window, not only
its first hour: a subject who was seen at 9 and again at 11 needs zones drawn over both. The
editor offers each camera's recorded stretches of the window (an hour at most each, the
playback API's longest cut), and the one picked plays under the drawing, its times shown in
local time. Here the window holds an older stretch two hours before the camera's live
recording; before, the editor played the window's first hour only, so the live stretch could
not be reached."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from console_site import Site, console_site, recorded_since, sign_in, until
from export_fixtures import index_segment, write_segment

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

LONDON = ZoneInfo("Europe/London")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with console_site(
        tmp_path_factory.mktemp("console-sar-clips"), publish=("depot",), record=("depot",)
    ) as s:
        yield s


def shown_at(page: Page) -> datetime:
    """The editor's "footage at" time, as the page shows it (local time)."""
    text = page.locator("#copy-form [data-at]").inner_text().strip()
    return datetime.fromisoformat(text).replace(tzinfo=LONDON)


def playing(page: Page) -> bool:
    return bool(
        page.evaluate(
            "() => { const v = document.querySelector('#redact-editor video');"
            " return v && !v.hidden && v.readyState >= 2 && v.videoWidth > 0; }"
        )
    )


def test_the_editor_plays_each_recorded_stretch_of_a_long_window(
    site: Site, browser: Browser
) -> None:
    live = recorded_since(site, "depot", 4)
    index = site.gateway.exports.index
    older = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    path = index.root / "older-stretch.mp4"
    write_segment(path, 6)
    index_segment(index, "depot", "older-stretch", path, older)
    opened = site.run(
        site.gateway.sar.open(
            site.token("council-admin"), subject="Cyclist in a red coat",
            contact="subject@example.org", start=older - timedelta(minutes=1),
            end=datetime.now(UTC), cameras=["depot"],
        )
    )  # fmt: skip
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, site, "council-admin", f"/console/sar/{opened.id}")
        options = page.locator("#copy-form select[name=clip] option")
        assert options.count() >= 2, options.all_inner_texts()
        labels = options.all_inner_texts()
        # The first stretch offered is the older one and plays first, at its own time.
        until(lambda: playing(page), 30, "the older stretch's footage")
        until(lambda: page.locator("#copy-form [data-at]").inner_text() != "", 10, "its time")
        assert abs((shown_at(page) - older).total_seconds()) <= 1.5, (shown_at(page), labels)
        # The live stretch, two hours on (past the first hour of the window), plays when picked.
        page.locator("#copy-form select[name=clip]").select_option(str(options.count() - 1))
        until(
            lambda: playing(page) and shown_at(page) >= live - timedelta(seconds=2),
            30,
            "the live stretch's footage",
        )
        assert shown_at(page) - older > timedelta(hours=1)
    finally:
        context.close()
