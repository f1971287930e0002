"""An httpx client of MediaMTX's control API v3 (port 9997): paths and the reader sessions of
each protocol, with kicks. Lists are paged (``page``, ``itemsPerPage``; the answer carries
``pageCount`` and ``items``); every field that crosses from MediaMTX is checked before use,
and every call is bounded by the client's timeout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

# The session kinds whose readers feedgate supervises, as the API names them.
SESSION_KINDS = ("rtsp", "rtsps", "webrtc", "srt")
PAGE_SIZE = 100
MAX_PAGES = 1000  # 100,000 sessions: a bound, not a limit anyone reaches


class MediaMtxError(Exception):
    """MediaMTX refused, could not be reached, or answered something not its API."""


@dataclass(frozen=True)
class MtxSession:
    kind: str  # rtsp, rtsps, webrtc, srt
    id: str
    path: str
    query: str
    remote_addr: str
    state: str
    created: str
    outbound_bytes: int
    inbound_bytes: int

    @classmethod
    def parse(cls, kind: str, item: Any) -> MtxSession | None:
        if not isinstance(item, dict):
            return None
        sid, path = item.get("id"), item.get("path")
        if not isinstance(sid, str) or not sid or not isinstance(path, str):
            return None
        out = item.get("outboundBytes", item.get("bytesSent", 0))
        inb = item.get("inboundBytes", item.get("bytesReceived", 0))
        if not isinstance(out, int) or not isinstance(inb, int) or out < 0 or inb < 0:
            return None
        return cls(
            kind=kind,
            id=sid,
            path=path.strip("/"),
            query=str(item.get("query") or ""),
            remote_addr=str(item.get("remoteAddr") or ""),
            state=str(item.get("state") or ""),
            created=str(item.get("created") or ""),
            outbound_bytes=out,
            inbound_bytes=inb,
        )


class MediaMtxApi:
    def __init__(
        self,
        base_url: str,
        *,
        username: str = "",
        password: str = "",
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        auth = httpx.BasicAuth(username, password) if username else None
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), auth=auth, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            resp = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise MediaMtxError(f"GET {path}: {exc}") from None
        if resp.status_code != 200:
            raise MediaMtxError(f"GET {path}: {resp.status_code} {resp.text[:200]}")
        try:
            return resp.json()
        except ValueError:
            raise MediaMtxError(f"GET {path}: not JSON") from None

    async def _list(self, path: str) -> list[Any]:
        items: list[Any] = []
        for page in range(MAX_PAGES):
            body = await self._get(path, {"page": page, "itemsPerPage": PAGE_SIZE})
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise MediaMtxError(f"GET {path}: no items list")
            items.extend(body["items"])
            pages = body.get("pageCount")
            if not isinstance(pages, int) or page + 1 >= pages:
                break
        return items

    async def paths(self) -> list[dict[str, Any]]:
        return [p for p in await self._list("/v3/paths/list") if isinstance(p, dict)]

    async def sessions(self, kind: str) -> list[MtxSession]:
        """The sessions of one kind; items that do not parse are skipped."""
        if kind not in SESSION_KINDS:
            raise ValueError(f"unknown session kind {kind!r}")
        out = []
        for item in await self._list(f"/v3/{kind}sessions/list"):
            s = MtxSession.parse(kind, item)
            if s is not None:
                out.append(s)
        return out

    async def kick(self, kind: str, session_id: str) -> bool:
        """End a session; False if MediaMTX has no such session (any more)."""
        if kind not in SESSION_KINDS:
            raise ValueError(f"unknown session kind {kind!r}")
        path = f"/v3/{kind}sessions/kick/{quote(session_id, safe='')}"
        try:
            resp = await self._http.post(path)
        except httpx.HTTPError as exc:
            raise MediaMtxError(f"POST {path}: {exc}") from None
        if resp.status_code == 404:
            return False
        if resp.status_code != 200:
            raise MediaMtxError(f"POST {path}: {resp.status_code} {resp.text[:200]}")
        return True
