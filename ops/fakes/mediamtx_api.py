"""A FAKE of MediaMTX's control API v3 (MediaMTX cannot run here): the documented paths and
JSON of the parts feedgate uses, recorded from MediaMTX's API reference (apidocs/openapi.yaml,
v1.9+). It holds sessions a test adds and whose bytes it advances, and it answers:

- ``GET /v3/paths/list``: ``{"pageCount", "itemCount", "items": [{"name", "ready", ...}]}``
- ``GET /v3/{kind}sessions/list`` for kind rtsp, rtsps, webrtc, srt: paged the same way
  (``page``, ``itemsPerPage``), items ``{"id", "created", "remoteAddr", "state", "path",
  "query", "user", "transport", "inboundBytes", "outboundBytes", ...}``
- ``GET /v3/{kind}sessions/get/{id}`` and ``POST /v3/{kind}sessions/kick/{id}``: 404 with
  ``{"error": "session not found"}`` for an unknown id
- with credentials set, Basic auth on every call (401 otherwise), as ``authInternalUsers``
  with the ``api`` action requires.

Run alone: ``python3 ops/fakes/mediamtx_api.py PORT``.
"""

from __future__ import annotations

import base64
import itertools
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

KINDS = ("rtsp", "rtsps", "webrtc", "srt")


class FakeMediaMtx:
    def __init__(self, username: str = "", password: str = "") -> None:
        self.username = username
        self.password = password
        self.sessions: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self.paths: dict[str, dict[str, Any]] = {}
        self.kicks: list[tuple[str, str]] = []
        self.requests = 0
        self._ports = itertools.count(40000)

    def add_session(self, kind: str, path: str, query: str = "", user: str = "") -> str:
        sid = str(uuid.uuid4())
        item: dict[str, Any] = {
            "id": sid,
            "created": datetime.now(UTC).isoformat(),
            "remoteAddr": f"10.0.0.7:{next(self._ports)}",
            "state": "read",
            "path": path,
            "query": query,
            "user": user,
            "inboundBytes": 0,
            "outboundBytes": 0,
        }
        if kind in ("rtsp", "rtsps"):
            item |= {"transport": "TCP", "rtpPacketsReceived": 0, "rtpPacketsSent": 0}
        if kind == "webrtc":
            item |= {"peerConnectionEstablished": True, "localCandidate": "", "remoteCandidate": ""}
        self.sessions[kind][sid] = item
        self.paths.setdefault(path, {"name": path, "ready": True, "readers": []})
        return sid

    def send(self, kind: str, sid: str, nbytes: int) -> None:
        self.sessions[kind][sid]["outboundBytes"] += nbytes

    def _authorized(self, request: web.Request) -> bool:
        if not self.username:
            return True
        want = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return request.headers.get("Authorization", "") == f"Basic {want}"

    @staticmethod
    def _page(request: web.Request, items: list[Any]) -> web.Response:
        try:
            page = int(request.query.get("page", "0"))
            per = int(request.query.get("itemsPerPage", "100"))
        except ValueError:
            return web.json_response({"error": "invalid page"}, status=400)
        if page < 0 or per <= 0:
            return web.json_response({"error": "invalid page"}, status=400)
        count = len(items)
        pages = (count + per - 1) // per
        body = {
            "pageCount": pages,
            "itemCount": count,
            "items": items[page * per : (page + 1) * per],
        }
        return web.json_response(body)

    def app(self) -> web.Application:
        @web.middleware
        async def auth(request: web.Request, handler: Any) -> Any:
            self.requests += 1
            if not self._authorized(request):
                return web.json_response({"error": "authentication error"}, status=401)
            return await handler(request)

        async def paths(request: web.Request) -> web.Response:
            return self._page(request, list(self.paths.values()))

        def kind_of(request: web.Request) -> str:
            kind = request.match_info["kind"]
            if kind not in KINDS:
                raise web.HTTPNotFound()
            return kind

        async def sessions(request: web.Request) -> web.Response:
            return self._page(request, list(self.sessions[kind_of(request)].values()))

        async def get(request: web.Request) -> web.Response:
            item = self.sessions[kind_of(request)].get(request.match_info["id"])
            if item is None:
                return web.json_response({"error": "session not found"}, status=404)
            return web.json_response(item)

        async def kick(request: web.Request) -> web.Response:
            kind = kind_of(request)
            if self.sessions[kind].pop(request.match_info["id"], None) is None:
                return web.json_response({"error": "session not found"}, status=404)
            self.kicks.append((kind, request.match_info["id"]))
            return web.Response(status=200)

        app = web.Application(middlewares=[auth])
        app.router.add_get("/v3/paths/list", paths)
        app.router.add_get("/v3/{kind}sessions/list", sessions)
        app.router.add_get("/v3/{kind}sessions/get/{id}", get)
        app.router.add_post("/v3/{kind}sessions/kick/{id}", kick)
        return app


if __name__ == "__main__":
    web.run_app(FakeMediaMtx().app(), host="127.0.0.1", port=int(sys.argv[1]))
