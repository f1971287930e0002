"""The subject access service: REST ``/v1/sars`` and ``feedgate sar`` ask here.

An operator of the organisation that controls the cameras (admin, operator or investigator
roles) opens a request (:mod:`tenants.sar`: subject, contact, cameras or an area, the window;
due one month on, local time), then reads what touches it: the recordings of the window (the
recording index's spans), every view, playback, export, still and mask lift of that footage
(the audit log) and the copies already made. The operator draws redaction zones over time
ranges for the third parties, and asks for the copy: an export (the export service, so the
same ``export`` decision, manifest, audit entry and billing) with ``kind = sar_copy``, the
request's id, and the zones burnt in by the transcoder beside any privacy masks that apply.
Finally the request is closed as fulfilled, refused or withdrawn.

Only the controller's own cameras can be searched: a tenant answers for the cameras it owns.
The subject's name and contact stay in the request's row; audit entries carry its id only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.recording.export_store import ExportJob
from gateway.recording.exports import ExportError, ExportService, RedactionZone
from gateway.recording.index import RecordingIndex, Span
from tenants.audit import AuditAction
from tenants.model import Role
from tenants.policy import Decision
from tenants.sar import (
    Area,
    SarError,
    SarState,
    SarStore,
    SubjectAccessRequest,
    Touch,
    disclosures,
)

if TYPE_CHECKING:
    from gateway.tenancy import Tenancy

__all__ = ["Findings", "SarService"]

_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.INVESTIGATOR})
_OVERSIGHT = frozenset({Role.ADMIN, Role.AUDITOR})


@dataclass(frozen=True)
class Findings:
    request: SubjectAccessRequest
    recordings: dict[str, list[Span]]  # camera -> recorded spans in the window
    touches: list[Touch]
    copies: list[ExportJob]


class SarService:
    def __init__(self, tenancy: Tenancy, exports: ExportService, index: RecordingIndex) -> None:
        self.tenancy = tenancy
        self.exports = exports
        self.index = index
        self.store = SarStore(tenancy.db, tenancy.policy.zone)

    async def _caller(self, token: str | None, peer: str, what: str) -> Decision:
        d = await self.exports.decide(token, camera=None, peer=peer, what=what)
        if not d.roles & (_ROLES | _OVERSIGHT):
            await self._refuse(d, peer, what, "no role handles subject access requests")
        return d

    async def _refuse(self, d: Decision, peer: str, what: str, why: str) -> None:
        await self.tenancy.blocking(
            self.tenancy.refusals.decision, d, protocol="http", action=what, peer=peer,
            status=403, reason=why,
        )  # fmt: skip
        raise ExportError(403, "forbidden", why)

    def _mine(self, d: Decision, found: SubjectAccessRequest | None) -> SubjectAccessRequest:
        sees_all = d.tenant == self.tenancy.policy.platform_tenant and bool(d.roles & _OVERSIGHT)
        if found is None or not (found.tenant == d.tenant or sees_all):
            raise ExportError(404, "not_found", "no such subject access request")
        return found

    def _audit(self, d: Decision, request: SubjectAccessRequest, event: str, **extra: Any) -> None:
        self.tenancy.audit.append(
            AuditAction.SAR,
            tenant=d.tenant,
            principal=d.principal,
            detail={
                "sar": request.id,
                "event": event,
                "due": request.due.isoformat(),
                "cameras": len(request.cameras),
                **extra,
            },
        )

    async def open(
        self,
        token: str | None,
        *,
        subject: str,
        contact: str,
        start: datetime,
        end: datetime,
        cameras: Sequence[str] = (),
        area: str | None = None,
        peer: str = "",
    ) -> SubjectAccessRequest:
        d = await self._caller(token, peer, "sar")
        if not d.roles & _ROLES:
            await self._refuse(d, peer, "sar", "auditors read requests, they do not open them")
        snapshot = self.tenancy.policy.snapshot
        own = [c for c in snapshot.cameras.values() if c.owner_tenant == d.tenant]
        not_ours = sorted(set(cameras) - {c.id for c in own})
        if not_ours:
            # The same answer for another's camera and for none: names are not a way in.
            raise ExportError(400, "invalid_argument", f"no camera {not_ours[0]!r} of yours")

        def run() -> SubjectAccessRequest:
            request = self.store.open(
                tenant=d.tenant or "", opened_by=d.principal or "", subject=subject,
                contact=contact, start=start, end=end, cameras=cameras,
                area=Area.parse(area) if area else None, register=own,
            )  # fmt: skip
            self._audit(d, request, "opened")
            return request

        try:
            return await self.tenancy.blocking(run)
        except SarError as exc:
            raise ExportError(400, "invalid_argument", str(exc)) from None

    async def list_requests(
        self, token: str | None, *, state: str | None = None, peer: str = ""
    ) -> list[SubjectAccessRequest]:
        d = await self._caller(token, peer, "sar")
        try:
            wanted = SarState(state) if state else None
        except ValueError:
            raise ExportError(400, "invalid_argument", f"state: one of {list(SarState)}") from None
        sees_all = d.tenant == self.tenancy.policy.platform_tenant and bool(d.roles & _OVERSIGHT)
        return await self.tenancy.blocking(
            self.store.find, tenant=None if sees_all else d.tenant, state=wanted, limit=1000
        )

    async def get(self, token: str | None, sar_id: str, *, peer: str = "") -> SubjectAccessRequest:
        d = await self._caller(token, peer, "sar")
        return self._mine(d, await self.tenancy.blocking(self.store.get, sar_id))

    async def findings(self, token: str | None, sar_id: str, *, peer: str = "") -> Findings:
        request = await self.get(token, sar_id, peer=peer)

        def gather() -> Findings:
            spans = {c: self.index.spans(c, request.start, request.end) for c in request.cameras}
            touches = disclosures(self.tenancy.db, request)
            copies = self.exports.store.find(sar_id=request.id, limit=1000)
            return Findings(request, spans, touches, copies)

        return await asyncio.to_thread(gather)

    async def copy(
        self,
        token: str | None,
        sar_id: str,
        camera: str,
        *,
        redactions: Sequence[RedactionZone],
        start: datetime | None = None,
        end: datetime | None = None,
        peer: str = "",
    ) -> ExportJob:
        """The subject's copy of one camera (the request's window unless narrowed), with the
        redactions burnt in."""
        request = await self.get(token, sar_id, peer=peer)
        if request.state != SarState.OPEN:
            raise ExportError(409, "closed", f"request {sar_id} is {request.state.value}")
        if camera not in request.cameras:
            raise ExportError(400, "invalid_argument", f"camera {camera!r} is not in {sar_id}")
        start = max(start or request.start, request.start)
        end = min(end or request.end, request.end)
        for r in redactions:
            if r.end <= r.start:
                raise ExportError(400, "invalid_argument", f"redaction {r.id}: end before start")
        return await self.exports.create(
            token, camera, start, end, purpose=f"subject access request {request.id}",
            peer=peer, redactions=redactions, sar_id=request.id,
        )  # fmt: skip

    async def close(
        self, token: str | None, sar_id: str, state: str, outcome: str, *, peer: str = ""
    ) -> SubjectAccessRequest:
        d = await self._caller(token, peer, "sar")
        if not d.roles & _ROLES:
            await self._refuse(d, peer, "sar", "auditors read requests, they do not close them")
        self._mine(d, await self.tenancy.blocking(self.store.get, sar_id))
        try:
            to = SarState(state)
        except ValueError:
            raise ExportError(
                400, "invalid_argument", "state: fulfilled, refused or withdrawn"
            ) from None

        def run() -> SubjectAccessRequest | None:
            closed = self.store.close(sar_id, to, outcome, now=datetime.now(UTC))
            if closed is not None:
                self._audit(d, closed, "closed", state=closed.state.value)
            return closed

        try:
            closed = await self.tenancy.blocking(run)
        except SarError as exc:
            raise ExportError(400, "invalid_argument", str(exc)) from None
        if closed is None:
            raise ExportError(409, "closed", f"request {sar_id} is not open")
        return closed
