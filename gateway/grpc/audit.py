"""feedgate.v1.AuditService: the audit log for oversight."""

from __future__ import annotations

from feedgate.v1 import audit_pb2

from gateway.grpc import converters as c
from tenants.control import Caller, ControlService
from tenants.control.audit import AuditQuery
from tenants.control.errors import invalid

DESCRIPTOR = audit_pb2.DESCRIPTOR.services_by_name["AuditService"]
MAX_PAGE = 1000
DEFAULT_PAGE = 100


def _range(field: str, value: int, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise invalid(field, f"{value} is out of range {lo}..{hi}")
    return value


class AuditService:
    def __init__(self, service: ControlService) -> None:
        self.audit = service.audit

    async def ListEntries(
        self, req: audit_pb2.ListEntriesRequest, caller: Caller
    ) -> audit_pb2.ListEntriesResponse:
        limit = _range("limit", req.limit or DEFAULT_PAGE, 1, MAX_PAGE)
        page = _range("page", req.page, 0, 1_000_000)
        q = AuditQuery(
            start=c.dt(req.from_time) if req.HasField("from_time") else None,
            end=c.dt(req.to_time) if req.HasField("to_time") else None,
            offset=page * limit,
            limit=limit,
        )
        found = await self.audit.entries(caller, q)
        return audit_pb2.ListEntriesResponse(
            entries=[c.entry_pb(e) for e in found.items], more=found.next_offset is not None
        )

    async def Verify(self, req: audit_pb2.VerifyRequest, caller: Caller) -> audit_pb2.VerifyReport:
        return c.verify_pb(await self.audit.verify(caller))

    async def ExportDisclosures(
        self, req: audit_pb2.ExportDisclosuresRequest, caller: Caller
    ) -> audit_pb2.ExportDisclosuresResponse:
        if not req.HasField("from_time"):
            raise invalid("from_time", "required")
        if not req.HasField("to_time"):
            raise invalid("to_time", "required")
        found = await self.audit.disclosures(caller, c.dt(req.from_time), c.dt(req.to_time))
        return audit_pb2.ExportDisclosuresResponse(csv=found.csv, rows=found.rows)
