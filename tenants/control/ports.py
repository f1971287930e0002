"""What the control service needs from outside the tenancy package, as narrow interfaces
(``tenants`` imports no other project package; the gateway plugs its media plane and billing
in here, see ``gateway/control.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class LiveSession:
    """One live session on this process's media plane (RTSP today; WebRTC later)."""

    id: str
    protocol: str
    mode: str  # play, record
    state: str
    tenant: str | None
    principal: str | None
    camera: str
    variant: str
    peer: str
    created: datetime
    bytes_sent: int = 0
    packets_sent: int = 0
    packets_dropped: int = 0
    frames_dropped: int = 0
    node: str = ""  # the gateway node it is on ("" = this process, unclustered)


class MediaPlane(Protocol):
    """The live side: which camera ids have a configured source, and the sessions."""

    def configured_cameras(self) -> frozenset[str]: ...

    def sessions(self) -> Sequence[LiveSession]: ...

    def kick(self, session_id: str, reason: str) -> bool:
        """End the session now (on the event loop); False if there is none."""
        ...


class NoMedia:
    """A control API with no media plane in its process (tests, a control-only node)."""

    def configured_cameras(self) -> frozenset[str]:
        return frozenset()

    def sessions(self) -> Sequence[LiveSession]:
        return ()

    def kick(self, session_id: str, reason: str) -> bool:
        return False


@dataclass(frozen=True)
class NodeInfo:
    """One node of a clustered gateway, as its heartbeat describes it."""

    node: str
    alive: bool
    last_seen: datetime
    started: datetime | None = None  # None when down: its record has lapsed
    relay: str = ""  # host:port of its internal relay listener
    rtsp_port: int = 0
    http_port: int = 0
    sessions: int = 0
    owned: tuple[str, ...] = ()  # camera paths it pulls or publishes
    relayed: tuple[str, ...] = ()  # camera paths it relays from their owners


class Nodes(Protocol):
    """The cluster's nodes (the gateway reads them from its Redis, on the event loop)."""

    async def nodes(self) -> Sequence[NodeInfo]:
        """Live nodes first, then the ones seen lately; raises if they cannot be read."""
        ...


@dataclass(frozen=True)
class UsageLine:
    tenant: str
    period: str
    camera: str
    metric: str
    quantity: int  # base units: ms, bytes, exports


class Billing(Protocol):
    """The ledger and the invoices (blocking: called in a thread)."""

    def usage(self, tenant: str, period: str) -> Sequence[UsageLine]: ...

    def tenants(self, period: str) -> Sequence[str]: ...

    def invoices(self, tenant: str | None, period: str | None) -> Sequence[dict[str, Any]]: ...

    def emitted(self) -> dict[str, Any]:
        """What this process's meter handed to billing since it started."""
        ...


__all__ = ["Billing", "LiveSession", "MediaPlane", "NoMedia", "NodeInfo", "Nodes", "UsageLine"]
