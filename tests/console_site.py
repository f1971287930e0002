"""A real gateway for the console's tests: tenancy and WebRTC on, its HTTP app on a loopback
port, run by an event loop of its own in a thread (Playwright's sync API drives Chromium from
the test's own thread), with ffmpeg encoders publishing its cameras over RTSP.

The network: the council owns four cameras (three with map positions) and grants two of
them to the police and one to a shop; the shop's tenant kind (retail) has a privacy mask over
the right-hand third of "street", which is plain white, so a pixel inside the mask is
black for the shop and white for everyone else. "farside" owns a camera of its own and shares
nothing: nothing of it may reach anyone else.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from conftest import free_port, make_config, publish_argv

from gateway.config import CameraConfig, TenancyConfig, WebRtcConfig
from gateway.core import Gateway
from gateway.http.app import make_http_app
from tenants import passwords

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

PASSWORD = "correct horse battery staple"
MASK = [[0.67, 0.0], [1.0, 0.0], [1.0, 1.0], [0.67, 1.0]]  # the right-hand third

SEED = f"""
[[tenants]]
id = "council"
name = "London Borough of Testford"
kind = "council"
[[tenants]]
id = "police"
name = "Testshire Police"
kind = "police"
[[tenants]]
id = "shop"
name = "Riverside <Shops>"
kind = "retail"
[[tenants]]
id = "farside"
name = "Farside Borough"
kind = "borough"

[[principals]]
id = "encoder"
tenant = "council"
name = "Encoder"
kind = "service"
roles = ["operator"]
digest_password = "enc"
[[principals]]
id = "council-admin"
tenant = "council"
name = "CCTV manager"
roles = ["admin", "auditor", "operator", "viewer"]
[[principals]]
id = "council-op"
tenant = "council"
name = "Control room operator"
roles = ["operator", "viewer"]
[[principals]]
id = "council-audit"
tenant = "council"
name = "Oversight panel"
roles = ["auditor"]
[[principals]]
id = "council-fin"
tenant = "council"
name = "Finance"
roles = ["finance"]
[[principals]]
id = "officer"
tenant = "police"
name = "PC Officer"
roles = ["viewer", "operator"]
[[principals]]
id = "police-admin"
tenant = "police"
name = "Police admin"
roles = ["admin", "auditor"]
[[principals]]
id = "guard"
tenant = "shop"
name = "Security desk"
roles = ["viewer"]
[[principals]]
id = "far-admin"
tenant = "farside"
name = "Farside admin"
roles = ["admin", "auditor", "operator", "viewer"]

[[cameras]]
id = "street"
owner = "council"
name = "High Street"
latitude = 51.5072
longitude = -0.1276
[[cameras]]
id = "yard"
owner = "council"
name = "Depot yard"
latitude = 51.5090
longitude = -0.1240
[[cameras]]
id = "market"
owner = "council"
name = "Market Square"
latitude = 51.5050
longitude = -0.1300
[[cameras]]
id = "depot"
owner = "council"
name = "Bus depot"
[[cameras]]
id = "far"
owner = "farside"
name = "Farside gate"
latitude = 51.60
longitude = -0.20

[[grants]]
id = "police-town"
owner = "council"
grantee = "police"
cameras = ["street", "yard"]
rights = ["live"]
[[grants]]
id = "shop-street"
owner = "council"
grantee = "shop"
cameras = ["street"]
rights = ["live"]

[[masks]]
id = "shop-front"
camera = "street"
points = {json.dumps(MASK)}
tenant_kinds = ["retail"]
label = "A rival's shop front"
"""

WHO = {
    "council-admin": "council",
    "council-op": "council",
    "council-audit": "council",
    "council-fin": "council",
    "officer": "police",
    "police-admin": "police",
    "guard": "shop",
    "far-admin": "farside",
}
CAMERAS = ("street", "yard", "market", "depot", "far")

_T = TypeVar("_T")


@dataclass
class Site:
    base: str
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    app: web.Application
    encoders: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ptz: Any = None  # the FAKE ONVIF camera steering ``ptz_camera``, if any

    @property
    def tenancy(self) -> Any:
        assert self.gateway.tenancy is not None
        return self.gateway.tenancy

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def token(self, who: str, ttl: float = 900.0) -> str:
        return str(
            self.tenancy.issuer.issue(tenant=WHO[who], subject=who, ttl=timedelta(seconds=ttl))
        )

    def rest(self, who: str | None, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if who is not None:
            req.add_header("Authorization", f"Bearer {self.token(who)}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            return exc.code, json.loads(text) if text.startswith("{") else text

    def entries(self, action: str) -> list[Any]:
        self.tenancy.drain()  # session ends are stored on the database thread, after the event
        return [e for e in self.tenancy.audit.entries() if e.action.value == action]

    def publishing(self, cameras: tuple[str, ...], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready = [
                c
                for c in cameras
                if (s := self.gateway.hub.get(c)) is not None
                and s.has_source
                and s.gop_cached_bytes > 0
            ]
            if len(ready) == len(cameras):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"cameras not publishing: {set(cameras) - set(ready)}")
            time.sleep(0.1)


def encoder_argv(url: str, camera: str) -> list[str]:
    """A small real-time camera: "street" is plain white (so masks show), others a test card."""
    argv = publish_argv(url, size="320x180", fps=15, gop=15, bitrate="150k")
    if camera == "street":
        argv[argv.index("testsrc2=size=320x180:rate=15")] = "color=c=white:size=320x180:rate=15"
    return argv


@contextmanager
def console_site(
    tmp: Path,
    *,
    publish: tuple[str, ...] = (),
    ptz_camera: str | None = None,
    seed_extra: str = "",
    record: tuple[str, ...] = (),
) -> Iterator[Site]:
    """The site; ``ptz_camera`` is steered through a FAKE ONVIF camera (``Site.ptz``),
    ``seed_extra`` is appended to the seed (e.g. a grant with the ptz right), and the cameras
    in ``record`` are recorded (and played back)."""
    seed = tmp / "seed.toml"
    seed.write_text(SEED + seed_extra)
    onvif_port = free_port()
    cameras = tuple(
        CameraConfig(
            id=c, source="push", record=c in record, segment_seconds=2.0 if c in record else 0
        )
        if c != ptz_camera
        else CameraConfig(
            id=c,
            source="push",
            onvif=f"http://127.0.0.1:{onvif_port}",
            onvif_username="admin",
            onvif_password="fake-camera",
        )
        for c in CAMERAS
    )
    config = replace(
        make_config(cameras),
        data_dir=str(tmp / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed), recheck_interval=0.2),
        webrtc=WebRtcConfig(
            host_addresses=("127.0.0.1",), udp_port_min=0, udp_port_max=0, handshake_timeout=5.0
        ),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="console-site", daemon=True)
    thread.start()
    port = free_port()
    holder: dict[str, Any] = {}

    async def start() -> None:
        if ptz_camera is not None:
            from ptz_world import codec

            from ops.fakes.onvif_camera import FakeOnvifCamera

            fake = FakeOnvifCamera(await asyncio.to_thread(codec))
            await fake.start("127.0.0.1", onvif_port)
            holder["ptz"] = fake
        gw = Gateway(config)
        app = make_http_app(gw)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()  # starts the gateway (the app's cleanup context)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        holder["gw"], holder["runner"], holder["app"] = gw, runner, app

    asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    site = Site(
        f"http://127.0.0.1:{port}", holder["gw"], loop, holder["app"], ptz=holder.get("ptz")
    )
    store = site.tenancy.store
    hashed = passwords.hash_password(PASSWORD)
    for who in WHO:
        store.put_principal(replace(store.get_principal(who), password_hash=hashed))
    site.run(asyncio.to_thread(site.tenancy.policy.reload))
    rtsp = site.gateway.rtsp.port
    try:
        for camera in publish:
            url = f"rtsp://encoder:enc@127.0.0.1:{rtsp}/{camera}"
            site.encoders.append(
                subprocess.Popen(
                    encoder_argv(url, camera),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        if publish:
            site.publishing(publish)
        yield site
    finally:
        for proc in site.encoders:
            proc.terminate()
        for proc in site.encoders:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(60)
        if site.ptz is not None:
            asyncio.run_coroutine_threadsafe(site.ptz.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class Browserish:
    """A blocking HTTP client that keeps cookies and sends what a browser sends from the
    gateway's own pages (for a gateway run as a process, e.g. the demo)."""

    def __init__(self, base: str) -> None:
        import http.cookiejar

        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with self.opener.open(self.base + path, timeout=20) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def sign_in_with_link(self, link: str) -> str:
        """Open a sign-in link, press its button; returns the page the browser lands on."""
        import re
        from urllib.parse import urlencode

        status, page = self.get(link[len(self.base) :])
        assert status == 200, page[:300]
        form = dict(re.findall(rb'name="(csrf|token|next)" value="([^"]*)"', page))
        body = urlencode({k.decode(): v.decode() for k, v in form.items()}).encode()
        req = urllib.request.Request(self.base + "/console/login", data=body, method="POST")
        req.add_header("Origin", self.base)
        req.add_header("Sec-Fetch-Site", "same-origin")
        with self.opener.open(req, timeout=20) as r:  # follows the 303
            return r.read().decode()


def until(predicate: Any, timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something true; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
    return value


def sign_in(page: Page, site: Site, who: str, path: str) -> None:
    """Open ``path`` in ``page`` and sign in with the password form on the way."""
    page.goto(site.base + path)
    page.fill("input[name=principal]", who)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def recorded_since(site: Site, camera: str, seconds: float) -> datetime:
    """The start of ``camera``'s recordings, once ``seconds`` of it are indexed."""
    index = site.gateway.exports.index
    until(
        lambda: sum(s.duration.total_seconds() for s in index.segments(camera)) >= seconds,
        60,
        f"{seconds} s of {camera} recorded",
    )
    return min(s.start for s in index.segments(camera))


def download_pair(page: Page, row: Locator, where: Path) -> tuple[Path, Path]:
    """Download an export row's MP4 and manifest (its [data-file] and [data-manifest] links)
    into ``where``, as a browser saves them."""
    saved = []
    for link in ("[data-file]", "[data-manifest]"):
        with page.expect_download() as download:
            row.locator(link).click()
        path = where / download.value.suggested_filename
        download.value.save_as(path)
        saved.append(path)
    return saved[0], saved[1]
