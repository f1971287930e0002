"""Lock-state events for watchers (the REST event stream): who holds a camera, until when.

Each subscriber has a bounded queue; a watcher that does not keep up loses its oldest events
(counted), never slows the PTZ path. The events name tenant kinds, not people; ``about`` (the
tenant and principal an event concerns) stays on the server, so each stream can tell its own
client "this is about you" without telling anyone else who it was.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.ptz.arbiter import LockView

QUEUE_LIMIT = 64
MAX_WATCHERS = 256  # per camera


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def view_json(view: LockView) -> dict[str, Any]:
    d: dict[str, Any] = {"camera": view.camera, "state": view.state.value}
    if view.holder_kind is not None:
        d["holder"] = {"tenant_kind": view.holder_kind, "priority": view.priority}
        d["until"] = iso(view.until)
    if view.reason:
        d["reason"] = view.reason
    return d


@dataclass(frozen=True)
class LockEvent:
    type: str  # lock, preempted, released, reserved, reservation_ended
    view: LockView
    reason: str = ""
    by_kind: str | None = None
    about: tuple[str, str] | None = None  # (tenant, principal): server-side only

    def json_for(self, tenant: str, principal: str) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, **view_json(self.view)}
        if self.reason:
            d["why"] = self.reason
        if self.by_kind is not None:
            d["by"] = {"tenant_kind": self.by_kind}
        if self.about is not None:
            d["yours"] = self.about == (tenant, principal)
        return d


@dataclass(eq=False)
class Subscription:
    camera: str
    queue: asyncio.Queue[LockEvent] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    lost: int = 0

    def put(self, event: LockEvent) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.lost += 1
        self.queue.put_nowait(event)


class EventHub:
    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, camera: str) -> Subscription | None:
        """None when the camera already has :data:`MAX_WATCHERS` watchers."""
        subs = self._subs.setdefault(camera, set())
        if len(subs) >= MAX_WATCHERS:
            return None
        sub = Subscription(camera)
        subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.camera)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.camera]

    def publish(self, event: LockEvent) -> None:
        for sub in self._subs.get(event.view.camera, ()):
            sub.put(event)

    def watchers(self, camera: str) -> int:
        return len(self._subs.get(camera, ()))


__all__ = ["EventHub", "LockEvent", "Subscription", "iso", "view_json"]
