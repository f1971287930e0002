"""The recorder: one per gateway process (worker 0), owned by :class:`gateway.core.Gateway`.

For every camera with ``record = true`` it attaches one hub reader (a packet sink) and hands
each access unit, as the hub delivered it, to a writer thread. The event loop does nothing else
per unit: a size, a clock read and an append under a lock. The writer threads (``recording.
writer_threads``, cameras spread over them) depacketize, mux and index
(:mod:`gateway.recording.writer`). Units waiting for them are bounded (``recording.
queue_bytes``, all cameras together): beyond it units are dropped until the next keyframe and
the loss becomes a ``writer_overrun`` gap. Recording never slows the camera or live readers.

It also owns, as tasks it cancels and awaits at stop:

- the housekeeping: free space checked every ``recording.check_interval`` (below
  ``low_water`` the oldest unlocked segments go; below ``critical`` recording stops with one
  alert line and ``feedgate_recording_disk_state`` 2 until space returns) and retention swept
  every ``recording.sweep_interval`` (:mod:`gateway.recording.retention`);
- the watch: quiet sources end their runs, kicked readers are attached again.

At start it reconciles the index with the files (:mod:`gateway.recording.reconcile`).

In a cluster (``holds`` given: :meth:`gateway.cluster.ownership.Ownership.holds`) a camera is
recorded only by the node holding its ingest lease, so footage is recorded once however many
nodes carry the stream. :meth:`Recorder.owned` is the ownership's watcher: on taking a camera
the recorder repairs what the camera's previous writer left
(:func:`~gateway.recording.reconcile.reconcile_camera`), then records, after a
``node_failover`` gap if another node recorded it last; on losing it the recorder detaches at
once and seals the segment. Between a lease lapsing and the ownership noticing (a paused node
waking), units are refused by ``holds``. The index is shared (the tenancy database); the files
are on ``recording.dir``, which must be storage every node shares (docs/deployment.md).

Evidence locks for the export engineer's API and CLI: ``await recorder.lock(...)``,
``await recorder.release(...)``, ``await recorder.locks(...)`` (audited; see
:mod:`gateway.recording.locks` for the same without a running gateway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from gateway.config import CameraConfig, Config
from gateway.protocols.rtp import RtpError, rtp_header
from gateway.recording import locks as lock_ops
from gateway.recording.audio import AudioFormat
from gateway.recording.codecs import video_track
from gateway.recording.disk import Pressure, Space, disk_space, parse_mark
from gateway.recording.index import EvidenceLock, GapReason, RecordingIndex
from gateway.recording.reconcile import Reconciliation, reconcile, reconcile_camera
from gateway.recording.retention import Deletion, Housekeeper, Retention
from gateway.recording.writer import CameraWriter, Unit, WriterCounters
from gateway.recording.writer_thread import WriterThread
from gateway.stream.hub import PathStream, Reader, StreamHub
from gateway.stream.tracks import Track
from gateway.tasks import cancel_and_wait
from tenants.audit import AuditAction, AuditLog
from tenants.db import Database
from tenants.store import NotFound, TenantStore

log = logging.getLogger(__name__)

__all__ = ["Recorder"]

WATCH_INTERVAL = 0.5


@dataclass
class _Camera:
    """The loop's side of one recorded camera."""

    config: CameraConfig
    thread: WriterThread
    reader: Reader | None = None
    # Units are being dropped until the next keyframe, and the gap's reason (None: they are not).
    dropping: GapReason | None = None
    replay: list[Unit] | None = None  # the GOP cache being replayed to a new reader
    units_dropped: int = 0
    # Why the camera's next recording follows a gap: this process started, the disk filled...
    resume_reason: GapReason = GapReason.GATEWAY_RESTART
    # In a cluster: this node holds the camera's lease (owned) and has repaired what its last
    # writer left (active). Outside one, always both.
    owned: bool = True
    active: bool = True


@dataclass
class RecorderState:
    pressure: Pressure = Pressure.OK
    space: Space | None = None
    stopped_for_disk: bool = False
    reconciliation: Reconciliation | None = None
    sweeps: int = 0
    errors: int = 0
    last_sweep: float = 0.0
    disk_stops: int = 0  # times recording stopped at the critical mark


class Recorder:
    """Records the configured cameras of one process."""

    def __init__(
        self,
        config: Config,
        hub: StreamHub,
        *,
        audit: AuditLog | None = None,
        store: TenantStore | None = None,
        platform_tenant: str = "",
        free_space: Callable[[], Space] | None = None,
        clock: Callable[[], float] = time.time,
        holds: Callable[[str], bool] | None = None,
    ) -> None:
        rc = config.recording
        self.config = config
        self.hub = hub
        self.audit = audit
        self.store = store
        self.platform_tenant = platform_tenant or config.grpc.platform_tenant
        self.clock = clock
        self.holds = holds  # a cluster's "is this camera's ingest lease ours now?"
        self.root = config.recording_dir
        self.node = config.node
        self.db = Database.open(config.database_url)
        self.index = RecordingIndex(self.db, self.root)
        self.free_space = free_space or partial(disk_space, self.root)
        self.housekeeper = Housekeeper(
            self.index,
            self.retention,
            on_delete=self._audit_deletion,
            low_water=parse_mark(rc.low_water),
            critical=parse_mark(rc.critical),
            free_space=self.free_space,
        )
        self.state = RecorderState()
        n = min(rc.writer_threads, max(1, sum(1 for c in config.cameras if c.record)))
        self._threads = [
            WriterThread(f"recorder-{i}", max(1 << 20, rc.queue_bytes // n), self._make_writer)
            for i in range(n)
        ]
        self.cameras: dict[str, _Camera] = {}
        for i, cam in enumerate(c for c in config.cameras if c.record):
            clustered = holds is not None  # nothing is ours until the ownership says so
            self.cameras[cam.id] = _Camera(
                cam, self._threads[i % n], owned=not clustered, active=not clustered
            )
        self._tasks: list[asyncio.Task[None]] = []
        self._takeovers: set[asyncio.Task[None]] = set()
        self._started = False
        self._applied: dict[str, Retention] = {}

    # -- life

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # A cluster node adopts no orphan files now: another node may be writing them.
        self.state.reconciliation = await asyncio.to_thread(
            partial(reconcile, self.index, self.node, orphans=self.holds is None)
        )
        rec = self.state.reconciliation
        if rec.segments_closed or rec.orphans_indexed or rec.files_removed:
            log.info(
                "recording: after the last run, closed %d segment(s), cut %d torn byte(s),"
                " dropped %d and added %d fragment row(s), adopted %d file(s), removed %d",
                rec.segments_closed, rec.bytes_truncated, rec.fragments_dropped,
                rec.fragments_added, rec.orphans_indexed, rec.files_removed,
            )  # fmt: skip
        for camera in self.cameras:
            await asyncio.to_thread(self.retention, camera)
        for thread in self._threads:
            thread.start()
        self._started = True
        await self.check_disk()
        for cam in self.cameras.values():
            if cam.active:
                self._attach(cam)
            elif cam.owned:  # taken before the recorder started
                self._take_over(cam)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._watch(), name="recording-watch"),
            loop.create_task(self._housekeeping(), name="recording-housekeeping"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks, *self._takeovers)
        self._tasks = []
        for cam in self.cameras.values():
            self._detach(cam)
        if self._started:
            await asyncio.gather(*(asyncio.to_thread(t.stop) for t in self._threads))
            self._started = False
        await asyncio.to_thread(self.db.close)

    # -- the loop's side of each camera

    # -- a cluster's ownership

    def owned(self, camera: str, owned: bool) -> None:
        """The cluster's ownership watcher: this node took (True) or lost (False) ``camera``'s
        ingest lease. Called on the event loop."""
        cam = self.cameras.get(camera)
        if cam is None or cam.owned == owned:
            return
        cam.owned = owned
        if owned:
            log.info("recording %s: this node records it now", camera)
            if self._started:
                self._take_over(cam)
            return
        cam.active = False
        self._detach(cam)
        cam.dropping = None
        cam.resume_reason = GapReason.NODE_FAILOVER
        if self._started:
            cam.thread.post("stop", camera, GapReason.NODE_FAILOVER)  # sealed after its units
        log.info("recording %s: another node records it now; segment sealed", camera)

    def _take_over(self, cam: _Camera) -> None:
        task = asyncio.get_running_loop().create_task(
            self._repair_then_record(cam), name=f"recording-takeover:{cam.config.id}"
        )
        self._takeovers.add(task)
        task.add_done_callback(self._takeovers.discard)

    async def _repair_then_record(self, cam: _Camera) -> None:
        camera = cam.config.id
        try:
            rec = await asyncio.to_thread(reconcile_camera, self.index, camera, self.node)
        except Exception:
            self.state.errors += 1
            log.exception("recording %s: repairing the last writer's segments failed", camera)
        else:
            if rec.segments_closed or rec.orphans_indexed or rec.problems:
                log.info(
                    "recording %s: after its last writer, closed %d segment(s), cut %d torn"
                    " byte(s), adopted %d file(s)%s", camera, rec.segments_closed,
                    rec.bytes_truncated, rec.orphans_indexed,
                    "".join(f"; {p}" for p in rec.problems),
                )  # fmt: skip
        if cam.owned and not cam.active:
            cam.active = True
            self._attach(cam)

    # -- the loop's side of each camera

    def _attach(self, cam: _Camera) -> None:
        if cam.reader is not None or self.state.stopped_for_disk or not cam.active:
            return
        stream = self.hub.path(cam.config.id)
        reader = Reader(
            channels=tuple(range(0, 16, 2)),
            sink=partial(self._sink, cam, stream),
            on_kick=partial(self._kicked, cam),
        )
        cam.reader = reader
        cam.replay = []
        stream.add_reader(reader)  # the cached GOP arrives at once, into cam.replay
        replay, cam.replay = cam.replay, None
        _backdate(replay, self.clock())
        for unit in replay:
            self._offer(cam, unit)

    def _detach(self, cam: _Camera) -> None:
        reader, cam.reader = cam.reader, None
        if reader is not None:
            stream = self.hub.get(cam.config.id)
            if stream is not None:
                stream.remove_reader(reader)

    def _kicked(self, cam: _Camera, reason: str) -> None:
        cam.reader = None  # the watch attaches a new reader, with the new tracks
        log.info("recording %s: reader ended (%s)", cam.config.id, reason)

    def _sink(
        self, cam: _Camera, stream: PathStream, items: list[tuple[int, bytes, bool]], key: bool
    ) -> tuple[int, int]:
        size = 0
        for _t, packet, _r in items:
            size += len(packet)
        if self.holds is not None and not self.holds(cam.config.id):
            # The lease lapsed and the ownership has not said so yet (a paused node waking):
            # another node may be recording this already.
            cam.units_dropped += 1
            cam.dropping = GapReason.NODE_FAILOVER
            return len(items), size
        unit = Unit(items, key, self.clock(), stream.source_id, size, stream.tracks)
        if cam.replay is not None:
            cam.replay.append(unit)
        else:
            self._offer(cam, unit)
        return len(items), size

    def _offer(self, cam: _Camera, unit: Unit) -> None:
        if cam.dropping is not None and not unit.is_key:
            cam.units_dropped += 1
            return
        if not cam.thread.offer(cam.config.id, unit, cam.dropping):
            cam.units_dropped += 1
            if cam.dropping is None:
                cam.dropping = GapReason.WRITER_OVERRUN
                log.warning("recording %s: writers behind, dropping to a gap", cam.config.id)
            return
        cam.dropping = None

    # -- the writers' side

    def _make_writer(
        self, camera: str, track: Track, audio: tuple[Track, AudioFormat] | None = None
    ) -> CameraWriter:
        state = self.cameras[camera]
        cam = state.config
        reason, state.resume_reason = state.resume_reason, GapReason.CAMERA_OUTAGE
        if self.holds is not None and reason is GapReason.GATEWAY_RESTART:
            latest = self.index.latest(camera)
            if latest is not None and latest.node != self.node:
                reason = GapReason.NODE_FAILOVER  # another node recorded it last
        return CameraWriter(
            camera,
            self.root,
            self.index,
            track,
            segment_seconds=cam.segment_seconds or self.config.recording.segment_seconds,
            outage_after=self.config.recording.outage_after,
            node=self.node,
            last_end=self.index.last_end(camera),
            resume_reason=reason,
            audio=audio,
        )

    # -- retention, disk

    def retention_cached(self, camera: str) -> Retention | None:
        """The retention last applied to the camera (by a sweep), without asking the database."""
        return self._applied.get(camera)

    def retention(self, camera: str) -> Retention:
        """The retention applied to a camera's footage (see gateway.recording.retention)."""
        applied = self._retention(camera)
        self._applied[camera] = applied
        return applied

    def _retention(self, camera: str) -> Retention:
        rc = self.config.recording
        cam = self.config.camera(camera)
        if cam is not None and cam.record_purpose in rc.purposes:
            return Retention(rc.purposes[cam.record_purpose], f"purpose:{cam.record_purpose}")
        if self.store is not None:
            try:
                return Retention(self.store.get_camera(camera).retention_days, "register")
            except NotFound:
                pass
        return Retention(rc.retention_days, "default")

    def _owner(self, camera: str) -> str:
        if self.store is not None:
            try:
                return self.store.get_camera(camera).owner_tenant
            except NotFound:
                pass
        return self.platform_tenant

    def _audit_deletion(self, d: Deletion) -> None:
        seg = d.segment
        log.info("recording: deleted %s (%s)", seg.id, d.reason.replace("_", " "))
        if self.audit is None:
            return
        detail: dict[str, Any] = {
            "segment": seg.id,
            "start": seg.start.isoformat(),
            "end": seg.end.isoformat(),
            "bytes": seg.bytes,
        }
        if d.retention is not None:
            detail["retention_days"] = d.retention.days
            detail["retention_source"] = d.retention.source
        self.audit.append(
            AuditAction.RECORDING_DELETED,
            tenant=self._owner(seg.camera),
            camera=seg.camera,
            purpose=d.reason,
            detail=detail,
        )

    async def check_disk(self) -> Pressure:
        """Measure free space; delete below low water; stop or resume recording at critical."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        relief = await asyncio.to_thread(self.housekeeper.relieve, now)
        self.state.pressure, self.state.space = relief.pressure, relief.space
        if relief.pressure is Pressure.CRITICAL and not self.state.stopped_for_disk:
            self.state.stopped_for_disk = True
            self.state.disk_stops += 1
            log.error(
                "ALERT recording stopped: %d bytes free on %s, below the critical mark %s;"
                " nothing more can be deleted (the rest is locked or being written)",
                relief.space.free, self.root, self.config.recording.critical,
            )  # fmt: skip
            for cam in self.cameras.values():
                self._detach(cam)
                cam.resume_reason = GapReason.DISK_FULL
                cam.thread.post("stop", cam.config.id, GapReason.DISK_FULL)
        elif relief.pressure is not Pressure.CRITICAL and self.state.stopped_for_disk:
            self.state.stopped_for_disk = False
            log.warning("recording resumed: %d bytes free on %s", relief.space.free, self.root)
            for cam in self.cameras.values():
                self._attach(cam)
        return relief.pressure

    async def sweep(self) -> int:
        """Delete what retention no longer allows; return how many segments went."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        done = await asyncio.to_thread(self.housekeeper.sweep, now)
        self.state.sweeps += 1
        return len(done)

    async def _housekeeping(self) -> None:
        rc = self.config.recording
        next_sweep = 0.0
        while True:
            try:
                await self.check_disk()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + rc.sweep_interval
                    await self.sweep()
            except Exception:
                self.state.errors += 1
                log.exception("recording: housekeeping failed")
            await asyncio.sleep(rc.check_interval)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = self.clock()
            for thread in self._threads:
                thread.post("idle", arg=now)
            for cam in self.cameras.values():
                if cam.reader is None and cam.active:
                    self._attach(cam)

    # -- evidence locks

    async def lock(
        self,
        camera: str,
        start: datetime,
        end: datetime,
        *,
        reason: str,
        tenant: str,
        principal: str,
        expires: datetime,
    ) -> EvidenceLock:
        return await asyncio.to_thread(
            lock_ops.lock, self.index, self.audit, camera, start, end, reason=reason,
            tenant=tenant, principal=principal, expires=expires,
        )  # fmt: skip

    async def release(
        self, lock_id: str, *, tenant: str, principal: str, reason: str = ""
    ) -> EvidenceLock | None:
        return await asyncio.to_thread(
            lock_ops.release, self.index, self.audit, lock_id, tenant=tenant,
            principal=principal, reason=reason,
        )  # fmt: skip

    async def locks(
        self, camera: str | None = None, *, active_only: bool = True
    ) -> list[EvidenceLock]:
        now = datetime.now(UTC) if active_only else None
        return await asyncio.to_thread(self.index.locks, camera, active_at=now)

    # -- figures

    def counters(self) -> dict[str, WriterCounters]:
        """Writer counters per camera (read at scrape time)."""
        out: dict[str, WriterCounters] = {}
        for thread in self._threads:
            out.update(thread.counters())
        return out

    def queued_bytes(self) -> int:
        return sum(t.queued_bytes for t in self._threads)

    def dropped(self) -> dict[str, int]:
        return {cid: cam.units_dropped for cid, cam in self.cameras.items()}

    @property
    def recorded(self) -> list[str]:
        return list(self.cameras)


def _backdate(units: list[Unit], now: float) -> None:
    """A GOP replayed to a new reader arrives at once: date each unit back from the last by its
    RTP time, so the recording starts when the keyframe was captured, not when it was read."""
    if not units:
        return
    track = video_track(units[-1].tracks)
    if track is None:
        return
    stamps = [_rtp_time(u, track.index) for u in units]
    last = next((s for s in reversed(stamps) if s is not None), None)
    if last is None:
        return
    for unit, ts in zip(units, stamps, strict=True):
        if ts is not None:
            unit.wall = now - ((last - ts) & 0xFFFFFFFF) / 90000


def _rtp_time(unit: Unit, video: int) -> int | None:
    for track, packet, is_rtcp in unit.items:
        if track == video and not is_rtcp:
            try:
                return rtp_header(packet)[3]
            except RtpError:
                return None
    return None


def recorded_files(root: Path) -> int:
    """How many segment files are under ``root`` (for tests and tools)."""
    return sum(1 for _ in root.rglob("*.mp4"))
