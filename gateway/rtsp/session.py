"""One RTSP session as the server holds it: its protocol state (the sans-I/O
:class:`~gateway.protocols.rtsp_session.RtspSession`), the connection that owns it, and what it
is attached to in the hub."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.protocols.rtsp_session import (
    RtspSession,
    SessionMode,
    SessionState,
    TrackTransport,
    TransportMode,
)
from gateway.stream.hub import PathStream, Reader

if TYPE_CHECKING:
    from gateway.rtsp.connection import RtspConnection
    from gateway.rtsp.hooks import Grant


@dataclass
class Session:
    id: str
    conn: RtspConnection
    path: str
    protocol: RtspSession
    reader: Reader | None = None  # a PLAYing reader, as the hub sees it
    stream: PathStream | None = None
    created: float = field(default_factory=time.time)  # wall clock, for the sessions API
    source_id: str | None = None  # a RECORDing publisher's source id in the hub
    grant: Grant | None = None  # what the access control allowed this session with
    started: bool = False  # access control was told of its PLAY/RECORD
    # A playback's audit detail (its range) and the seconds of recording it has served
    # (metered instead of wall time): gateway.playback.rtsp sets them.
    detail: dict[str, Any] = field(default_factory=dict)
    media_clock: Callable[[], float] | None = None

    @property
    def mode(self) -> SessionMode:
        return self.protocol.mode

    @property
    def state(self) -> SessionState:
        return self.protocol.state

    @property
    def tracks(self) -> dict[int, TrackTransport]:
        return self.protocol.tracks

    @property
    def transport(self) -> TransportMode | None:
        return self.protocol.transport_mode

    @property
    def last_activity(self) -> float:
        return self.protocol.last_activity

    def touch(self, now: float | None = None) -> None:
        self.protocol.touch(time.monotonic() if now is None else now)
