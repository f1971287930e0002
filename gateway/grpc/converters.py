"""Protobuf messages to and from the control service's declared types.

Proto3 cannot tell an empty string or a zero from an absent field, so the conventions of
``common.proto`` apply here: an empty enumeration or a zero retention means the default, and an
empty status on a tenant write keeps the stored one. Everything else is validated by the
pydantic models (``tenants.control.schemas``), which name the bad field."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from feedgate.v1 import audit_pb2, common_pb2, masks_pb2, nodes_pb2, tenants_pb2, tokens_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from tenants.control import schemas as s
from tenants.control import views as v
from tenants.control.errors import ControlError, invalid

_ID = re.compile(s.ID_PATTERN)


def ts(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when.astimezone(UTC))
    return out


def dt(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def ident(field: str, value: str) -> str:
    """An id from a request field (``GetCameraRequest.id``)."""
    if not _ID.match(value):
        raise invalid(field, f"{value!r}: 1-64 of a-z 0-9 _ . - (start alnum)")
    return value


def optional_ident(field: str, value: str) -> str | None:
    return ident(field, value) if value else None


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    """Set only values proto3 can tell from 'absent'."""
    if value not in ("", 0, None):
        d[key] = value


# ----------------------------------------------------------------------------- to the service


def tenant_body(msg: common_pb2.Tenant) -> s.TenantBody:
    d: dict[str, Any] = {"id": msg.id, "name": msg.name, "kind": msg.kind}
    for key in ("status", "jwks_url", "issuer"):
        _set(d, key, getattr(msg, key))
    d["algorithms"] = list(msg.algorithms)
    return s.parse(s.TenantBody, d, at="tenant")


def principal_body(req: tenants_pb2.PutPrincipalRequest) -> s.PrincipalBody:
    p = req.principal
    d: dict[str, Any] = {
        "id": p.id,
        "tenant_id": p.tenant_id,
        "name": p.name,
        "roles": list(p.roles),
        "disabled": p.disabled,
        "digest_password": req.digest_password,
        "clear_digest": req.clear_digest,
        "password": req.password,
        "clear_password": req.clear_password,
    }
    _set(d, "kind", p.kind)
    try:
        return s.parse(s.PrincipalBody, d)
    except ControlError as exc:  # the principal's own fields are named under "principal."
        if exc.field in (None, "digest_password", "clear_digest", "password", "clear_password"):
            raise
        raise exc.at("principal") from None


def camera_body(msg: common_pb2.Camera) -> s.CameraBody:
    d: dict[str, Any] = {
        "id": msg.id,
        "owner_tenant": msg.owner_tenant,
        "name": msg.name,
        "tags": list(msg.tags),
        "location": msg.location,
    }
    for coordinate in ("latitude", "longitude"):
        if msg.HasField(coordinate):
            d[coordinate] = getattr(msg, coordinate)
    _set(d, "area_type", msg.area_type)
    _set(d, "retention_days", msg.retention_days)
    return s.parse(s.CameraBody, d, at="camera")


def mask_body(msg: masks_pb2.Mask) -> s.MaskBody:
    d: dict[str, Any] = {
        "id": msg.id,
        "camera_id": msg.camera_id,
        "points": [{"x": p.x, "y": p.y} for p in msg.points],
        "tenant_kinds": list(msg.tenant_kinds),
        "label": msg.label,
    }
    _set(d, "kind", msg.kind)
    return s.parse(s.MaskBody, d, at="mask")


def _constraints(msg: common_pb2.Constraints) -> dict[str, Any]:
    d: dict[str, Any] = {
        "time_windows": [
            {"start": w.start, "end": w.end, "weekdays": list(w.weekdays)} for w in msg.time_windows
        ],
        "purpose_required": msg.purpose_required,
        "ptz_priority": msg.ptz_priority,
    }
    _set(d, "quality_cap", msg.quality_cap)
    if msg.HasField("max_concurrent_streams"):
        d["max_concurrent_streams"] = msg.max_concurrent_streams
    if msg.HasField("max_playback_age_s"):
        d["max_playback_age_s"] = msg.max_playback_age_s
    return d


def grant_body(msg: common_pb2.Grant) -> s.GrantBody:
    d: dict[str, Any] = {
        "id": msg.id,
        "owner_tenant": msg.owner_tenant,
        "grantee_tenant": msg.grantee_tenant,
        "camera_ids": list(msg.camera_ids),
        "camera_tags": list(msg.camera_tags),
        "rights": list(msg.rights),
        "constraints": _constraints(msg.constraints),
    }
    return s.parse(s.GrantBody, d, at="grant")


def token_body(req: tokens_pb2.IssueTokenRequest) -> s.TokenBody:
    d: dict[str, Any] = {
        "tenant": req.tenant,
        "subject": req.subject,
        "roles": list(req.roles),
        "purpose": req.purpose,
    }
    if req.cameras:
        d["cameras"] = list(req.cameras)
    if req.HasField("ttl_seconds"):
        d["ttl_seconds"] = req.ttl_seconds
    return s.parse(s.TokenBody, d)


# ----------------------------------------------------------------------------- to the wire


def tenant_pb(t: s.TenantView) -> common_pb2.Tenant:
    return common_pb2.Tenant(
        id=t.id,
        name=t.name,
        kind=t.kind.value,
        status=t.status.value,
        jwks_url=t.jwks_url or "",
        issuer=t.issuer or "",
        algorithms=t.algorithms,
    )


def principal_pb(p: s.PrincipalView) -> common_pb2.Principal:
    return common_pb2.Principal(
        id=p.id,
        tenant_id=p.tenant_id,
        name=p.name,
        kind=p.kind.value,
        roles=[r.value for r in p.roles],
        disabled=p.disabled,
        has_digest=p.has_digest,
        has_password=p.has_password,
    )


def camera_pb(c: s.CameraView) -> common_pb2.Camera:
    return common_pb2.Camera(
        id=c.id,
        owner_tenant=c.owner_tenant,
        name=c.name,
        tags=c.tags,
        location=c.location,
        area_type=c.area_type.value,
        retention_days=c.retention_days,
        latitude=c.latitude,
        longitude=c.longitude,
    )


def mask_pb(z: s.MaskView) -> masks_pb2.Mask:
    return masks_pb2.Mask(
        id=z.id,
        camera_id=z.camera_id,
        points=[masks_pb2.Point(x=p.x, y=p.y) for p in z.points],
        kind=z.kind.value,
        tenant_kinds=[k.value for k in z.tenant_kinds],
        label=z.label,
    )


def grant_pb(g: s.GrantView) -> common_pb2.Grant:
    c = g.constraints
    constraints = common_pb2.Constraints(
        time_windows=[
            common_pb2.TimeWindow(start=w.start, end=w.end, weekdays=w.weekdays)
            for w in c.time_windows
        ],
        purpose_required=c.purpose_required,
        quality_cap=c.quality_cap.value,
        ptz_priority=c.ptz_priority,
    )
    if c.max_concurrent_streams is not None:
        constraints.max_concurrent_streams = c.max_concurrent_streams
    if c.max_playback_age_s is not None:
        constraints.max_playback_age_s = c.max_playback_age_s
    msg = common_pb2.Grant(
        id=g.id,
        owner_tenant=g.owner_tenant,
        grantee_tenant=g.grantee_tenant,
        camera_ids=g.camera_ids,
        camera_tags=g.camera_tags,
        rights=[r.value for r in g.rights],
        constraints=constraints,
        created_at=ts(g.created_at),
    )
    if g.revoked_at is not None:
        msg.revoked_at.CopyFrom(ts(g.revoked_at))
    return msg


def token_pb(t: s.TokenView) -> tokens_pb2.IssueTokenResponse:
    return tokens_pb2.IssueTokenResponse(
        token=t.token, expires_at=ts(t.expires_at), token_id=t.token_id
    )


def entry_pb(e: v.AuditEntryView) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        seq=e.seq,
        time=ts(e.time),
        action=e.action,
        tenant=e.tenant or "",
        principal=e.principal or "",
        camera=e.camera or "",
        purpose=e.purpose or "",
        outcome=e.outcome,
        detail_json=json.dumps(e.detail, sort_keys=True, separators=(",", ":")),
    )


def verify_pb(r: v.VerifyView) -> audit_pb2.VerifyReport:
    msg = audit_pb2.VerifyReport(
        ok=r.ok, entries=r.entries, checkpoints=r.checkpoints, problem=r.problem or ""
    )
    if r.first_bad_seq is not None:
        msg.first_bad_seq = r.first_bad_seq
    return msg


def node_pb(n: v.NodeView) -> nodes_pb2.Node:
    msg = nodes_pb2.Node(
        node=n.node,
        alive=n.alive,
        last_seen=ts(n.last_seen),
        relay=n.relay,
        rtsp_port=n.rtsp_port,
        http_port=n.http_port,
        sessions=n.sessions,
        owned=n.owned,
        relayed=n.relayed,
    )
    if n.started is not None:
        msg.started.CopyFrom(ts(n.started))
    return msg
