"""The console's subject access pages in Debian's Chromium (Playwright) against a real gateway
recording an ffmpeg camera: the council's admin opens a request for a window of the depot
camera (due one calendar month on), sees the export already made of that footage among its
findings, draws a redaction zone over the still, gets the redacted copy, downloads it with its
signed manifest (which verifies, and is black inside the zone), and closes the request; a
partner's viewer is refused the pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import av
import numpy as np
import pytest
from console_site import Site, console_site, download_pair, recorded_since, sign_in, until

from gateway.recording.export_manifest import keys_from_jwks, verify_export
from gateway.recording.export_store import UNFINISHED
from tenants.audit import AuditAction
from tenants.sar import due_date

if TYPE_CHECKING:
    from playwright.sync_api import Browser

LONDON = ZoneInfo("Europe/London")
ZONE = ((0.02, 0.02), (0.5, 0.02), (0.5, 0.5), (0.02, 0.5))  # the top-left quarter


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with console_site(
        tmp_path_factory.mktemp("console-sar"), publish=("depot",), record=("depot",)
    ) as s:
        yield s


def timed_luma(path: Path, media_start: datetime) -> list[tuple[datetime, np.ndarray]]:
    """Each decoded frame's luma with its capture time (the copy's timeline from its first
    frame at the manifest's media_start)."""
    out: list[tuple[datetime, np.ndarray]] = []
    with av.open(str(path)) as c:
        first = None
        for frame in c.decode(video=0):
            t = float(frame.time or 0.0)
            first = t if first is None else first
            luma = frame.to_ndarray(format="gray").astype(np.float64)
            out.append((media_start + timedelta(seconds=t - first), luma))
    return out


def local(t: datetime) -> str:
    return t.astimezone(LONDON).strftime("%Y-%m-%dT%H:%M:%S")


def test_a_request_finds_the_export_of_its_window_and_gets_a_redacted_copy(
    site: Site, browser: Browser, artefacts: Path
) -> None:
    exports = site.gateway.exports
    t0 = recorded_since(site, "depot", 8)
    # Footage of the window already exported, before anyone asked.
    earlier = site.run(
        exports.create(
            site.token("council-admin"), "depot", t0 + timedelta(seconds=1),
            t0 + timedelta(seconds=4), purpose="Incident review 12",
        )
    )  # fmt: skip
    until(lambda: exports.store.get(earlier.id).state not in UNFINISHED, 60, "the export")

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    try:
        page = context.new_page()
        sign_in(page, site, "council-admin", "/console/sar")
        due = due_date(datetime.now(UTC), LONDON).strftime("%d %b %Y")
        assert page.locator("#due").inner_text() == due
        form = page.locator("#sar-form")
        form.locator("input[name=subject]").fill("Man in a green anorak, about 30")
        form.locator("input[name=contact]").fill("subject@example.org")
        form.locator('input[name=cameras][value="depot"]').check()
        form.locator("input[name=start]").fill(local(t0))
        form.locator("input[name=end]").fill(local(t0 + timedelta(seconds=6)))
        with page.expect_navigation():
            form.get_by_role("button", name="Open request").click()
        assert "/console/sar/sar-" in page.url
        sar_id = page.url.rsplit("/", 1)[1]
        assert page.locator("#request [data-due]").inner_text().startswith(due)
        # Findings: the recordings of the window and the export of its footage.
        assert "depot" in page.locator("#recordings").inner_text()
        assert "nothing recorded" not in page.locator("#recordings").inner_text()
        found = page.locator('#touches tr[data-action="export"]')
        assert found.count() == 1 and "Incident review 12" in found.inner_text()

        # The window's footage plays under the drawing; the zone is timed from it.
        page.wait_for_function(
            "() => { const v = document.querySelector('#redact-editor video');"
            " return v && !v.hidden && v.readyState >= 2 && v.videoWidth > 0; }",
            timeout=30000,
        )
        for at, button in ((1.0, "Black from here"), (4.0, "Black to here")):
            page.evaluate(
                "(t) => { const s = document.querySelector('input[name=scrub]');"
                " s.value = String(t); s.dispatchEvent(new Event('input')); }",
                at,
            )
            until(
                lambda t=at: page.evaluate(
                    "(t) => { const v = document.querySelector('#redact-editor video');"
                    " return Math.abs(v.currentTime - t) < 0.05 && !v.seeking; }",
                    t,
                ),
                10,
                f"the footage at {at} s",
            )
            page.get_by_role("button", name=button).click()
        black = [
            datetime.fromisoformat(page.locator(f"input[name={n}]").input_value()).replace(
                tzinfo=LONDON
            )
            for n in ("zone_start", "zone_end")
        ]
        # The footage starts at the window's first keyframe (at or before t0).
        assert (
            t0 - timedelta(seconds=2)
            <= black[0] - timedelta(seconds=1)
            <= t0 + timedelta(seconds=1)
        )
        assert (black[1] - black[0]).total_seconds() == pytest.approx(3, abs=1)
        overlay = page.locator("#redact-editor svg.overlay")
        overlay.scroll_into_view_if_needed()
        box = overlay.bounding_box()
        assert box is not None
        for x, y in ZONE:
            page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.get_by_role("button", name="Add zone").click()
        assert page.locator("#zone-list li[data-zone]").count() == 1
        page.screenshot(path=str(artefacts / "redaction.png"), full_page=True)
        with page.expect_navigation():
            page.get_by_role("button", name="Make the redacted copy").click()
        row = page.locator("#copy-list tr[data-export]").first
        copy_id = str(row.get_attribute("data-export"))
        # exports.js follows it and loads the page again once it is done.
        until(
            lambda: (
                page.locator(f'tr[data-export="{copy_id}"]').get_attribute("data-state") == "done"
            ),
            120,
            "the redacted copy",
        )
        row = page.locator(f'tr[data-export="{copy_id}"]')
        media, manifest = download_pair(page, row, artefacts)

        close = page.locator("#close-form")
        close.locator("select[name=state]").select_option("fulfilled")
        close.locator("input[name=outcome]").fill("Redacted copy sent by post")
        with page.expect_navigation():
            close.get_by_role("button", name="Close request").click()
        assert page.locator("#request [data-state]").inner_text() == "fulfilled"
        assert page.locator("#copy-form").count() == 0
    finally:
        context.close()

    verified = verify_export(media, manifest, keys_from_jwks(site.tenancy.jwks()))
    m = verified.manifest
    assert m.kind == "sar_copy" and m.sar_id == sar_id and m.camera == "depot"
    assert len(m.redactions) == 1
    drawn = [c for point in m.redactions[0].points for c in point]
    assert drawn == pytest.approx([c for point in ZONE for c in point], abs=0.01)
    assert (m.redactions[0].start, m.redactions[0].end) == (black[0], black[1])
    frames = timed_luma(media, m.media_start)
    assert len(frames) >= 60
    margin = timedelta(seconds=0.5)
    seen = {"black": 0, "clear": 0}
    for t, f in frames:
        h, w = f.shape
        zone = float(np.mean(f[int(0.06 * h) : int(0.45 * h), int(0.06 * w) : int(0.45 * w)]))
        outside = float(np.mean(f[int(0.55 * h) : int(0.95 * h), int(0.55 * w) : int(0.95 * w)]))
        assert outside > 40, (t, outside)
        if black[0] + margin <= t <= black[1] - margin:
            assert zone < 20, (t, zone)  # blacked out over the zone's time range
            seen["black"] += 1
        elif t < black[0] - margin or t > black[1] + margin:
            assert zone > 40, (t, zone)  # and only then
            seen["clear"] += 1
    assert seen["black"] >= 15 and seen["clear"] >= 10, seen
    events = [e.detail.get("event") for e in site.entries(AuditAction.SAR.value)]
    assert events == ["opened", "closed"]


def test_a_partners_viewer_is_refused_the_subject_access_pages(
    site: Site, browser: Browser
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, site, "guard", "/console")
        assert "Subject access" not in page.locator("nav.tabs").inner_text()
        response = page.goto(site.base + "/console/sar")
        assert response is not None and response.status == 403
    finally:
        context.close()
    refused = [e for e in site.entries(AuditAction.DENIED.value) if e.principal == "guard"]
    assert any(e.detail.get("action") == "sar" for e in refused), refused


def test_another_organisation_and_bad_forms_get_nowhere(site: Site, browser: Browser) -> None:
    """Farside's admin cannot open the council's request (404, the same as none); the
    council's own forms are refused without the page's CSRF value (403) and with redaction
    zones the page would never draw (400); nothing is made."""
    t0 = recorded_since(site, "depot", 4)
    opened = site.run(
        site.gateway.sar.open(
            site.token("council-admin"), subject="Someone", contact="someone@example.org",
            start=t0, end=t0 + timedelta(seconds=3), cameras=["depot"],
        )
    )  # fmt: skip
    copies_before = len(site.gateway.exports.store.find(sar_id=opened.id, limit=100))
    same_origin = {"Origin": site.base, "Sec-Fetch-Site": "same-origin"}
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, site, "far-admin", "/console/sar")
        assert opened.id not in page.content()
        response = page.goto(f"{site.base}/console/sar/{opened.id}")
        assert response is not None and response.status == 404
        context.clear_cookies()
        sign_in(page, site, "council-admin", f"/console/sar/{opened.id}")
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
        url = f"{site.base}/console/sar/{opened.id}/copies"
        good = {"camera": "depot", "redactions": "[]"}
        assert page.request.post(url, form=good, headers=same_origin).status == 403
        for bad in (
            '[{"id": "z", "points": [{"x": 0, "y": 0}], "start": "", "end": ""}]',
            '[{"id": "z", "points": [{"x": 2, "y": 0}, {"x": 0, "y": 1},'
            ' {"x": 1, "y": 1}], "start": "2026-12-02T10:00:00", "end": "x"}]',
            "not json",
            "[" + ",".join(["{}"] * 40) + "]",
        ):
            posted = page.request.post(
                url, form={**good, "csrf": csrf, "redactions": bad}, headers=same_origin
            )
            assert posted.status == 400, (bad, posted.status)
        closing = page.request.post(
            f"{site.base}/console/sar/{opened.id}/close",
            form={"csrf": csrf, "state": "reopened", "outcome": "x"},
            headers=same_origin,
        )
        assert closing.status == 400 and "fulfilled, refused or withdrawn" in closing.text()
    finally:
        context.close()
    assert len(site.gateway.exports.store.find(sar_id=opened.id, limit=100)) == copies_before
    assert site.gateway.sar.store.get(opened.id).state.value == "open"
