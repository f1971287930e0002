"""The audit log for oversight: search, verification, disclosures and Merkle proofs.

Auditors read the entries about their own tenant (entries it made, entries naming it, and
entries about the cameras it owns); platform auditors and admins read all of it."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenants.audit import AuditAction, AuditEntry, export_disclosures, verify_log
from tenants.control.core import Core, operation
from tenants.control.errors import denied, invalid
from tenants.control.rules import Caller
from tenants.control.views import (
    AuditEntryView,
    AuditPage,
    ConsistencyProofView,
    DisclosuresView,
    InclusionProofView,
    VerifyView,
)

_SKEW = timedelta(seconds=1)  # audit entry times may step back this much


@dataclass(frozen=True)
class AuditQuery:
    start: datetime | None = None
    end: datetime | None = None
    tenant: str | None = None
    principal: str | None = None
    camera: str | None = None
    action: AuditAction | None = None
    offset: int = 0
    limit: int = 100

    def matches(self, e: AuditEntry) -> bool:
        if self.start is not None and e.time < self.start:
            return False
        if self.end is not None and e.time >= self.end:
            return False
        if self.tenant is not None and not _about(e, self.tenant, frozenset()):
            return False
        if self.principal is not None and e.principal != self.principal:
            return False
        if self.camera is not None and e.camera != self.camera:
            return False
        return self.action is None or e.action == self.action


def _about(entry: AuditEntry, tenant: str, owned_cameras: frozenset[str]) -> bool:
    if entry.tenant == tenant:
        return True
    tenants = entry.detail.get("tenants")
    if isinstance(tenants, list) and tenant in tenants:
        return True
    return entry.camera is not None and entry.camera in owned_cameras


def filter_disclosures(text: str, tenant: str, owned_cameras: frozenset[str]) -> tuple[str, int]:
    """Keep the disclosure rows to `tenant` or of the cameras it owns."""
    rows = list(csv.reader(io.StringIO(text)))
    out = io.StringIO()
    writer = csv.writer(out)
    kept = 0
    for i, row in enumerate(rows):
        if i == 0 or (len(row) > 4 and (row[1] == tenant or row[4] in owned_cameras)):
            writer.writerow(row)
            kept += i > 0
    return out.getvalue(), kept


class AuditOps:
    def __init__(self, core: Core) -> None:
        self.core = core

    def _scope(self, caller: Caller) -> tuple[str | None, frozenset[str]]:
        """(None, -) for the whole log, else (tenant, the cameras it owns)."""
        if not caller.auditor:
            raise denied("needs the auditor role")
        if caller.platform:
            return None, frozenset()
        snap = self.core.snapshot
        owned = frozenset(c.id for c in snap.cameras.values() if c.owner_tenant == caller.tenant)
        return caller.tenant, owned

    @operation("ListEntries")
    async def entries(self, caller: Caller, q: AuditQuery) -> AuditPage:
        scope, owned = self._scope(caller)
        if q.start is not None and q.end is not None and q.end <= q.start:
            raise invalid("to_time", "must be after from_time")
        audit = self.core.audit

        def first_seq() -> int:
            # Entry times only go forwards (up to a second of clock skew): bisect by time.
            if q.start is None:
                return 0
            lo, hi = 0, audit.size()
            while lo < hi:
                mid = (lo + hi) // 2
                e = next(audit.entries(mid, mid + 1), None)
                if e is None or e.time >= q.start - _SKEW:
                    hi = mid
                else:
                    lo = mid + 1
            return lo

        def run() -> AuditPage:
            skip, out = q.offset, []
            for e in audit.entries(first_seq()):
                if q.end is not None and e.time >= q.end + _SKEW:
                    break
                if not q.matches(e) or (scope is not None and not _about(e, scope, owned)):
                    continue
                if skip:
                    skip -= 1
                    continue
                out.append(e)
                if len(out) > q.limit:
                    break
            more = len(out) > q.limit
            return AuditPage(
                items=[AuditEntryView.of(e) for e in out[: q.limit]],
                next_offset=q.offset + q.limit if more else None,
            )

        return await self.core.read(run)

    @operation("Verify")
    async def verify(self, caller: Caller) -> VerifyView:
        self._scope(caller)
        r = await self.core.read(lambda: verify_log(self.core.db, self.core.audit_keys()))
        return VerifyView(
            ok=r.ok,
            entries=r.entries,
            checkpoints=r.checkpoints,
            first_bad_seq=r.first_bad_seq,
            problem=r.problem,
        )

    @operation("ExportDisclosures")
    async def disclosures(self, caller: Caller, start: datetime, end: datetime) -> DisclosuresView:
        scope, owned = self._scope(caller)
        if end <= start:
            raise invalid("to_time", "must be after from_time")

        def run() -> DisclosuresView:
            buf = io.StringIO()
            rows = export_disclosures(self.core.db, start, end, buf)
            if scope is None:
                return DisclosuresView(csv=buf.getvalue(), rows=rows)
            text, kept = filter_disclosures(buf.getvalue(), scope, owned)
            return DisclosuresView(csv=text, rows=kept)

        return await self.core.read(run)

    @operation("InclusionProof")
    async def inclusion(self, caller: Caller, seq: int, size: int | None) -> InclusionProofView:
        """The audit path of entry ``seq`` in the tree of ``size`` entries (default: all)."""
        scope, owned = self._scope(caller)
        audit = self.core.audit

        def run() -> InclusionProofView:
            n = audit.size() if size is None else size
            if not 0 <= seq < n or n > audit.size():
                raise invalid("seq", f"{seq} is not in a tree of size {n}")
            entry = next(audit.entries(seq, seq + 1))
            if scope is not None and not _about(entry, scope, owned):
                raise denied(f"entry {seq} is not about {scope}")
            return InclusionProofView(
                seq=seq,
                size=n,
                leaf_hash=entry.leaf_hash().hex(),
                root=audit.root(n).hex(),
                proof=[h.hex() for h in audit.inclusion_proof(seq, n)],
            )

        return await self.core.read(run)

    @operation("ConsistencyProof")
    async def consistency(
        self, caller: Caller, old_size: int, new_size: int | None
    ) -> ConsistencyProofView:
        self._scope(caller)
        audit = self.core.audit

        def run() -> ConsistencyProofView:
            new = audit.size() if new_size is None else new_size
            if not 0 <= old_size <= new <= audit.size():
                raise invalid("old_size", f"need 0 <= old_size <= new_size <= {audit.size()}")
            return ConsistencyProofView(
                old_size=old_size,
                new_size=new,
                old_root=audit.root(old_size).hex(),
                new_root=audit.root(new).hex(),
                proof=[h.hex() for h in audit.consistency_proof(old_size, new)],
            )

        return await self.core.read(run)
