"""feedgate's ONVIF client for one camera, over ``onvif-zeep-async`` (aiohttp transport: no
blocking I/O on the event loop; the WSDLs are parsed once, in a thread, by the library).

One :class:`OnvifClient` per camera keeps one ``ONVIFCamera`` (its device, media and PTZ
services, each on a keep-alive connection) and reuses it for every command. Every command has
a deadline (``timeout``): a camera that does not answer in time gets
``ErrorCode.UNREACHABLE`` naming it (host and port, never the credentials), and the
connection is dropped so the next command reconnects. Failures to connect are retried with
backoff (tenacity) inside that deadline; a command that may have reached the camera is never
repeated (a RelativeMove twice moves twice).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from gateway.ptz.model import ErrorCode, Move, MoveKind, Preset, PtzError, Status, Vector
from gateway.ptz.soap import import_onvif

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# A camera's faults that mean "that value is not acceptable here" rather than "I failed".
_CLIENT_FAULTS = frozenset(
    {"InvalidArgVal", "InvalidArgs", "NoToken", "NoProfile", "InvalidPosition", "InvalidSpeed"}
)


@dataclass(frozen=True)
class OnvifEndpoint:
    """Where a camera's ONVIF device service is and how feedgate signs in (never logged)."""

    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    profile: str = ""  # "" = the first profile with a PTZ configuration

    @classmethod
    def parse(cls, url: str, username: str, password: str, profile: str = "") -> OnvifEndpoint:
        """``http://host:port[/onvif/device_service]`` or ``host:port``."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: expected http://host:port")
        if parts.username or parts.password:
            raise ValueError("put the credentials in onvif_username/onvif_password, not the URL")
        return cls(parts.hostname, parts.port or 80, username, password, profile)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class _Connect(Exception):
    """A connection that failed before any request reached the camera: safe to retry."""


class OnvifClient:
    def __init__(
        self,
        endpoint: OnvifEndpoint,
        *,
        timeout: float = 3.0,
        attempts: int = 3,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.attempts = attempts
        self._camera: Any = None
        self._ptz: Any = None
        self._profile = endpoint.profile
        self._lock = asyncio.Lock()
        self.connects = 0

    # ---- the connection ----------------------------------------------------------------------

    async def _open(self) -> Any:
        """The PTZ service, connecting (device → media → PTZ) when there is none."""
        if self._ptz is not None:
            return self._ptz
        async with self._lock:
            if self._ptz is not None:
                return self._ptz
            import_onvif()
            import aiohttp
            from onvif import ONVIFCamera
            from onvif.exceptions import ONVIFError

            ep = self.endpoint
            cam = ONVIFCamera(ep.host, ep.port, ep.username, ep.password, no_cache=True)
            try:
                await cam.update_xaddrs()
                media = await cam.create_media_service()
                ptz = await cam.create_ptz_service()
                if not self._profile:
                    profiles = await media.GetProfiles()
                    with_ptz = [p for p in profiles or [] if p.PTZConfiguration is not None]
                    if not with_ptz:
                        raise PtzError(ErrorCode.NO_PTZ, f"camera at {ep.where} has no PTZ profile")
                    self._profile = with_ptz[0].token
            except (aiohttp.ClientError, OSError, ONVIFError) as exc:
                await _quietly(cam.close())
                raise _Connect(_describe(exc)) from None
            except BaseException:
                await _quietly(cam.close())
                raise
            self._camera, self._ptz = cam, ptz
            self.connects += 1
            log.info("ONVIF camera at %s connected (profile %s)", ep.where, self._profile)
            return ptz

    async def _drop(self) -> None:
        cam, self._camera, self._ptz = self._camera, None, None
        if cam is not None:
            await _quietly(cam.close())

    async def close(self) -> None:
        await self._drop()

    async def _call(self, op: str, params: dict[str, Any]) -> Any:
        """One PTZ command within the deadline; connect failures retried with backoff."""
        import aiohttp
        import zeep.exceptions
        from onvif.exceptions import ONVIFError

        async def once() -> Any:
            ptz = await self._open()
            try:
                return await getattr(ptz, op)({"ProfileToken": self._profile, **params})
            except aiohttp.ClientConnectorError as exc:
                await self._drop()  # refused before sending: retry is safe
                raise _Connect(_describe(exc)) from None

        try:
            async with asyncio.timeout(self.timeout):
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(_Connect),
                    stop=stop_after_attempt(self.attempts),
                    wait=wait_exponential(multiplier=0.05, max=0.5),
                    reraise=True,
                ):
                    with attempt:
                        return await once()
        except TimeoutError:
            await self._drop()
            raise self._unreachable(f"did not answer within {self.timeout:g} s") from None
        except _Connect as exc:
            raise self._unreachable(str(exc)) from None
        except zeep.exceptions.Fault as f:
            subs = {getattr(q, "localname", str(q)).rpartition(":")[2] for q in f.subcodes or ()}
            if "NotAuthorized" in subs:
                # Our credentials, not the caller's request: say which, and drop the
                # connection so corrected settings sign the next command.
                await self._drop()
                raise PtzError(
                    ErrorCode.CAMERA_FAULT,
                    f"camera at {self.endpoint.where} refused feedgate's ONVIF credentials"
                    f" ({op}: {f.message}): check its ONVIF username and password",
                    cause="credentials",
                ) from None
            code = ErrorCode.BAD_REQUEST if subs & _CLIENT_FAULTS else ErrorCode.CAMERA_FAULT
            raise PtzError(code, f"camera refused {op}: {f.message}") from None
        except (aiohttp.ClientError, OSError, ONVIFError, zeep.exceptions.Error) as exc:
            await self._drop()
            raise self._unreachable(_describe(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover - tenacity reraises

    def _unreachable(self, why: str) -> PtzError:
        return PtzError(
            ErrorCode.UNREACHABLE, f"camera at {self.endpoint.where} unreachable: {why}"
        )

    # ---- the operations ----------------------------------------------------------------------

    async def move(self, move: Move) -> None:
        v = move.vector
        pt = {"x": v.pan, "y": v.tilt}
        z = {"x": v.zoom}
        if move.kind == MoveKind.CONTINUOUS:
            await self._call(
                "ContinuousMove",
                {"Velocity": {"PanTilt": pt, "Zoom": z}, "Timeout": f"PT{move.timeout:.3f}S"},
            )
        elif move.kind == MoveKind.RELATIVE:
            await self._call("RelativeMove", {"Translation": {"PanTilt": pt, "Zoom": z}})
        else:
            await self._call("AbsoluteMove", {"Position": {"PanTilt": pt, "Zoom": z}})

    async def stop(self) -> None:
        await self._call("Stop", {"PanTilt": True, "Zoom": True})

    async def goto_preset(self, token: str) -> None:
        await self._call("GotoPreset", {"PresetToken": token})

    async def goto_home(self) -> None:
        await self._call("GotoHomePosition", {})

    async def set_preset(self, name: str, token: str | None = None) -> str:
        params: dict[str, Any] = {"PresetName": name}
        if token:
            params["PresetToken"] = token
        return str(await self._call("SetPreset", params))

    async def presets(self) -> list[Preset]:
        out = []
        for p in await self._call("GetPresets", {}) or []:
            out.append(Preset(str(p.token), str(p.Name or p.token), _vector(p.PTZPosition)))
        return out

    async def status(self) -> Status:
        s = await self._call("GetStatus", {})
        ms = s.MoveStatus
        moving = ms is not None and "MOVING" in (str(ms.PanTilt), str(ms.Zoom))
        return Status(_vector(s.Position) or Vector(0.0, 0.0, 0.0), moving)


async def load_wsdls() -> None:
    """Parse the device, media and PTZ WSDLs into onvif-zeep-async's process-wide cache now
    (the library parses in a thread), so that parsing them, seconds of CPU on a busy machine,
    is never counted against a camera's deadline to answer its first command. No request is
    sent: the services are only built, against an address nobody is asked."""
    import_onvif()
    from onvif import ONVIFCamera
    from onvif.definition import SERVICES

    cam = ONVIFCamera("127.0.0.1", 9, "", "", no_cache=True)
    cam.xaddrs = {SERVICES[s]["ns"]: "http://127.0.0.1:9/" for s in ("media", "ptz")}
    try:
        await cam.create_devicemgmt_service()
        await cam.create_media_service()
        await cam.create_ptz_service()
    finally:
        await _quietly(cam.close())


def _vector(pos: Any) -> Vector | None:
    if pos is None:
        return None
    pt, z = pos.PanTilt, pos.Zoom
    return Vector(
        float(pt.x) if pt is not None else 0.0,
        float(pt.y) if pt is not None else 0.0,
        float(z.x) if z is not None else 0.0,
    )


def _describe(exc: BaseException) -> str:
    # aiohttp's connector errors name host:port, and so may onvif's; neither carries the
    # credentials, which live only in the WS-Security header.
    return f"{type(exc).__name__}: {exc}"[:300]


async def _quietly(aw: Awaitable[Any]) -> None:
    try:
        await aw
    except Exception:
        log.debug("closing an ONVIF connection failed", exc_info=True)


ClientFactory = Callable[[OnvifEndpoint], OnvifClient]

__all__ = ["ClientFactory", "OnvifClient", "OnvifEndpoint", "load_wsdls"]
