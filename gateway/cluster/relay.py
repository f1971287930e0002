"""Relaying a camera between nodes over internal, authenticated RTSP.

Every node listens for relays on ``cluster.relay_host:relay_port``, over TLS with the cluster's
certificate, both ends verified by the cluster CA (:mod:`gateway.cluster.tls`; plaintext only
with ``cluster.loopback_only``). A connection there is an
internal reader, like a worker relay on the Unix socket: it is not metered, not capped, not
audited as viewing and never masked (the edge masks for its own viewers). Unlike the Unix
socket, anyone on the network could connect, so every request must carry Digest credentials
for the cluster's user with the cluster secret (:class:`RelayGate`; the secret itself never
crosses the wire), and a reader must name the fencing token of the lease it expects
(``?fence=N``): an owner serves a path only while it holds that lease, so an edge never
relays from a node that has lost (or, paused, may have lost) the camera.

An :class:`EdgeRelay` is the pull ingest of a camera from its owner: each attempt looks the
owner up afresh, so after a failover it re-attaches to the new owner by itself, and the hub's
continuous timeline makes the switch a gap for the edge's viewers, not an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway.protocols.rtsp import Request, RtspError
from gateway.protocols.rtsp_auth import DigestChallenger, DigestCredentials, parse_authorization
from gateway.rtsp.reply import RtspReply
from gateway.sources.ingest import PullIngest
from gateway.sources.rtsp_client import RtspClientError
from gateway.stream.hub import PathStream

if TYPE_CHECKING:
    from gateway.cluster.tls import RelayTls
    from gateway.rtsp.connection import RtspConnection

log = logging.getLogger(__name__)

RELAY_REALM = "feedgate-cluster"
RELAY_USER = "feedgate-cluster"


class RelayGate:
    """Who may read from this node's relay listener: another node of the cluster.

    ``serving(path, token)`` says whether this node currently holds ``path``'s lease with
    that fencing token (a local check against the lease's validity, no Redis round trip)."""

    def __init__(self, secret: str, serving: Callable[[str, int], bool]) -> None:
        self._secret = secret
        self._serving = serving
        self._digest = DigestChallenger()
        self.refused = 0

    def check(
        self, conn: RtspConnection, req: Request, action: str, path: str, query: dict[str, str]
    ) -> None:
        """Raise the refusal of a request on the relay listener; return if it may go on."""
        now = time.monotonic()
        # Once per connection: the nonce is bound to it, and our own client repeats nc=1.
        if not conn.relay_authenticated and self._authenticated(conn, req, now):
            conn.relay_authenticated = True
        if not conn.relay_authenticated:
            self.refused += 1
            raise RtspReply(
                401,
                "cluster credentials required",
                self._digest.www_authenticate_headers(RELAY_REALM, now, basic=False, bind=conn.id),
            )
        if action != "read":
            raise RtspReply(403, "the relay listener only serves readers")
        fence = query.get("fence", "")
        if fence.isdigit():
            conn.relay_fence = int(fence)
        if conn.relay_fence is None or not self._serving(path, conn.relay_fence):
            raise RtspReply(503, f"this node does not own {path!r} under that lease")

    def _authenticated(self, conn: RtspConnection, req: Request, now: float) -> bool:
        value = req.headers.get("Authorization")
        if value is None:
            return False
        try:
            creds = parse_authorization(value)
        except RtspError:
            return False
        if not isinstance(creds, DigestCredentials) or creds.username != RELAY_USER:
            return False
        return self._digest.verify_digest(
            creds, req.method, self._secret, now, realm=RELAY_REALM, bind=conn.id
        )


# Resolves the relay URL of a path's current owner (None: nobody owns it yet).
Resolver = Callable[[str], Awaitable[str | None]]


class EdgeRelay(PullIngest):
    """The pull of one camera path from whichever node owns it, run while this node has
    viewers of it. ``run()`` is the long-lived task; cancel it to stop."""

    def __init__(
        self,
        stream: PathStream,
        resolve: Resolver,
        secret: str,
        *,
        stall_timeout: float = 3.0,
        tls: RelayTls | None = None,
    ) -> None:
        super().__init__(
            stream,
            "rtsp://owner.invalid/",
            username=RELAY_USER,
            password=secret,
            backoff_initial=0.05,
            backoff_max=0.5,
            stall_timeout=stall_timeout,
            ssl_context=tls.client if tls is not None else None,
            server_hostname=tls.name if tls is not None else None,
        )
        self.resolve = resolve
        self.owner_url: str | None = None

    async def _session(self) -> None:
        url = await self.resolve(self.stream.name)
        if url is None:
            raise RtspClientError(f"no node owns {self.stream.name!r} yet")
        self.url = self.owner_url = url
        await super()._session()
