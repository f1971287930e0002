"""The console's Exports page in Debian's Chromium (Playwright) against a real gateway recording
an ffmpeg camera: an admin starts an export from the form, sees it reach done, downloads the
MP4 and its signed manifest and they verify against the gateway's JWKS; an export waiting for
a slot is cancelled from the page; evidence locks are taken and released; a partner without
the export right gets a 403 page; a form without the page's CSRF value is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from console_site import Site, console_site, download_pair, recorded_since, sign_in, until

from gateway.recording.export_manifest import keys_from_jwks, verify_export
from tenants.audit import AuditAction

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with console_site(
        tmp_path_factory.mktemp("console-exports"), publish=("depot",), record=("depot",)
    ) as s:
        yield s


def recorded(site: Site, seconds: float) -> datetime:
    return recorded_since(site, "depot", seconds)


def local(t: datetime) -> str:
    return t.astimezone(ZoneInfo("Europe/London")).strftime("%Y-%m-%dT%H:%M:%S")


def shown(value: str) -> datetime:
    """A datetime-local input's value as the time it means: browsers drop ':00' seconds, so
    '00:25' and '00:25:00' are the same instant and must compare equal."""
    return datetime.fromisoformat(value)


@contextmanager
def signed_in(browser: Browser, site: Site, who: str, path: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    try:
        page = context.new_page()
        sign_in(page, site, who, path)
        yield page
    finally:
        context.close()


def start_export(page: Page, start: datetime, seconds: int, purpose: str) -> str:
    form = page.locator("#export-form")
    form.locator("select[name=camera]").select_option("depot")
    form.locator("input[name=start]").fill(local(start))
    form.locator("input[name=end]").fill(local(start + timedelta(seconds=seconds)))
    form.locator("input[name=purpose]").fill(purpose)
    with page.expect_navigation():
        form.get_by_role("button", name="Start export").click()
    row = page.locator("#exports tbody tr", has_text=purpose).first
    return str(row.get_attribute("data-export"))


def test_an_export_reaches_done_and_its_download_verifies(
    site: Site, browser: Browser, artefacts: Path
) -> None:
    start = recorded(site, 6) + timedelta(seconds=1)
    with signed_in(browser, site, "council-admin", "/console/exports") as page:
        export_id = start_export(page, start, 4, "Incident 4471, bus depot")
        row = page.locator(f'tr[data-export="{export_id}"]')
        # exports.js follows it and loads the page again once it is done.
        until(lambda: row.get_attribute("data-state") == "done", 60, "the export to finish")
        sha = row.locator("[data-sha256]").inner_text()
        kid = row.locator("[data-kid]").inner_text()
        assert kid == site.tenancy.evidence_key.kid
        page.screenshot(path=str(artefacts / "exports.png"), full_page=True)
        media, manifest = download_pair(page, row, artefacts)
    verified = verify_export(media, manifest, keys_from_jwks(site.tenancy.jwks()))
    assert verified.sha256 == sha
    assert verified.manifest.camera == "depot"
    assert verified.manifest.requester.person == "council-admin"
    assert verified.manifest.purpose == "Incident 4471, bus depot"
    assert abs(verified.manifest.start - start) < timedelta(seconds=1)
    exports = [e for e in site.entries(AuditAction.EXPORT.value) if e.detail["export"] == export_id]
    assert len(exports) == 1 and exports[0].principal == "council-admin"


def test_an_export_waiting_for_a_slot_is_cancelled_from_the_page(
    site: Site, browser: Browser
) -> None:
    start = recorded(site, 4)
    service = site.gateway.exports
    slots = service.config.max_running

    async def hold() -> None:
        for _ in range(slots):
            await service._slots.acquire()

    async def free() -> None:
        for _ in range(slots):
            service._slots.release()

    site.run(hold())  # every slot busy: the new export waits in the queue
    try:
        with signed_in(browser, site, "council-admin", "/console/exports") as page:
            export_id = start_export(page, start, 3, "To be cancelled")
            row = page.locator(f'tr[data-export="{export_id}"]')
            assert row.get_attribute("data-state") == "queued"
            assert row.locator("progress").count() == 1
            began = time.monotonic()
            with page.expect_navigation():
                row.get_by_role("button", name="Cancel").click()
            assert time.monotonic() - began < 10
            row = page.locator(f'tr[data-export="{export_id}"]')
            assert row.get_attribute("data-state") == "cancelled"
            assert row.locator("[data-file]").count() == 0
    finally:
        site.run(free())
    assert not list(service.dir.glob(f"{export_id}*"))


def test_an_evidence_lock_is_taken_and_released(site: Site, browser: Browser) -> None:
    start = recorded(site, 4)
    with signed_in(browser, site, "council-admin", "/console/exports") as page:
        form = page.locator("#lock-form")
        form.locator("select[name=camera]").select_option("depot")
        form.locator("input[name=start]").fill(local(start))
        form.locator("input[name=end]").fill(local(start + timedelta(seconds=3)))
        form.locator("input[name=reason]").fill("Held for court, case 88")
        with page.expect_navigation():
            form.get_by_role("button", name="Lock").click()
        row = page.locator("#lock-list tbody tr", has_text="Held for court, case 88")
        lock_id = row.get_attribute("data-lock")
        assert site.gateway.exports.index.get_lock(lock_id).released is None
        with page.expect_navigation():
            row.get_by_role("button", name="Release").click()
        row = page.locator(f'tr[data-lock="{lock_id}"]')
        assert "released" in row.inner_text()
    assert site.gateway.exports.index.get_lock(lock_id).released is not None
    actions = [
        e.action.value for e in site.tenancy.audit.entries() if e.detail.get("lock") == lock_id
    ]
    assert actions == ["evidence_lock", "evidence_release"], actions


def test_a_partner_without_the_export_right_gets_403(site: Site, browser: Browser) -> None:
    """The police grant has live only, and its officer's roles do not export: the page itself
    is refused, and so is a form posted with the page's own CSRF value; the refusal is
    audited."""
    with signed_in(browser, site, "officer", "/console") as page:
        assert "Exports" not in page.locator("nav.tabs").inner_text()
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        response = page.goto(site.base + "/console/exports")
        assert response is not None and response.status == 403
        assert "Exports are for investigators" in page.content()
        now = local(site.gateway.exports.index.segments("depot")[0].start)
        posted = page.request.post(
            site.base + "/console/exports",
            form={"csrf": csrf or "", "camera": "street", "start": now, "end": now},
            headers={"Origin": site.base, "Sec-Fetch-Site": "same-origin"},
        )
        assert posted.status == 403, posted.text()
    refused = [e for e in site.entries(AuditAction.DENIED.value) if e.principal == "officer"]
    assert any(e.detail.get("method") == "Exports" for e in refused), refused  # the page
    assert any(e.detail.get("action") == "export" for e in refused), refused  # the form


def test_a_form_without_the_pages_csrf_value_is_refused(site: Site, browser: Browser) -> None:
    with signed_in(browser, site, "council-admin", "/console/exports") as page:
        posted = page.request.post(
            site.base + "/console/exports",
            form={"camera": "depot", "start": "2026-12-02T10:00", "purpose": "x"},
            headers={"Origin": site.base, "Sec-Fetch-Site": "same-origin"},
        )
        assert posted.status == 403
    assert not [j for j in site.gateway.exports.store.find(limit=1000) if j.purpose == "x"]


def test_the_timeline_links_to_the_export_form_with_the_stretch_filled_in(
    site: Site, browser: Browser
) -> None:
    first = recorded(site, 4)
    with signed_in(browser, site, "council-admin", "/console/cameras/depot") as page:
        page.wait_for_selector("[data-timeline] .bar .span", timeout=20000)
        span = page.locator("[data-timeline] .bar .span").first.bounding_box()
        assert span is not None
        page.mouse.click(span["x"] + span["width"] * 0.3, span["y"] + span["height"] / 2)
        until(lambda: page.get_attribute("[data-timeline]", "data-playing"), 10, "playback")
        playing = str(page.get_attribute("[data-timeline]", "data-playing"))
        with page.expect_navigation():
            page.locator("[data-export-link]").click()
        assert page.url.startswith(site.base + "/console/exports?")
        form = page.locator("#export-form")
        assert form.locator("select[name=camera]").input_value() == "depot"
        typed = form.locator("input[name=start]").input_value()
        clicked = datetime.fromisoformat(playing.replace("Z", "+00:00"))
        assert shown(typed) == shown(local(clicked)), (typed, playing)
        assert clicked >= first - timedelta(seconds=2)


def test_an_export_without_a_purpose_is_refused_on_the_page_with_what_was_typed(
    site: Site, browser: Browser
) -> None:
    start = recorded(site, 4)
    with signed_in(browser, site, "council-admin", "/console/exports") as page:
        form = page.locator("#export-form")
        form.locator("select[name=camera]").select_option("depot")
        form.locator("input[name=start]").fill(local(start))
        form.locator("input[name=end]").fill(local(start + timedelta(seconds=2)))
        with page.expect_navigation() as nav:
            form.get_by_role("button", name="Start export").click()
        assert nav.value is not None and nav.value.status == 400
        assert "needs a purpose or incident_ref" in page.locator("#problem").inner_text()
        kept = page.locator("#export-form input[name=start]").input_value()
        assert shown(kept) == shown(local(start)), kept
