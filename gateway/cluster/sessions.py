"""The cluster-wide session registry, and kicks that reach the session's node.

Each node writes its live sessions (every protocol: node, tenant, camera, protocol, bytes)
to ``sessions:{node}`` with each heartbeat, expiring with it, and reads every live peer's
back. :class:`ClusterMedia` is the control service's media plane on a clustered node: the
local sessions, as :class:`gateway.control.GatewayMedia` sees them, plus every other live
node's; a kick of another node's session is published on that node's ``kick:{node}``
channel, where :class:`KickListener` ends it, as a local kick would (the session's end and
audit are its node's).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from gateway.cluster.keys import Keys
from gateway.tasks import cancel_and_wait, raise_if_cancelling
from tenants.control.ports import LiveSession, MediaPlane

log = logging.getLogger(__name__)

MAX_KICK_BYTES = 4096  # a kick message is an id and a reason; anything bigger is not ours


def encode_sessions(sessions: Sequence[LiveSession]) -> str:
    rows = []
    for s in sessions:
        d = asdict(s)
        d["created"] = s.created.isoformat()
        rows.append(d)
    return json.dumps(rows, separators=(",", ":"))


def decode_sessions(raw: bytes | str, node: str) -> list[LiveSession]:
    """A peer's sessions, each stamped with its node; rows that do not parse are skipped."""
    try:
        rows = json.loads(raw)
    except ValueError:
        return []
    out = []
    for d in rows if isinstance(rows, list) else ():
        try:
            d = dict(d)
            d["created"] = datetime.fromisoformat(d["created"])
            d["node"] = node
            out.append(LiveSession(**d))
        except (TypeError, ValueError, KeyError):
            continue
    return out


class ClusterMedia:
    """The media plane of a clustered node: ``local``'s sessions and every peer's."""

    def __init__(self, local: MediaPlane, node: str, publish_kick: Callable[[str, str, str], None]):
        self.local = local
        self.node = node
        self.remote: dict[str, list[LiveSession]] = {}  # node -> sessions, as last read
        self._publish_kick = publish_kick

    def configured_cameras(self) -> frozenset[str]:
        return self.local.configured_cameras()

    def local_sessions(self) -> list[LiveSession]:
        return [replace(s, node=self.node) for s in self.local.sessions()]

    def sessions(self) -> Sequence[LiveSession]:
        out = self.local_sessions()
        for node, sessions in sorted(self.remote.items()):
            if node != self.node:
                out.extend(sessions)
        return out

    def kick(self, session_id: str, reason: str) -> bool:
        if self.local.kick(session_id, reason):
            return True
        for node, sessions in self.remote.items():
            if node != self.node and any(s.id == session_id for s in sessions):
                self._publish_kick(node, session_id, reason)
                return True
        return False


class KickListener:
    """Ends the local sessions other nodes kick: one subscription to ``kick:{node}``, kept
    open (resubscribing after a Redis outage) by the task this object owns."""

    def __init__(self, redis: Any, keys: Keys, node: str, kick: Callable[[str, str], bool]) -> None:
        self.redis = redis
        self.channel = keys.kick(node)
        self._kick = kick
        self.kicked = 0
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-kicks")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            raise_if_cancelling()  # a stop that redis-py's write swallowed (gateway.tasks)
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                while True:
                    raise_if_cancelling()
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None:
                        self._handle(msg.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                log.debug("kick subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    def _handle(self, data: Any) -> None:
        if not isinstance(data, bytes | str) or len(data) > MAX_KICK_BYTES:
            return
        try:
            msg = json.loads(data)
            session_id, reason = str(msg["session"]), str(msg.get("reason", ""))[:256]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed kick on %s", self.channel)
            return
        if self._kick(session_id, reason or "ended from another node"):
            self.kicked += 1
            log.info("session %s kicked from another node: %s", session_id, reason)


def kick_message(session_id: str, reason: str) -> str:
    return json.dumps({"session": session_id, "reason": reason})
