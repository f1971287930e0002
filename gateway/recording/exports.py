"""The one export service: REST ``/v1/exports``, the CLI (over REST) and subject access copies
all ask here, so they make the same decisions.

An export goes: the tenant policy's one decision (action ``export`` on the camera: the grant's
export right and an investigator's or admin's role; the masks that apply to the requester) →
a purpose or incident reference, a range within ``export.max_duration`` that has recordings →
a job row (``queued``) → a cut in a worker thread when one of ``export.max_running`` slots is
free (``running``, with its progress) → the MP4 and its signed manifest under ``export.dir``
(``done``) → one ``export`` audit entry (the disclosure: date, recipient person and tenant,
purpose) and one ``exports`` usage event for billing. A cancel stops the cut at its next
fragment (``cancelled``, nothing on disk). Refusals are audited through the refusal log.

Exports are kept for ``export.retention_days``; :meth:`ExportService.sweep` (run every
``export.sweep_interval`` by the service's own task) deletes the files of those past it and
audits each deletion (``export_deleted``).

Evidence locks over the recording index (:mod:`gateway.recording.index`) are taken and
released here too (through :mod:`gateway.recording.locks`: ``evidence_lock`` /
``evidence_release`` audit entries), under the same
``export`` decision on the camera.

The service owns its tasks (the sweeper, each running cut) and cancels and awaits them on
:meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from billing.model import UsageEvent, UsageKind, UsageSink
from gateway.masking.zones import Zone
from gateway.recording import locks as lock_ops
from gateway.recording.export_cut import Cancelled, CutError, CutResult, TimedZone, cut
from gateway.recording.export_files import files_of, remove_files, remove_parts, unreachable
from gateway.recording.export_manifest import (
    ExportManifest,
    MaskApplied,
    Redaction,
    Requester,
    canonical_bytes,
    file_digest,
    sign_manifest,
)
from gateway.recording.export_model import MAX_TEXT as MAX_TEXT
from gateway.recording.export_model import ExportError as ExportError
from gateway.recording.export_model import RedactionZone as RedactionZone
from gateway.recording.export_model import text as _text
from gateway.recording.export_retention import sweep_expired
from gateway.recording.export_store import (
    STOPPED,
    UNFINISHED,
    ExportJob,
    ExportState,
    ExportStore,
)
from gateway.recording.index import EvidenceLock, RecordingIndex
from gateway.tasks import cancel_and_wait, raise_if_cancelling
from tenants.audit import AuditAction
from tenants.model import Role
from tenants.policy import AccessRequest, Action, Decision

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.tenancy import Tenancy

log = logging.getLogger(__name__)

__all__ = ["ExportError", "ExportService", "RedactionZone"]

REPORT_INTERVAL = 1.0  # seconds between a node's progress reports (and cancel checks)
CROSS_NODE_WAIT = 10.0  # how long a cancel through another node waits for the job to end
# Who may see every tenant's exports and locks (oversight): the platform's admins and auditors.
_OVERSIGHT = frozenset({Role.ADMIN, Role.AUDITOR})


@dataclass
class _Running:
    job: ExportJob
    cancel: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None
    progress: float = 0.0


class ExportService:
    def __init__(
        self,
        config: Config,
        tenancy: Tenancy,
        index: RecordingIndex,
        *,
        usage: UsageSink | None = None,
    ) -> None:
        self.config = config.export
        self.node = config.node
        self.tenancy = tenancy
        self.index = index
        self.usage = usage
        self.dir = Path(self.config.dir) if self.config.dir else Path(config.data_dir) / "exports"
        self.store = ExportStore(tenancy.db)
        self._running: dict[str, _Running] = {}
        self._slots = asyncio.Semaphore(self.config.max_running)
        self._sweeper: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._stopping = False
        self.deleted = 0  # exports deleted by retention since start

    # ---- lifetime ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        failed = await self.tenancy.blocking(
            self.store.fail_unfinished, self.node, datetime.now(UTC)
        )
        if failed:
            log.warning("%d export(s) unfinished when the gateway stopped: failed", len(failed))
        for export_id in failed:  # a cut may have finished before its row said so
            self._remove_files(export_id)
        await self.tenancy.blocking(remove_parts, self.dir, self.store)
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(self._sweep_loop(), name="exports")
        self._reporter = loop.create_task(self._report_loop(), name="exports-progress")

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._sweeper, self._reporter)
        for run in list(self._running.values()):
            run.cancel.set()
        for run in list(self._running.values()):
            await cancel_and_wait(run.task)

    # ---- who is asking -------------------------------------------------------------------------

    async def decide(
        self,
        token: str | None,
        *,
        camera: str | None,
        purpose: str | None = None,
        unmasked: bool = False,
        peer: str = "",
        via: str = "http",
        what: str = "export",
        since: datetime | None = None,
    ) -> Decision:
        """The policy's decision for an export action on ``camera`` (or, with no camera, who
        is asking); ``since``: the oldest footage asked for, held to the grant's maximum
        playback age. A refusal is audited and raised."""
        action = Action.EXPORT if camera is not None else Action.API
        age = None if since is None else max(0.0, (datetime.now(UTC) - since).total_seconds())
        decision = await self.tenancy.policy.authorize(
            AccessRequest(
                action, via, camera=camera, token=token, purpose=purpose, unmasked=unmasked,
                peer=peer, playback_age_s=age,
            )
        )  # fmt: skip
        if not decision.allow:
            await self.tenancy.blocking(
                self.tenancy.refusals.decision, decision, protocol=via, action=what, peer=peer,
                camera=camera, purpose=purpose,
            )  # fmt: skip
            code = {401: "unauthenticated", 404: "not_found"}.get(decision.status, "forbidden")
            raise ExportError(decision.status, code, decision.reason)
        return decision

    def _sees_all(self, d: Decision) -> bool:
        return d.tenant == self.tenancy.policy.platform_tenant and bool(d.roles & _OVERSIGHT)

    def _visible(self, d: Decision, job: ExportJob | None) -> ExportJob:
        if job is None or not (job.tenant == d.tenant or self._sees_all(d)):
            raise ExportError(404, "not_found", "no such export")
        run = self._running.get(job.id)
        return job.with_(progress=run.progress) if run is not None else job

    # ---- exports -------------------------------------------------------------------------------

    async def create(
        self,
        token: str | None,
        camera: str,
        start: datetime,
        end: datetime,
        *,
        purpose: str | None = None,
        incident_ref: str | None = None,
        unmasked: bool = False,
        peer: str = "",
        via: str = "http",
        redactions: Sequence[RedactionZone] = (),
        sar_id: str | None = None,
    ) -> ExportJob:
        purpose, incident_ref = _text("purpose", purpose), _text("incident_ref", incident_ref)
        decision = await self.decide(
            token, camera=camera, purpose=purpose or incident_ref, unmasked=unmasked,
            peer=peer, via=via, since=start,
        )  # fmt: skip
        return await self.submit(
            decision, camera, start, end, purpose=purpose, incident_ref=incident_ref,
            redactions=redactions, sar_id=sar_id,
        )  # fmt: skip

    async def submit(
        self,
        decision: Decision,
        camera: str,
        start: datetime,
        end: datetime,
        *,
        purpose: str | None,
        incident_ref: str | None,
        redactions: Sequence[RedactionZone] = (),
        sar_id: str | None = None,
    ) -> ExportJob:
        """Queue an export the policy allowed (``decision``: action export on ``camera``)."""
        if purpose is None and incident_ref is None:
            raise ExportError(400, "purpose_required", "an export needs a purpose or incident_ref")
        if start.tzinfo is None or end.tzinfo is None:
            raise ExportError(400, "invalid_argument", "start and end must carry a UTC offset")
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        now = datetime.now(UTC)
        if end <= start:
            raise ExportError(400, "invalid_argument", "end must be after start")
        if (end - start).total_seconds() > self.config.max_duration:
            raise ExportError(
                400, "invalid_argument", f"at most {self.config.max_duration:.0f} s per export"
            )
        if start >= now:
            raise ExportError(400, "invalid_argument", "start is in the future")
        spans = await asyncio.to_thread(self.index.spans, camera, start, end)
        if not spans:
            raise ExportError(422, "no_recording", f"no recording of {camera} in that range")
        assert decision.tenant is not None and decision.principal is not None
        pending = await self.tenancy.blocking(self.store.pending, decision.tenant)
        if pending >= self.config.max_pending_per_tenant:
            raise ExportError(429, "too_many_exports", f"{pending} exports already waiting")
        zones = [TimedZone(Zone(z.id, z.points)) for z in decision.mask_zones]
        zones += [TimedZone(Zone(r.id, r.points), r.start, r.end) for r in redactions]
        job = ExportJob(
            id=f"{'sar' if sar_id else 'exp'}-{secrets.token_hex(8)}",
            kind="sar_copy" if sar_id else "export",
            camera=camera,
            tenant=decision.tenant,
            principal=decision.principal,
            start=start,
            end=min(end, now),
            purpose=purpose,
            incident_ref=incident_ref,
            state=ExportState.QUEUED,
            created=now,
            expires=now + timedelta(days=self.config.retention_days),
            masks=tuple(z.zone.id for z in zones),
            reencoded=bool(zones),
            sar_id=sar_id,
            node=self.node,
        )
        await self.tenancy.blocking(self.store.add, job)
        run = self._running[job.id] = _Running(job)
        run.task = asyncio.get_running_loop().create_task(
            self._run(run, decision, zones, redactions), name=f"export-{job.id}"
        )
        return job

    async def _run(
        self,
        run: _Running,
        decision: Decision,
        zones: list[TimedZone],
        redactions: Sequence[RedactionZone],
    ) -> None:
        job = run.job
        media = self.dir / f"{job.id}.mp4"
        try:
            async with self._slots:
                if run.cancel.is_set():
                    raise Cancelled()
                running = job.with_(state=ExportState.RUNNING)
                await self.tenancy.blocking(self.store.update, running, only_from=UNFINISHED)
                run.job = running

                def progress(f: float) -> None:
                    run.progress = f

                result = await asyncio.to_thread(
                    cut, self.index, job.camera, job.start, job.end, media,
                    zones=zones, progress=progress, cancel=run.cancel,
                )  # fmt: skip
                done = await asyncio.to_thread(self._seal, job, decision, result, redactions)
            if not await self.tenancy.blocking(self.store.update, done, only_from=UNFINISHED):
                raise Cancelled()  # cancelled while it was being sealed
            run.job = done
            await self.tenancy.blocking(self._disclosed, done, decision, result)
            self._meter(done, decision)
        except (Cancelled, asyncio.CancelledError) as exc:
            self._remove(job)
            state, why = ExportState.CANCELLED, "cancelled"
            # A task cancelled by :meth:`cancel` (it was waiting for a slot) was cancelled by
            # its requester; any other task cancellation is the gateway stopping.
            if self._stopping or (
                isinstance(exc, asyncio.CancelledError) and not run.cancel.is_set()
            ):
                state, why = ExportState.FAILED, STOPPED
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finish(job, state, why))
            if isinstance(exc, asyncio.CancelledError):
                raise
        except CutError as exc:
            self._remove(job)
            await self._finish(job, ExportState.FAILED, str(exc))
        except Exception as exc:
            log.exception("export %s failed", job.id)
            self._remove(job)
            await self._finish(job, ExportState.FAILED, f"internal error: {type(exc).__name__}")
        finally:
            self._running.pop(job.id, None)

    async def _finish(self, job: ExportJob, state: ExportState, why: str) -> None:
        ended = job.with_(state=state, error=why, finished=datetime.now(UTC))
        await self.tenancy.blocking(self.store.update, ended, only_from=UNFINISHED)

    def _remove(self, job: ExportJob) -> None:
        self._remove_files(job.id)

    def _remove_files(self, export_id: str) -> None:
        remove_files(self.dir, export_id)

    def _seal(
        self,
        job: ExportJob,
        decision: Decision,
        result: CutResult,
        redactions: Sequence[RedactionZone],
    ) -> ExportJob:
        """Hash the file and write its signed manifest beside it (blocking)."""
        key = self.tenancy.evidence_key
        assert key is not None
        media = self.dir / f"{job.id}.mp4"
        digest, size = file_digest(media)
        finished = datetime.now(UTC)
        manifest = ExportManifest(
            export_id=job.id,
            kind="sar_copy" if job.sar_id else "export",
            camera=job.camera,
            start=job.start,
            end=job.end,
            media_start=result.media_start,
            media_end=result.media_end,
            gaps=tuple(result.gaps),
            masks_applied=tuple(
                MaskApplied(id=z.id, kind=z.kind.value, points=z.points)
                for z in decision.mask_zones
            ),
            redactions=tuple(
                Redaction(id=r.id, start=r.start, end=r.end, points=r.points) for r in redactions
            ),
            reencoded=result.reencoded,
            requester=Requester(person=job.principal, tenant=job.tenant),
            purpose=job.purpose,
            incident_ref=job.incident_ref,
            sar_id=job.sar_id,
            file_name=media.name,
            file_size=size,
            sha256=digest,
            created=finished,
            key_id=key.kid,
        )
        doc = sign_manifest(manifest, key)
        path = self.dir / f"{job.id}.manifest.json"
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(canonical_bytes(doc))
        tmp.replace(path)
        return job.with_(
            state=ExportState.DONE, finished=finished, file=media.name, sha256=digest, size=size
        )

    def _disclosed(self, job: ExportJob, decision: Decision, result: CutResult) -> None:
        """The export's audit entry: the ICO's disclosure record (blocking)."""
        self.tenancy.audit.append(
            AuditAction.EXPORT,
            tenant=job.tenant,
            principal=job.principal,
            camera=job.camera,
            purpose=job.purpose or job.incident_ref,
            detail={
                "export": job.id,
                "kind": job.kind,
                "start": job.start.isoformat(),
                "end": job.end.isoformat(),
                "media_start": result.media_start.isoformat(),
                "incident_ref": job.incident_ref,
                "masks": list(job.masks),
                "lifted": list(decision.lifted),
                "reencoded": job.reencoded,
                "sha256": job.sha256,
                "sar": job.sar_id,
                "grant": decision.grant_id,
            },
        )

    def _meter(self, job: ExportJob, decision: Decision) -> None:
        if self.usage is None or job.finished is None:
            return
        camera = self.tenancy.policy.snapshot.cameras.get(job.camera)
        event = UsageEvent(
            event_id=UsageEvent.make_id(job.id, 0),
            session_id=job.id,
            seq=0,
            tenant=job.tenant,
            principal=job.principal,
            camera=job.camera,
            camera_owner=camera.owner_tenant if camera is not None else job.tenant,
            kind=UsageKind.EXPORT,
            protocol="export",
            variant=decision.variant,
            start=job.finished,
            end=job.finished,
            duration_ms=0,
            bytes_sent=0,
            final=True,
        )
        try:
            self.usage.emit(event)
        except Exception:
            log.exception("usage of export %s could not be emitted", job.id)

    async def get(self, token: str | None, export_id: str, *, peer: str = "") -> ExportJob:
        d = await self.decide(token, camera=None, peer=peer)
        return self._visible(d, await self.tenancy.blocking(self.store.get, export_id))

    async def list_exports(
        self, token: str | None, *, peer: str = "", limit: int = 100, offset: int = 0
    ) -> list[ExportJob]:
        d = await self.decide(token, camera=None, peer=peer)
        tenant = None if self._sees_all(d) else d.tenant
        jobs = await self.tenancy.blocking(
            self.store.find, tenant=tenant, limit=min(max(limit, 1), 1000), offset=offset
        )
        return [self._visible(d, j) for j in jobs]

    async def cancel(self, token: str | None, export_id: str, *, peer: str = "") -> ExportJob:
        job = await self.get(token, export_id, peer=peer)
        run = self._running.get(job.id)
        if job.state in UNFINISHED and run is None and job.node != self.node:
            # Another node cuts it: ask through its row; it stops at its next report.
            now = datetime.now(UTC)
            if await self.tenancy.blocking(self.store.request_cancel, job.id, now):
                await self._settled(job.id)
            run = None
        elif job.state not in UNFINISHED or run is None:
            raise ExportError(409, "not_running", f"export {job.id} is {job.state.value}")
        else:
            self._stop_run(run)
            if run.task is not None:
                await asyncio.wait({run.task}, timeout=30)
        return self._visible(
            await self.decide(token, camera=None, peer=peer),
            await self.tenancy.blocking(self.store.get, job.id),
        )

    def _stop_run(self, run: _Running) -> None:
        run.cancel.set()
        if run.task is not None and run.job.state == ExportState.QUEUED:
            # Still waiting for a slot (no cut has started): stop waiting now, rather than
            # when some other export frees a slot.
            run.task.cancel()

    async def _settled(self, export_id: str) -> None:
        """Until another node has ended a job it was asked to cancel (or CROSS_NODE_WAIT)."""
        deadline = asyncio.get_running_loop().time() + CROSS_NODE_WAIT
        while asyncio.get_running_loop().time() < deadline:
            job = await self.tenancy.blocking(self.store.get, export_id)
            if job is None or job.state not in UNFINISHED:
                return
            await asyncio.sleep(REPORT_INTERVAL / 4)

    async def files(
        self, token: str | None, export_id: str, *, peer: str = ""
    ) -> tuple[Path, Path]:
        """(the MP4, its manifest) of a finished export the caller may see."""
        job = await self.get(token, export_id, peer=peer)
        if job.state != ExportState.DONE or job.file is None:
            raise ExportError(409, "not_ready", f"export {job.id} is {job.state.value}")
        reason = await asyncio.to_thread(unreachable, self.dir, job)
        if reason is not None:  # another node's disk, or a shared volume not mounted here
            raise ExportError(503, "unreachable", reason)
        return files_of(self.dir, job)

    # ---- retention -----------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("export retention sweep failed; trying again later")
            await asyncio.sleep(self.config.sweep_interval)

    async def sweep(self, now: datetime | None = None) -> int:
        """Delete the files of every export past its retention, audited one by one."""
        when = now or datetime.now(UTC)
        deleted = await self.tenancy.blocking(
            sweep_expired, self.store, self.tenancy.audit, self._remove, when
        )
        self.deleted += deleted
        return deleted

    async def _report_loop(self) -> None:
        """About once a second: the progress of this node's running exports into their rows
        (so every node shows it), and the cancels asked for on other nodes out of them."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            raise_if_cancelling()
            runs = dict(self._running)
            if not runs:
                continue
            try:
                progress = {i: r.progress for i, r in runs.items()}
                asked = await self.tenancy.blocking(self.store.report, progress)
            except Exception as exc:  # the database away: the cuts go on, reported later
                log.warning("export progress not stored: %s", exc)
                continue
            for export_id in asked:
                self._stop_run(runs[export_id])

    # ---- evidence locks ------------------------------------------------------------------------

    async def lock(
        self,
        token: str | None,
        camera: str,
        start: datetime,
        end: datetime,
        *,
        reason: str,
        expires: datetime,
        peer: str = "",
        via: str = "http",
    ) -> EvidenceLock:
        why = _text("reason", reason)
        if why is None:
            raise ExportError(400, "invalid_argument", "a lock needs a reason")
        d = await self.decide(token, camera=camera, purpose=why, peer=peer, via=via, what="lock")
        assert d.tenant is not None and d.principal is not None

        def take() -> EvidenceLock:
            return lock_ops.lock(
                self.index, self.tenancy.audit, camera, start, end, reason=why,
                tenant=d.tenant or "", principal=d.principal or "", expires=expires,
            )  # fmt: skip

        try:
            return await self.tenancy.blocking(take)
        except ValueError as exc:
            raise ExportError(400, "invalid_argument", str(exc)) from None

    async def release(
        self, token: str | None, lock_id: str, *, peer: str = "", via: str = "http"
    ) -> EvidenceLock:
        found = await self.tenancy.blocking(self.index.get_lock, lock_id)
        d = await self.decide(
            token, camera=found.camera if found else None, peer=peer, via=via, what="lock"
        )
        if found is None or not (found.tenant == d.tenant or self._sees_all(d)):
            raise ExportError(404, "not_found", "no such lock")

        def drop() -> EvidenceLock | None:
            return lock_ops.release(
                self.index, self.tenancy.audit, lock_id, tenant=d.tenant or "",
                principal=d.principal or "",
            )  # fmt: skip

        lock = await self.tenancy.blocking(drop)
        if lock is None:
            raise ExportError(409, "already_released", f"lock {lock_id} was released")
        return lock

    async def locks(
        self, token: str | None, camera: str | None = None, *, peer: str = ""
    ) -> list[EvidenceLock]:
        d = await self.decide(token, camera=None, peer=peer)
        found = await self.tenancy.blocking(self.index.locks, camera)
        return [x for x in found if x.tenant == d.tenant or self._sees_all(d)]
