"""A FAKE ONVIF PTZ camera, for tests, benchmarks and the demo (no ONVIF camera or simulator
can run here).

An aiohttp SOAP server answering the device, media and PTZ services at
``/onvif/{device,media,ptz}_service``, with the messages of the WSDLs ``onvif-zeep-async``
bundles (through :mod:`gateway.ptz.soap`). It keeps what a real PTZ head keeps:

- a position in ONVIF's generic spaces, with limits (pan/tilt -1..1, zoom 0..1);
- ContinuousMove at a velocity that stops by itself at its Timeout (the camera's own timer,
  so a client that vanishes cannot leave it spinning; ``ignores_timeout`` plays the firmware
  that moves on until told to Stop), AbsoluteMove, RelativeMove, Stop;
- presets (SetPreset, GetPresets, GotoPreset) and a home position;
- WS-Security UsernameToken digest authentication; a bad password, a stale ``Created`` or a
  replayed nonce gets ``ter:NotAuthorized``, a value outside the limits ``ter:InvalidArgVal``,
  an unknown preset ``ter:NoToken``, an unknown profile ``ter:NoProfile``.

:class:`FakePtzHead` is the pure motion model (``now`` in, position out); ``ops/fakes/
panorama.py`` turns its position into a picture and publishes it over RTSP.

Run one by hand: ``python -m ops.fakes.onvif_camera --port 8899 --user admin --password x``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from aiohttp import web

from gateway.ptz.soap import (
    MAX_SOAP_BYTES,
    NAMESPACES,
    NonceCache,
    SoapCall,
    SoapCodec,
    SoapFault,
    date_and_time,
    fault,
    invalid_arg,
    profile,
    vector,
    verify_token,
)

PROFILE = "profile_1"
PAN_SPEED = 1.0  # generic units per second at velocity 1
ZOOM_SPEED = 0.5
MAX_PRESETS = 100


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, v))


@dataclass
class FakePtzHead:
    """Position, velocity and presets of one PTZ head; every method takes ``now``."""

    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    home: tuple[float, float, float] = (0.0, 0.0, 0.0)
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    moving_until: float = 0.0
    since: float = 0.0
    presets: dict[str, tuple[str, tuple[float, float, float]]] = field(default_factory=dict)
    commands: int = 0  # motion commands accepted (tests: "the camera was not touched")
    # Some cameras' firmware ignores ContinuousMove's Timeout and moves until told to Stop.
    ignores_timeout: bool = False

    def position(self, now: float) -> tuple[float, float, float]:
        self._advance(now)
        return (self.pan, self.tilt, self.zoom)

    def moving(self, now: float) -> bool:
        self._advance(now)
        return now < self.moving_until and any(self.velocity)

    def _advance(self, now: float) -> None:
        if now <= self.since:
            return
        dt = min(now, self.moving_until) - self.since
        if dt > 0 and any(self.velocity):
            vp, vt, vz = self.velocity
            self.pan = _clamp(self.pan + vp * PAN_SPEED * dt, -1.0, 1.0)
            self.tilt = _clamp(self.tilt + vt * PAN_SPEED * dt, -1.0, 1.0)
            self.zoom = _clamp(self.zoom + vz * ZOOM_SPEED * dt, 0.0, 1.0)
        self.since = now
        if now >= self.moving_until:
            self.velocity = (0.0, 0.0, 0.0)

    def continuous(self, v: tuple[float, float, float], timeout: float, now: float) -> None:
        self._advance(now)
        until = math.inf if self.ignores_timeout else now + timeout
        self.velocity, self.since, self.moving_until = v, now, until
        self.commands += 1

    def goto(self, target: tuple[float, float, float], now: float) -> None:
        self._advance(now)
        self.velocity, self.moving_until, self.since = (0.0, 0.0, 0.0), now, now
        self.pan, self.tilt, self.zoom = target
        self.commands += 1

    def stop(self, now: float) -> None:
        self._advance(now)
        self.velocity, self.moving_until, self.since = (0.0, 0.0, 0.0), now, now
        self.commands += 1


def _xy(d: Any, key: str) -> tuple[float | None, float | None]:
    v = (d or {}).get(key) or {}
    return v.get("x"), v.get("y")


def _checked(value: float | None, lo: float, hi: float, what: str) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise invalid_arg(f"{what} {value} outside {lo}..{hi}", "ter:InvalidPosition")
    return value


class FakeOnvifCamera:
    """The SOAP server around a :class:`FakePtzHead`."""

    def __init__(
        self,
        codec: SoapCodec,
        *,
        username: str = "admin",
        password: str = "fake-camera",
        stream_uri: str = "rtsp://127.0.0.1:8554/fake",
        clock: Callable[[], float] = time.time,
        name: str = "fake",
        ignores_timeout: bool = False,
    ) -> None:
        self.codec = codec
        self.username = username
        self.password = password
        self.stream_uri = stream_uri
        self.clock = clock
        self.name = name
        self.head = FakePtzHead(since=clock(), ignores_timeout=ignores_timeout)
        self.nonces = NonceCache()
        self.requests = 0
        self.refused = 0
        self.base = ""  # http://host:port once started
        self._runner: web.AppRunner | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_SOAP_BYTES)
        for service in ("device", "media", "ptz"):
            app.router.add_post(f"/onvif/{service}_service", self._handler(service))
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        # A TCPSite's server is an asyncio.Server, which knows its sockets.
        bound = cast(asyncio.Server, server).sockets[0].getsockname()[1]
        self.base = f"http://{host}:{bound}"
        return self.base

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- SOAP --------------------------------------------------------------------------------

    def _handler(self, service: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            self.requests += 1
            try:
                body = await request.content.read(MAX_SOAP_BYTES + 1)
                call = self.codec.parse(service, body)
                if call.operation != "GetSystemDateAndTime":
                    verify_token(
                        call.token,
                        lambda u: self.password if u == self.username else None,
                        self.clock(),
                        self.nonces,
                    )
                values = self.dispatch(call)
                payload, status = self.codec.reply(service, call.operation, values), 200
            except SoapFault as f:
                self.refused += 1
                payload, status = fault(f), f.http_status
            return web.Response(
                body=payload, status=status, content_type="application/soap+xml", charset="utf-8"
            )

        return handle

    def dispatch(self, call: SoapCall) -> dict[str, Any] | None:
        method = getattr(self, f"op_{call.operation}", None)
        if method is None:
            raise SoapFault(f"{call.operation} is not implemented", "ter:ActionNotSupported")
        p = call.params
        if call.service == "ptz" or call.operation == "GetStreamUri":
            if p.get("ProfileToken") != PROFILE:
                raise invalid_arg(f"no profile {p.get('ProfileToken')!r}", "ter:NoProfile")
        result: dict[str, Any] | None = method(p)
        return result

    # device
    def op_GetSystemDateAndTime(self, p: dict[str, Any]) -> dict[str, Any]:
        return date_and_time(self.clock())

    def op_GetServices(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "Service": [
                {
                    "Namespace": NAMESPACES[s],
                    "XAddr": f"{self.base}/onvif/{s}_service",
                    "Version": {"Major": 2 if s == "ptz" else 1, "Minor": 0},
                }
                for s in ("device", "media", "ptz")
            ]
        }

    def op_GetCapabilities(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "Capabilities": {
                "Device": {"XAddr": f"{self.base}/onvif/device_service"},
                "Media": {
                    "XAddr": f"{self.base}/onvif/media_service",
                    "StreamingCapabilities": {
                        "RTPMulticast": False,
                        "RTP_TCP": True,
                        "RTP_RTSP_TCP": True,
                    },
                },
                "PTZ": {"XAddr": f"{self.base}/onvif/ptz_service"},
            }
        }

    def op_GetDeviceInformation(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "Manufacturer": "feedgate",
            "Model": "FAKE ONVIF PTZ camera",
            "FirmwareVersion": "1.0",
            "SerialNumber": self.name,
            "HardwareId": "fake",
        }

    # media
    def op_GetProfiles(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"Profiles": [profile(PROFILE, self.name, 320, 180)]}

    def op_GetStreamUri(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "MediaUri": {
                "Uri": self.stream_uri,
                "InvalidAfterConnect": False,
                "InvalidAfterReboot": False,
                "Timeout": timedelta(0),
            }
        }

    # ptz
    def op_ContinuousMove(self, p: dict[str, Any]) -> None:
        vx, vy = _xy(p.get("Velocity"), "PanTilt")
        vz, _ = _xy(p.get("Velocity"), "Zoom")
        v = tuple(_checked(x, -1.0, 1.0, "velocity") or 0.0 for x in (vx, vy, vz))
        timeout = p.get("Timeout")
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else 10.0
        if seconds <= 0 or seconds > 3600:
            raise invalid_arg(f"Timeout {seconds} s")
        self.head.continuous((v[0], v[1], v[2]), seconds, self.clock())

    def op_AbsoluteMove(self, p: dict[str, Any]) -> None:
        now = self.clock()
        cur = self.head.position(now)
        x, y = _xy(p.get("Position"), "PanTilt")
        z, _ = _xy(p.get("Position"), "Zoom")
        target = (
            _checked(x, -1.0, 1.0, "pan"),
            _checked(y, -1.0, 1.0, "tilt"),
            _checked(z, 0.0, 1.0, "zoom"),
        )
        pan, tilt, zoom = (t if t is not None else c for t, c in zip(target, cur, strict=True))
        self.head.goto((pan, tilt, zoom), now)

    def op_RelativeMove(self, p: dict[str, Any]) -> None:
        now = self.clock()
        cur = self.head.position(now)
        dx, dy = _xy(p.get("Translation"), "PanTilt")
        dz, _ = _xy(p.get("Translation"), "Zoom")
        d = tuple(_checked(v, -2.0, 2.0, "translation") or 0.0 for v in (dx, dy, dz))
        target = (
            _clamp(cur[0] + d[0], -1.0, 1.0),
            _clamp(cur[1] + d[1], -1.0, 1.0),
            _clamp(cur[2] + d[2], 0.0, 1.0),
        )
        self.head.goto(target, now)

    def op_Stop(self, p: dict[str, Any]) -> None:
        self.head.stop(self.clock())

    def op_GotoHomePosition(self, p: dict[str, Any]) -> None:
        self.head.goto(self.head.home, self.clock())

    def op_GetPresets(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "Preset": [
                {"token": token, "Name": name, "PTZPosition": vector(*pos)}
                for token, (name, pos) in sorted(self.head.presets.items())
            ]
        }

    def op_SetPreset(self, p: dict[str, Any]) -> dict[str, Any]:
        token = p.get("PresetToken") or f"preset_{len(self.head.presets) + 1}"
        if token not in self.head.presets and len(self.head.presets) >= MAX_PRESETS:
            raise invalid_arg("too many presets", "ter:TooManyPresets")
        name = p.get("PresetName") or token
        self.head.presets[token] = (name, self.head.position(self.clock()))
        return {"PresetToken": token}

    def op_GotoPreset(self, p: dict[str, Any]) -> None:
        entry = self.head.presets.get(p.get("PresetToken") or "")
        if entry is None:
            raise invalid_arg(f"no preset {p.get('PresetToken')!r}", "ter:NoToken")
        self.head.goto(entry[1], self.clock())

    def op_GetStatus(self, p: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        state = "MOVING" if self.head.moving(now) else "IDLE"
        return {
            "PTZStatus": {
                "Position": vector(*self.head.position(now)),
                "MoveStatus": {"PanTilt": state, "Zoom": state},
                "UtcTime": datetime.fromtimestamp(now, UTC),
            }
        }


async def _main() -> None:
    ap = argparse.ArgumentParser(description="a FAKE ONVIF PTZ camera")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8899)
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="fake-camera")
    ap.add_argument("--publish", help="rtsp:// URL to publish the panorama picture to")
    args = ap.parse_args()
    codec = await asyncio.to_thread(SoapCodec.load)
    cam = FakeOnvifCamera(codec, username=args.user, password=args.password)
    print("fake ONVIF camera at", await cam.start(args.host, args.port), flush=True)
    publisher = None
    if args.publish:
        from ops.fakes.panorama import PanoramaPublisher

        publisher = PanoramaPublisher(cam.head, args.publish)
        publisher.start()
    try:
        await asyncio.Event().wait()
    finally:
        if publisher is not None:
            await publisher.stop()
        await cam.stop()


if __name__ == "__main__":
    asyncio.run(_main())
