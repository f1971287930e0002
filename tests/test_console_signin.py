"""Signing in to the console, as a browser does it over HTTP: a principal's password (scrypt,
within the guessing limits, audited either way) or a one-time sign-in link; the session cookie
(HttpOnly, SameSite=Strict, path /, Secure under HTTPS) holds a session token of the gateway's
own; the console's scripts reach the REST API with that cookie only from its pages and only
with the CSRF header."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from rest_fixtures import Rest, rest_gateway
from test_tls import pki  # noqa: F401  (the fixture: a CA and a server certificate)

from gateway.http.app import make_http_app
from tenants import passwords
from tenants.audit import AuditAction

PASSWORD = "a long enough console password"


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[Rest]:
    async with rest_gateway(tmp_path) as r:
        store = r.tenancy.store
        for who in ("cop", "padmin"):
            p = store.get_principal(who)
            store.put_principal(replace(p, password_hash=passwords.hash_password(PASSWORD)))
        r.tenancy.policy.reload()
        yield r


class Browser:
    """An HTTP client that keeps cookies and sends what a browser sends from the page."""

    def __init__(self, base: str, **session: Any) -> None:
        self.base = base
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        self.http = aiohttp.ClientSession(cookie_jar=jar, **session)
        self.page_csrf = ""

    @property
    def same_origin(self) -> dict[str, str]:
        return {"Origin": self.base, "Sec-Fetch-Site": "same-origin"}

    async def get(self, path: str) -> tuple[int, str, Any]:
        async with self.http.get(self.base + path, allow_redirects=False) as r:
            body = await r.text()
            found = re.search(r'name="csrf" value="([^"]+)"', body)
            if found:
                self.page_csrf = found.group(1)
            return r.status, body, r.headers

    async def post(
        self, path: str, form: dict[str, str], *, headers: dict[str, str] | None = None
    ) -> tuple[int, str, Any]:
        sent = self.same_origin if headers is None else headers
        async with self.http.post(
            self.base + path, data=form, headers=sent, allow_redirects=False
        ) as r:
            return r.status, await r.text(), r.headers

    async def sign_in(self, **form: str) -> tuple[int, str, Any]:
        status, body, _ = await self.get("/console/login")
        assert status == 200, body
        return await self.post("/console/login", {"csrf": self.page_csrf, **form})

    def cookie(self, name: str) -> str | None:
        for c in self.http.cookie_jar:
            if c.key == name:
                return c.value
        return None

    async def close(self) -> None:
        await self.http.close()


@pytest.fixture
async def browser(rest: Rest) -> AsyncIterator[Browser]:
    b = Browser(rest.base)
    yield b
    await b.close()


def _set_cookie(headers: Any, name: str) -> str:
    found = [c for c in headers.getall("Set-Cookie", []) if c.startswith(f"{name}=")]
    assert found, list(headers.getall("Set-Cookie", []))
    return str(found[0])


def _logins(rest: Rest) -> list[Any]:
    return [e for e in rest.tenancy.audit.entries() if e.action == AuditAction.LOGIN]


def _failed(rest: Rest) -> list[Any]:
    return [
        e
        for e in rest.tenancy.audit.entries()
        if e.action == AuditAction.DENIED and e.detail.get("action") == "sign_in"
    ]


# ----------------------------------------------------------------------------- passwords


async def test_a_password_signs_in_with_a_strict_http_only_session_cookie(
    rest: Rest, browser: Browser
) -> None:
    status, _, headers = await browser.sign_in(
        principal="cop", password=PASSWORD, next="/console/sessions"
    )
    assert status == 303 and headers["Location"] == "/console/sessions"
    cookie = _set_cookie(headers, "feedgate_token")
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/;"):
        assert attr in cookie + ";", cookie
    assert "Secure" not in cookie  # plain HTTP here; see the HTTPS test
    # The CSRF value is a new one: a value planted before sign-in is worth nothing.
    assert _set_cookie(headers, "feedgate_csrf").split(";")[0].split("=")[1] != browser.page_csrf
    token = browser.cookie("feedgate_token")
    assert token is not None
    claims = rest.tenancy.verifier.verify(token)
    assert (claims.tenant, claims.subject, claims.roles) == ("council", "cop", {"operator"})
    assert timedelta(hours=7) < claims.expires_at - claims.issued_at <= timedelta(hours=8)
    [login] = _logins(rest)
    assert (login.tenant, login.principal, login.outcome) == ("council", "cop", "ok")
    assert login.detail["method"] == "password"
    assert login.detail["token_id"] == claims.token_id
    # Somewhere to go afterwards is a path of this gateway, nothing else.
    other = Browser(rest.base)
    try:
        status, _, headers = await other.sign_in(
            principal="cop", password=PASSWORD, next="//evil.example/"
        )
        assert status == 303 and headers["Location"] == "/console"
    finally:
        await other.close()


async def test_a_wrong_password_and_an_unknown_name_get_one_answer_and_are_audited(
    rest: Rest, browser: Browser
) -> None:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    rest.tenancy.policy.sleep = sleep
    answers = []
    for name, password in (
        ("cop", "not the password at all"),
        ("nobody", PASSWORD),
        ("cview", PASSWORD),
    ):  # cview has no password
        status, body, headers = await browser.sign_in(principal=name, password=password)
        assert status == 401 and "feedgate_token" not in headers.get("Set-Cookie", "")
        answers.append(re.search(r'role="alert">([^<]+)<', body).group(1))  # type: ignore[union-attr]
    assert len(set(answers)) == 1 and "do not match" in answers[0]
    assert browser.cookie("feedgate_token") is None
    assert len(delays) == 3 and all(d > 0 for d in delays)
    failed = _failed(rest)
    assert [(e.principal, e.outcome) for e in failed] == [
        ("cop", "unauthenticated"),
        (None, "unauthenticated"),
        ("cview", "unauthenticated"),
    ]
    text = repr([e.detail for e in rest.tenancy.audit.entries()])
    assert PASSWORD not in text and "not the password" not in text and "nobody" not in text
    assert _logins(rest) == []


async def test_password_guessing_is_throttled(rest: Rest, browser: Browser) -> None:
    """Ten wrong passwords a minute per principal and per source: the eleventh attempt is
    refused unchecked, even with the right password, and the refusal says so in the log."""
    now = [1000.0]
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    policy = rest.tenancy.policy
    policy.sleep, policy.clock = sleep, lambda: now[0]
    for i in range(10):
        status, _, _ = await browser.sign_in(principal="cop", password=f"wrong guess {i:04d}")
        assert status == 401
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0] and max(delays) == 4.0
    status, _, _ = await browser.sign_in(principal="cop", password=PASSWORD)
    assert status == 401
    assert _failed(rest)[-1].detail.get("throttled") is True
    now[0] += 61.0  # a minute later the allowance is back
    status, _, headers = await browser.sign_in(principal="cop", password=PASSWORD)
    assert status == 303, headers


# ----------------------------------------------------------------------------- links


async def test_a_sign_in_link_shows_whose_it_is_and_signs_in_once(
    rest: Rest, browser: Browser
) -> None:
    link = rest.token("pview", cameras=["street"], ttl=timedelta(minutes=15))
    status, body, headers = await browser.get(f"/console/login?token={link}")
    assert status == 200 and "pview" in body and "Police viewer" in body
    assert "feedgate_token" not in headers.get("Set-Cookie", "")  # opening it changes nothing
    status, body, headers = await browser.get(f"/console/login?token={link}")
    assert status == 200  # ...so it can be opened again
    status, _, headers = await browser.post(
        "/console/login", {"csrf": browser.page_csrf, "token": link, "next": "/console"}
    )
    assert status == 303, headers
    session = browser.cookie("feedgate_token")
    assert session is not None and session != link
    claims = rest.tenancy.verifier.verify(session)
    assert (claims.subject, claims.cameras) == ("pview", {"street"})  # the link's limits stay
    [login] = _logins(rest)
    assert login.detail["method"] == "link"
    assert login.detail["link_token_id"] == rest.tenancy.verifier.verify(link).token_id
    # Used once, the link is refused, whether opened or posted again.
    other = Browser(rest.base)
    try:
        status, body, _ = await other.get(f"/console/login?token={link}")
        assert status == 401 and link not in body
        await other.get("/console/login")
        status, body, headers = await other.post(
            "/console/login", {"csrf": other.page_csrf, "token": link}
        )
        assert status == 401 and other.cookie("feedgate_token") is None
        assert "has been used" in body
    finally:
        await other.close()
    assert _failed(rest)[-1].detail["reason"] == "link already used"


@pytest.mark.parametrize("token", ["not.a.token", "", "x" * 9000], ids=["garbage", "empty", "huge"])
async def test_a_bad_link_is_refused_without_repeating_it(
    rest: Rest, browser: Browser, token: str
) -> None:
    if token and len(token) < 8000:  # (a longer URL is refused by aiohttp's parser)
        status, body, _ = await browser.get(f"/console/login?token={token}")
        assert status == 401 and token[:50] not in body
    await browser.get("/console/login")
    status, body, _ = await browser.post(
        "/console/login", {"csrf": browser.page_csrf, "token": token}
    )
    assert status == 401 and browser.cookie("feedgate_token") is None
    if token:
        assert token[:50] not in body


# ----------------------------------------------------------------------------- login CSRF


async def test_sign_in_refuses_a_post_from_elsewhere(rest: Rest, browser: Browser) -> None:
    await browser.get("/console/login")
    form = {"csrf": browser.page_csrf, "principal": "cop", "password": PASSWORD}
    for headers in (
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling host is another origin
        {"Origin": "null"},
    ):
        status, _, _ = await browser.post("/console/login", form, headers=headers)
        assert status == 403, headers
    status, _, _ = await browser.post("/console/login", {**form, "csrf": "x" * 43})
    assert status == 403
    assert browser.cookie("feedgate_token") is None and _logins(rest) == []


# ----------------------------------------------------------------------------- the REST API


async def test_the_rest_api_takes_the_cookie_only_with_the_csrf_header(
    rest: Rest, browser: Browser
) -> None:
    status, _, _ = await browser.sign_in(principal="padmin", password=PASSWORD)
    assert status == 303
    csrf = browser.cookie("feedgate_csrf")
    assert csrf is not None
    page = browser.same_origin
    mask = {
        "id": "m1",
        "camera_id": "street",
        "points": [{"x": 0, "y": 0}, {"x": 1, "y": 0}, {"x": 1, "y": 1}],
    }
    url = rest.base + "/v1/principals?tenant_id=police"
    async with browser.http.get(url, headers=page) as r:
        assert r.status == 200, await r.text()
        assert {p["id"] for p in (await r.json())["items"]} >= {"padmin"}
    # From another site (or a sibling host), the cookie is not taken, even to read.
    async with browser.http.get(url, headers={"Sec-Fetch-Site": "cross-site"}) as r:
        assert r.status == 403 and "cross-site" in (await r.json())["detail"]
    # A change needs the page's CSRF value in X-CSRF-Token.
    put = rest.base + "/v1/principals/pview"
    body = {"id": "pview", "tenant_id": "police", "name": "Renamed", "roles": ["viewer"]}
    async with browser.http.put(put, json=body, headers=page) as r:
        assert r.status == 403 and "X-CSRF-Token" in (await r.json())["detail"]
    async with browser.http.put(put, json=body, headers={**page, "X-CSRF-Token": "y" * 43}) as r:
        assert r.status == 403
    assert rest.tenancy.store.get_principal("pview").name == "Police viewer"
    async with browser.http.put(put, json=body, headers={**page, "X-CSRF-Token": csrf}) as r:
        assert r.status == 200, await r.text()
    assert rest.tenancy.store.get_principal("pview").name == "Renamed"
    # The refusals are audited like any other.
    refused = [e for e in rest.denials() if "CSRF" in str(e.detail.get("reason"))]
    assert len(refused) == 2
    # The console's session is still only the police admin's: council's masks stay closed.
    async with browser.http.put(
        rest.base + "/v1/masks/m1", json=mask, headers={**page, "X-CSRF-Token": csrf}
    ) as r:
        assert r.status == 403


async def test_signing_out_clears_the_cookie(rest: Rest, browser: Browser) -> None:
    await browser.sign_in(principal="cop", password=PASSWORD)
    assert browser.cookie("feedgate_token") is not None
    status, _, _ = await browser.post(
        "/console/logout",
        {"csrf": browser.cookie("feedgate_csrf") or ""},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert status == 403 and browser.cookie("feedgate_token") is not None
    status, body, _ = await browser.post("/console/logout", {})
    assert status == 200 and "signed out" in body
    assert browser.cookie("feedgate_token") is None


# ----------------------------------------------------------------------------- HTTPS


async def test_under_https_the_session_cookie_is_secure(
    rest: Rest,
    pki: Path,  # noqa: F811
) -> None:
    from gateway.tls import server_ssl_context

    app = make_http_app(rest.gateway)
    app.cleanup_ctx.clear()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        0,
        ssl_context=server_ssl_context(str(pki / "server.pem"), str(pki / "server.key")),
    )
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    b = Browser(f"https://127.0.0.1:{port}", connector=aiohttp.TCPConnector(ssl=client))
    try:
        status, _, headers = await b.sign_in(principal="cop", password=PASSWORD)
        assert status == 303
        assert "Secure" in _set_cookie(headers, "feedgate_token")
        assert "Secure" in _set_cookie(headers, "feedgate_csrf")
    finally:
        await b.close()
        await runner.cleanup()
