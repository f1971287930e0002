"""WHEP over HTTP (draft-ietf-wish-whep; WHIP, its twin, is RFC 9725) on the gateway's aiohttp
app.

- ``POST /whep/{camera}`` (and MediaMTX's ``POST /{camera}/whep``, so players built for MediaMTX
  work) with an ``application/sdp`` offer: ``201`` with the answer, ``Location`` (the session),
  ``ETag``, ``Accept-Patch`` and one ``Link`` per ICE server.
- ``PATCH`` on the session: trickle ICE (``application/trickle-ice-sdpfrag``), ``204``.
- ``DELETE`` on the session: ends it, ``200``.

Credentials are a ``Bearer`` token or the console's session cookie, which counts only from the
gateway's own pages and, an offer being a change, with the console's CSRF header
(:func:`gateway.http.csrf.session_token`; ``credentials`` is pluggable). Every offer asks the
same policy decision as RTSP, and every refusal, with or without credentials, is audited. A
session URL is only ever found by its own tenant: for anyone else it does not exist (404), and
it carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.http.csrf import session_token
from gateway.live import Refusal, camera_of
from gateway.webrtc.ice import link_headers
from gateway.webrtc.negotiation import MAX_OFFER_BYTES, OfferError, parse_offer
from gateway.webrtc.trickle import MAX_FRAGMENT_BYTES, FragmentError, parse_fragment
from tenants.policy import AccessRequest, Action, Decision

if TYPE_CHECKING:
    from gateway.core import Gateway

log = logging.getLogger(__name__)

SESSIONS = "/whep/sessions/"
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="feedgate"'}

Credentials = Callable[[web.Request], str | None]


def bearer_or_cookie(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    # Another site can make a browser send the cookie, never read the page's CSRF value.
    return session_token(request)


def is_whep_path(path: str) -> bool:
    """WHEP routes check their own credentials (as a viewer, not as an API caller)."""
    return path.startswith("/whep/") or path.endswith("/whep")


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=reason + "\n", headers=headers)


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, f"body larger than {limit} bytes")
    body = bytearray()
    while chunk := await request.content.read(65536):
        body += chunk
        if len(body) > limit:
            raise Refusal(413, f"body larger than {limit} bytes")
    return bytes(body)


def _peer(request: web.Request) -> str:
    return request.remote or ""


def add_whep_routes(
    app: web.Application, gateway: Gateway, *, credentials: Credentials = bearer_or_cookie
) -> None:
    server = gateway.webrtc
    assert server is not None
    tenancy = gateway.tenancy
    live = gateway.live

    async def authorize(request: web.Request, camera_path: str | None) -> Decision | None:
        """The viewer's decision (None with tenancy off: open access); a refusal raises."""
        if tenancy is None:
            return None
        camera, quality = camera_of(camera_path) if camera_path else (None, None)
        purpose = request.headers.get("X-Purpose") or request.query.get("purpose") or None
        req = AccessRequest(
            Action.LIVE,
            "webrtc",
            camera=camera,
            quality=quality or AccessRequest.quality,
            token=credentials(request),
            purpose=purpose[:200] if purpose else None,
            unmasked=request.query.get("unmasked") in ("1", "true", "yes"),
            peer=_peer(request),
        )
        decision = await tenancy.policy.authorize(req)
        if decision.allow or camera_path is None:
            return decision
        if live is not None:
            await live.refused(
                decision,
                protocol="webrtc",
                action=Action.LIVE.value,
                camera=camera,
                purpose=req.purpose,
                peer=req.peer,
            )
        log.info(
            "%s WHEP %s refused: %d %s", req.peer, camera_path, decision.status, decision.reason
        )
        if decision.status == 401:
            raise Refusal(401, decision.reason, _CHALLENGE)
        raise Refusal(decision.status if decision.status in (403, 404) else 403, decision.reason)

    async def offer(request: web.Request) -> web.StreamResponse:
        camera_path = request.match_info["camera"].strip("/")
        try:
            if request.content_type != SDP:
                raise Refusal(415, f"an offer is {SDP}")
            body = await _read_limited(request, MAX_OFFER_BYTES)
            decision = await authorize(request, camera_path)
            try:
                parsed = parse_offer(body)
            except OfferError as exc:
                raise Refusal(exc.status, exc.reason) from None
            session, answer = await server.open(camera_path, parsed, decision, _peer(request))
        except Refusal as exc:
            server.counters[f"refused_{exc.status}"] += 1
            return _error(exc.status, exc.reason, exc.headers)
        response = web.Response(status=201, text=answer, content_type=SDP)
        response.headers["Location"] = f"{SESSIONS}{session.id}"
        response.headers["ETag"] = session.etag
        response.headers["Accept-Patch"] = SDPFRAG
        response.headers["Cache-Control"] = "no-store"
        for link in link_headers(server.ice.ice_servers(session.tenant or "viewer")):
            response.headers.add("Link", link)
        return response

    async def options(request: web.Request) -> web.StreamResponse:
        # ICE servers (with their TURN credentials) go only to an authorised offer's answer.
        return web.Response(status=204, headers={"Accept-Post": SDP, "Allow": "OPTIONS, POST"})

    async def own_session(request: web.Request) -> Any:
        """Who is asking, then whether the session exists for them."""
        sid = request.match_info["session"]
        tenant = None
        if tenancy is not None:
            decision = await authorize(request, None)
            assert decision is not None
            if decision.status == 401 or decision.tenant is None:
                raise Refusal(401, decision.reason, {"WWW-Authenticate": 'Bearer realm="feedgate"'})
            tenant = decision.tenant
        session = server.find(sid, tenant)
        if session is None:
            raise Refusal(404, "no such session")
        return session

    async def patch(request: web.Request) -> web.StreamResponse:
        try:
            session = await own_session(request)
            if request.content_type != SDPFRAG:
                raise Refusal(415, f"a trickle fragment is {SDPFRAG}")
            match = request.headers.get("If-Match")
            if match is not None and match.strip() not in ("*", session.etag):
                raise Refusal(412, "ETag does not match this session's ICE")
            body = await _read_limited(request, MAX_FRAGMENT_BYTES)
            try:
                fragment = parse_fragment(body)
                remote = session.offer.ice
                if (fragment.ufrag not in (None, remote.usernameFragment)) or (
                    fragment.pwd not in (None, remote.password)
                ):
                    raise Refusal(
                        422, "ICE restart is not supported: DELETE and open a new session"
                    )
                await session.add_candidates(fragment)
            except FragmentError as exc:
                raise Refusal(400, f"bad trickle ICE fragment: {exc}") from None
        except Refusal as exc:
            server.counters[f"refused_{exc.status}"] += 1
            return _error(exc.status, exc.reason, exc.headers)
        return web.Response(status=204)

    async def delete(request: web.Request) -> web.StreamResponse:
        try:
            session = await own_session(request)
        except Refusal as exc:
            return _error(exc.status, exc.reason, exc.headers)
        session.end("ended by the viewer (DELETE)")
        return web.Response(status=200)

    app.router.add_route("PATCH", SESSIONS + "{session}", patch)
    app.router.add_route("DELETE", SESSIONS + "{session}", delete)
    for pattern in ("/whep/{camera:.+}", "/{camera:.+}/whep"):
        app.router.add_route("POST", pattern, offer)
        app.router.add_route("OPTIONS", pattern, options)
