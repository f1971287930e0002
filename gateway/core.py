"""The gateway process's media plane and control plane: hub, RTSP server, pull ingests,
masked variants, metering and the tenant policy, with one owner for every long-lived task."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gateway.config import Config
from gateway.live import LiveSessions
from gateway.loopwatch import LoopWatch
from gateway.masking.variants import VariantManager
from gateway.memory import MemoryPolicy
from gateway.metering import Metering
from gateway.protocols.rtsp import Request
from gateway.rtsp.access import PolicyAccess
from gateway.rtsp.connection import RtspConnection
from gateway.rtsp.hooks import Authorizer, allow_all
from gateway.rtsp.server import RtspServer
from gateway.sources.ingest import PullIngest
from gateway.sources.source_tls import pull_tls, warn_unverified
from gateway.stream.hub import PathStream, StreamHub
from gateway.stream.joining import JoinPolicy
from gateway.stream.stall import Stall, StallEvent
from gateway.tasks import cancel_and_wait
from gateway.tenancy import Tenancy
from gateway.webrtc.ice import IceSettings
from gateway.webrtc.server import Limits, WebRtcServer

log = logging.getLogger(__name__)


class Gateway:
    """Everything one gateway process runs. ``start``/``stop`` are called by the HTTP app's
    cleanup context, so the web server owns the media plane's lifetime."""

    def __init__(
        self,
        config: Config,
        *,
        authorizer: Authorizer = allow_all,
        rtsp_socket: socket.socket | None = None,
        worker: int = 0,
        reuse_port: bool = False,
        internal_path: str | None = None,
        upstream_unix: str | None = None,
        handoff: Callable[[RtspConnection, Request], Awaitable[None]] | None = None,
        udp_port: int | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        # A secondary worker relays every camera from the primary over this Unix socket.
        self.upstream_unix = upstream_unix
        self.hub = StreamHub(
            gop_cache_bytes=config.rtsp.gop_cache_bytes,
            write_timeout=config.rtsp.write_timeout,
            stall_after=config.ingest.stall_after,
            stall_frames=config.ingest.stall_frames,
            join=JoinPolicy(
                max_behind=config.rtsp.join_max_behind,
                udp_burst_bytes=config.rtsp.udp_join_burst_bytes,
            ),
        )
        # The tenant policy, when tenancy is on (worker relays are internal and skip it).
        self.tenancy: Tenancy | None = None
        self.access: PolicyAccess | None = None
        self.live: LiveSessions | None = None
        self.variants: VariantManager | None = None
        # Playback of the recordings (gateway/playback/): RTSP and HTTP, once recording is on.
        self.playback: Any = None
        self.metering: Metering | None = None
        if config.tenancy.enabled:
            self.tenancy = Tenancy.open(config, lease_holder=f"{config.node}/w{worker}")
        # A cluster node's incarnation: what its heartbeat, camera leases and cap slots name.
        self.cluster_holder = f"{config.node}/{secrets.token_hex(4)}"
        if self.tenancy is not None and config.cluster.enabled and upstream_unix is None:
            from gateway.cluster.caps import RedisStreamLeases
            from gateway.cluster.keys import Keys

            cc = config.cluster
            self.tenancy.caps.shared = RedisStreamLeases(
                cc.redis_url,
                Keys(cc.prefix),
                self.cluster_holder,
                cc.heartbeat_ttl,
                cc.redis_timeout,
            )
        if self.tenancy is not None:
            self.variants = VariantManager(self.hub)
            if config.billing.enabled:
                self.metering = Metering(config, self.tenancy.db, worker=worker)
            # One admission, audit trail and re-check for the live sessions of every protocol.
            self.live = LiveSessions(
                self.tenancy,
                recheck_interval=config.tenancy.recheck_interval,
                variants=self.variants,
                meter=self.metering.meter if self.metering else None,
            )
            self.access = PolicyAccess(
                self.tenancy, self.live, basic_over_plain=config.rtsp.basic_over_plain
            )
        self.rtsp = RtspServer(
            config,
            self.hub,
            authorizer=authorizer,
            on_demand=self._start_on_demand,
            access=self.access,
            reuse_port=reuse_port,
            internal_path=internal_path,
            handoff=handoff,
            udp_port=udp_port,
        )
        if self.access is not None:
            self.access.server = self.rtsp
        # Several nodes as one gateway (issue #15): which node pulls which camera, edge
        # relays, the session registry. Worker 0 (or the only process) is the node's member.
        self.cluster: Any = None
        if config.cluster.enabled and upstream_unix is None:
            from gateway.cluster.node import ClusterNode

            self.cluster = ClusterNode(
                config,
                self.hub,
                self.rtsp,
                start_pull=self._start_ingest,
                stop_pull=self._stop_ingest,
                drop_publisher=self._drop_publisher,
                holder=self.cluster_holder,
            )
        # WebRTC (WHEP) viewers, served on the HTTP app, under the same live sessions.
        self.webrtc: WebRtcServer | None = None
        if config.webrtc.enabled:
            wc = config.webrtc
            self.webrtc = WebRtcServer(
                self.hub,
                IceSettings.from_config(wc),
                Limits(
                    handshake_timeout=wc.handshake_timeout,
                    max_sessions=wc.max_sessions,
                    max_pending=wc.max_pending,
                    max_pending_per_tenant=wc.max_pending_per_tenant,
                    sender=wc.sender,
                ),
                live=self.live,
                known_path=self.rtsp.known_path,
                on_demand=self._start_on_demand,
            )
        # The control service every control entry point (gRPC, REST) of this process uses.
        self.control: Any = None
        if self.tenancy is not None:
            from gateway.control import GatewayMedia, LedgerBilling, control_service

            media: Any = GatewayMedia(config, self.live, self.rtsp)
            nodes = None
            if self.cluster is not None:
                from gateway.cluster.nodes import NodeDirectory

                media = self.cluster.attach_media(media)  # every node's sessions
                nodes = NodeDirectory(self.cluster.redis, self.cluster.keys)
            self.control = control_service(
                self.tenancy,
                config.grpc.platform_tenant,
                media=media,
                billing=LedgerBilling(self.metering) if self.metering is not None else None,
                nodes=nodes,
            )
        # MediaMTX's own sessions, metered and re-checked here (worker 0: one supervisor).
        self.mediamtx: Any = None
        if self.tenancy is not None and config.mediamtx.api_url and worker == 0:
            from gateway.mediamtx.client import MediaMtxApi
            from gateway.mediamtx.supervisor import MediaMtxSupervisor

            mc = config.mediamtx
            self.mediamtx = MediaMtxSupervisor(
                MediaMtxApi(
                    mc.api_url, username=mc.username, password=mc.password, timeout=mc.timeout
                ),
                self.tenancy.policy,
                sink=self.metering.sink if self.metering is not None else None,
                interval=mc.interval,
            )
        # PTZ brokering, on worker 0 only: each camera's lock has one owner in the process.
        self.ptz: Any = None
        if self.tenancy is not None and worker == 0:
            from gateway.ptz.service import PtzService

            self.ptz = PtzService.from_config(config, self.tenancy, self.control.core.refusals)
            if self.cluster is not None:
                # One camera's lock across the nodes (issue #15.5), same arbiter settings.
                from gateway.cluster.ptz_locks import RedisLockStore

                local = self.ptz.locks
                self.ptz.locks = RedisLockStore(
                    self.cluster.redis, self.cluster.keys, lambda c: local.arbiter(c).settings
                )
        # Recording (worker 0 owns every camera's media): cameras with record = true.
        self.recorder: Any = None
        if worker == 0 and upstream_unix is None and any(c.record for c in config.cameras):
            from gateway.recording.service import Recorder

            self.recorder = Recorder(
                config,
                self.hub,
                audit=self.tenancy.audit if self.tenancy is not None else None,
                store=self.tenancy.store if self.tenancy is not None else None,
                # In a cluster only the holder of a camera's ingest lease records it.
                holds=self.cluster.ownership.holds if self.cluster is not None else None,
            )
            if self.cluster is not None:
                self.cluster.ownership.watchers.append(self.recorder.owned)
                if not config.recording.dir or not config.export.dir:
                    log.warning(
                        "cluster node %s records into its own data_dir: set recording.dir and"
                        " export.dir to storage every node shares, or other nodes cannot play"
                        " back what this one records (docs/deployment.md)",
                        config.node,
                    )
        # Evidence exports, locks and subject access copies, on worker 0 only (one sweeper).
        self.exports: Any = None
        if self.tenancy is not None and worker == 0:
            from gateway.recording.exports import ExportService
            from gateway.recording.index import RecordingIndex

            self.exports = ExportService(
                config,
                self.tenancy,
                RecordingIndex(self.tenancy.db, config.recording_dir),
                usage=self.metering.sink if self.metering is not None else None,
            )
        # Playback of the recordings over RTSP (the camera's own URL) and HTTP (/list, /get),
        # wherever this process can read the recording index and files.
        if any(c.record for c in config.cameras) and (
            self.recorder is not None or self.tenancy is not None
        ):
            self._start_playback(config)
        self.sar: Any = None  # subject access requests, over the exports and the index
        if self.exports is not None and self.tenancy is not None:
            from gateway.sar.service import SarService

            self.sar = SarService(self.tenancy, self.exports, self.exports.index)
        # Counters other workers report (primary only), merged into /metrics.
        self.peer_stats: Callable[[], list[dict[str, Any]]] = list
        self.ingests: dict[str, PullIngest] = {}
        self._ingest_tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping_ingests: set[asyncio.Task[None]] = set()
        self._rtsp_socket = rtsp_socket
        self._checkpointer: asyncio.Task[None] | None = None
        self.grpc: Any = None  # grpc.aio.Server when the control API runs here
        # Event-loop lag and task count, for /metrics (a soak's growth and stall figures).
        self.loopwatch = LoopWatch()
        self.memory = MemoryPolicy(config.memory)  # glibc's freed memory back to the system

    def _watch_stalls(self) -> None:
        """Each camera's path (and sub stream) reports stalls; worker 0 only, since the other
        workers' paths relay its own."""
        if self.upstream_unix is not None:
            return
        for cam in self.config.cameras:
            self.hub.path(cam.id).on_stall = self._on_stall
            if cam.sub_source:
                self.hub.path(f"{cam.id}/sub").on_stall = self._on_stall

    def _on_stall(self, stream: PathStream, event: StallEvent) -> None:
        camera = stream.name.partition("/")[0]
        if event.kind is Stall.STARTED:
            log.warning(
                "path %s: no media for %.1fs: camera stalled (readers stay connected)",
                stream.name,
                event.silence,
            )
        else:
            log.warning("path %s: media again after %.1fs stalled", stream.name, event.silence)
        if self.tenancy is not None:
            self.tenancy.submit(
                functools.partial(
                    self.tenancy.audit.append,
                    "camera_outage",
                    camera=camera,
                    outcome=event.kind.value,
                    detail={"path": stream.name, "silence_s": round(event.silence, 1)},
                ),
                what="audit a camera outage",
            )

    def _pull_sources(self) -> Iterable[tuple[str, str, bool]]:
        if self.upstream_unix is not None:
            for cam in self.config.cameras:
                yield cam.id, f"rtsp://127.0.0.1/{cam.id}", True
                if cam.sub_source:
                    yield f"{cam.id}/sub", f"rtsp://127.0.0.1/{cam.id}/sub", True
            return
        for cam in self.config.cameras:
            if not cam.is_push:
                yield cam.id, cam.source, cam.on_demand
            if cam.sub_source:
                yield f"{cam.id}/sub", cam.sub_source, cam.on_demand

    async def start(self) -> None:
        self._watch_stalls()
        self.loopwatch.start()
        self.memory.start()
        if self.metering is not None:
            self.metering.start()  # first: it drains any spool a crash left behind
        if self.tenancy is not None:
            self.tenancy.start()
        await self.rtsp.start(self._rtsp_socket)
        if self.webrtc is not None:
            await self.webrtc.start()
        if self.ptz is not None:
            await self.ptz.start()
        if self.exports is not None:
            await self.exports.start()
        if self.tenancy is not None:
            self._checkpointer = asyncio.get_running_loop().create_task(
                self._checkpoint_audit(), name="audit-checkpoints"
            )
            if self.worker == 0 and self.config.grpc.port:
                from gateway.grpc.server import start_grpc
                from gateway.tls import grpc_server_credentials

                gc = self.config.grpc
                self.grpc = await start_grpc(
                    self.tenancy,
                    gc.host,
                    gc.port,
                    platform_tenant=gc.platform_tenant,
                    service=self.control,
                    extra_handlers=self._ptz_handlers(),
                    credentials=(
                        grpc_server_credentials(gc.tls_cert, gc.tls_key, gc.tls_client_ca)
                        if gc.tls_cert
                        else None
                    ),
                )
        if self.upstream_unix is None:
            warn_unverified(self.config.cameras)
        for path, url, on_demand in self._pull_sources():
            cam = self.config.camera(path.partition("/")[0])
            assert cam is not None
            if self.upstream_unix is not None:
                self.ingests[path] = PullIngest(
                    self.hub.path(path),
                    url,
                    unix_path=self.upstream_unix,
                    backoff_initial=0.1,
                    backoff_max=2.0,
                )
            else:
                ssl_context, server_name = pull_tls(cam, url)  # rtsps:// is always TLS
                self.ingests[path] = PullIngest(
                    self.hub.path(path),
                    url,
                    transport=cam.transport,
                    username=cam.username,
                    password=cam.password,
                    ssl_context=ssl_context,
                    server_hostname=server_name,
                    reorder_window=self.config.ingest.reorder_window,
                    reorder_packets=self.config.ingest.reorder_packets,
                )
            # A recorded camera is pulled all the time, not only while watched.
            recorded = cam.record and path == cam.id and self.recorder is not None
            if (not on_demand or recorded) and self.cluster is None:
                self._start_ingest(path)
        if self.mediamtx is not None:
            self.mediamtx.start()
        if self.cluster is not None:
            await self.cluster.start()  # it starts the pulls of the cameras this node owns
        if self.recorder is not None:
            await self.recorder.start()

    def _ptz_handlers(self) -> list[Any]:
        if self.ptz is None:
            return []
        from gateway.grpc.ptz import ptz_handlers

        return ptz_handlers(self.ptz)

    async def _checkpoint_audit(self) -> None:
        """Sign a checkpoint of the audit log every few seconds when entries arrived, so a
        quiet log is still covered by a signature soon after its last entry."""
        from tenants.db import DatabaseUnavailable

        assert self.tenancy is not None
        down = False
        while True:
            await asyncio.sleep(5.0)
            try:
                await asyncio.to_thread(self.tenancy.audit.maybe_checkpoint)
            except DatabaseUnavailable as exc:  # /healthz says so; one line, not a traceback
                if not down:
                    log.warning("audit checkpoint waits for the database: %s", exc)
                down = True
                continue
            except Exception:
                log.exception("audit checkpoint failed")
            down = False

    def _start_ingest(self, path: str) -> None:
        task = self._ingest_tasks.get(path)
        if task is None or task.done():
            self._ingest_tasks[path] = asyncio.get_running_loop().create_task(
                self.ingests[path].run(), name=f"ingest:{path}"
            )

    def start_on_demand(self, path: str) -> None:
        """Start pulling ``path`` now if it is pulled only while watched (a still, a viewer)."""
        self._start_on_demand(path)

    def _start_on_demand(self, path: str) -> None:
        if self.cluster is not None:
            self.cluster.on_demand(path)  # pulled here if this node gets it, else relayed
        elif path in self.ingests:
            self._start_ingest(path)

    def _stop_ingest(self, path: str) -> None:
        """Stop pulling ``path`` (another node owns it now); awaited by :meth:`stop`."""
        task = self._ingest_tasks.pop(path, None)
        if task is not None and not task.done():
            task.cancel()
            self._stopping_ingests.add(task)
            task.add_done_callback(self._stopping_ingests.discard)

    def _drop_publisher(self, path: str) -> None:
        """End the local publisher of ``path``: it publishes to another node now."""
        stream = self.hub.get(path)
        source = stream.source_id if stream is not None else None
        session = self.rtsp.sessions.get((source or "").removeprefix("push:"))
        if session is not None:
            self.rtsp.end_session(session, "the camera's publisher moved to another node")
            session.conn.close()

    def _start_playback(self, config: Config) -> None:
        from gateway.playback.rtsp import RtspPlayback
        from gateway.playback.service import PlaybackService
        from gateway.recording.index import RecordingIndex

        if self.recorder is not None:
            index = self.recorder.index
        else:
            assert self.tenancy is not None
            index = RecordingIndex(self.tenancy.db, config.recording_dir)
        self.playback = PlaybackService(
            index,
            tenancy=self.tenancy,
            live=self.live,
            meter=self.metering.meter if self.metering is not None else None,
        )
        RtspPlayback(self.rtsp, self.playback)

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(1.0)
        if self.mediamtx is not None:
            await self.mediamtx.stop()  # its last usage reports, before metering stops
            await self.mediamtx.api.aclose()
        if self.cluster is not None:
            await self.cluster.stop()
        await cancel_and_wait(
            *self._ingest_tasks.values(), *self._stopping_ingests, self._checkpointer
        )
        self._ingest_tasks.clear()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.webrtc is not None:
            await self.webrtc.stop()
        await self.rtsp.stop()  # its playback sessions with it
        if self.playback is not None:
            await self.playback.stop()
        if self.ptz is not None:
            await self.ptz.stop()
        if self.exports is not None:
            await self.exports.stop()  # before metering: a finishing export is billed
        if self.access is not None:
            await self.access.stop()
        if self.metering is not None:
            await self.metering.stop()
        if self.variants is not None:
            await self.variants.stop()
        if self.tenancy is not None:
            await self.tenancy.close()
            closing = getattr(self.tenancy.caps.shared, "close", None)
            if self.cluster is not None and closing is not None:
                closing()  # the Redis client of the cluster's cap slots
        await self.loopwatch.stop()
        await self.memory.stop()
