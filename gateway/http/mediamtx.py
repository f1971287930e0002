"""MediaMTX compatibility: its external HTTP authentication, answered from our policy, so a
council already running MediaMTX can use feedgate as its policy (and, later, metering) brain.

MediaMTX POSTs ``{"ip","user","password","token","action","path","protocol","id","query",
"userAgent"}``; any 2xx allows. RTSP clients first arrive without credentials and must get a
401 to send them.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from gateway.rtsp.access import PolicyAccess, camera_of
from tenants.audit import AuditAction
from tenants.policy import AccessRequest, Action

log = logging.getLogger(__name__)

_ACTIONS = {
    "read": Action.LIVE,
    "publish": Action.PUBLISH,
    "playback": Action.PLAYBACK,
    "api": Action.API,
    "metrics": Action.METRICS,
    "pprof": Action.API,
}
_PROTOCOLS = frozenset({"rtsp", "rtmp", "hls", "webrtc", "srt"})
_MAX_FIELD = 2048


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise web.HTTPBadRequest(text=f"{name}: expected a string")
    if len(value) > _MAX_FIELD:
        raise web.HTTPBadRequest(text=f"{name}: longer than {_MAX_FIELD}")
    return value


def mediamtx_handler(access: PolicyAccess) -> Any:
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        action_name = _field(body, "action")
        action = _ACTIONS.get(action_name)
        if action is None:
            raise web.HTTPBadRequest(text=f"action: unknown {action_name!r}")
        protocol = _field(body, "protocol")
        if protocol and protocol not in _PROTOCOLS:
            raise web.HTTPBadRequest(text=f"protocol: unknown {protocol!r}")
        query = parse_qs(_field(body, "query"))
        token = _field(body, "token") or (query.get("token") or [""])[0]
        user, password = _field(body, "user"), _field(body, "password")
        path = _field(body, "path").strip("/")
        camera, quality = camera_of(path) if path else (None, None)
        req = AccessRequest(
            action=action,
            protocol=f"mediamtx-{protocol or 'unknown'}",
            camera=camera,
            quality=quality or AccessRequest.quality,
            token=token or None,
            username=user or None,
            password=password or None,
            purpose=query["purpose"][0] if query.get("purpose") else None,
            peer=_field(body, "ip"),
        )
        decision = await access.policy.authorize(req)
        if decision.allow:
            return web.json_response(
                {"allow": True, "tenant": decision.tenant, "variant": decision.variant}
            )
        if token or user:
            access.audit.append(
                AuditAction.DENIED,
                tenant=decision.tenant,
                principal=decision.principal,
                camera=camera,
                outcome="denied",
                detail={
                    "reason": decision.reason,
                    "protocol": req.protocol,
                    "action": action.value,
                    "peer": req.peer,
                },
            )
        status = decision.status if decision.status in (401, 403, 404) else 403
        return web.json_response({"allow": False, "reason": decision.reason}, status=status)

    return handle
