"""The ONVIF facade: a police VMS (Milestone, Genetec, any generic ONVIF driver) adds a council
camera *through feedgate* and steers it with its own controls.

Each camera is one ONVIF device at ``/onvif/{camera}/device_service`` on the HTTP port, with
the small Profile S subset a VMS needs:

- device: GetSystemDateAndTime (unauthenticated, as ONVIF has it), GetServices,
  GetCapabilities, GetDeviceInformation;
- media: GetProfiles (one profile, with a PTZ configuration when the camera has PTZ) and
  GetStreamUri, which answers feedgate's own RTSP URL for the camera (the VMS then plays it
  with the same principal's RTSP Digest credentials);
- PTZ: ContinuousMove, RelativeMove, AbsoluteMove, Stop, GotoPreset, SetPreset, GetPresets,
  GotoHomePosition, GetStatus, through :class:`~gateway.ptz.service.PtzService`: the same
  policy decision, lock, priorities, rate limit and audit as REST and gRPC.

Authentication is WS-Security UsernameToken digest, checked by the tenant policy's Digest path
(``AccessRequest.digest_check``): the username is the principal's id and the password its
*ONVIF password*, :func:`onvif_password`, derived from the principal's stored HA1. (A
WS-Security digest needs a secret both sides hold; feedgate keeps only the HA1 of a principal's
password, never the password, so the ONVIF password is derived from it and changes with it.
``feedgate ptz onvif-password`` prints it.) Media operations need the live right, PTZ
operations the ptz right; a refusal is a ``ter:NotAuthorized`` fault and is audited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.ptz.model import ErrorCode, PtzError, check_move
from gateway.ptz.service import Caller, PtzService
from gateway.ptz.soap import (
    MAX_SOAP_BYTES,
    NAMESPACES,
    NonceCache,
    SoapCall,
    SoapFault,
    check_fresh,
    date_and_time,
    digest_ok,
    fault,
    invalid_arg,
    not_authorized,
    profile,
    vector,
)
from tenants.policy import AccessRequest, Action, Decision

log = logging.getLogger(__name__)

PROFILE = "main"
_HOST_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[[0-9A-Fa-f:.]{2,45}\]$")
_FAULTS: dict[ErrorCode, tuple[bool, tuple[str, ...]]] = {
    ErrorCode.UNAUTHENTICATED: (True, ("ter:NotAuthorized",)),
    ErrorCode.FORBIDDEN: (True, ("ter:NotAuthorized",)),
    ErrorCode.NOT_FOUND: (True, ("ter:NotAuthorized",)),
    ErrorCode.NO_PTZ: (False, ("ter:ActionNotSupported", "ter:PTZNotSupported")),
    ErrorCode.BAD_REQUEST: (True, ("ter:InvalidArgVal",)),
    ErrorCode.LOCKED: (True, ("ter:OperationProhibited", "ter:PTZLocked")),
    ErrorCode.RATE_LIMITED: (True, ("ter:OperationProhibited", "ter:TooManyRequests")),
    ErrorCode.UNREACHABLE: (False, ("ter:Action", "ter:DeviceUnreachable")),
    ErrorCode.CAMERA_FAULT: (False, ("ter:Action",)),
}
_PTZ_OPS = frozenset(
    {
        "ContinuousMove",
        "RelativeMove",
        "AbsoluteMove",
        "Stop",
        "GotoPreset",
        "SetPreset",
        "GetPresets",
        "GotoHomePosition",
        "GetStatus",
    }
)


def onvif_password(ha1: str) -> str:
    """A principal's ONVIF (WS-Security) password, derived from its stored Digest HA1."""
    mac = hmac.new(ha1.encode(), b"feedgate onvif facade v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:24]


def to_fault(exc: PtzError) -> SoapFault:
    sender, subcodes = _FAULTS[exc.code]
    reason = exc.message
    if "holder_kind" in exc.detail:
        reason += f" (held by {exc.detail['holder_kind']} until {exc.detail.get('until')})"
    return SoapFault(reason, *subcodes, sender=sender)


class OnvifFacade:
    def __init__(
        self,
        service: PtzService,
        *,
        camera_names: Callable[[str], str | None],
        rtsp_port: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ptz = service
        self.camera_names = camera_names
        self.rtsp_port = rtsp_port
        self.clock = clock
        self.nonces = NonceCache()

    def add_routes(self, app: web.Application) -> None:
        for service in ("device", "media", "ptz"):
            app.router.add_post(f"/onvif/{{camera}}/{service}_service", self._handler(service))

    def _handler(self, service: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            try:
                payload = await self._answer(service, request)
                status = 200
            except PtzError as exc:
                f = to_fault(exc)
                payload, status = fault(f), f.http_status
            except SoapFault as f:
                payload, status = fault(f), f.http_status
            return web.Response(
                body=payload,
                status=status,
                content_type="application/soap+xml",
                charset="utf-8",
                headers={"Cache-Control": "no-store"},
            )

        return handle

    async def _answer(self, service: str, request: web.Request) -> bytes:
        codec = self.ptz.codec
        if codec is None:
            raise SoapFault("the ONVIF facade is starting", "ter:Action", sender=False)
        body = await request.content.read(MAX_SOAP_BYTES + 1)
        call = codec.parse(service, body)
        camera = request.match_info["camera"]
        if call.operation == "GetSystemDateAndTime":
            values: dict[str, Any] | None = date_and_time(self.clock())
        elif service == "ptz":
            if call.operation not in _PTZ_OPS:
                raise SoapFault(f"{call.operation} is not supported", "ter:ActionNotSupported")
            caller = await self.ptz.caller(self._request(call, camera, request), call.operation)
            self._check_profile(call)
            values = await self._ptz(caller, call)
        else:
            decision = await self._live(call, camera, request)
            values = self._device_or_media(call, decision, _base(request), camera)
        return codec.reply(service, call.operation, values)

    # ---- who is calling ----------------------------------------------------------------------

    def _request(self, call: SoapCall, camera: str, request: web.Request) -> AccessRequest:
        token = check_fresh(call.token, self.clock())

        def check(ha1: str) -> bool:
            return digest_ok(token, onvif_password(ha1))

        return AccessRequest(
            Action.PTZ,
            "onvif",
            camera=camera,
            digest_username=token.username[:64],
            digest_check=check,
            peer=request.remote or "",
        )

    def _fresh(self, call: SoapCall) -> None:
        assert call.token is not None
        if not self.nonces.fresh(call.token.nonce, self.clock()):
            raise not_authorized("nonce replayed")

    async def _live(self, call: SoapCall, camera: str, request: web.Request) -> Decision:
        from dataclasses import replace

        req = replace(self._request(call, camera, request), action=Action.LIVE)
        decision = await self.ptz.policy.authorize(req)
        if not decision.allow:
            d = decision

            def record() -> None:
                self.ptz.refusals.record(
                    protocol="onvif",
                    action="live",
                    status=d.status,
                    reason=d.reason,
                    peer=req.peer,
                    tenant=d.tenant,
                    principal=d.principal,
                    camera=camera if d.status != 404 else None,
                    detail={"op": call.operation},
                )

            await self.ptz.blocking(record)
            raise not_authorized(
                "Sender not authorized" if d.status == 401 else f"refused: {d.reason}"
            )
        self._fresh(call)
        await self.ptz.sync()  # which cameras have PTZ, as the register says now
        return decision

    def _check_profile(self, call: SoapCall) -> None:
        self._fresh(call)
        if call.params.get("ProfileToken") != PROFILE:
            raise invalid_arg(f"no profile {call.params.get('ProfileToken')!r}", "ter:NoProfile")

    # ---- device and media --------------------------------------------------------------------

    def _device_or_media(
        self, call: SoapCall, decision: Decision, base: str, camera: str
    ) -> dict[str, Any]:
        root = f"{base}/onvif/{camera}"
        op = call.operation
        if op == "GetServices":
            return {
                "Service": [
                    {
                        "Namespace": NAMESPACES[s],
                        "XAddr": f"{root}/{s}_service",
                        "Version": {"Major": 2 if s == "ptz" else 1, "Minor": 0},
                    }
                    for s in ("device", "media", "ptz")
                    if s != "ptz" or camera in self.ptz.cameras
                ]
            }
        if op == "GetCapabilities":
            caps: dict[str, Any] = {
                "Device": {"XAddr": f"{root}/device_service"},
                "Media": {
                    "XAddr": f"{root}/media_service",
                    "StreamingCapabilities": {
                        "RTPMulticast": False,
                        "RTP_TCP": True,
                        "RTP_RTSP_TCP": True,
                    },
                },
            }
            if camera in self.ptz.cameras:
                caps["PTZ"] = {"XAddr": f"{root}/ptz_service"}
            return {"Capabilities": caps}
        if op == "GetDeviceInformation":
            return {
                "Manufacturer": "feedgate",
                "Model": "feedgate ONVIF facade",
                "FirmwareVersion": "1",
                "SerialNumber": camera,
                "HardwareId": "feedgate",
            }
        if op == "GetProfiles":
            name = self.camera_names(camera) or camera
            ptz = camera in self.ptz.cameras
            return {"Profiles": [profile(PROFILE, name[:64], 640, 360, ptz=ptz)]}
        if op == "GetStreamUri":
            if call.params.get("ProfileToken") != PROFILE:
                raise invalid_arg("no such profile", "ter:NoProfile")
            host = base.split("://", 1)[1].rsplit(":", 1)[0] if "://" in base else "127.0.0.1"
            path = f"{camera}/sub" if decision.quality.value == "sub" else camera
            return {
                "MediaUri": {
                    "Uri": f"rtsp://{host}:{self.rtsp_port()}/{path}",
                    "InvalidAfterConnect": False,
                    "InvalidAfterReboot": False,
                    "Timeout": timedelta(0),
                }
            }
        raise SoapFault(f"{op} is not supported", "ter:ActionNotSupported")

    # ---- PTZ ---------------------------------------------------------------------------------

    async def _ptz(self, caller: Caller, call: SoapCall) -> dict[str, Any] | None:
        p, op, svc = call.params, call.operation, self.ptz
        cfg = svc.config
        if op in ("ContinuousMove", "RelativeMove", "AbsoluteMove"):
            key, kind = {
                "ContinuousMove": ("Velocity", "continuous"),
                "RelativeMove": ("Translation", "relative"),
                "AbsoluteMove": ("Position", "absolute"),
            }[op]
            pan, tilt, zoom = _axes(p.get(key))
            if kind == "absolute" and None in (pan, tilt, zoom):
                status, _ = await svc.status(caller)  # an axis left out stays where it is
                cur = status.position
                pan = cur.pan if pan is None else pan
                tilt = cur.tilt if tilt is None else tilt
                zoom = cur.zoom if zoom is None else zoom
            timeout = p.get("Timeout")
            move = check_move(
                kind,
                0.0 if pan is None else pan,
                0.0 if tilt is None else tilt,
                0.0 if zoom is None else zoom,
                timeout=(
                    min(timeout.total_seconds(), cfg.max_timeout)
                    if isinstance(timeout, timedelta) and kind == "continuous"
                    else None
                ),
                default_timeout=cfg.default_timeout,
                max_timeout=cfg.max_timeout,
            )
            await svc.move(caller, move)
            return None
        if op == "Stop":
            await svc.stop_move(caller)
            return None
        if op == "GotoPreset":
            await svc.goto_preset(caller, p.get("PresetToken"))
            return None
        if op == "GotoHomePosition":
            await svc.goto_home(caller)
            return None
        if op == "SetPreset":
            name = p.get("PresetName") or p.get("PresetToken") or "preset"
            return {"PresetToken": await svc.set_preset(caller, name, p.get("PresetToken"))}
        if op == "GetPresets":
            return {
                "Preset": [
                    {
                        "token": x.token,
                        "Name": x.name,
                        "PTZPosition": vector(x.position.pan, x.position.tilt, x.position.zoom)
                        if x.position
                        else None,
                    }
                    for x in await svc.presets(caller)
                ]
            }
        status, _ = await svc.status(caller)
        state = "MOVING" if status.moving else "IDLE"
        pos = status.position
        return {
            "PTZStatus": {
                "Position": vector(pos.pan, pos.tilt, pos.zoom),
                "MoveStatus": {"PanTilt": state, "Zoom": state},
                "UtcTime": datetime.fromtimestamp(self.clock(), UTC),
            }
        }


def _axes(v: Any) -> tuple[float | None, float | None, float | None]:
    """(pan, tilt, zoom) of a tt:PTZVector or PTZSpeed; None for an axis left out. NaN and
    infinities are kept, for check_move to refuse."""
    v = v or {}
    pt, z = v.get("PanTilt") or {}, v.get("Zoom") or {}

    def num(x: Any) -> float | None:
        return float(x) if isinstance(x, (int, float)) else None

    out = (num(pt.get("x")), num(pt.get("y")), num(z.get("x")))
    if any(x is not None and math.isnan(x) for x in out):
        raise PtzError(ErrorCode.BAD_REQUEST, "a vector component is NaN")
    return out


def _base(request: web.Request) -> str:
    """scheme://host:port the VMS reached us at, for the addresses we hand back (a Host header
    that is not a plain host name or address is not echoed)."""
    host_header = request.headers.get("Host", "")
    host, _, port = host_header.rpartition(":") if "]" not in host_header[-1:] else ("", "", "")
    if not host:
        host, port = host_header, ""
    if not _HOST_RE.match(host) or (port and not port.isdigit()):
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        host, port = (sock[0], str(sock[1])) if sock else ("127.0.0.1", "80")
    return f"{request.scheme}://{host}{':' + port if port else ''}"


__all__ = ["PROFILE", "OnvifFacade", "onvif_password", "to_fault"]
