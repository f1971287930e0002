"""The control API's declared types (pydantic v2): what a request may carry and what a
response holds, for the tenancy objects.

REST validates its bodies with these models and generates its OpenAPI 3.1 document from them;
gRPC converts its messages into them, so both entry points accept exactly the same values and
name a bad field the same way (``camera.retention_days: ...``). The domain objects
(``tenants.model``) stay plain dataclasses; ``to_domain``/``of`` convert.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tenants.control.errors import ControlError, invalid
from tenants.model import (
    MAX_MASK_POINTS,
    AreaType,
    Camera,
    Constraints,
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
)
from tenants.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    PasswordError,
    check_password,
    hash_password,
)
from tenants.tokens import PartnerIssuer

MAX_NAME = 200
MAX_PURPOSE = 256
MAX_LIST = 1000
MAX_TAGS = 64

# The patterns are the validation, and the JSON Schema that clients and test generators see.
ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # no control characters
HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"

Id = Annotated[str, Field(pattern=ID_PATTERN, description="1-64 of a-z 0-9 _ . - (start alnum)")]
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]
Name = Annotated[str, Field(max_length=MAX_NAME, pattern=TEXT_PATTERN)]
Purpose = Annotated[str, Field(max_length=MAX_PURPOSE, pattern=TEXT_PATTERN)]
Ids = Annotated[list[Id], Field(max_length=MAX_LIST)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]
MIN_PASSWORD, MAX_PASSWORD = MIN_LENGTH, MAX_LENGTH

_M = TypeVar("_M", bound=BaseModel)


class Body(BaseModel):
    """A request body: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)


class View(BaseModel):
    """A response object."""

    model_config = ConfigDict(extra="forbid")


def _loc(parts: tuple[int | str, ...]) -> str:
    """('constraints', 'time_windows', 0, 'start') -> 'constraints.time_windows[0].start'; an
    item of a list of plain values is named by its list ('tags', not 'tags[3]')."""
    if parts and isinstance(parts[-1], int):
        parts = parts[:-1]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse(model: type[_M], data: Any, *, at: str = "") -> _M:
    """Validate ``data`` as ``model``; a bad value is a ControlError naming its field under
    ``at`` (``parse(GrantBody, d, at="grant")`` names ``grant.constraints.ptz_priority``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = _loc(tuple(first["loc"]))
        message = first["msg"]
        # A secret's value is never repeated back (an error may be logged or shown).
        if first["type"] == "string_pattern_mismatch" and "password" not in field:
            message = f"{first.get('input')!r} does not match {first['ctx']['pattern']}"
        raise invalid(field, message).at(at) if field else invalid(at or "body", message) from None
    except ControlError as exc:
        raise exc.at(at) from None


# ----------------------------------------------------------------------------- tenants


class TenantBody(Body):
    id: Id
    name: Name = Field(min_length=1)
    kind: TenantKind
    status: TenantStatus | None = Field(None, description="default: unchanged, or active")
    jwks_url: str | None = Field(None, max_length=2048, pattern=TEXT_PATTERN)
    issuer: str | None = Field(None, max_length=512, pattern=TEXT_PATTERN)
    algorithms: list[Annotated[str, Field(max_length=16)]] = Field(
        default_factory=list, max_length=8
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("required")
        return value

    @model_validator(mode="after")
    def _identity_provider(self) -> TenantBody:
        if self.jwks_url or self.issuer or self.algorithms:
            if not (self.jwks_url and self.issuer and self.algorithms):
                missing = (
                    "jwks_url"
                    if not self.jwks_url
                    else "issuer"
                    if not self.issuer
                    else "algorithms"
                )
                raise invalid(
                    missing,
                    "a partner identity provider needs all of jwks_url, issuer and algorithms",
                )
            try:
                PartnerIssuer(self.issuer, self.id, self.jwks_url, tuple(self.algorithms))
            except ValueError as exc:
                raise invalid("jwks_url", str(exc)) from None
        return self

    def to_domain(self, existing: Tenant | None) -> Tenant:
        default = existing.status if existing is not None else TenantStatus.ACTIVE
        return Tenant(
            self.id,
            self.name,
            self.kind,
            self.status or default,
            self.jwks_url or None,
            self.issuer or None,
            tuple(self.algorithms),
        )


class TenantView(View):
    id: str
    name: str
    kind: TenantKind
    status: TenantStatus
    jwks_url: str | None = None
    issuer: str | None = None
    algorithms: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, t: Tenant) -> TenantView:
        return cls(
            id=t.id,
            name=t.name,
            kind=t.kind,
            status=t.status,
            jwks_url=t.jwks_url,
            issuer=t.issuer,
            algorithms=list(t.algorithms),
        )


class StatusBody(Body):
    status: TenantStatus
    reason: Purpose = ""


# ----------------------------------------------------------------------------- principals


class PrincipalBody(Body):
    id: Id
    tenant_id: Id
    name: Name = Field(min_length=1)
    kind: PrincipalKind = PrincipalKind.USER
    roles: list[Role] = Field(default_factory=list, max_length=16)
    disabled: bool = False
    digest_password: str = Field(
        "", max_length=256, pattern=TEXT_PATTERN, description="write only; kept as HA1"
    )
    clear_digest: bool = False
    password: str = Field(
        "",
        max_length=MAX_PASSWORD,
        description=f"the console sign-in password (write only; kept as an scrypt hash;"
        f" at least {MIN_PASSWORD} characters); empty keeps the stored one",
    )
    clear_password: bool = False

    @model_validator(mode="after")
    def _secrets(self) -> PrincipalBody:
        if self.digest_password and self.clear_digest:
            raise invalid("clear_digest", "cannot set and clear the digest password at once")
        if self.password and self.clear_password:
            raise invalid("clear_password", "cannot set and clear the password at once")
        if self.password:
            try:
                check_password(self.password)
            except PasswordError as exc:
                raise invalid("password", str(exc)) from None
        return self

    def to_domain(self, existing: Principal | None, ha1_of: Any) -> Principal:
        """The principal to store (blocking when a password is set: it is hashed here)."""
        if self.digest_password:
            ha1: str | None = ha1_of(self.id, self.digest_password)
        elif self.clear_digest or existing is None:
            ha1 = None
        else:
            ha1 = existing.digest_ha1
        if self.password:
            hashed: str | None = hash_password(self.password)
        elif self.clear_password or existing is None:
            hashed = None
        else:
            hashed = existing.password_hash
        return Principal(
            self.id,
            self.tenant_id,
            self.name,
            self.kind,
            frozenset(self.roles),
            ha1,
            self.disabled,
            hashed,
        )

    def secrets_changed(self) -> dict[str, str]:
        """What the audit log records of the credentials (never the values)."""

        def change(value: str, clear: bool) -> str:
            return "set" if value else "cleared" if clear else "unchanged"

        return {
            "digest": change(self.digest_password, self.clear_digest),
            "password": change(self.password, self.clear_password),
        }


class PrincipalView(View):
    id: str
    tenant_id: str
    name: str
    kind: PrincipalKind
    roles: list[Role]
    disabled: bool
    has_digest: bool
    has_password: bool = False

    @classmethod
    def of(cls, p: Principal) -> PrincipalView:
        return cls(
            id=p.id,
            tenant_id=p.tenant_id,
            name=p.name,
            kind=p.kind,
            roles=sorted(p.roles),
            disabled=p.disabled,
            has_digest=p.digest_ha1 is not None,
            has_password=p.password_hash is not None,
        )


# ----------------------------------------------------------------------------- cameras


class CameraBody(Body):
    id: Id
    owner_tenant: Id
    name: Name = ""
    tags: Tags = Field(default_factory=list)
    location: Name = ""
    area_type: AreaType = AreaType.OTHER
    retention_days: int = Field(31, ge=1, le=3650)
    latitude: Latitude | None = Field(None, description="WGS84 degrees; with longitude")
    longitude: Longitude | None = Field(None, description="WGS84 degrees; with latitude")

    @model_validator(mode="after")
    def _position(self) -> CameraBody:
        if (self.latitude is None) != (self.longitude is None):
            missing = "latitude" if self.latitude is None else "longitude"
            raise invalid(missing, "give both latitude and longitude, or neither")
        return self

    def to_domain(self) -> Camera:
        return Camera(
            id=self.id,
            owner_tenant=self.owner_tenant,
            name=self.name,
            tags=frozenset(self.tags),
            location=self.location,
            area_type=self.area_type,
            retention_days=self.retention_days,
            latitude=self.latitude,
            longitude=self.longitude,
        )


class CameraView(View):
    id: str
    owner_tenant: str
    name: str
    tags: list[str]
    location: str
    area_type: AreaType
    retention_days: int
    latitude: float | None = None
    longitude: float | None = None

    @classmethod
    def of(cls, c: Camera) -> CameraView:
        return cls(
            id=c.id,
            owner_tenant=c.owner_tenant,
            name=c.name,
            tags=sorted(c.tags),
            location=c.location,
            area_type=c.area_type,
            retention_days=c.retention_days,
            latitude=c.latitude,
            longitude=c.longitude,
        )


# ----------------------------------------------------------------------------- masks


class Point(Body):
    x: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    y: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)


class MaskBody(Body):
    id: Id
    camera_id: Id
    points: list[Point] = Field(min_length=3, max_length=MAX_MASK_POINTS)
    kind: MaskKind = MaskKind.PERMANENT
    tenant_kinds: list[TenantKind] = Field(default_factory=list, max_length=16)
    label: Name = ""

    def to_domain(self) -> MaskZone:
        return MaskZone(
            self.id,
            self.camera_id,
            tuple((p.x, p.y) for p in self.points),
            self.kind,
            frozenset(self.tenant_kinds),
            self.label,
        )


class MaskView(View):
    id: str
    camera_id: str
    points: list[Point]
    kind: MaskKind
    tenant_kinds: list[TenantKind]
    label: str

    @classmethod
    def of(cls, z: MaskZone) -> MaskView:
        return cls(
            id=z.id,
            camera_id=z.camera_id,
            points=[Point(x=x, y=y) for x, y in z.points],
            kind=z.kind,
            tenant_kinds=sorted(z.tenant_kinds),
            label=z.label,
        )


# ----------------------------------------------------------------------------- grants


class WindowBody(Body):
    start: str = Field(pattern=HHMM_PATTERN, description="HH:MM, UTC")
    end: str = Field(pattern=HHMM_PATTERN, description="HH:MM, UTC")
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=list, max_length=7, description="Monday = 0; empty: every day"
    )

    def to_domain(self) -> TimeWindow:
        days = frozenset(self.weekdays) or frozenset(range(7))
        return TimeWindow(time.fromisoformat(self.start), time.fromisoformat(self.end), days)

    @classmethod
    def of(cls, w: TimeWindow) -> WindowBody:
        days = [] if w.weekdays == frozenset(range(7)) else sorted(w.weekdays)
        return cls(start=f"{w.start:%H:%M}", end=f"{w.end:%H:%M}", weekdays=days)


class ConstraintsBody(Body):
    time_windows: list[WindowBody] = Field(default_factory=list, max_length=64)
    max_concurrent_streams: int | None = Field(None, ge=1, le=1_000_000)
    max_playback_age_s: int | None = Field(None, ge=1, le=100 * 365 * 86400)
    purpose_required: bool = False
    quality_cap: Quality = Quality.MAIN
    ptz_priority: int = Field(0, ge=0, le=32000)

    def to_domain(self) -> Constraints:
        return Constraints(
            time_windows=tuple(w.to_domain() for w in self.time_windows),
            max_concurrent_streams=self.max_concurrent_streams,
            max_playback_age_s=self.max_playback_age_s,
            purpose_required=self.purpose_required,
            quality_cap=self.quality_cap,
            ptz_priority=self.ptz_priority,
        )

    @classmethod
    def of(cls, c: Constraints) -> ConstraintsBody:
        return cls(
            time_windows=[WindowBody.of(w) for w in c.time_windows],
            max_concurrent_streams=c.max_concurrent_streams,
            max_playback_age_s=c.max_playback_age_s,
            purpose_required=c.purpose_required,
            quality_cap=c.quality_cap,
            ptz_priority=c.ptz_priority,
        )


class GrantBody(Body):
    id: Id
    owner_tenant: Id
    grantee_tenant: Id
    # camera_tags comes first so camera_ids can check that the grant names some cameras.
    camera_tags: Tags = Field(default_factory=list)
    camera_ids: Ids = Field(default_factory=list, validate_default=True)
    rights: list[Right] = Field(min_length=1, max_length=8)
    constraints: ConstraintsBody = Field(default_factory=lambda: ConstraintsBody())

    @field_validator("grantee_tenant")
    @classmethod
    def _not_self(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("owner_tenant"):
            raise ValueError("a tenant cannot grant to itself")
        return value

    @field_validator("camera_ids")
    @classmethod
    def _names_cameras(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value and not info.data.get("camera_tags"):
            raise ValueError("names no cameras (give camera_ids or camera_tags)")
        return value

    def to_domain(self) -> Grant:
        return Grant(
            id=self.id,
            owner_tenant=self.owner_tenant,
            grantee_tenant=self.grantee_tenant,
            camera_ids=frozenset(self.camera_ids),
            camera_tags=frozenset(self.camera_tags),
            rights=frozenset(self.rights),
            constraints=self.constraints.to_domain(),
        )


class GrantView(View):
    id: str
    owner_tenant: str
    grantee_tenant: str
    camera_ids: list[str]
    camera_tags: list[str]
    rights: list[Right]
    constraints: ConstraintsBody
    created_at: datetime
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, g: Grant) -> GrantView:
        return cls(
            id=g.id,
            owner_tenant=g.owner_tenant,
            grantee_tenant=g.grantee_tenant,
            camera_ids=sorted(g.camera_ids),
            camera_tags=sorted(g.camera_tags),
            rights=sorted(g.rights),
            constraints=ConstraintsBody.of(g.constraints),
            created_at=g.created_at.astimezone(UTC),
            revoked_at=g.revoked_at.astimezone(UTC) if g.revoked_at else None,
        )


class RevokeBody(Body):
    reason: Purpose = ""


# ----------------------------------------------------------------------------- tokens


class TokenBody(Body):
    tenant: Id
    subject: Id
    cameras: Ids | None = Field(None, description="limit to these cameras; default: all")
    ttl_seconds: int = Field(900, ge=1, le=86400)
    roles: list[Role] = Field(default_factory=list, max_length=16, description="default: all")
    purpose: Purpose = ""


class TokenView(View):
    token: str
    expires_at: datetime
    token_id: str


__all__ = [
    "MAX_NAME",
    "MAX_PURPOSE",
    "Body",
    "CameraBody",
    "CameraView",
    "ConstraintsBody",
    "GrantBody",
    "GrantView",
    "MaskBody",
    "MaskView",
    "Point",
    "PrincipalBody",
    "PrincipalView",
    "RevokeBody",
    "StatusBody",
    "TenantBody",
    "TenantView",
    "TokenBody",
    "TokenView",
    "View",
    "WindowBody",
    "parse",
]
