"""The RTSP server's one policy hook: what it asks before serving a request, and what it tells
the policy as sessions start, pause and end. ``gateway.rtsp.access.PolicyAccess`` implements it
with the tenant policy; the base class here wraps a bare authorizer (open access, a camera
simulator's credentials check)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from gateway.protocols.rtsp import Request
from gateway.rtsp.reply import RtspReply

if TYPE_CHECKING:
    from gateway.rtsp.session import Session
    from tenants.policy import Decision

#: What the access control allowed a request with, kept on its connection and session: the
#: tenant policy's decision, or ``True`` where no policy applies (open access, a camera
#: simulator's credentials, the internal relay).
Grant: TypeAlias = "Decision | Literal[True]"


@dataclass
class AccessCheck:
    """What an entry point asks the policy before serving a request."""

    action: str  # "read", "playback" or "publish"
    path: str
    request: Request
    peer: str
    query: dict[str, str]
    secure: bool = False  # RTSPS: credentials travel inside TLS
    # This connection and no other (Digest nonces are bound to it).
    connection: str = ""
    # A playback's footage age (now - the instant asked for), for the grant's maximum.
    playback_age_s: float | None = None


# A bare authorizer: return None to allow, or an RtspReply to refuse.
Authorizer = Callable[[AccessCheck], Awaitable[RtspReply | None]]


async def allow_all(check: AccessCheck) -> RtspReply | None:
    return None


class AccessControl:
    """``check`` answers every DESCRIBE/SETUP/ANNOUNCE with a refusal or a :data:`Grant` (kept
    on the session); ``started`` may still refuse a PLAY or RECORD (a concurrency cap) and
    ``ended`` is told when that session ends."""

    def __init__(self, authorizer: Authorizer = allow_all) -> None:
        self.authorizer = authorizer

    async def check(self, check: AccessCheck) -> RtspReply | Grant:
        refusal = await self.authorizer(check)
        return refusal if refusal is not None else True

    async def started(self, session: Session) -> RtspReply | None:
        """Admit the PLAY/RECORD (it may await blocking work done elsewhere), or refuse it."""
        return None

    def attached(self, session: Session) -> None:
        """The session's hub reader exists now (it is created after the PLAY reply)."""
        return None

    def paused(self, session: Session) -> None:
        """The session was PAUSEd: it receives nothing until the next PLAY."""
        return None

    async def route(self, path: str, grant: Grant) -> str:
        """The hub path to serve for this grant: the camera's own, or a derived variant."""
        return path

    def ended(self, session: Session, reason: str) -> None:
        return None
