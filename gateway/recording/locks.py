"""Evidence locks, audited: a range of one camera's recording kept past retention and disk
pressure until it is released or expires. Blocking (database): the recorder runs these on a
thread; a ``--local`` CLI may call them directly with its own index and audit log.

Each lock names its reason (an incident reference, a subject access request), its owner (the
person and tenant who set it) and its expiry; setting and releasing one are audited
(``evidence_lock``, ``evidence_release``). The index and the audit log may be on different
connections, so a lock whose entry cannot be written is taken back: there is no lock without
its entry.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.recording.index import EvidenceLock, RecordingIndex
from tenants.audit import AuditAction, AuditLog

__all__ = ["lock", "release"]


def lock(
    index: RecordingIndex,
    audit: AuditLog | None,
    camera: str,
    start: datetime,
    end: datetime,
    *,
    reason: str,
    tenant: str,
    principal: str,
    expires: datetime,
    now: datetime | None = None,
) -> EvidenceLock:
    """Lock ``[start, end)`` of ``camera``; ValueError for an empty range, a blank reason or an
    expiry not in the future."""
    now = now or datetime.now(UTC)
    held = index.lock(
        camera, start, end, reason=reason, tenant=tenant, principal=principal,
        expires=expires, now=now,
    )  # fmt: skip
    if audit is not None:
        try:
            audit.append(
                AuditAction.EVIDENCE_LOCK,
                tenant=tenant,
                principal=principal,
                camera=camera,
                purpose=reason,
                detail=_detail(held),
            )
        except BaseException:
            index.forget_lock(held.id)
            raise
    return held


def release(
    index: RecordingIndex,
    audit: AuditLog | None,
    lock_id: str,
    *,
    tenant: str,
    principal: str,
    reason: str = "",
    now: datetime | None = None,
) -> EvidenceLock | None:
    """Release a lock that is held; None if there is none (unknown, or released before)."""
    held = index.get_lock(lock_id)
    if held is None or held.released is not None:
        return None
    if audit is not None:
        # Audited first: a release that cannot be recorded does not happen.
        audit.append(
            AuditAction.EVIDENCE_RELEASE,
            tenant=tenant,
            principal=principal,
            camera=held.camera,
            purpose=reason or held.reason,
            detail=_detail(held),
        )
    return index.release(lock_id, by=principal, now=now)


def _detail(held: EvidenceLock) -> dict[str, str]:
    return {
        "lock": held.id,
        "start": held.start.isoformat(),
        "end": held.end.isoformat(),
        "expires": held.expires.isoformat(),
        "owner_tenant": held.tenant,
        "owner": held.principal,
    }
