"""One node's membership of the cluster: the Redis client, the relay listener, heartbeats,
camera ownership, the session registry and kicks, each task owned and stopped here.

The gateway process (:class:`gateway.core.Gateway`) hands in what the cluster drives:
starting and stopping its own pull of a camera, dropping a local publisher, and its media
plane (sessions, kicks). Nothing else of the gateway is reached from here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gateway.cluster.keys import Keys
from gateway.cluster.leases import Leases
from gateway.cluster.nodes import NodeRecord, alive_records, beat, leave
from gateway.cluster.ownership import Ownership, PathKind
from gateway.cluster.relay import RelayGate
from gateway.cluster.sessions import (
    ClusterMedia,
    KickListener,
    decode_sessions,
    encode_sessions,
    kick_message,
)
from gateway.cluster.tls import HANDSHAKE_TIMEOUT, RelayTls, relay_tls, warn_plaintext
from gateway.config import Config
from gateway.tasks import cancel_and_wait, raise_if_cancelling
from tenants.control.ports import MediaPlane, NoMedia

log = logging.getLogger(__name__)


def cluster_paths(config: Config) -> dict[str, PathKind]:
    """Every camera path of the cluster (all nodes share the camera list) and its kind."""
    out: dict[str, PathKind] = {}
    for cam in config.cameras:
        pulled = PathKind.ON_DEMAND if cam.on_demand else PathKind.PULL
        # A recorded camera is pulled all the time (by its owner, which records it).
        main = PathKind.PULL if cam.record else pulled
        out[cam.id] = PathKind.PUSH if cam.is_push else main
        if cam.sub_source:
            out[f"{cam.id}/sub"] = pulled
    return out


class ClusterNode:
    def __init__(
        self,
        config: Config,
        hub: Any,
        rtsp: Any,
        *,
        start_pull: Callable[[str], None],
        stop_pull: Callable[[str], None],
        drop_publisher: Callable[[str], None],
        http_port: Callable[[], int] = lambda: 0,
        holder: str | None = None,
    ) -> None:
        cc = config.cluster
        self.config = config
        self.cc = cc
        self.node_id = config.node
        self.holder = holder or f"{self.node_id}/{secrets.token_hex(4)}"
        self.incarnation = self.holder.rpartition("/")[2]
        self.started = time.time()
        self.redis: Any = aioredis.Redis.from_url(
            cc.redis_url,
            socket_timeout=cc.redis_timeout,
            socket_connect_timeout=cc.redis_timeout,
            retry_on_timeout=False,
        )
        self.keys = Keys(cc.prefix)
        self.secret = cc.secret_value()
        # RTSPS between nodes (None: cluster.loopback_only, plaintext on loopback).
        self.tls: RelayTls | None = relay_tls(config)
        self.rtsp = rtsp
        self.http_port = http_port
        self.leases = Leases(self.redis, self.keys, self.holder, cc.lease_ttl)
        self.ownership = Ownership(
            self.leases,
            hub,
            cluster_paths(config),
            start_pull=start_pull,
            stop_pull=stop_pull,
            drop_publisher=drop_publisher,
            resolve=self.resolve,
            secret=self.secret,
            attempt_interval=cc.heartbeat_interval,
            relay_linger=cc.relay_linger,
            stall_timeout=min(3.0, cc.lease_ttl / 2),
            relay_tls=self.tls,
        )
        self.gate = RelayGate(self.secret, self.ownership.serving)
        self.peers: dict[str, NodeRecord] = {}  # live nodes (this one included), last beat
        self.local_media: MediaPlane = NoMedia()
        self.media = ClusterMedia(self.local_media, self.node_id, self._publish_kick)
        self.kicks: KickListener | None = None
        self._relay_server: asyncio.Server | None = None
        self._beater: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self.beats_failed = 0

    def attach_media(self, local: MediaPlane) -> ClusterMedia:
        """Wrap this process's media plane: what the control service lists and kicks."""
        self.local_media = local
        self.media = ClusterMedia(local, self.node_id, self._publish_kick)
        return self.media

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        from gateway.rtsp.connection import RtspConnection

        def relay_connection() -> RtspConnection:
            conn = RtspConnection(self.rtsp, internal=True)
            conn.gate = self.gate
            return conn

        loop = asyncio.get_running_loop()
        tls = self.tls
        if tls is None:
            warn_plaintext(self.config)
        self._relay_server = await loop.create_server(
            relay_connection,
            self.cc.relay_host,
            self.cc.relay_port,
            reuse_address=True,
            ssl=tls.server if tls is not None else None,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if tls is not None else None,
        )
        try:
            await self._beat()  # be known before taking cameras
        except Exception as exc:
            log.warning("cluster: first heartbeat failed (%s); retrying in the background", exc)
        self.kicks = KickListener(
            self.redis, self.keys, self.node_id, lambda sid, why: self.local_media.kick(sid, why)
        )
        self.kicks.start()
        self.ownership.start()
        self._beater = loop.create_task(self._beat_loop(), name="cluster-heartbeat")
        log.info("cluster node %s (relay %s) joined", self.node_id, self.relay_address)

    async def stop(self) -> None:
        await cancel_and_wait(self._beater, *self._sends)
        if self.kicks is not None:
            await self.kicks.stop()
        await self.ownership.stop()
        if self._relay_server is not None:
            self._relay_server.close()
        try:
            await leave(self.redis, self.keys, self.node_id, self.incarnation)
        except Exception as exc:
            log.info("cluster: could not say goodbye (%s); the heartbeat lapses instead", exc)
        await self.redis.aclose()

    @property
    def relay_port(self) -> int:
        assert self._relay_server is not None
        return int(self._relay_server.sockets[0].getsockname()[1])

    @property
    def relay_address(self) -> str:
        return self.cc.advertise or f"{self.cc.relay_host}:{self.relay_port}"

    # ---- heartbeats and the registry ------------------------------------------------------

    def record(self) -> NodeRecord:
        local = self.media.local_sessions()
        return NodeRecord(
            node=self.node_id,
            incarnation=self.incarnation,
            started=self.started,
            relay=self.relay_address,
            rtsp_port=self.rtsp.port,
            http_port=self.http_port(),
            sessions=len(local),
            owned=self.ownership.owned,
            relayed=self.ownership.relayed,
            stats={"takeovers": self.ownership.takeovers, "losses": self.ownership.losses},
        )

    async def _beat(self) -> None:
        ttl = self.cc.heartbeat_ttl
        await beat(self.redis, self.keys, self.record(), ttl)
        sessions = encode_sessions(self.media.local_sessions())
        await self.redis.set(self.keys.sessions(self.node_id), sessions, px=int(ttl * 1000))
        self.peers = await alive_records(self.redis, self.keys)
        peers = [n for n in self.peers if n != self.node_id]
        raws = await self.redis.mget([self.keys.sessions(n) for n in peers]) if peers else []
        self.media.remote = {
            n: decode_sessions(raw, n) for n, raw in zip(peers, raws, strict=True) if raw
        }

    async def _beat_loop(self) -> None:
        while True:
            raise_if_cancelling()  # a stop that redis-py's write swallowed (gateway.tasks)
            await asyncio.sleep(self.cc.heartbeat_interval)
            try:
                await self._beat()
                if self.beats_failed:
                    log.warning(
                        "cluster: heartbeats work again after %d failures", self.beats_failed
                    )
                    self.beats_failed = 0
            except Exception as exc:
                self.beats_failed += 1
                if self.beats_failed == 1:
                    log.warning("cluster: heartbeat failed (%s); retrying", exc)

    # ---- what the parts ask ------------------------------------------------------------------

    async def resolve(self, path: str) -> str | None:
        """The relay URL of ``path``'s current owner (None: nobody else owns it)."""
        try:
            owner = await self.leases.owner(path)
        except Exception:
            owner = self.ownership.owners.get(path)  # Redis down: the last owner we knew
        if owner is None or owner.holder == self.holder:
            return None
        rec = self.peers.get(owner.node)
        if rec is None or rec.incarnation != owner.holder.rpartition("/")[2]:
            try:
                self.peers = await alive_records(self.redis, self.keys)
            except Exception:
                pass
            rec = self.peers.get(owner.node)
        if rec is None:
            return None  # its owner is not beating: it is dead, and its lease will move
        scheme = "rtsps" if self.tls is not None else "rtsp"
        return f"{scheme}://{rec.relay}/{path}?fence={owner.token}"

    def on_demand(self, path: str) -> None:
        self.ownership.on_demand(path)

    def _publish_kick(self, node: str, session_id: str, reason: str) -> None:
        async def send() -> None:
            try:
                await self.redis.publish(self.keys.kick(node), kick_message(session_id, reason))
            except Exception as exc:
                log.warning("could not send the kick of %s to %s: %s", session_id, node, exc)

        task = asyncio.get_running_loop().create_task(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
