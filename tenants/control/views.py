"""Declared types of the read-only resources: the audit log, live sessions, usage and
invoices, and the page every list comes in."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, Field, create_model

from tenants.audit import AuditEntry
from tenants.control.ports import LiveSession, NodeInfo
from tenants.control.schemas import Body, Purpose, View

MAX_PAGE = 1000
DEFAULT_PAGE = 100

_V = TypeVar("_V", bound=BaseModel)


@cache
def page_of(model: type[BaseModel]) -> type[BaseModel]:
    """``{"items": [model...], "next_offset": n | null}``: one page of a list."""
    return create_model(
        f"{model.__name__}Page",
        __base__=View,
        items=(list[model], ...),  # type: ignore[valid-type]
        next_offset=(int | None, Field(None, description="the offset of the next page")),
    )


def page(model: type[_V], items: list[_V], offset: int, limit: int) -> BaseModel:
    chunk = items[offset : offset + limit]
    more = offset + limit < len(items)
    return page_of(model)(items=chunk, next_offset=offset + limit if more else None)


# ----------------------------------------------------------------------------- audit


class AuditEntryView(View):
    seq: int
    time: datetime
    action: str
    tenant: str | None
    principal: str | None
    camera: str | None
    purpose: str | None
    outcome: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, e: AuditEntry) -> AuditEntryView:
        return cls(
            seq=e.seq,
            time=e.time,
            action=e.action.value,
            tenant=e.tenant,
            principal=e.principal,
            camera=e.camera,
            purpose=e.purpose,
            outcome=e.outcome,
            detail=dict(e.detail),
        )


class AuditPage(View):
    items: list[AuditEntryView]
    next_offset: int | None = None


class VerifyView(View):
    ok: bool
    entries: int
    checkpoints: int
    first_bad_seq: int | None = None
    problem: str | None = None


class DisclosuresView(View):
    csv: str
    rows: int


class InclusionProofView(View):
    seq: int
    size: int
    leaf_hash: str = Field(description="hex SHA-256 of 0x00 and the entry's canonical form")
    root: str = Field(description="hex Merkle tree head of the first `size` entries")
    proof: list[str] = Field(description="hex hashes, leaf to root (RFC 6962)")


class ConsistencyProofView(View):
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: list[str]


# ----------------------------------------------------------------------------- sessions


class SessionView(View):
    id: str
    protocol: str
    mode: str
    state: str
    tenant: str | None
    principal: str | None
    camera: str
    variant: str
    peer: str
    created: datetime
    bytes_sent: int
    packets_sent: int
    packets_dropped: int
    frames_dropped: int
    node: str = ""

    @classmethod
    def of(cls, s: LiveSession) -> SessionView:
        return cls(
            id=s.id,
            protocol=s.protocol,
            mode=s.mode,
            state=s.state,
            tenant=s.tenant,
            principal=s.principal,
            camera=s.camera,
            variant=s.variant,
            peer=s.peer,
            created=s.created,
            bytes_sent=s.bytes_sent,
            packets_sent=s.packets_sent,
            packets_dropped=s.packets_dropped,
            frames_dropped=s.frames_dropped,
            node=s.node,
        )


class KickBody(Body):
    reason: Purpose = ""


# ----------------------------------------------------------------------------- billing


class UsageView(View):
    tenant: str
    period: str
    camera: str
    metric: str
    quantity: int = Field(description="base units: ms, bytes or exports")


class InvoiceLineView(View):
    line_id: str
    kind: str
    description: str
    metric: str | None
    quantity: str
    unit: str
    unit_price: str
    amount_pence: int


class InvoiceView(View):
    invoice_id: str
    tenant: str
    period: str
    currency: str
    status: str
    subtotal_pence: int
    vat_rate: str
    vat_pence: int
    total_pence: int
    created_at: datetime
    finalized_at: datetime | None = None
    paid_at: datetime | None = None
    credit_note_for: str | None = None
    lines: list[InvoiceLineView]


class EmittedView(View):
    since: datetime
    events: int
    cameras: dict[str, list[int]] = Field(description="camera: [events, duration_ms, bytes]")
    sink: dict[str, Any]


# ----------------------------------------------------------------------------- nodes


class NodeView(View):
    node: str
    alive: bool
    last_seen: datetime
    started: datetime | None
    relay: str
    rtsp_port: int
    http_port: int
    sessions: int
    owned: list[str]
    relayed: list[str]

    @classmethod
    def of(cls, n: NodeInfo) -> NodeView:
        return cls(
            node=n.node,
            alive=n.alive,
            last_seen=n.last_seen,
            started=n.started,
            relay=n.relay,
            rtsp_port=n.rtsp_port,
            http_port=n.http_port,
            sessions=n.sessions,
            owned=list(n.owned),
            relayed=list(n.relayed),
        )


__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "AuditEntryView",
    "AuditPage",
    "ConsistencyProofView",
    "DisclosuresView",
    "EmittedView",
    "InclusionProofView",
    "InvoiceLineView",
    "InvoiceView",
    "KickBody",
    "NodeView",
    "SessionView",
    "UsageView",
    "VerifyView",
    "page",
    "page_of",
]
