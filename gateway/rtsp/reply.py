"""What a request handler answers: a :class:`Reply`, or an :class:`RtspReply` raised to refuse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.protocols.rtsp import Request

if TYPE_CHECKING:
    from gateway.rtsp.connection import RtspConnection


class RtspReply(Exception):
    """Raised by a handler to answer with an error status."""

    def __init__(self, status: int, reason: str = "", headers: list[tuple[str, str]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # Runs once the reply is written: media must never precede a PLAY's or RECORD's 200.
    then: Callable[[], None] | None = None


Handler = Callable[["RtspConnection", Request], Awaitable[Reply]]
