"""REST routes of the views of use: the audit log, live sessions, the cluster's nodes, usage
and invoices."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gateway.http.api.routes import Call, Instant, PageQuery, Route
from tenants.audit import AuditAction
from tenants.control.audit import AuditQuery
from tenants.control.schemas import Id, Purpose
from tenants.control.views import (
    AuditPage,
    ConsistencyProofView,
    DisclosuresView,
    EmittedView,
    InclusionProofView,
    InvoiceView,
    NodeView,
    SessionView,
    UsageView,
    VerifyView,
    page,
    page_of,
)

PERIOD = r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])$"  # YYYY-MM, 1900-2099
SESSION_ID = r"^[A-Za-z0-9_.:-]{1,128}$"


class EntriesQuery(PageQuery):
    from_time: Instant | None = Field(None, alias="from")
    to_time: Instant | None = Field(None, alias="to")
    tenant: Id | None = None
    principal: Id | None = None
    camera: Id | None = None
    action: AuditAction | None = None


class DisclosuresQuery(BaseModel):
    from_time: Instant = Field(alias="from")
    to_time: Instant = Field(alias="to")


class InclusionQuery(BaseModel):
    seq: int = Field(ge=0, le=2**62)
    size: int | None = Field(None, ge=1, le=2**62, description="default: the whole log")


class ConsistencyQuery(BaseModel):
    old_size: int = Field(ge=0, le=2**62)
    new_size: int | None = Field(None, ge=0, le=2**62, description="default: the whole log")


class UsageQuery(PageQuery):
    period: str = Field(pattern=PERIOD, description="YYYY-MM")
    tenant: Id | None = Field(None, description="default: yours (the platform's: every tenant)")


class InvoiceQuery(PageQuery):
    period: str | None = Field(None, pattern=PERIOD, description="YYYY-MM")
    tenant: Id | None = Field(None, description="default: yours (the platform's: every tenant)")


class KickQuery(BaseModel):
    reason: Purpose = ""


async def audit_entries(c: Call) -> BaseModel:
    q = c.query
    return await c.service.audit.entries(
        c.caller,
        AuditQuery(
            start=q.from_time,
            end=q.to_time,
            tenant=q.tenant,
            principal=q.principal,
            camera=q.camera,
            action=q.action,
            offset=q.offset,
            limit=q.limit,
        ),
    )


async def audit_verify(c: Call) -> BaseModel:
    return await c.service.audit.verify(c.caller)


async def audit_disclosures(c: Call) -> BaseModel:
    return await c.service.audit.disclosures(c.caller, c.query.from_time, c.query.to_time)


async def audit_inclusion(c: Call) -> BaseModel:
    return await c.service.audit.inclusion(c.caller, c.query.seq, c.query.size)


async def audit_consistency(c: Call) -> BaseModel:
    return await c.service.audit.consistency(c.caller, c.query.old_size, c.query.new_size)


async def list_sessions(c: Call) -> BaseModel:
    found = await c.service.sessions.list(c.caller)
    return page(SessionView, found, c.query.offset, c.query.limit)


async def kick_session(c: Call) -> None:
    await c.service.sessions.kick(c.caller, c.path["id"], c.query.reason)


async def list_nodes(c: Call) -> BaseModel:
    found = await c.service.nodes.list(c.caller)
    return page(NodeView, found, c.query.offset, c.query.limit)


async def list_usage(c: Call) -> BaseModel:
    found = await c.service.billing.usage(c.caller, c.query.period, c.query.tenant)
    return page(UsageView, found, c.query.offset, c.query.limit)


async def usage_emitted(c: Call) -> BaseModel:
    return await c.service.billing.emitted(c.caller)


async def list_invoices(c: Call) -> BaseModel:
    found = await c.service.billing.invoices(c.caller, c.query.period, c.query.tenant)
    return page(InvoiceView, found, c.query.offset, c.query.limit)


ROUTES: list[Route] = [
    Route("GET", "/v1/audit/entries", "ListEntries", "Search the audit log", audit_entries,
          "audit", AuditPage, query=EntriesQuery),
    Route("GET", "/v1/audit/verify", "Verify", "Verify every hash and signed checkpoint",
          audit_verify, "audit", VerifyView),
    Route("GET", "/v1/audit/disclosures", "ExportDisclosures",
          "Disclosures as CSV rows: date, recipient, reason", audit_disclosures, "audit",
          DisclosuresView, query=DisclosuresQuery),
    Route("GET", "/v1/audit/proofs/inclusion", "InclusionProof",
          "RFC 6962 audit path of one entry", audit_inclusion, "audit", InclusionProofView,
          query=InclusionQuery),
    Route("GET", "/v1/audit/proofs/consistency", "ConsistencyProof",
          "RFC 6962 consistency proof between two sizes of the log", audit_consistency,
          "audit", ConsistencyProofView, query=ConsistencyQuery),
    Route("GET", "/v1/sessions", "ListSessions", "Live sessions you may see", list_sessions,
          "sessions", page_of(SessionView), query=PageQuery),
    Route("DELETE", "/v1/sessions/{id}", "KickSession", "End a live session now",
          kick_session, "sessions", query=KickQuery, patterns=(("id", SESSION_ID),)),
    Route("GET", "/v1/nodes", "ListNodes",
          "The cluster's nodes: up or down, relay, sessions, cameras owned and relayed",
          list_nodes, "nodes", page_of(NodeView), query=PageQuery),
    Route("GET", "/v1/usage", "ListUsage", "Usage by camera and metric in a month",
          list_usage, "usage", page_of(UsageView), query=UsageQuery),
    Route("GET", "/v1/usage/emitted", "UsageEmitted",
          "What this process's meter emitted (the platform's reconciliation)", usage_emitted,
          "usage", EmittedView),
    Route("GET", "/v1/invoices", "ListInvoices", "Invoices and credit notes", list_invoices,
          "invoices", page_of(InvoiceView), query=InvoiceQuery),
]  # fmt: skip
