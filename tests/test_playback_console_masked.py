"""The console's recording timeline for a masked partner, in Debian's Chromium (Playwright)
against a real gateway recording an ffmpeg camera: the shop, whose retail mask covers the
right-hand third of the plain white "street", clicks the timeline and the page plays the
gateway's masked HLS (segments burnt in as they are asked for, appended to a Media Source),
not a /get cut it would have to burn whole first; the picture is black inside the mask and
white outside it; the playback is audited as HLS with the masked variant."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from console_site import PASSWORD, Site, console_site, sign_in, until

from tenants import passwords
from tenants.audit import AuditAction

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# A shop operator whose grant lets it play "street" back (the site's shop may only watch it).
SHOP_PLAYBACK = """
[[principals]]
id = "shop-op"
tenant = "shop"
name = "Shop operator"
roles = ["operator"]
[[grants]]
id = "shop-street-playback"
owner = "council"
grantee = "shop"
cameras = ["street"]
rights = ["live", "playback"]
"""

# The picture's luma at two points, drawn from the <video> (its Media Source is this page's).
SAMPLE = """() => {
  const v = document.querySelector('video.playback');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const at = (x, y) => { const d = g.getImageData(x, y, 1, 1).data;
                         return 0.299 * d[0] + 0.587 * d[1] + 0.114 * d[2]; };
  return { width: c.width, inside: at(Math.round(c.width * 0.85), c.height >> 1),
           outside: at(Math.round(c.width * 0.3), c.height >> 1),
           src: v.currentSrc, time: v.currentTime };
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with console_site(
        tmp_path_factory.mktemp("console-playback-masked"),
        publish=("street",),
        record=("street",),
        seed_extra=SHOP_PLAYBACK,
    ) as s:
        store = s.tenancy.store
        hashed = passwords.hash_password(PASSWORD)
        store.put_principal(replace(store.get_principal("shop-op"), password_hash=hashed))
        s.run(asyncio.to_thread(s.tenancy.policy.reload))
        yield s


def test_a_masked_partner_plays_the_timeline_burnt_in(
    site: Site,
    browser: Browser,
    artefacts,  # type: ignore[no-untyped-def]
) -> None:
    index = site.gateway.playback.index
    until(
        lambda: sum(s.duration.total_seconds() for s in index.segments("street")) >= 8,
        60,
        "8 s of street recorded",
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, site, "shop-op", "/console/cameras/street")
        assert page.locator("[data-timeline][data-masked]").count() == 1
        page.wait_for_selector("[data-timeline] .bar .span", timeout=20000)
        span = page.locator("[data-timeline] .bar .span").first
        span.scroll_into_view_if_needed()
        box = span.bounding_box()
        bar = page.locator("[data-timeline] .bar").bounding_box()
        assert box is not None and bar is not None
        page.mouse.click(box["x"] + box["width"] * 0.2, bar["y"] + bar["height"] / 2)
        until(lambda: page.get_attribute("[data-timeline]", "data-playing"), 10, "playback asked")
        until(
            lambda: page.evaluate(
                "() => { const v = document.querySelector('video.playback');"
                " return v.readyState >= 2 && v.currentTime > 4.0 && v.videoWidth > 0; }"
            ),
            60,
            "the masked recording to play in the page",
        )
        got = page.evaluate(SAMPLE)
        page.screenshot(path=str(artefacts / "timeline-masked.png"))
        print(f"masked timeline in Chromium: {got}")
        assert got["src"].startswith("blob:")  # a Media Source fed from the masked HLS
        assert got["inside"] <= 30, got  # black inside the shop's mask
        assert got["outside"] >= 200, got  # the white street outside it
        assert page.locator('.tile[data-camera="street"]').is_hidden()
        shop = [e for e in site.entries(AuditAction.PLAYBACK.value) if e.tenant == "shop"]
        assert shop and all(e.detail.get("protocol") == "hls" for e in shop), shop
        assert all(e.detail.get("variant", "").startswith("masked-") for e in shop)
        page.get_by_role("button", name="Live").click()
        assert page.locator('.tile[data-camera="street"]').is_visible()
        assert page.locator("video.playback").is_hidden()
    finally:
        context.close()
