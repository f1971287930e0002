"""MediaMTX compatibility: its external HTTP authentication, answered from our policy, so a
council already running MediaMTX can use feedgate as its policy brain.

MediaMTX POSTs ``{"ip","user","password","token","action","path","protocol","id","query",
"userAgent"}``; any 2xx allows. RTSP clients first arrive without credentials and must get a
401 to send them.

What the hook allows, and why:

* **Who may ask.** Only MediaMTX: with ``http.mediamtx_secret`` set, a request must carry it
  (``authHTTPAddress: http://mediamtx:<secret>@feedgate:8080/mediamtx/auth`` sends it as Basic,
  or send ``Authorization: Bearer <secret>``); without a secret, only loopback callers are
  answered. Anyone else gets 401/403 and learns nothing about users or cameras.
* **Masks.** MediaMTX serves originals and knows nothing of feedgate's masks. A viewer whose
  decision burns in mask zones is refused the original (403, with the reason): it must watch
  through feedgate, which serves its masked variant. Only a path naming exactly that viewer's
  variant, ``<camera>~<variant>``, is allowed, for a deployment that publishes feedgate's
  variants into MediaMTX (feedgate does not do so itself). A lift (an unmask with a purpose)
  is audited and timed, which MediaMTX cannot end, so it is refused here too.
* **MediaMTX itself.** ``api``, ``metrics`` and ``pprof`` (reconfiguring MediaMTX, kicking
  sessions, profiling) need the platform tenant's admin or operator role.
* **Guessing.** A user and password are checked within the policy's guessing limits, and an
  unknown user and a wrong password get the same answer.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from gateway.live import camera_of
from gateway.masking.variants import SEPARATOR
from gateway.tenancy import Tenancy
from tenants.policy import AccessRequest, Action, Decision

log = logging.getLogger(__name__)

_ACTIONS = {
    "read": Action.LIVE,
    "publish": Action.PUBLISH,
    "playback": Action.PLAYBACK,
    "api": Action.MEDIA_SERVER,
    "metrics": Action.MEDIA_SERVER,
    "pprof": Action.MEDIA_SERVER,
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


def _presented_secret(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return ""
        return text.partition(":")[2]
    return ""


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def caller_refusal(request: web.Request, secret: str) -> web.Response | None:
    """None if the caller is our MediaMTX; else the answer (nothing about users or paths)."""
    if secret:
        if hmac.compare_digest(_presented_secret(request).encode(), secret.encode()):
            return None
        headers = {"WWW-Authenticate": 'Basic realm="feedgate-mediamtx"'}
        return web.json_response(
            {"allow": False, "reason": "the hook needs its shared secret"},
            status=401,
            headers=headers,
        )
    if _is_loopback(request.remote):
        return None
    return web.json_response(
        {"allow": False, "reason": "the hook answers loopback only (set http.mediamtx_secret)"},
        status=403,
    )


def _masked_refusal(decision: Decision, variant: str | None) -> str | None:
    """Why MediaMTX may not serve this allowed viewer this path, or None."""
    if decision.lifted:
        return "a mask lift is audited and timed by feedgate: watch through feedgate"
    if variant is not None:
        if variant != decision.variant:
            return f"this viewer's variant of {decision.camera} is not {variant!r}"
        return None
    if decision.mask_zones:
        return (
            f"this viewer may only see {decision.camera} masked ({decision.variant}), and "
            "MediaMTX serves the original: watch through feedgate"
        )
    return None


def mediamtx_handler(tenancy: Tenancy, *, secret: str = "") -> Any:
    async def handle(request: web.Request) -> web.Response:
        refusal = caller_refusal(request, secret)
        if refusal is not None:
            log.warning("MediaMTX hook: refused caller %s", request.remote)
            # Not our MediaMTX: audited (rate-limited per source) as an unidentified caller.
            await tenancy.blocking(
                tenancy.refusals.record,
                protocol="mediamtx",
                action="hook",
                status=refusal.status,
                reason="not the configured MediaMTX",
                peer=request.remote or "",
                outcome="unauthenticated",
            )
            return refusal
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
        path, _, variant = _field(body, "path").strip("/").partition(SEPARATOR)
        camera, quality = camera_of(path) if path else (None, None)
        req = AccessRequest(
            action=action,
            protocol=f"mediamtx-{protocol or 'unknown'}",
            camera=camera if action != Action.MEDIA_SERVER else None,
            quality=quality or AccessRequest.quality,
            token=token or None,
            username=user or None,
            password=password or None,
            purpose=query["purpose"][0] if query.get("purpose") else None,
            unmasked=(query.get("unmasked") or [""])[0] in ("1", "true", "yes"),
            peer=_field(body, "ip"),
        )
        decision = await tenancy.policy.authorize(req)
        reason: str | None = decision.reason if not decision.allow else None
        status = decision.status if decision.status in (401, 403, 404) else 403
        if decision.allow and action in (Action.LIVE, Action.PLAYBACK):
            reason = _masked_refusal(decision, variant or None)
            status = 403
        if reason is None:
            return web.json_response(
                {"allow": True, "tenant": decision.tenant, "variant": decision.variant}
            )
        if token or user:
            # A client without credentials getting its 401 is the handshake, not an event.
            await tenancy.blocking(
                tenancy.refusals.record,
                protocol=req.protocol,
                action=action_name,
                status=status,
                reason=reason,
                peer=req.peer,
                tenant=decision.tenant,
                principal=decision.principal,
                camera=camera,
                purpose=req.purpose,
                outcome="unauthenticated" if status == 401 else "denied",
            )
        log.info(
            "MediaMTX %s %s for %s refused: %d %s", action_name, path, req.peer, status, reason
        )
        return web.json_response({"allow": False, "reason": reason}, status=status)

    return handle
