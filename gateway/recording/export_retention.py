"""Exports past their retention: their files deleted, their rows kept as ``deleted`` (the record
of what was made), each deletion audited (``export_deleted``). Blocking: a worker thread."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from gateway.recording.export_store import ExportJob, ExportState, ExportStore
from tenants.audit import AuditAction, AuditLog


def sweep_expired(
    store: ExportStore, audit: AuditLog, remove: Callable[[ExportJob], None], now: datetime
) -> int:
    """Delete every export whose retention ended by ``now``; how many were deleted."""
    deleted = 0
    for job in store.expired(now):
        remove(job)
        gone = job.with_(state=ExportState.DELETED)
        if not store.update(gone, only_from=(ExportState.DONE,)):
            continue  # deleted by another node's sweep meanwhile
        audit.append(
            AuditAction.EXPORT_DELETED,
            tenant=job.tenant,
            principal=None,
            camera=job.camera,
            detail={
                "export": job.id,
                "reason": "retention",
                "expired": job.expires.isoformat(),
                "sha256": job.sha256,
            },
        )
        deleted += 1
    return deleted
