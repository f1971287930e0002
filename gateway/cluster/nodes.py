"""Node heartbeats: each node refreshes ``node:{id}`` (its record, ``PX`` heartbeat_ttl) every
heartbeat_interval and its last-seen time in the ``nodes`` sorted set. A node whose key has
lapsed is down: its sessions leave the registry and its camera leases lapse with it.

:func:`list_nodes` is what ``feedgate nodes``, ``GET /v1/nodes`` and gRPC ``ListNodes`` show
(through :class:`NodeDirectory`, the control service's view): the nodes alive now, then the ones
seen within the last hour, marked down."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.cluster.keys import Keys
from tenants.control.ports import NodeInfo

# Nodes gone longer than this are forgotten by the listing.
FORGET_AFTER = 3600.0


@dataclass(frozen=True)
class NodeRecord:
    """What a node says about itself in each heartbeat."""

    node: str
    incarnation: str
    started: float  # unix seconds
    relay: str  # host:port of its internal relay listener
    rtsp_port: int = 0
    http_port: int = 0
    sessions: int = 0
    owned: tuple[str, ...] = ()  # the camera paths it pulls or publishes
    relayed: tuple[str, ...] = ()  # the camera paths it relays from their owners
    stats: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, raw: bytes | str) -> NodeRecord | None:
        try:
            d = json.loads(raw)
            return cls(
                node=str(d["node"]),
                incarnation=str(d["incarnation"]),
                started=float(d["started"]),
                relay=str(d["relay"]),
                rtsp_port=int(d.get("rtsp_port", 0)),
                http_port=int(d.get("http_port", 0)),
                sessions=int(d.get("sessions", 0)),
                owned=tuple(str(p) for p in d.get("owned", ())),
                relayed=tuple(str(p) for p in d.get("relayed", ())),
                stats=dict(d.get("stats", {})),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class NodeStatus:
    node: str
    alive: bool
    last_seen: float  # unix seconds
    record: NodeRecord | None


async def beat(redis: Any, keys: Keys, record: NodeRecord, ttl: float) -> None:
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        px = max(1, int(ttl * 1000))
        pipe.set(keys.node(record.node), record.encode(), px=px)
        pipe.set(keys.alive(f"{record.node}/{record.incarnation}"), "1", px=px)
        pipe.zadd(keys.nodes, {record.node: now})
        await pipe.execute()


async def leave(redis: Any, keys: Keys, node: str, incarnation: str) -> None:
    """A clean stop: the node is gone now, not after its TTL."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(keys.node(node))
        pipe.delete(keys.alive(f"{node}/{incarnation}"))
        pipe.delete(keys.sessions(node))
        await pipe.execute()


async def alive_records(redis: Any, keys: Keys) -> dict[str, NodeRecord]:
    """The nodes whose heartbeat has not lapsed, by id."""
    ids = [
        i.decode() if isinstance(i, bytes) else str(i)
        for i in await redis.zrange(keys.nodes, 0, -1)
    ]
    if not ids:
        return {}
    raws = await redis.mget([keys.node(i) for i in ids])
    out = {}
    for node_id, raw in zip(ids, raws, strict=True):
        if raw is not None and (rec := NodeRecord.decode(raw)) is not None:
            out[node_id] = rec
    return out


async def list_nodes(redis: Any, keys: Keys, now: float | None = None) -> list[NodeStatus]:
    now = time.time() if now is None else now
    await redis.zremrangebyscore(keys.nodes, "-inf", now - FORGET_AFTER)
    seen = await redis.zrange(keys.nodes, 0, -1, withscores=True)
    alive = await alive_records(redis, keys)
    out = []
    for raw_id, score in seen:
        node_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        rec = alive.get(node_id)
        out.append(NodeStatus(node_id, rec is not None, float(score), rec))
    out.sort(key=lambda s: (not s.alive, s.node))
    return out


def node_info(s: NodeStatus) -> NodeInfo:
    """A listed node as the control service declares it."""
    rec = s.record
    return NodeInfo(
        node=s.node,
        alive=s.alive,
        last_seen=datetime.fromtimestamp(s.last_seen, UTC),
        started=datetime.fromtimestamp(rec.started, UTC) if rec else None,
        relay=rec.relay if rec else "",
        rtsp_port=rec.rtsp_port if rec else 0,
        http_port=rec.http_port if rec else 0,
        sessions=rec.sessions if rec else 0,
        owned=rec.owned if rec else (),
        relayed=rec.relayed if rec else (),
    )


class NodeDirectory:
    """The cluster's nodes for the control service (``tenants.control.ports.Nodes``), read
    from the cluster's Redis at each call."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def nodes(self) -> list[NodeInfo]:
        return [node_info(s) for s in await list_nodes(self.redis, self.keys)]
