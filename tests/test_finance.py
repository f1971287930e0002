"""The finance view end to end: the real gateway HTTP app (bearer middleware, tenant policy)
with the finance routes over a SQLite ledger and invoice store, driven by headless Chromium
through Playwright (signing in by the form, rendered DOM, screenshots, the printed page) and by
plain HTTP (status codes, headers, CSV)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import pytest
from aiohttp import web
from conftest import free_port, make_config

from billing.invoices import InvoiceStore, run_invoices
from billing.ledger import Ledger
from billing.model import Metric, UsageEvent, UsageKind
from billing.rating import MetricPrice, PricePlan, Tier
from gateway.config import TenancyConfig
from gateway.core import Gateway
from gateway.http.app import make_http_app
from gateway.http.finance import add_finance_routes, csv_cell, format_money
from tenants.db import Database

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PERIOD = "2026-04"

SEED = """
[[tenants]]
id = "council"
name = "Borough Council of Testford"
kind = "council"

[[tenants]]
id = "police"
name = "Testshire Police"
kind = "police"

[[tenants]]
id = "shop"
name = 'Riverside <Shops> & "Co"'
kind = "retail"

[[tenants]]
id = "evil"
name = '=HYPERLINK("http://x.invalid","click")'
kind = "retail"

[[principals]]
id = "council-fin"
tenant = "council"
name = "Council finance officer"
roles = ["finance"]

[[principals]]
id = "police-fin"
tenant = "police"
name = "Police finance officer"
roles = ["finance"]

[[principals]]
id = "police-viewer"
tenant = "police"
name = "Police control room"
roles = ["viewer"]

[[cameras]]
id = "street"
owner = "council"
"""

# The plan, one single-rate tier per metric, so every amount can be worked out by hand.
PLAN = PricePlan(
    id="standard",
    prices=(
        MetricPrice(Metric.LIVE_SECONDS, "camera-hour", (Tier(None, Decimal(45)),)),
        MetricPrice(Metric.PLAYBACK_SECONDS, "hour", (Tier(None, Decimal(60)),)),
        MetricPrice(Metric.BYTES, "GB", (Tier(None, Decimal(10)),)),
        MetricPrice(Metric.PTZ_SECONDS, "minute", (Tier(None, Decimal(5)),)),
        MetricPrice(Metric.EXPORTS, "export", (Tier(None, Decimal(250)),)),
    ),
    platform_fee_pence=5000,
    vat_rate=Decimal("0.20"),
)

# Police, April 2026, by hand from PLAN:
#   live      2,345.5 camera-hours x 45p  = 105,547.5p -> 105,548p (half up)
#   playback      2   hours        x 60p  =     120p
#   data         12.345 GB         x 10p  =     123.45p -> 123p
#   PTZ          15   minutes      x  5p  =      75p
#   exports       2                x 250p =     500p
#   platform fee                          =   5,000p
#   subtotal 111,366p; VAT 20% = 22,273.2p -> 22,273p; total 133,639p = £1,336.39
POLICE_SUBTOTAL, POLICE_VAT, POLICE_TOTAL = 111_366, 22_273, 133_639
# Shop: live 3 h x 45p = 135p; 0.5 GB x 10p = 5p; fee 5,000p -> 5,140p; VAT 1,028p; £61.68
SHOP_TOTAL = 6_168
# The credit note on the police invoice: the playback line, 120p + VAT 24p -> -£1.44
CREDIT_TOTAL = -144

HOUR = 3_600_000


def _event(
    tenant: str,
    session: str,
    kind: UsageKind,
    start: datetime,
    *,
    ms: int = 0,
    nbytes: int = 0,
    seq: int = 0,
) -> UsageEvent:
    return UsageEvent(
        event_id=UsageEvent.make_id(session, seq),
        session_id=session,
        seq=seq,
        tenant=tenant,
        principal=None,
        camera="street",
        camera_owner="council",
        kind=kind,
        protocol="rtsp",
        variant="masked",
        start=start,
        end=start + timedelta(milliseconds=ms),
        duration_ms=ms,
        bytes_sent=nbytes,
    )


def _fill(ledger: Ledger, store: InvoiceStore) -> None:
    t = datetime(2026, 4, 3, 10, tzinfo=UTC)
    ledger.record(
        [
            # Police: 2,000 h + 345.5 h live (two sessions), 12.345 GB in all.
            _event("police", "p-live-1", UsageKind.LIVE, t, ms=2_000 * HOUR, nbytes=10**10),
            _event(
                "police",
                "p-live-2",
                UsageKind.LIVE,
                t,
                ms=345 * HOUR + HOUR // 2,
                nbytes=2_345_000_000,
            ),
            _event("police", "p-play", UsageKind.PLAYBACK, t, ms=2 * HOUR),
            _event("police", "p-ptz", UsageKind.PTZ, t, ms=15 * 60_000),
            # Two exports; the first reported as two intervals is still one export.
            _event("police", "p-exp-1", UsageKind.EXPORT, t, seq=0),
            _event("police", "p-exp-1", UsageKind.EXPORT, t, seq=1),
            _event("police", "p-exp-2", UsageKind.EXPORT, t),
            _event("shop", "s-live", UsageKind.LIVE, t, ms=3 * HOUR, nbytes=500_000_000),
            _event("evil", "e-live", UsageKind.LIVE, t, ms=HOUR),
            # March, for the six-month chart.
            _event(
                "police", "p-march", UsageKind.LIVE, datetime(2026, 3, 9, tzinfo=UTC), ms=900 * HOUR
            ),
        ],
        now=datetime(2026, 4, 30, 23, tzinfo=UTC),
    )
    assignments = {"police": "standard", "shop": "standard", "evil": "standard"}
    run_invoices(
        ledger,
        store,
        {"standard": PLAN},
        assignments,
        PERIOD,
        now=datetime(2026, 5, 1, 6, tzinfo=UTC),
    )
    store.finalize(f"inv-police-{PERIOD}", datetime(2026, 5, 2, 9, tzinfo=UTC))
    store.credit_note(
        f"inv-police-{PERIOD}",
        ["usage:playback_seconds"],
        "Recorded playback unavailable on 12 April",
        datetime(2026, 5, 9, 9, tzinfo=UTC),
    )


@dataclass
class Site:
    base: str
    gateway: Gateway
    tmp: Path

    def token(self, tenant: str, subject: str, roles: tuple[str, ...]) -> str:
        assert self.gateway.tenancy is not None
        return self.gateway.tenancy.issuer.issue(
            tenant=tenant, subject=subject, ttl=timedelta(minutes=10), roles=roles
        )

    def get(
        self, path: str, token: str | None = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, str, Message]:
        return self.request("GET", path, token, headers=headers)

    def post(
        self, path: str, form: dict[str, str], *, headers: dict[str, str] | None = None
    ) -> tuple[int, str, Message]:
        body = urlencode(form).encode()
        return self.request(
            "POST",
            path,
            None,
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )

    def request(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, Message]:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=10) as resp:
                return resp.status, resp.read().decode(), resp.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers

    def login_url(self, token: str, next_path: str) -> str:
        return f"{self.base}/finance/login?{urlencode({'token': token, 'next': next_path})}"

    def sign_in(self, token: str, next_path: str) -> tuple[int, Message]:
        """What a browser does: open the sign-in link, then post its form back."""
        status, body, headers = self.get(self.login_url(token, next_path)[len(self.base) :])
        assert status == 200, body
        found = re.search(r'name="csrf" value="([^"]+)"', body)
        assert found is not None
        cookies = [c.split(";")[0] for c in headers.get_all("Set-Cookie") or []]
        form = {"csrf": found.group(1), "token": token, "next": next_path}
        same_site = {
            "Origin": self.base,
            "Sec-Fetch-Site": "same-origin",
            "Cookie": "; ".join(cookies),
        }
        status, _, headers = self.post("/finance/login", form, headers=same_site)
        return status, headers


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("finance")
    seed = tmp / "seed.toml"
    seed.write_text(SEED)
    config = replace(
        make_config(),
        data_dir=str(tmp / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed)),
    )
    db = Database.open(f"sqlite:///{tmp}/billing.db")
    ledger = Ledger(db)
    store = InvoiceStore(db, ledger=ledger)
    _fill(ledger, store)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="finance-site", daemon=True)
    thread.start()
    port = free_port()
    holder: dict[str, object] = {}

    async def start() -> None:
        gw = Gateway(config)
        app = make_http_app(gw)
        assert gw.tenancy is not None
        tenancy = gw.tenancy
        add_finance_routes(
            app,
            ledger=ledger,
            invoices=store,
            platform_tenant=config.grpc.platform_tenant,
            tenant_names=lambda: {t.id: t.name for t in tenancy.policy.snapshot.tenants.values()},
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        holder["gw"], holder["runner"] = gw, runner

    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    gw = holder["gw"]
    assert isinstance(gw, Gateway)
    try:
        yield Site(f"http://127.0.0.1:{port}", gw, tmp)
    finally:
        runner = holder["runner"]
        assert isinstance(runner, web.AppRunner)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        db.close()


@contextmanager
def signed_in(
    browser: Browser, site: Site, token: str, path: str, *, width: int = 1280
) -> Iterator[Page]:
    """A fresh browser profile that opens the sign-in link for ``path``, presses "Sign in" and
    is left on ``path``."""
    context = browser.new_context(viewport={"width": width, "height": 1024})
    try:
        page = context.new_page()
        page.goto(site.login_url(token, path))
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        assert page.url == site.base + path, page.content()
        yield page
    finally:
        context.close()


# ------------------------------------------------------------------------------ unit level
def test_money_and_csv_cells() -> None:
    assert format_money(133_639) == "£1,336.39"
    assert format_money(-144) == "-£1.44"
    assert format_money(5) == "£0.05"
    assert format_money(123_456_789_00) == "£123,456,789.00"
    assert csv_cell("=SUM(A1)") == "'=SUM(A1)"
    assert csv_cell("+1") == "'+1" and csv_cell("@x") == "'@x" and csv_cell("\tx") == "'\tx"
    assert csv_cell("-2+cmd|' /C calc'!A0") == "'-2+cmd|' /C calc'!A0"
    assert csv_cell("-1.44") == "-1.44"  # a plain number is no formula
    assert csv_cell("Testshire Police") == "Testshire Police"


# ---------------------------------------------------------------------------- access rules
def test_no_token_is_401_and_a_viewer_is_403(site: Site) -> None:
    status, _, headers = site.get("/finance/usage")
    assert status == 401 and "Bearer" in headers.get("WWW-Authenticate", "")
    viewer = site.token("police", "police-viewer", ("viewer",))
    for path in ("/finance/usage", "/finance/invoices", f"/finance/invoices/inv-police-{PERIOD}"):
        status, body, _ = site.get(path, viewer)
        assert status == 403, path
        assert "finance or admin role" in body
    status, body, headers = site.get(site.login_url(viewer, "/finance")[len(site.base) :])
    assert status == 403 and "Set-Cookie" not in headers
    status, body, headers = site.get("/finance/login?token=not.a.token")
    assert status == 401 and "Set-Cookie" not in headers
    assert "not.a.token" not in body


def test_other_tenants_invoices_are_404_and_bad_input_400(site: Site) -> None:
    police = site.token("police", "police-fin", ("finance",))
    assert site.get(f"/finance/invoices/inv-police-{PERIOD}", police)[0] == 200
    status, body, _ = site.get(f"/finance/invoices/inv-shop-{PERIOD}", police)
    assert status == 404 and "Riverside" not in body
    assert site.get(f"/finance/invoices/inv-shop-{PERIOD}/print", police)[0] == 404
    assert site.get("/finance/invoices/inv-nobody-2026-04", police)[0] == 404
    assert site.get("/finance/usage?tenant=shop", police)[0] == 404
    assert site.get("/finance/usage?period=2026-13", police)[0] == 400
    assert site.get("/finance/usage.csv?period=April", police)[0] == 400
    assert site.get("/finance/invoices/INV%3Cscript%3E", police)[0] == 400


def test_sign_in_sets_a_strict_http_only_cookie(site: Site) -> None:
    police = site.token("police", "police-fin", ("finance",))
    status, headers = site.sign_in(police, "//evil.example/")
    assert status == 303 and headers["Location"] == "/finance"
    cookie = _session_cookie(headers)
    assert cookie is not None
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/;"):
        assert attr in cookie + ";"
    # The cookie holds a session token of the gateway's own for the same principal, not the
    # link's token, and the link works once.
    session = cookie.split(";")[0].split("=", 1)[1]
    assert session != police
    assert site.gateway.tenancy is not None
    claims = site.gateway.tenancy.verifier.verify(session)
    assert (claims.tenant, claims.subject) == ("police", "police-fin")
    status, body, headers = site.get(site.login_url(police, "/finance")[len(site.base) :])
    assert status == 401 and _session_cookie(headers) is None, body
    again = site.token("police", "police-fin", ("finance",))
    status, headers = site.sign_in(again, f"/finance/invoices?period={PERIOD}")
    assert status == 303 and headers["Location"] == f"/finance/invoices?period={PERIOD}"
    assert again not in headers["Location"]


def test_csv_exports(site: Site) -> None:
    police = site.token("police", "police-fin", ("finance",))
    status, body, headers = site.get(f"/finance/usage.csv?period={PERIOD}", police)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == (
        f'attachment; filename="feedgate-usage-{PERIOD}-police.csv"'
    )
    rows = list(csv.reader(io.StringIO(body)))
    assert rows == [
        ["period", "tenant", "tenant_name", "live_camera_hours", "playback_hours",
         "gb_delivered", "ptz_minutes", "exports"],
        [PERIOD, "police", "Testshire Police", "2345.5000", "2.0000", "12.3450", "15.0000", "2"],
    ]  # fmt: skip

    council = site.token("council", "council-fin", ("finance",))
    rows = list(csv.DictReader(io.StringIO(site.get(f"/finance/usage.csv?period={PERIOD}",
                                                    council)[1])))  # fmt: skip
    assert [r["tenant"] for r in rows] == ["evil", "police", "shop"]
    evil = rows[0]
    assert evil["tenant_name"].startswith("'=HYPERLINK")  # defused for spreadsheets

    status, body, _ = site.get(f"/finance/invoices.csv?period={PERIOD}", council)
    by_id = {r["invoice_id"]: r for r in csv.DictReader(io.StringIO(body))}
    assert set(by_id) == {
        f"inv-evil-{PERIOD}",
        f"inv-police-{PERIOD}",
        f"cn-police-{PERIOD}-1",
        f"inv-shop-{PERIOD}",
    }
    assert by_id[f"inv-police-{PERIOD}"]["total"] == "1336.39"
    assert by_id[f"inv-police-{PERIOD}"]["status"] == "finalized"
    assert by_id[f"cn-police-{PERIOD}-1"]["total"] == "-1.44"
    assert by_id[f"inv-shop-{PERIOD}"]["total"] == "61.68"

    body = site.get(f"/finance/invoices.csv?period={PERIOD}", police)[1]
    ids = [r["invoice_id"] for r in csv.DictReader(io.StringIO(body))]
    assert ids == [f"cn-police-{PERIOD}-1", f"inv-police-{PERIOD}"]


# ---------------------------------------------------------------------------- in Chromium
def test_tenant_finance_user_sees_own_invoice_in_chromium(
    site: Site, browser: Browser, tmp_path: Path
) -> None:
    police = site.token("police", "police-fin", ("finance",))
    path = f"/finance/invoices/inv-police-{PERIOD}"
    with signed_in(browser, site, police, path) as page:
        dom = page.content()
        assert f"Invoice inv-police-{PERIOD}" in dom
        assert f'<td class="num" id="total">{format_money(POLICE_TOTAL)}</td>' in dom
        assert format_money(POLICE_SUBTOTAL) in dom and format_money(POLICE_VAT) in dom
        assert "VAT at 20%" in dom
        assert "Live viewing: 2,345.50 camera-hours" in dom
        assert "£1,055.48" in dom  # the live line, 105,548p
        assert f"cn-police-{PERIOD}-1" in dom  # its credit note
        assert "Signed in as <strong>police-fin</strong>" in dom
        assert "Testshire Police" in dom
        # The stylesheet came from this server and applies: the header is the brand colour.
        header = page.eval_on_selector("header.top", "e => getComputedStyle(e).backgroundColor")
        assert header == "rgb(29, 53, 87)"
        shot = tmp_path / "finance.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

        page.goto(f"{site.base}/finance/invoices?period={PERIOD}")
        dom = page.content()
        assert f"inv-police-{PERIOD}" in dom
        assert "inv-shop" not in dom and "Riverside" not in dom and "inv-evil" not in dom

        page.goto(f"{site.base}/finance/usage?period={PERIOD}")
        dom = page.content()
        assert "<svg" in dom and "2,345.50" in dom and "12.35" in dom
        assert "Riverside" not in dom

        # Signing out is a POST from the header's button; the cookie is gone after it.
        with page.expect_navigation():
            page.get_by_role("button", name="Sign out").click()
        assert "You have signed out" in page.content()
        assert "feedgate_token" not in [c["name"] for c in page.context.cookies()]


def test_platform_finance_user_sees_every_tenant(
    site: Site, browser: Browser, tmp_path: Path
) -> None:
    council = site.token("council", "council-fin", ("finance",))
    with signed_in(browser, site, council, f"/finance/invoices?period={PERIOD}") as page:
        dom = page.content()
        for invoice_id in ("inv-police", "inv-shop", "inv-evil", "cn-police"):
            assert f"{invoice_id}-{PERIOD}" in dom
        assert format_money(POLICE_TOTAL) in dom and format_money(SHOP_TOTAL) in dom
        assert format_money(CREDIT_TOTAL) in dom
        # Names are escaped, never markup.
        assert 'Riverside &lt;Shops&gt; &amp; "Co"' in dom and "<Shops>" not in dom

        page.goto(f"{site.base}/finance/usage?period={PERIOD}")
        dom = page.content()
        assert "Testshire Police" in dom and "Riverside &lt;Shops&gt;" in dom
        assert dom.count("<rect") >= 3 * 5  # three tenants, five panels
        page.screenshot(path=str(tmp_path / "usage.png"), full_page=True)
        assert (tmp_path / "usage.png").stat().st_size > 20_000


_MEDIA_BOX = re.compile(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]")


def test_printable_invoice(site: Site, browser: Browser, tmp_path: Path) -> None:
    council = site.token("council", "council-fin", ("finance",))
    with signed_in(browser, site, council, f"/finance/invoices/inv-police-{PERIOD}/print") as page:
        dom = page.content()
        assert "Borough Council of Testford" in dom  # the issuer
        assert "Testshire Police" in dom  # billed to
        assert f"inv-police-{PERIOD}" in dom
        assert "2 May 2026" in dom and "1 June 2026" in dom  # issued, due (30 days)
        assert "1 April 2026 \u2013 30 April 2026" in dom
        for text in ("Live viewing", "Recorded playback", "Video data delivered",
                     "PTZ camera control", "Clip exports", "Platform fee"):  # fmt: skip
            assert text in dom
        assert "Total due" in dom and format_money(POLICE_TOTAL) in dom
        assert "Payment is due within 30 days" in dom
        shot = tmp_path / "print.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        # Printed, it is A4 (595 x 842 points) whatever the browser's default paper.
        pdf = page.pdf(prefer_css_page_size=True)
        (tmp_path / "print.pdf").write_bytes(pdf)
        boxes = {(round(float(w)), round(float(h))) for w, h in _MEDIA_BOX.findall(pdf)}
        assert boxes and all(abs(w - 595) <= 2 and abs(h - 842) <= 2 for w, h in boxes), boxes


def test_public_transparency_page_in_chromium(browser: Browser, site: Site, tmp_path: Path) -> None:
    """The published figures, as a member of the public sees them: no login."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{site.base}/transparency?period={PERIOD}")
        dom = page.content()
        assert f"published figures for {PERIOD}" in dom
        assert '<table id="figures">' in dom and "Kind of organisation" in dom
        assert "<th>Police</th>" in dom
        header = page.eval_on_selector("header.top", "e => getComputedStyle(e).backgroundColor")
        assert header == "rgb(29, 53, 87)"  # the stylesheet loads without a token
        shot = tmp_path / "transparency.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 5_000
    finally:
        context.close()


# ----------------------------------------------------- login CSRF, nosniff, no echo (#10)
def _session_cookie(headers: Message) -> str | None:
    for cookie in headers.get_all("Set-Cookie") or []:
        if cookie.startswith("feedgate_token="):
            return cookie
    return None


def test_opening_a_sign_in_link_sets_no_cookie(site: Site) -> None:
    """Another site can send a browser to a sign-in link with the attacker's token; the link
    only shows who would be signed in, and the cookie waits for a POST from this site."""
    police = site.token("police", "police-fin", ("finance",))
    status, body, headers = site.get(site.login_url(police, "/finance")[len(site.base) :])
    assert status == 200 and _session_cookie(headers) is None
    assert 'method="post"' in body and "police-fin" in body and "Testshire Police" in body


def test_sign_in_refuses_a_post_from_another_site(site: Site) -> None:
    police = site.token("police", "police-fin", ("finance",))
    form = {"token": police, "next": "/finance/usage"}
    for headers in (
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling host of the council is another origin
        {"Origin": "null"},
        {},  # same origin, but no CSRF token from this site's sign-in page
    ):
        status, body, got = site.post("/finance/login", form, headers=headers)
        assert status == 403, headers
        assert _session_cookie(got) is None and police not in body


def test_every_response_says_nosniff(site: Site) -> None:
    police = site.token("police", "police-fin", ("finance",))
    for path, token in (
        ("/healthz", None),
        ("/metrics", police),
        ("/v1/rtsp/sessions", None),
        ("/no/such/page", police),
        ("/finance/usage?period=2026-13", police),
        (f"/finance/usage?period={PERIOD}", police),
        (f"/finance/usage.csv?period={PERIOD}", police),
        ("/finance/login?token=x", None),
        (f"/transparency/{PERIOD}.json", None),
        ("/transparency?period=2026-13", None),
        ("/static/feedgate.css", None),
    ):
        status, _, headers = site.get(path, token)
        assert headers.get("X-Content-Type-Options") == "nosniff", (path, status)


MARK = "zqx<b>echo</b>"


def test_error_pages_do_not_repeat_the_request(site: Site) -> None:
    police = site.token("police", "police-fin", ("finance",))
    mark = quote(MARK, safe="")
    for path, token, status in (
        (f"/finance/usage?period={mark}", police, 400),
        (f"/finance/usage?tenant={mark}", police, 400),
        (f"/finance/invoices/{mark}", police, 400),
        ("/finance/invoices/inv-zqx-2026-04", police, 404),
        ("/finance/invoices/inv-zqx-2026-04/print", police, 404),
        (f"/finance/login?token={mark}", None, 401),
        (f"/transparency?period={mark}", None, 400),
        (f"/transparency/{mark}.json", None, 400),
        ("/transparency/2099-01.json", None, 404),
    ):
        got, body, _ = site.get(path, token)
        assert got == status, path
        assert "zqx" not in body and "2099" not in body, (path, body)


@contextmanager
def another_site(pages: dict[str, str]) -> Iterator[str]:
    """A different site (``localhost`` is not the same site as ``127.0.0.1``) serving ``pages``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_another_site_cannot_sign_a_browser_in(site: Site, browser: Browser) -> None:
    """Login CSRF in a real browser: a page on another site sends the victim's browser to a
    sign-in link carrying the attacker's token (a top-level navigation, which may set even a
    SameSite=Strict cookie), or posts the sign-in form itself. Neither signs the browser in."""
    attacker = site.token("council", "council-fin", ("finance",))
    link = site.login_url(attacker, "/finance/usage")
    form = (
        f'<form id="f" method="post" action="{site.base}/finance/login">'
        f'<input name="token" value="{attacker}"><input name="next" value="/finance/usage">'
        '</form><script>document.getElementById("f").submit()</script>'
    )
    pages = {"/link": f"<script>location.href = {link!r}</script>", "/form": form}
    with another_site(pages) as evil:
        for page_path in pages:
            context = browser.new_context()
            try:
                page = context.new_page()
                page.goto(evil + page_path)
                page.wait_for_url(f"{site.base}/**")
                page.wait_for_load_state()
                names = [c["name"] for c in context.cookies()]
                assert "feedgate_token" not in names, page_path
                assert "Signed in as" not in page.content()
            finally:
                context.close()


# Phone, tablet, desktop and a wall display (CSS pixels).
WIDTHS = (360, 768, 1280, 2560)


def test_pages_fit_a_phone_a_tablet_and_a_wall(
    site: Site, browser: Browser, tmp_path: Path
) -> None:
    """No page is wider than the screen: wide tables scroll inside their box, the header and
    the month bar wrap, the charts shrink."""
    paths = (
        f"/finance/usage?period={PERIOD}",
        f"/finance/usage?period={PERIOD}&tenant=police",
        f"/finance/invoices?period={PERIOD}",
        f"/finance/invoices/inv-police-{PERIOD}",
        f"/finance/invoices/inv-police-{PERIOD}/print",
    )
    for width in WIDTHS:
        council = site.token("council", "council-fin", ("finance",))  # a link signs in once
        with signed_in(browser, site, council, paths[0], width=width) as page:
            for path in (*paths, f"/transparency?period={PERIOD}"):
                page.goto(site.base + path)
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
                page.screenshot(path=str(tmp_path / f"{width}-{name}.png"), full_page=True)
                assert overflow <= 0, (width, path, overflow)
