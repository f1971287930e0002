"""The control API: tenants, principals, cameras, masks, grants, tokens and the audit log
over gRPC.

The contract is ``protos/feedgate/v1/*.proto`` (package ``feedgate.v1``). Handlers are built
from the services' descriptors, so a method added to a .proto without an implementation here
fails at start, not at the first call.

Every call but ``TokenService/GetJwks`` carries ``authorization: Bearer <jwt>``; the
:class:`AuthInterceptor` verifies it and resolves the caller against the tenancy snapshot
(suspended tenants and disabled principals are refused; a token never holds more roles than
its principal). Who may do what:

* admins of the platform tenant: everything;
* a tenant's admins: their own principals, cameras and the cameras' privacy masks, grants
  their tenant owns (and reading grants it receives and the cameras, and their masks, those
  cover), tokens for their own tenant's principals with no more roles than the principal
  holds;
* auditors: the audit log's entries about their own tenant, Verify, and their own tenant's
  disclosures (platform auditors: all of it);
* every other role (finance, viewer, ...): nothing here.

Every write is recorded in the audit log with the caller as principal, after the store has
committed it (a write and its audit entry are not one transaction: the audit log takes its own
lock before the database's, so nesting them could deadlock). The policy is reloaded after every
write so live decisions see it at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import csv
import io
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypeVar, cast

import grpc
from feedgate.v1 import (
    audit_pb2,
    cameras_pb2,
    common_pb2,
    grants_pb2,
    masks_pb2,
    tenants_pb2,
    tokens_pb2,
)
from google.protobuf import message_factory
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.tenancy import Tenancy
from tenants.audit import AuditAction, AuditEntry, export_disclosures, verify_log
from tenants.db import IntegrityError
from tenants.model import (
    MAX_MASK_POINTS,
    AreaType,
    Camera,
    Constraints,
    DomainError,
    Grant,
    MaskKind,
    MaskZone,
    Principal,
    PrincipalKind,
    Quality,
    Right,
    Role,
    Tenant,
    TenantKind,
    TenantStatus,
    TimeWindow,
    check_id,
)
from tenants.policy import AccessRequest, Action
from tenants.store import NotFound, Snapshot, TenantStore, digest_ha1
from tenants.tokens import PartnerIssuer

log = logging.getLogger(__name__)

PACKAGE = "feedgate.v1"
PUBLIC_METHODS = frozenset({f"/{PACKAGE}.TokenService/GetJwks"})
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_TTL_S = 900
MAX_TTL_S = 86400
MAX_NAME = 200
MAX_PURPOSE = 256
MAX_LIST = 1000
MAX_TAGS = 64
MAX_PAGE = 1000
DEFAULT_PAGE = 100
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_HHMM_RE = re.compile(r"^\d{2}:\d{2}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SKEW = timedelta(seconds=1)  # audit entry times may step back this much

_E = TypeVar("_E", bound=StrEnum)
_T = TypeVar("_T")


# ----------------------------------------------------------------------------- errors


class ApiError(Exception):
    """Refuse the call with this status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(field: str, reason: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {reason}")


def denied(reason: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, reason)


def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    if isinstance(exc, ApiError):
        return exc.code, exc.message
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, IntegrityError):
        text = str(exc)
        if "UNIQUE" in text or "duplicate key" in text:
            return grpc.StatusCode.ALREADY_EXISTS, text
        return grpc.StatusCode.FAILED_PRECONDITION, text
    if isinstance(exc, DomainError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return None


# ----------------------------------------------------------------------------- the caller


@dataclass(frozen=True)
class Caller:
    """Who is calling: the verified token's tenant and subject, with effective roles."""

    tenant: str
    subject: str
    roles: frozenset[Role]
    platform: bool  # the tenant is the platform tenant

    @property
    def platform_admin(self) -> bool:
        return self.platform and Role.ADMIN in self.roles

    def admin_of(self, tenant: str) -> bool:
        return Role.ADMIN in self.roles and (self.platform or tenant == self.tenant)

    @property
    def auditor(self) -> bool:
        return Role.AUDITOR in self.roles or self.platform_admin


_ANONYMOUS = Caller("", "", frozenset(), False)
_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "feedgate_grpc_caller", default=None
)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Verifies ``authorization: Bearer <jwt>`` and makes the caller known to the handler.

    Refusals: UNAUTHENTICATED (no token, or one that does not verify; the message carries the
    reason code, never the token), PERMISSION_DENIED (unknown or suspended tenant, disabled
    principal)."""

    def __init__(
        self, tenancy: Tenancy, platform_tenant: str, public: frozenset[str] = PUBLIC_METHODS
    ) -> None:
        self.tenancy = tenancy
        self.platform_tenant = platform_tenant
        self.public = public

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller:
        token = bearer_token(metadata)
        if token is None:
            raise ApiError(
                grpc.StatusCode.UNAUTHENTICATED, "missing credentials: authorization: Bearer <jwt>"
            )
        policy = self.tenancy.policy
        await asyncio.to_thread(policy.reload)
        # The same decision every entry point uses: identity, tenant status, roles.
        decision = await policy.authorize(AccessRequest(Action.API, "grpc", token=token))
        if not decision.allow:
            code = (
                grpc.StatusCode.UNAUTHENTICATED
                if decision.status == 401
                else grpc.StatusCode.PERMISSION_DENIED
            )
            raise ApiError(code, decision.reason)
        assert decision.tenant is not None and decision.principal is not None
        return Caller(
            decision.tenant,
            decision.principal,
            decision.roles,
            decision.tenant == self.platform_tenant,
        )

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self.public:
            return handler
        inner = cast(Callable[..., Awaitable[Any]] | None, handler.unary_unary)
        try:
            if inner is None:  # every method of the API is unary
                raise ApiError(grpc.StatusCode.UNIMPLEMENTED, "streaming is not supported")
            caller = await self.authenticate(handler_call_details.invocation_metadata)
        except ApiError as exc:
            refusal = exc

            async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await context.abort(refusal.code, refusal.message)

            return grpc.unary_unary_rpc_method_handler(
                refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            reset = _CALLER.set(caller)
            try:
                return await inner(request, context)
            finally:
                _CALLER.reset(reset)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


# ----------------------------------------------------------------------------- wire -> domain


def _check_text(field: str, value: str, max_len: int, *, required: bool = False) -> str:
    if required and not value.strip():
        raise invalid(field, "required")
    if len(value) > max_len:
        raise invalid(field, f"longer than {max_len} characters")
    if _CONTROL_RE.search(value):
        raise invalid(field, "contains control characters")
    return value


def _check_id(field: str, kind: str, value: str) -> str:
    try:
        return check_id(kind, value)
    except DomainError as exc:
        raise invalid(field, str(exc)) from None


def _check_ids(field: str, kind: str, values: Iterable[str]) -> frozenset[str]:
    items = list(values)
    if len(items) > MAX_LIST:
        raise invalid(field, f"more than {MAX_LIST} items")
    return frozenset(_check_id(field, kind, v) for v in items)


def _check_tags(field: str, values: Iterable[str]) -> frozenset[str]:
    items = list(values)
    if len(items) > MAX_TAGS:
        raise invalid(field, f"more than {MAX_TAGS} tags")
    for tag in items:
        if not _TAG_RE.match(tag):
            raise invalid(field, f"tag {tag!r}: 1-64 of A-Z a-z 0-9 _ . : - (start alnum)")
    return frozenset(items)


def _check_enum(field: str, cls: type[_E], value: str, default: _E | None = None) -> _E:
    if not value and default is not None:
        return default
    try:
        return cls(value)
    except ValueError:
        known = ", ".join(m.value for m in cls)
        raise invalid(field, f"unknown value {value!r} (known: {known})") from None


def _check_enums(field: str, cls: type[_E], values: Iterable[str]) -> frozenset[_E]:
    items = list(values)
    if len(items) > MAX_LIST:
        raise invalid(field, f"more than {MAX_LIST} items")
    return frozenset(_check_enum(field, cls, v) for v in items)


def _check_range(field: str, value: int, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise invalid(field, f"{value} is out of range {lo}..{hi}")
    return value


def _ts(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def _dt(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def tenant_from_pb(
    msg: common_pb2.Tenant, existing: Tenant | None, *, field: str = "tenant"
) -> Tenant:
    tid = _check_id(f"{field}.id", "tenant", msg.id)
    name = _check_text(f"{field}.name", msg.name, MAX_NAME, required=True)
    kind = _check_enum(f"{field}.kind", TenantKind, msg.kind)
    default_status = existing.status if existing is not None else TenantStatus.ACTIVE
    status = _check_enum(f"{field}.status", TenantStatus, msg.status, default_status)
    jwks_url = _check_text(f"{field}.jwks_url", msg.jwks_url, 2048) or None
    issuer = _check_text(f"{field}.issuer", msg.issuer, 512) or None
    algorithms = tuple(msg.algorithms)
    if len(algorithms) > 8:
        raise invalid(f"{field}.algorithms", "more than 8 algorithms")
    if jwks_url or issuer or algorithms:
        if not (jwks_url and issuer and algorithms):
            missing = "jwks_url" if not jwks_url else "issuer" if not issuer else "algorithms"
            raise invalid(
                f"{field}.{missing}",
                "a partner identity provider needs all of jwks_url, issuer and algorithms",
            )
        try:
            PartnerIssuer(issuer, tid, jwks_url, algorithms)
        except ValueError as exc:
            raise invalid(f"{field}.jwks_url", str(exc)) from None
    return Tenant(tid, name, kind, status, jwks_url, issuer, algorithms)


def tenant_to_pb(t: Tenant) -> common_pb2.Tenant:
    return common_pb2.Tenant(
        id=t.id,
        name=t.name,
        kind=t.kind.value,
        status=t.status.value,
        jwks_url=t.jwks_url or "",
        issuer=t.issuer or "",
        algorithms=list(t.algorithms),
    )


def principal_from_pb(
    req: tenants_pb2.PutPrincipalRequest, existing: Principal | None
) -> Principal:
    msg = req.principal
    pid = _check_id("principal.id", "principal", msg.id)
    tenant_id = _check_id("principal.tenant_id", "tenant", msg.tenant_id)
    name = _check_text("principal.name", msg.name, MAX_NAME, required=True)
    kind = _check_enum("principal.kind", PrincipalKind, msg.kind, PrincipalKind.USER)
    roles = _check_enums("principal.roles", Role, msg.roles)
    password = _check_text("digest_password", req.digest_password, 256)
    if password and req.clear_digest:
        raise invalid("clear_digest", "cannot set and clear the digest password at once")
    if password:
        ha1: str | None = digest_ha1(pid, password)
    elif req.clear_digest or existing is None:
        ha1 = None
    else:
        ha1 = existing.digest_ha1
    return Principal(pid, tenant_id, name, kind, roles, ha1, msg.disabled)


def principal_to_pb(p: Principal) -> common_pb2.Principal:
    return common_pb2.Principal(
        id=p.id,
        tenant_id=p.tenant_id,
        name=p.name,
        kind=p.kind.value,
        roles=sorted(r.value for r in p.roles),
        disabled=p.disabled,
        has_digest=p.digest_ha1 is not None,
    )


def camera_from_pb(msg: common_pb2.Camera) -> Camera:
    retention = msg.retention_days or 31
    return Camera(
        id=_check_id("camera.id", "camera", msg.id),
        owner_tenant=_check_id("camera.owner_tenant", "tenant", msg.owner_tenant),
        name=_check_text("camera.name", msg.name, MAX_NAME),
        tags=_check_tags("camera.tags", msg.tags),
        location=_check_text("camera.location", msg.location, MAX_NAME),
        area_type=_check_enum("camera.area_type", AreaType, msg.area_type, AreaType.OTHER),
        retention_days=_check_range("camera.retention_days", retention, 1, 3650),
    )


def camera_to_pb(c: Camera) -> common_pb2.Camera:
    return common_pb2.Camera(
        id=c.id,
        owner_tenant=c.owner_tenant,
        name=c.name,
        tags=sorted(c.tags),
        location=c.location,
        area_type=c.area_type.value,
        retention_days=c.retention_days,
    )


def mask_from_pb(msg: masks_pb2.Mask, *, field: str = "mask") -> MaskZone:
    mid = _check_id(f"{field}.id", "mask", msg.id)
    cid = _check_id(f"{field}.camera_id", "camera", msg.camera_id)
    if not 3 <= len(msg.points) <= MAX_MASK_POINTS:
        raise invalid(
            f"{field}.points", f"{len(msg.points)} points; a mask needs 3..{MAX_MASK_POINTS}"
        )
    points: list[tuple[float, float]] = []
    for i, pt in enumerate(msg.points):
        for axis, value in (("x", pt.x), ("y", pt.y)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise invalid(f"{field}.points[{i}].{axis}", f"{value!r} is not in 0..1")
        points.append((pt.x, pt.y))
    kind = _check_enum(f"{field}.kind", MaskKind, msg.kind, MaskKind.PERMANENT)
    tenant_kinds = _check_enums(f"{field}.tenant_kinds", TenantKind, msg.tenant_kinds)
    label = _check_text(f"{field}.label", msg.label, MAX_NAME)
    try:
        return MaskZone(mid, cid, tuple(points), kind, tenant_kinds, label)
    except DomainError as exc:
        raise invalid(field, str(exc)) from None


def mask_to_pb(z: MaskZone) -> masks_pb2.Mask:
    return masks_pb2.Mask(
        id=z.id,
        camera_id=z.camera_id,
        points=[masks_pb2.Point(x=x, y=y) for x, y in z.points],
        kind=z.kind.value,
        tenant_kinds=sorted(k.value for k in z.tenant_kinds),
        label=z.label,
    )


def _mask_summary(z: MaskZone) -> dict[str, Any]:
    """What the audit log records of a mask (not its coordinates)."""
    return {
        "kind": z.kind.value,
        "tenant_kinds": sorted(k.value for k in z.tenant_kinds),
        "points": len(z.points),
        "label": z.label,
    }


def _window_from_pb(field: str, w: common_pb2.TimeWindow) -> TimeWindow:
    bounds: list[time] = []
    for name, text in (("start", w.start), ("end", w.end)):
        try:
            if not _HHMM_RE.match(text):
                raise ValueError
            bounds.append(time.fromisoformat(text))
        except ValueError:
            raise invalid(f"{field}.{name}", f"{text!r} is not HH:MM") from None
    days = list(w.weekdays)
    for d in days:
        _check_range(f"{field}.weekdays", d, 0, 6)
    return TimeWindow(bounds[0], bounds[1], frozenset(days) if days else frozenset(range(7)))


def constraints_from_pb(msg: common_pb2.Constraints, field: str) -> Constraints:
    if len(msg.time_windows) > 64:
        raise invalid(f"{field}.time_windows", "more than 64 windows")
    windows = tuple(
        _window_from_pb(f"{field}.time_windows[{i}]", w) for i, w in enumerate(msg.time_windows)
    )
    streams = (
        _check_range(f"{field}.max_concurrent_streams", msg.max_concurrent_streams, 1, 1_000_000)
        if msg.HasField("max_concurrent_streams")
        else None
    )
    age = (
        _check_range(f"{field}.max_playback_age_s", msg.max_playback_age_s, 1, 100 * 365 * 86400)
        if msg.HasField("max_playback_age_s")
        else None
    )
    return Constraints(
        time_windows=windows,
        max_concurrent_streams=streams,
        max_playback_age_s=age,
        purpose_required=msg.purpose_required,
        quality_cap=_check_enum(f"{field}.quality_cap", Quality, msg.quality_cap, Quality.MAIN),
        ptz_priority=_check_range(f"{field}.ptz_priority", msg.ptz_priority, 0, 32000),
    )


def grant_from_pb(msg: common_pb2.Grant) -> Grant:
    gid = _check_id("grant.id", "grant", msg.id)
    owner = _check_id("grant.owner_tenant", "tenant", msg.owner_tenant)
    grantee = _check_id("grant.grantee_tenant", "tenant", msg.grantee_tenant)
    if grantee == owner:
        raise invalid("grant.grantee_tenant", "a tenant cannot grant to itself")
    camera_ids = _check_ids("grant.camera_ids", "camera", msg.camera_ids)
    tags = _check_tags("grant.camera_tags", msg.camera_tags)
    if not camera_ids and not tags:
        raise invalid("grant.camera_ids", "names no cameras (give camera_ids or camera_tags)")
    rights = _check_enums("grant.rights", Right, msg.rights)
    if not rights:
        raise invalid("grant.rights", "at least one right is required")
    return Grant(
        id=gid,
        owner_tenant=owner,
        grantee_tenant=grantee,
        camera_ids=camera_ids,
        camera_tags=tags,
        rights=rights,
        constraints=constraints_from_pb(msg.constraints, "grant.constraints"),
    )


def constraints_to_pb(c: Constraints) -> common_pb2.Constraints:
    msg = common_pb2.Constraints(
        time_windows=[
            common_pb2.TimeWindow(
                start=f"{w.start:%H:%M}",
                end=f"{w.end:%H:%M}",
                weekdays=[] if w.weekdays == frozenset(range(7)) else sorted(w.weekdays),
            )
            for w in c.time_windows
        ],
        purpose_required=c.purpose_required,
        quality_cap=c.quality_cap.value,
        ptz_priority=c.ptz_priority,
    )
    if c.max_concurrent_streams is not None:
        msg.max_concurrent_streams = c.max_concurrent_streams
    if c.max_playback_age_s is not None:
        msg.max_playback_age_s = c.max_playback_age_s
    return msg


def grant_to_pb(g: Grant) -> common_pb2.Grant:
    msg = common_pb2.Grant(
        id=g.id,
        owner_tenant=g.owner_tenant,
        grantee_tenant=g.grantee_tenant,
        camera_ids=sorted(g.camera_ids),
        camera_tags=sorted(g.camera_tags),
        rights=sorted(r.value for r in g.rights),
        constraints=constraints_to_pb(g.constraints),
        created_at=_ts(g.created_at),
    )
    if g.revoked_at is not None:
        msg.revoked_at.CopyFrom(_ts(g.revoked_at))
    return msg


def entry_to_pb(e: AuditEntry) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        seq=e.seq,
        time=_ts(e.time),
        action=e.action.value,
        tenant=e.tenant or "",
        principal=e.principal or "",
        camera=e.camera or "",
        purpose=e.purpose or "",
        outcome=e.outcome,
        detail_json=json.dumps(dict(e.detail), sort_keys=True, separators=(",", ":")),
    )


# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenPlan:
    """A validated token request."""

    tenant: str
    subject: str
    cameras: frozenset[str] | None
    ttl: timedelta
    roles: frozenset[Role]
    purpose: str | None


def plan_token(
    store: TenantStore, req: tokens_pb2.IssueTokenRequest, caller: Caller | None
) -> TokenPlan:
    """Validate a token request against the store (blocking: run it in a thread).

    ``caller`` None: a local operator on the data dir (``feedgate token issue --local``)."""
    tenant_id = _check_id("tenant", "tenant", req.tenant)
    subject = _check_id("subject", "principal", req.subject)
    cameras = _check_ids("cameras", "camera", req.cameras) if req.cameras else None
    ttl_s = req.ttl_seconds if req.HasField("ttl_seconds") else DEFAULT_TTL_S
    _check_range("ttl_seconds", ttl_s, 1, MAX_TTL_S)
    roles = _check_enums("roles", Role, req.roles)
    purpose = _check_text("purpose", req.purpose, MAX_PURPOSE) or None
    if caller is not None and not caller.admin_of(tenant_id):
        raise denied(f"may not issue tokens for tenant {tenant_id}")
    tenant = store.get_tenant(tenant_id)
    if not tenant.active:
        raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, f"tenant {tenant_id} is suspended")
    try:
        principal = store.get_principal(subject)
    except NotFound:
        raise invalid("subject", f"no principal {subject!r} in tenant {tenant_id}") from None
    if principal.tenant_id != tenant_id:
        raise invalid("subject", f"no principal {subject!r} in tenant {tenant_id}")
    if principal.disabled:
        raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, f"principal {subject} is disabled")
    extra = roles - principal.roles
    if extra:
        names = ", ".join(sorted(r.value for r in extra))
        raise denied(f"roles: {subject} does not hold {names}")
    return TokenPlan(tenant_id, subject, cameras, timedelta(seconds=ttl_s), roles, purpose)


def issue_token(
    tenancy: Tenancy,
    plan: TokenPlan,
    *,
    actor_tenant: str | None,
    actor: str,
    via: str,
) -> tokens_pb2.IssueTokenResponse:
    """Sign the token and record TOKEN_ISSUED (blocking). The token is returned only once the
    audit entry is stored."""
    token = tenancy.issuer.issue(
        tenant=plan.tenant,
        subject=plan.subject,
        ttl=plan.ttl,
        cameras=None if plan.cameras is None else sorted(plan.cameras),
        roles=sorted(r.value for r in plan.roles),
        purpose=plan.purpose,
    )
    claims = tenancy.verifier.verify(token)
    tenancy.audit.append(
        AuditAction.TOKEN_ISSUED,
        tenant=actor_tenant,
        principal=actor,
        purpose=plan.purpose,
        detail={
            "via": via,
            "for_tenant": plan.tenant,
            "subject": plan.subject,
            "token_id": claims.token_id,
            "expires_at": claims.expires_at.isoformat(),
            "ttl_s": int(plan.ttl.total_seconds()),
            "roles": sorted(r.value for r in plan.roles),
            "cameras": None if plan.cameras is None else sorted(plan.cameras),
            "tenants": [plan.tenant],
        },
    )
    return tokens_pb2.IssueTokenResponse(
        token=token, expires_at=_ts(claims.expires_at), token_id=claims.token_id
    )


# ----------------------------------------------------------------------------- the services


def _about(entry: AuditEntry, tenant: str, owned_cameras: frozenset[str]) -> bool:
    if entry.tenant == tenant:
        return True
    tenants = entry.detail.get("tenants")
    if isinstance(tenants, list) and tenant in tenants:
        return True
    return entry.camera is not None and entry.camera in owned_cameras


class ControlApi:
    """The implementation of every feedgate.v1 service. Methods are named as in the .proto
    and take (request, caller)."""

    def __init__(self, tenancy: Tenancy, platform_tenant: str) -> None:
        self.tenancy = tenancy
        self.store = tenancy.store
        self.platform_tenant = platform_tenant

    # -- plumbing

    async def _run(self, fn: Callable[[], _T]) -> _T:
        """Run blocking store work in a thread, in one transaction."""

        def tx() -> _T:
            with self.store.db.transaction():
                return fn()

        return await asyncio.to_thread(tx)

    async def _audit(
        self,
        caller: Caller,
        action: AuditAction,
        method: str,
        tenants: Iterable[str],
        *,
        camera: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        await asyncio.to_thread(
            self.tenancy.audit.append,
            action,
            tenant=caller.tenant,
            principal=caller.subject,
            camera=camera,
            outcome="ok",
            detail={"api": method, "tenants": sorted(set(tenants)), **(detail or {})},
        )

    async def _changed(self) -> None:
        await asyncio.to_thread(self.tenancy.policy.reload)

    @staticmethod
    def _require(ok: bool, reason: str) -> None:
        if not ok:
            raise denied(reason)

    def _visible_camera(self, caller: Caller, camera: Camera, snap: Snapshot) -> bool:
        if caller.admin_of(camera.owner_tenant):
            return True
        if Role.ADMIN not in caller.roles:
            return False
        return any(g.grantee_tenant == caller.tenant and g.covers(camera) for g in snap.grants)

    # -- TenantService

    async def _put_tenant(
        self, req: tenants_pb2.PutTenantRequest, caller: Caller, create: bool
    ) -> common_pb2.Tenant:
        self._require(caller.platform_admin, "only platform admins manage tenants")
        if not req.HasField("tenant"):
            raise invalid("tenant", "required")
        method = "CreateTenant" if create else "UpdateTenant"
        own_issuer = self.tenancy.issuer.issuer

        def op() -> tuple[Tenant, bool]:
            try:
                existing: Tenant | None = self.store.get_tenant(req.tenant.id)
            except NotFound:
                existing = None
            if create and existing is not None:
                raise ApiError(
                    grpc.StatusCode.ALREADY_EXISTS, f"tenant {req.tenant.id!r} already exists"
                )
            t = tenant_from_pb(req.tenant, existing)
            if t.issuer is not None:
                if t.issuer == own_issuer:
                    raise invalid("tenant.issuer", "is the gateway's own issuer")
                for other in self.store.list_tenants():
                    if other.id != t.id and other.issuer == t.issuer:
                        raise invalid("tenant.issuer", f"already used by tenant {other.id}")
            if t.id == self.platform_tenant and not t.active:
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION, "the platform tenant cannot be suspended"
                )
            self.store.put_tenant(t)
            return t, existing is None

        t, created = await self._run(op)
        await self._audit(
            caller,
            AuditAction.TENANT_CHANGED,
            method,
            [t.id],
            detail={
                "op": "create" if created else "update",
                "tenant": t.id,
                "name": t.name,
                "kind": t.kind.value,
                "status": t.status.value,
                "issuer": t.issuer,
                "jwks_url": t.jwks_url,
            },
        )
        await self._changed()
        return tenant_to_pb(t)

    async def CreateTenant(
        self, req: tenants_pb2.PutTenantRequest, caller: Caller
    ) -> common_pb2.Tenant:
        return await self._put_tenant(req, caller, create=True)

    async def UpdateTenant(
        self, req: tenants_pb2.PutTenantRequest, caller: Caller
    ) -> common_pb2.Tenant:
        return await self._put_tenant(req, caller, create=False)

    async def GetTenant(
        self, req: tenants_pb2.GetTenantRequest, caller: Caller
    ) -> common_pb2.Tenant:
        self._require(
            bool(caller.roles & {Role.ADMIN, Role.AUDITOR}), "needs the admin or auditor role"
        )
        tid = _check_id("id", "tenant", req.id)
        t = await asyncio.to_thread(self.store.get_tenant, tid)
        return tenant_to_pb(t)

    async def ListTenants(
        self, req: tenants_pb2.ListTenantsRequest, caller: Caller
    ) -> tenants_pb2.ListTenantsResponse:
        self._require(
            bool(caller.roles & {Role.ADMIN, Role.AUDITOR}), "needs the admin or auditor role"
        )
        tenants = await asyncio.to_thread(self.store.list_tenants)
        return tenants_pb2.ListTenantsResponse(tenants=[tenant_to_pb(t) for t in tenants])

    async def SetTenantStatus(
        self, req: tenants_pb2.SetTenantStatusRequest, caller: Caller
    ) -> common_pb2.Tenant:
        self._require(caller.platform_admin, "only platform admins manage tenants")
        tid = _check_id("id", "tenant", req.id)
        status = _check_enum("status", TenantStatus, req.status)
        reason = _check_text("reason", req.reason, MAX_PURPOSE)
        if tid == self.platform_tenant and status != TenantStatus.ACTIVE:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION, "the platform tenant cannot be suspended"
            )
        t = await self._run(lambda: self.store.set_tenant_status(tid, status))
        await self._audit(
            caller,
            AuditAction.TENANT_CHANGED,
            "SetTenantStatus",
            [tid],
            detail={"op": "status", "tenant": tid, "status": status.value, "reason": reason},
        )
        await self._changed()
        return tenant_to_pb(t)

    async def PutPrincipal(
        self, req: tenants_pb2.PutPrincipalRequest, caller: Caller
    ) -> common_pb2.Principal:
        if not req.HasField("principal"):
            raise invalid("principal", "required")
        pid = _check_id("principal.id", "principal", req.principal.id)
        tid = _check_id("principal.tenant_id", "tenant", req.principal.tenant_id)
        self._require(caller.admin_of(tid), f"may not manage principals of tenant {tid}")

        def op() -> tuple[Principal, bool]:
            try:
                existing: Principal | None = self.store.get_principal(pid)
            except NotFound:
                existing = None
            p = principal_from_pb(req, existing)
            if existing is not None and existing.tenant_id != p.tenant_id:
                if not caller.admin_of(existing.tenant_id):
                    raise denied(f"principal {p.id!r} belongs to another tenant")
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"principal {p.id!r} belongs to tenant {existing.tenant_id}; "
                    "principals cannot move between tenants",
                )
            self.store.put_principal(p)
            return p, existing is None

        p, created = await self._run(op)
        await self._audit(
            caller,
            AuditAction.CONFIG,
            "PutPrincipal",
            [p.tenant_id],
            detail={
                "op": "create" if created else "update",
                "principal": p.id,
                "roles": sorted(r.value for r in p.roles),
                "disabled": p.disabled,
                "digest": "set"
                if req.digest_password
                else "cleared"
                if req.clear_digest
                else "unchanged",
            },
        )
        await self._changed()
        return principal_to_pb(p)

    async def ListPrincipals(
        self, req: tenants_pb2.ListPrincipalsRequest, caller: Caller
    ) -> tenants_pb2.ListPrincipalsResponse:
        if req.tenant_id:
            tid: str | None = _check_id("tenant_id", "tenant", req.tenant_id)
            self._require(caller.admin_of(str(tid)), f"may not list principals of {tid}")
        elif caller.platform_admin:
            tid = None
        else:
            self._require(Role.ADMIN in caller.roles, "needs the admin role")
            tid = caller.tenant
        principals = await asyncio.to_thread(self.store.list_principals, tid)
        return tenants_pb2.ListPrincipalsResponse(
            principals=[principal_to_pb(p) for p in principals]
        )

    async def DeletePrincipal(
        self, req: tenants_pb2.DeletePrincipalRequest, caller: Caller
    ) -> tenants_pb2.DeletePrincipalResponse:
        pid = _check_id("id", "principal", req.id)
        self._require(Role.ADMIN in caller.roles, "needs the admin role")
        if pid == caller.subject:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION, "cannot delete the principal you call as"
            )

        def op() -> Principal:
            p = self.store.get_principal(pid)
            self._require(
                caller.admin_of(p.tenant_id), f"may not manage principals of {p.tenant_id}"
            )
            self.store.delete_principal(pid)
            return p

        p = await self._run(op)
        await self._audit(
            caller,
            AuditAction.CONFIG,
            "DeletePrincipal",
            [p.tenant_id],
            detail={"op": "delete", "principal": pid},
        )
        await self._changed()
        return tenants_pb2.DeletePrincipalResponse()

    # -- CameraService

    async def PutCamera(
        self, req: cameras_pb2.PutCameraRequest, caller: Caller
    ) -> common_pb2.Camera:
        if not req.HasField("camera"):
            raise invalid("camera", "required")
        cam = camera_from_pb(req.camera)
        self._require(
            caller.admin_of(cam.owner_tenant), f"may not manage cameras of {cam.owner_tenant}"
        )

        def op() -> bool:
            try:
                existing: Camera | None = self.store.get_camera(cam.id)
            except NotFound:
                existing = None
            if existing is not None and not caller.admin_of(existing.owner_tenant):
                raise denied(f"camera {cam.id!r} belongs to another tenant")
            self.store.put_camera(cam)
            return existing is None

        created = await self._run(op)
        await self._audit(
            caller,
            AuditAction.CONFIG,
            "PutCamera",
            [cam.owner_tenant],
            camera=cam.id,
            detail={
                "op": "create" if created else "update",
                "owner": cam.owner_tenant,
                "tags": sorted(cam.tags),
                "area_type": cam.area_type.value,
                "retention_days": cam.retention_days,
            },
        )
        await self._changed()
        return camera_to_pb(cam)

    async def GetCamera(
        self, req: cameras_pb2.GetCameraRequest, caller: Caller
    ) -> common_pb2.Camera:
        cid = _check_id("id", "camera", req.id)
        self._require(Role.ADMIN in caller.roles, "needs the admin role")
        cam = await asyncio.to_thread(self.store.get_camera, cid)
        if not self._visible_camera(caller, cam, self.tenancy.policy.snapshot):
            raise NotFound("camera", cid)  # do not tell others' camera ids apart from none
        return camera_to_pb(cam)

    async def ListCameras(
        self, req: cameras_pb2.ListCamerasRequest, caller: Caller
    ) -> cameras_pb2.ListCamerasResponse:
        self._require(Role.ADMIN in caller.roles, "needs the admin role")
        owner = _check_id("owner_tenant", "tenant", req.owner_tenant) if req.owner_tenant else None
        cams = await asyncio.to_thread(self.store.list_cameras, owner)
        snap = self.tenancy.policy.snapshot
        return cameras_pb2.ListCamerasResponse(
            cameras=[camera_to_pb(c) for c in cams if self._visible_camera(caller, c, snap)]
        )

    async def DeleteCamera(
        self, req: cameras_pb2.DeleteCameraRequest, caller: Caller
    ) -> cameras_pb2.DeleteCameraResponse:
        cid = _check_id("id", "camera", req.id)
        self._require(Role.ADMIN in caller.roles, "needs the admin role")

        def op() -> Camera:
            cam = self.store.get_camera(cid)
            self._require(
                caller.admin_of(cam.owner_tenant), f"may not manage cameras of {cam.owner_tenant}"
            )
            self.store.delete_camera(cid)
            return cam

        cam = await self._run(op)
        await self._audit(
            caller,
            AuditAction.CONFIG,
            "DeleteCamera",
            [cam.owner_tenant],
            camera=cid,
            detail={"op": "delete", "owner": cam.owner_tenant},
        )
        await self._changed()
        return cameras_pb2.DeleteCameraResponse()

    # -- MaskService

    def _find_mask(self, mask_id: str) -> MaskZone | None:
        return next((z for z in self.store.list_masks() if z.id == mask_id), None)

    def _mask_camera(self, caller: Caller, camera_id: str, hidden: NotFound) -> Camera:
        """The camera a mask change is about, if the caller manages its masks. Callers who
        cannot see the camera get ``hidden`` (NOT_FOUND), so ids of others' cameras and masks
        are not told apart from none."""
        cam = self.store.get_camera(camera_id)
        if caller.admin_of(cam.owner_tenant):
            return cam
        if self._visible_camera(caller, cam, self.tenancy.policy.snapshot):
            raise denied(f"may not manage masks of {cam.owner_tenant}'s camera {cam.id}")
        raise hidden

    async def PutMask(self, req: masks_pb2.PutMaskRequest, caller: Caller) -> masks_pb2.Mask:
        self._require(Role.ADMIN in caller.roles, "needs the admin role")
        if not req.HasField("mask"):
            raise invalid("mask", "required")
        zone = mask_from_pb(req.mask)

        def op() -> tuple[Camera, MaskZone | None]:
            cam = self._mask_camera(caller, zone.camera_id, NotFound("camera", zone.camera_id))
            existing = self._find_mask(zone.id)
            if existing is not None and existing.camera_id != zone.camera_id:
                other = self.store.get_camera(existing.camera_id)
                if not caller.admin_of(other.owner_tenant):
                    raise denied(f"mask {zone.id!r} belongs to another tenant's camera")
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"mask {zone.id!r} is on camera {existing.camera_id}; masks cannot move "
                    "between cameras (delete it and put a new one)",
                )
            self.store.put_mask(zone)
            return cam, existing

        cam, existing = await self._run(op)
        detail: dict[str, Any] = {
            "op": "create" if existing is None else "update",
            "mask": zone.id,
            "owner": cam.owner_tenant,
            **_mask_summary(zone),
        }
        if existing is not None:
            detail["previous"] = _mask_summary(existing)
        await self._audit(
            caller,
            AuditAction.MASK_CHANGED,
            "PutMask",
            [cam.owner_tenant],
            camera=cam.id,
            detail=detail,
        )
        await self._changed()
        return mask_to_pb(zone)

    async def ListMasks(
        self, req: masks_pb2.ListMasksRequest, caller: Caller
    ) -> masks_pb2.ListMasksResponse:
        self._require(Role.ADMIN in caller.roles, "needs the admin role")
        cid = _check_id("camera_id", "camera", req.camera_id) if req.camera_id else None
        snap = self.tenancy.policy.snapshot

        def op() -> list[MaskZone]:
            if cid is not None:
                cam = self.store.get_camera(cid)
                if not self._visible_camera(caller, cam, snap):
                    raise NotFound("camera", cid)
                return self.store.list_masks(cid)
            cams = {c.id: c for c in self.store.list_cameras()}
            return [
                z
                for z in self.store.list_masks()
                if z.camera_id in cams and self._visible_camera(caller, cams[z.camera_id], snap)
            ]

        zones = await self._run(op)
        return masks_pb2.ListMasksResponse(masks=[mask_to_pb(z) for z in zones])

    async def DeleteMask(
        self, req: masks_pb2.DeleteMaskRequest, caller: Caller
    ) -> masks_pb2.DeleteMaskResponse:
        mid = _check_id("id", "mask", req.id)
        self._require(Role.ADMIN in caller.roles, "needs the admin role")

        def op() -> tuple[Camera, MaskZone]:
            zone = self._find_mask(mid)
            if zone is None:
                raise NotFound("mask", mid)
            cam = self._mask_camera(caller, zone.camera_id, NotFound("mask", mid))
            self.store.delete_mask(mid)
            return cam, zone

        cam, zone = await self._run(op)
        await self._audit(
            caller,
            AuditAction.MASK_CHANGED,
            "DeleteMask",
            [cam.owner_tenant],
            camera=cam.id,
            detail={"op": "delete", "mask": mid, "owner": cam.owner_tenant, **_mask_summary(zone)},
        )
        await self._changed()
        return masks_pb2.DeleteMaskResponse()

    # -- GrantService

    async def PutGrant(self, req: grants_pb2.PutGrantRequest, caller: Caller) -> common_pb2.Grant:
        if not req.HasField("grant"):
            raise invalid("grant", "required")
        g = grant_from_pb(req.grant)
        self._require(caller.admin_of(g.owner_tenant), f"may not manage grants of {g.owner_tenant}")

        def op() -> tuple[Grant, bool]:
            try:
                existing: Grant | None = self.store.get_grant(g.id)
            except NotFound:
                existing = None
            if existing is not None and existing.owner_tenant != g.owner_tenant:
                if not caller.admin_of(existing.owner_tenant):
                    raise denied(f"grant {g.id!r} belongs to another tenant")
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"grant {g.id!r} is owned by {existing.owner_tenant}; owners cannot change",
                )
            self.store.get_tenant(g.grantee_tenant)  # NotFound names it
            for cid in sorted(g.camera_ids):
                try:
                    cam = self.store.get_camera(cid)
                except NotFound:
                    raise invalid("grant.camera_ids", f"unknown camera {cid!r}") from None
                if cam.owner_tenant != g.owner_tenant:
                    raise invalid("grant.camera_ids", f"camera {cid!r} is not {g.owner_tenant}'s")
            self.store.put_grant(g)
            return self.store.get_grant(g.id), existing is None

        stored, created = await self._run(op)
        await self._audit(
            caller,
            AuditAction.GRANT_CREATED,
            "PutGrant",
            [g.owner_tenant, g.grantee_tenant],
            detail={
                "op": "create" if created else "update",
                "grant": g.id,
                "owner": g.owner_tenant,
                "grantee": g.grantee_tenant,
                "cameras": sorted(g.camera_ids),
                "tags": sorted(g.camera_tags),
                "rights": sorted(r.value for r in g.rights),
            },
        )
        await self._changed()
        return grant_to_pb(stored)

    def _may_read_grant(self, caller: Caller, g: Grant) -> bool:
        return caller.admin_of(g.owner_tenant) or caller.admin_of(g.grantee_tenant)

    async def GetGrant(self, req: grants_pb2.GetGrantRequest, caller: Caller) -> common_pb2.Grant:
        gid = _check_id("id", "grant", req.id)
        self._require(Role.ADMIN in caller.roles, "needs the admin role")
        g = await asyncio.to_thread(self.store.get_grant, gid)
        if not self._may_read_grant(caller, g):
            raise NotFound("grant", gid)
        return grant_to_pb(g)

    async def ListGrants(
        self, req: grants_pb2.ListGrantsRequest, caller: Caller
    ) -> grants_pb2.ListGrantsResponse:
        self._require(Role.ADMIN in caller.roles, "needs the admin role")
        owner = _check_id("owner_tenant", "tenant", req.owner_tenant) if req.owner_tenant else None
        grantee = (
            _check_id("grantee_tenant", "tenant", req.grantee_tenant)
            if req.grantee_tenant
            else None
        )
        grants = await asyncio.to_thread(
            lambda: self.store.list_grants(
                owner=owner, grantee=grantee, include_revoked=req.include_revoked
            )
        )
        return grants_pb2.ListGrantsResponse(
            grants=[grant_to_pb(g) for g in grants if self._may_read_grant(caller, g)]
        )

    async def RevokeGrant(
        self, req: grants_pb2.RevokeGrantRequest, caller: Caller
    ) -> common_pb2.Grant:
        gid = _check_id("id", "grant", req.id)
        reason = _check_text("reason", req.reason, MAX_PURPOSE)
        self._require(Role.ADMIN in caller.roles, "needs the admin role")

        def op() -> tuple[Grant, bool]:
            g = self.store.get_grant(gid)
            if not caller.admin_of(g.owner_tenant):
                if caller.admin_of(g.grantee_tenant):
                    raise denied(f"only {g.owner_tenant}, the owner, revokes grant {gid}")
                raise NotFound("grant", gid)
            if not g.active:
                return g, False
            return self.store.revoke_grant(gid, datetime.now(UTC)), True

        g, changed = await self._run(op)
        if changed:
            await self._audit(
                caller,
                AuditAction.GRANT_REVOKED,
                "RevokeGrant",
                [g.owner_tenant, g.grantee_tenant],
                detail={
                    "grant": g.id,
                    "owner": g.owner_tenant,
                    "grantee": g.grantee_tenant,
                    "reason": reason,
                },
            )
            await self._changed()
        return grant_to_pb(g)

    # -- TokenService

    async def IssueToken(
        self, req: tokens_pb2.IssueTokenRequest, caller: Caller
    ) -> tokens_pb2.IssueTokenResponse:
        plan = await asyncio.to_thread(plan_token, self.store, req, caller)
        return await asyncio.to_thread(
            issue_token,
            self.tenancy,
            plan,
            actor_tenant=caller.tenant,
            actor=caller.subject,
            via="grpc",
        )

    async def GetJwks(
        self, req: tokens_pb2.GetJwksRequest, caller: Caller
    ) -> tokens_pb2.GetJwksResponse:
        return tokens_pb2.GetJwksResponse(
            jwks_json=json.dumps(self.tenancy.issuer.jwks(), sort_keys=True)
        )

    # -- AuditService

    def _audit_scope(self, caller: Caller) -> tuple[str | None, frozenset[str]]:
        """(None, -) for the whole log, else (tenant, the cameras it owns)."""
        self._require(caller.auditor, "needs the auditor role")
        if caller.platform:
            return None, frozenset()
        snap = self.tenancy.policy.snapshot
        owned = frozenset(c.id for c in snap.cameras.values() if c.owner_tenant == caller.tenant)
        return caller.tenant, owned

    async def ListEntries(
        self, req: audit_pb2.ListEntriesRequest, caller: Caller
    ) -> audit_pb2.ListEntriesResponse:
        scope, owned = self._audit_scope(caller)
        limit = _check_range("limit", req.limit or DEFAULT_PAGE, 1, MAX_PAGE)
        page = _check_range("page", req.page, 0, 1_000_000)
        start = _dt(req.from_time) if req.HasField("from_time") else None
        end = _dt(req.to_time) if req.HasField("to_time") else None
        if start is not None and end is not None and end <= start:
            raise invalid("to_time", "must be after from_time")
        audit = self.tenancy.audit

        def first_seq() -> int:
            # Entry times only go forwards (up to a second of clock skew): bisect by time.
            if start is None:
                return 0
            lo, hi = 0, audit.size()
            while lo < hi:
                mid = (lo + hi) // 2
                e = next(audit.entries(mid, mid + 1), None)
                if e is None or e.time >= start - _SKEW:
                    hi = mid
                else:
                    lo = mid + 1
            return lo

        def op() -> tuple[list[AuditEntry], bool]:
            skip, out = page * limit, []
            for e in audit.entries(first_seq()):
                if end is not None and e.time >= end + _SKEW:
                    break
                if (start is not None and e.time < start) or (end is not None and e.time >= end):
                    continue
                if scope is not None and not _about(e, scope, owned):
                    continue
                if skip:
                    skip -= 1
                    continue
                out.append(e)
                if len(out) > limit:
                    break
            return out[:limit], len(out) > limit

        entries, more = await asyncio.to_thread(op)
        return audit_pb2.ListEntriesResponse(entries=[entry_to_pb(e) for e in entries], more=more)

    async def Verify(self, req: audit_pb2.VerifyRequest, caller: Caller) -> audit_pb2.VerifyReport:
        self._require(caller.auditor, "needs the auditor role")
        public = self.tenancy.audit_key.private_key.public_key()
        report = await asyncio.to_thread(verify_log, self.tenancy.db, public)
        msg = audit_pb2.VerifyReport(
            ok=report.ok,
            entries=report.entries,
            checkpoints=report.checkpoints,
            problem=report.problem or "",
        )
        if report.first_bad_seq is not None:
            msg.first_bad_seq = report.first_bad_seq
        return msg

    async def ExportDisclosures(
        self, req: audit_pb2.ExportDisclosuresRequest, caller: Caller
    ) -> audit_pb2.ExportDisclosuresResponse:
        scope, owned = self._audit_scope(caller)
        if not req.HasField("from_time"):
            raise invalid("from_time", "required")
        if not req.HasField("to_time"):
            raise invalid("to_time", "required")
        start, end = _dt(req.from_time), _dt(req.to_time)
        if end <= start:
            raise invalid("to_time", "must be after from_time")

        def op() -> tuple[str, int]:
            buf = io.StringIO()
            rows = export_disclosures(self.tenancy.db, start, end, buf)
            if scope is None:
                return buf.getvalue(), rows
            return filter_disclosures(buf.getvalue(), scope, owned)

        text, rows = await asyncio.to_thread(op)
        return audit_pb2.ExportDisclosuresResponse(csv=text, rows=rows)

    # -- registration

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        out: list[grpc.GenericRpcHandler] = []
        for module in (tenants_pb2, cameras_pb2, masks_pb2, grants_pb2, tokens_pb2, audit_pb2):
            for service in module.DESCRIPTOR.services_by_name.values():
                methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
                for m in service.methods:
                    impl = getattr(self, m.name, None)
                    if impl is None:
                        raise NotImplementedError(f"{service.full_name}/{m.name}")
                    req_cls = message_factory.GetMessageClass(m.input_type)
                    resp_cls = message_factory.GetMessageClass(m.output_type)
                    public = f"/{service.full_name}/{m.name}" in PUBLIC_METHODS
                    methods[m.name] = grpc.unary_unary_rpc_method_handler(
                        _behavior(impl, public),
                        request_deserializer=req_cls.FromString,
                        response_serializer=resp_cls.SerializeToString,
                    )
                out.append(grpc.method_handlers_generic_handler(service.full_name, methods))
        return out


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


def _behavior(
    impl: Callable[[Any, Caller], Awaitable[Message]], public: bool
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]:
    async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        caller = _CALLER.get()
        if caller is None:
            if not public:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing credentials")
            caller = _ANONYMOUS
        try:
            return await impl(request, caller)
        except Exception as exc:
            status = _status_of(exc)
            if status is None:
                log.exception("control API: %s failed", getattr(impl, "__name__", impl))
                status = (grpc.StatusCode.INTERNAL, "internal error")
        await context.abort(*status)

    return behavior


# ----------------------------------------------------------------------------- the server


async def start_grpc(
    tenancy: Tenancy,
    host: str,
    port: int,
    *,
    platform_tenant: str,
    credentials: grpc.ServerCredentials | None = None,
) -> grpc.aio.Server:
    """Start the control API on host:port, over TLS with ``credentials`` (see
    ``gateway.tls``); without, keep it on loopback or a private network. The caller stops it
    with ``await server.stop(grace)``."""
    check_id("tenant", platform_tenant)
    api = ControlApi(tenancy, platform_tenant)
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(tenancy, platform_tenant)],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers(api.handlers())
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(f"control API: cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"control API: cannot listen on {address}")
    await server.start()
    log.info("control API (gRPC%s) on %s", "" if credentials is None else " over TLS", address)
    return server


__all__ = [
    "AuthInterceptor",
    "Caller",
    "ControlApi",
    "TokenPlan",
    "issue_token",
    "plan_token",
    "start_grpc",
]
