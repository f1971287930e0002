"""The console's pages over HTTP against a real gateway: every route's role check, the CSRF
rules for what changes anything, what each tenant sees (never another tenant's camera, session
or audit entry, through the pages and through the REST API), stills with the viewer's masks
burnt in, the wall's saved layout, the map, the mask editor and the audit search."""

from __future__ import annotations

import io
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import av
import pytest
from console_site import Site, console_site
from whep_client import WhepClient, offer_main_and_high

from gateway.http.console import STILLS
from tenants.audit import AuditAction

STILL_CAMERAS = ("street", "yard")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with console_site(tmp_path_factory.mktemp("console"), publish=STILL_CAMERAS) as s:
        yield s


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


CSRF = "c" * 43  # a double-submit value: the same in the cookie and the header


def call(
    site: Site,
    who: str | None,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    csrf: str | None = CSRF,
) -> tuple[int, str, Any]:
    """A request as a browser signed in as ``who`` sends it from the console's pages."""
    req = urllib.request.Request(site.base + path, data=body, method=method)
    cookies = [f"feedgate_csrf={CSRF}"]
    if who is not None:
        cookies.append(f"feedgate_token={site.token(who)}")
    req.add_header("Cookie", "; ".join(cookies))
    sent = {"Sec-Fetch-Site": "same-origin", "Origin": site.base}
    if csrf is not None:
        sent["X-CSRF-Token"] = csrf
    sent.update(headers or {})
    for name, value in sent.items():
        if value:
            req.add_header(name, value)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=20) as r:
            data = r.read()
            return r.status, data.decode(errors="replace"), (r.headers, data)
    except urllib.error.HTTPError as exc:
        data = exc.read()
        return exc.code, data.decode(errors="replace"), (exc.headers, data)


# ----------------------------------------------------------------------------- role checks

ROUTES = (
    "/console",
    "/console/cameras/street",
    "/console/wall",
    "/console/map",
    "/console/masks",
    "/console/masks/street",
    "/console/grants",
    "/console/principals",
    "/console/sessions",
    "/console/audit",
)
# Expected status per principal, in ROUTES order. admin: everything its tenant's; operator:
# cameras and sessions; viewer: cameras; auditor: the audit log; finance: none of these (its
# section is /finance); police admin: the council's street, granted, read-only masks.
MATRIX = {
    "council-admin": (200, 200, 200, 200, 200, 200, 200, 200, 200, 200),
    "council-op": (200, 200, 200, 200, 403, 403, 403, 403, 200, 403),
    "council-audit": (200, 403, 403, 403, 403, 403, 403, 403, 403, 200),
    "council-fin": (200, 403, 403, 403, 403, 403, 403, 403, 403, 403),
    "officer": (200, 200, 200, 200, 403, 403, 403, 403, 200, 403),
    "guard": (200, 200, 200, 200, 403, 403, 403, 403, 403, 403),
    "police-admin": (200, 200, 200, 200, 200, 200, 200, 200, 200, 200),
    "far-admin": (200, 403, 200, 200, 200, 403, 200, 200, 200, 200),
}


@pytest.mark.parametrize("who", sorted(MATRIX))
def test_each_route_checks_the_callers_roles(site: Site, who: str) -> None:
    got = tuple(call(site, who, path)[0] for path in ROUTES)
    assert got == MATRIX[who], dict(zip(ROUTES, got, strict=True))


def test_without_a_session_every_page_sends_the_browser_to_sign_in(site: Site) -> None:
    for path in (*ROUTES, "/console/stills/street"):
        status, _, (headers, _) = call(site, None, path)
        assert status == 303, path
        assert headers["Location"].startswith("/console/login?next=/console"), path
    # An expired or forged session: the same, and the stale cookie is cleared.
    req = urllib.request.Request(site.base + "/console/wall")
    req.add_header("Cookie", "feedgate_token=not.a.token")
    try:
        urllib.request.build_opener(_NoRedirect).open(req, timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 303
        assert any(
            c.startswith("feedgate_token=;") or 'feedgate_token=""' in c
            for c in exc.headers.get_all("Set-Cookie") or []
        )


def test_the_navigation_offers_only_what_the_roles_open(site: Site) -> None:
    def sections(who: str) -> list[str]:
        body = call(site, who, "/console")[1]
        nav = re.search(r'<nav class="tabs".*?</nav>', body, re.S)
        assert nav is not None
        return re.findall(r">([^<]+)</a>", nav.group(0))

    assert sections("council-op") == [
        "Cameras",
        "Wall",
        "Map",
        "Sessions",
        "Subject access",
        "Public figures",
    ]
    assert sections("council-fin") == ["Finance", "Public figures"]
    assert sections("council-audit") == ["Exports", "Subject access", "Audit", "Public figures"]
    assert sections("council-admin") == [
        "Cameras",
        "Wall",
        "Map",
        "Masks",
        "Grants",
        "Principals",
        "Sessions",
        "Exports",
        "Subject access",
        "Audit",
        "Finance",
        "Public figures",  # admins read their tenant's invoices too
    ]


# ----------------------------------------------------------------------------- isolation


def _cards(body: str) -> set[str]:
    return set(re.findall(r'<li class="card" data-camera="([^"]+)"', body))


def test_a_tenant_sees_only_its_own_and_granted_cameras(site: Site) -> None:
    assert _cards(call(site, "council-op", "/console")[1]) == {"street", "yard", "market", "depot"}
    assert _cards(call(site, "officer", "/console")[1]) == {"street", "yard"}
    assert _cards(call(site, "guard", "/console")[1]) == {"street"}
    assert _cards(call(site, "far-admin", "/console")[1]) == {"far"}
    for who, hidden in (
        ("officer", "market"),
        ("officer", "far"),
        ("guard", "yard"),
        ("far-admin", "street"),
    ):
        status, body, _ = call(site, who, f"/console/cameras/{hidden}")
        assert status == 403 and hidden not in body, (who, hidden)
        status, body, (headers, _) = call(site, who, f"/console/stills/{hidden}")
        assert status == 404 and headers["Content-Type"].startswith("image/svg+xml")
        # The wall and the map offer nothing of it either.
        assert f'value="{hidden}"' not in call(site, who, "/console/wall")[1]
        assert f'data-camera="{hidden}"' not in call(site, who, "/console/map")[1]
    # The same through the REST API with the session cookie.
    status, body, _ = call(site, "officer", "/v1/cameras")
    assert status == 200 and set(re.findall(r'"id":\s*"([^"]+)"', body)) == {"street", "yard"}
    assert call(site, "officer", "/v1/cameras/far")[0] == 403


def test_a_tenant_never_sees_another_tenants_sessions(site: Site) -> None:
    offer_main_and_high()

    async def watch(who: str, camera: str) -> WhepClient:
        client = WhepClient(f"{site.base}/whep/{camera}", token=site.token(who))
        import aiohttp

        async with aiohttp.ClientSession() as http:
            assert await client.connect(http) == 201, client.reason
        return client

    guard = site.run(watch("guard", "street"))
    officer = site.run(watch("officer", "yard"))
    try:

        def rows(who: str) -> set[str]:
            return set(
                re.findall(r'<tr data-session="([^"]+)"', call(site, who, "/console/sessions")[1])
            )

        ids = {s.id: s for s in site.gateway.control.core.media.sessions()}
        by_tenant = {s.tenant: sid for sid, s in ids.items()}
        assert rows("council-admin") >= {by_tenant["shop"], by_tenant["police"]}  # the owner
        assert rows("officer") == {by_tenant["police"]}
        assert rows("far-admin") == set()
        # Through REST too; and another tenant's session cannot be kicked (it does not exist).
        status, body, _ = call(site, "officer", "/v1/sessions")
        assert status == 200 and by_tenant["shop"] not in body
        status, _, _ = call(site, "officer", f"/v1/sessions/{by_tenant['shop']}", method="DELETE")
        assert status in (403, 404)
        assert by_tenant["shop"] in {s.id for s in site.gateway.control.core.media.sessions()}
        # The owner's admin kicks it from the console (its script: DELETE with the CSRF header).
        status, _, _ = call(
            site,
            "council-admin",
            f"/v1/sessions/{by_tenant['shop']}?reason=kicked",
            method="DELETE",
        )
        assert status == 204
        live = {s.id for s in site.gateway.control.core.media.sessions()}
        assert by_tenant["shop"] not in live and by_tenant["police"] in live
    finally:
        site.run(guard.close())
        site.run(officer.close())


def test_a_tenant_never_sees_another_tenants_audit_entries(site: Site) -> None:
    site.tenancy.audit.append(
        AuditAction.CONFIG,
        tenant="farside",
        principal="far-admin",
        camera="far",
        detail={"op": "marker", "tenants": ["farside"]},
    )
    far = call(site, "far-admin", "/console/audit?camera=far")[1]
    assert "marker" in far
    police = call(site, "police-admin", "/console/audit?camera=far")[1]
    assert "marker" not in police and "No entries match" in police
    everything = call(site, "police-admin", "/console/audit")[1]
    assert "far-admin" not in everything and "farside" not in everything
    status, body, _ = call(site, "police-admin", "/v1/audit/entries?camera=far")
    assert status == 200 and "marker" not in body


# ----------------------------------------------------------------------------- CSRF


def test_changes_need_the_pages_csrf_value(site: Site) -> None:
    layout = b'{"tiles": 9, "cameras": ["yard", "street"]}'
    put = {"method": "PUT", "body": layout, "headers": {"Content-Type": "application/json"}}
    assert call(site, "officer", "/console/wall/layout", csrf=None, **put)[0] == 403
    assert call(site, "officer", "/console/wall/layout", csrf="x" * 43, **put)[0] == 403
    cross = {**put, "headers": {**put["headers"], "Sec-Fetch-Site": "cross-site"}}
    assert call(site, "officer", "/console/wall/layout", **cross)[0] == 403
    mask = (
        b'{"id": "m-csrf", "camera_id": "street", "points": [{"x": 0, "y": 0},'
        b' {"x": 0.1, "y": 0}, {"x": 0.1, "y": 0.1}]}'
    )
    status, _, _ = call(
        site,
        "council-admin",
        "/v1/masks/m-csrf",
        method="PUT",
        body=mask,
        headers={"Content-Type": "application/json"},
        csrf=None,
    )
    assert status == 403
    assert all(z.id != "m-csrf" for z in site.tenancy.store.list_masks())
    # WHEP: an offer with the cookie but without the CSRF value is not the signed-in user's.
    status, _, _ = call(
        site,
        "officer",
        "/whep/street",
        method="POST",
        body=b"v=0\r\n",
        headers={"Content-Type": "application/sdp"},
        csrf=None,
    )
    assert status == 401
    # With it, the layout is saved for this principal and the wall opens with it.
    assert call(site, "officer", "/console/wall/layout", **put)[0] == 204
    wall = call(site, "officer", "/console/wall")[1]
    assert 'data-tiles="9"' in wall
    assert re.findall(r'data-index="\d+" data-camera="([^"]+)"', wall) == ["yard", "street"]
    bad = {**put, "body": b'{"tiles": 5, "cameras": []}'}
    assert call(site, "officer", "/console/wall/layout", **bad)[0] == 400
    # A layout link shows a layout without saving it.
    wall = call(site, "officer", "/console/wall?tiles=1&cameras=street")[1]
    assert 'data-tiles="1"' in wall
    assert 'data-tiles="9"' in call(site, "officer", "/console/wall")[1]


def test_a_form_post_from_elsewhere_signs_nobody_out_or_in(site: Site) -> None:
    status, _, _ = call(
        site,
        "officer",
        "/console/logout",
        method="POST",
        body=b"",
        headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://x.example"},
    )
    assert status == 403


# ----------------------------------------------------------------------------- stills


def _pixels(jpeg: bytes) -> Any:
    with av.open(io.BytesIO(jpeg)) as container:
        frame = next(container.decode(video=0))
    return frame.to_ndarray(format="gray")


def test_stills_burn_in_the_viewers_masks(site: Site) -> None:
    shown: dict[str, Any] = {}
    for who in ("council-op", "officer", "guard"):
        status, _, (headers, data) = call(site, who, "/console/stills/street")
        assert status == 200 and headers["Content-Type"] == "image/jpeg", (who, status)
        assert headers["Cache-Control"].startswith("private")
        shown[who] = _pixels(data)
    h, w = shown["guard"].shape
    inside = (slice(h // 4, 3 * h // 4), slice(int(w * 0.75), int(w * 0.95)))
    outside = (slice(h // 4, 3 * h // 4), slice(int(w * 0.05), int(w * 0.6)))
    # The mask is the retail tenant kind's: black for the shop, white for the others.
    assert shown["guard"][inside].max() < 40
    assert shown["guard"][outside].min() > 200
    for who in ("council-op", "officer"):
        assert shown[who][inside].min() > 200, who
    # Each look is audited (at most once a minute per person and camera).
    looks = {(e.principal, e.camera) for e in site.entries("still")}
    assert {("guard", "street"), ("officer", "street"), ("council-op", "street")} <= looks


def test_a_still_is_decoded_once_per_camera_and_mask_set_while_fresh(site: Site) -> None:
    stills = site.app[STILLS]
    for who, camera in (("guard", "street"), ("council-op", "yard"), ("officer", "yard")):
        assert call(site, who, f"/console/stills/{camera}")[0] == 200
    decoded, looks = stills.decoded, len(site.entries("still"))
    for _ in range(3):
        for who, camera in (("guard", "street"), ("council-op", "yard"), ("officer", "yard")):
            assert call(site, who, f"/console/stills/{camera}")[0] == 200
    assert stills.decoded == decoded  # cached per camera and mask set while fresh
    assert len(site.entries("still")) == looks  # the same people and cameras, within a minute


# ----------------------------------------------------------------------------- the map


def test_the_map_places_the_cameras_the_caller_may_see(site: Site) -> None:
    body = call(site, "council-op", "/console/map")[1]
    pins = dict(
        re.findall(r'data-camera="([^"]+)"><title>[^<]*</title><circle cx="([\d.]+)"', body)
    )
    assert set(pins) == {"street", "yard", "market"}  # the depot has no position
    assert float(pins["yard"]) > float(pins["street"]) > float(pins["market"])  # west to east
    assert "Bus depot" in body.split("Without a position")[1]
    assert "<image" not in body and "http" not in body.split("<svg", 1)[1].split("</svg>")[
        0
    ].replace("http://www.w3.org/2000/svg", "")


# ----------------------------------------------------------------------------- masks


def test_the_mask_editor_edits_only_the_owners_masks(site: Site) -> None:
    body = call(site, "council-admin", "/console/masks/street")[1]
    assert 'id="mask-form"' in body and "shop-front" in body
    body = call(site, "police-admin", "/console/masks/street")[1]
    assert 'id="mask-form"' not in body and "not change them" in body
    # Saving goes through the REST API with the page's CSRF value, and is audited.
    mask = (
        b'{"id": "bench", "camera_id": "street", "points": [{"x": 0.1, "y": 0.1},'
        b' {"x": 0.2, "y": 0.1}, {"x": 0.2, "y": 0.2}], "label": "Bench"}'
    )
    status, _, _ = call(
        site,
        "police-admin",
        "/v1/masks/bench",
        method="PUT",
        body=mask,
        headers={"Content-Type": "application/json"},
    )
    assert status == 403
    status, _, _ = call(
        site,
        "council-admin",
        "/v1/masks/bench",
        method="PUT",
        body=mask,
        headers={"Content-Type": "application/json"},
    )
    assert status == 200
    [changed] = [e for e in site.entries("mask_changed") if e.detail.get("mask") == "bench"]
    assert changed.principal == "council-admin" and changed.detail["via"] == "http"
    assert call(site, "council-admin", "/v1/masks/bench", method="DELETE")[0] == 204


# ----------------------------------------------------------------------------- audit


def test_the_audit_search_by_camera_person_and_time_and_verification(site: Site) -> None:
    assert call(site, "council-admin", "/console/stills/yard")[0] == 200
    body = call(site, "council-audit", "/console/audit?camera=yard&action=still")[1]
    rows = re.findall(r"<tr><td class=\"num\">\d+</td>.*?</tr>", body, re.S)
    assert rows and all(">yard<" in r and ">still<" in r for r in rows)
    body = call(site, "council-audit", "/console/audit?principal=council-admin")[1]
    assert "council-admin" in body
    body = call(site, "council-audit", "/console/audit?from=2099-01-01T00%3A00")[1]
    assert "No entries match" in body
    body = call(site, "council-audit", "/console/audit?verify=1")[1]
    assert 'id="verified"' in body and "The log verifies" in body
    for bad in ("camera=%3Cscript%3E", "from=yesterday", "action=nope", "offset=x"):
        status, body, _ = call(site, "council-audit", f"/console/audit?{bad}")
        assert status == 400 and "<script>" not in body and "yesterday" not in body, bad


def test_pages_escape_what_tenants_wrote(site: Site) -> None:
    body = call(site, "guard", "/console")[1]
    assert "Riverside &lt;Shops&gt;" in body and "<Shops>" not in body
    _, _, (headers, _) = call(site, "guard", "/console")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "connect-src 'self'" in csp and headers["X-Frame-Options"] == "DENY"


def test_a_camera_without_a_picture_gets_a_placeholder(site: Site) -> None:
    status, body, (headers, _) = call(site, "council-op", "/console/stills/depot")
    assert status == 404 and headers["Content-Type"].startswith("image/svg+xml")
    assert "No picture" in body


def test_a_mask_saved_in_the_editor_reaches_the_sessions_already_watching(site: Site) -> None:
    """The editor's save (PUT /v1/masks/... from the page) ends the shop's live session at the
    next re-check: its pixels were burnt in without the new zone; the player reconnects and is
    given the new zones. The police, whom the zone does not concern, watch on."""
    import aiohttp

    offer_main_and_high()

    async def watch(who: str) -> WhepClient:
        client = WhepClient(f"{site.base}/whep/street", token=site.token(who))
        async with aiohttp.ClientSession() as http:
            assert await client.connect(http) == 201, client.reason
        return client

    guard, officer = site.run(watch("guard")), site.run(watch("officer"))
    media = site.gateway.control.core.media
    try:
        by_tenant = {
            s.tenant: s.id
            for s in media.sessions()
            if s.camera == "street" and s.protocol == "webrtc"
        }
        assert {"shop", "police"} <= set(by_tenant)
        mask = (
            b'{"id": "till", "camera_id": "street", "tenant_kinds": ["retail"], "points":'
            b' [{"x": 0.1, "y": 0.1}, {"x": 0.3, "y": 0.1}, {"x": 0.3, "y": 0.3}]}'
        )
        status, _, _ = call(
            site,
            "council-admin",
            "/v1/masks/till",
            method="PUT",
            body=mask,
            headers={"Content-Type": "application/json"},
        )
        assert status == 200
        deadline = time.monotonic() + 5
        while by_tenant["shop"] in {s.id for s in media.sessions()}:
            assert time.monotonic() < deadline, "the shop's session carried on"
            time.sleep(0.05)
        assert by_tenant["police"] in {s.id for s in media.sessions()}

        def ended_entries() -> list[Any]:
            return [
                e
                for e in site.entries("session_end")
                if e.principal == "guard" and e.detail.get("reason") == "privacy masks changed"
            ]

        # The end is audited on the database thread, moments after the session is gone (seconds
        # when three test workers share two cores).
        deadline = time.monotonic() + 20
        while not ended_entries():
            assert time.monotonic() < deadline, "the shop's session end was never audited"
            time.sleep(0.05)
        [ended] = ended_entries()
        assert ended.camera == "street"
    finally:
        call(site, "council-admin", "/v1/masks/till", method="DELETE")
        site.run(guard.close())
        site.run(officer.close())
