"""The tenancy domain: who shares the network, what they may do with which cameras.

Plain, immutable values. Storage (``store.py``), tokens (``tokens.py``), decisions
(``policy.py``) and the audit log (``audit.py``) all speak in these types. This package imports
no other feedgate package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, tzinfo
from enum import StrEnum

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class DomainError(ValueError):
    """A value that breaks a domain rule (bad id, unknown right, inconsistent constraint)."""


def check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise DomainError(f"{kind} id {value!r}: 1-64 of a-z 0-9 _ . - (start alnum)")
    return value


class TenantKind(StrEnum):
    COUNCIL = "council"
    POLICE = "police"
    HEALTH = "health"
    TRANSPORT = "transport"
    RETAIL = "retail"
    SPORTS = "sports"
    HOUSING = "housing"
    BOROUGH = "borough"


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Role(StrEnum):
    OPERATOR = "operator"  # watches and steers cameras in a control room
    VIEWER = "viewer"  # watches live
    INVESTIGATOR = "investigator"  # playback and export for incidents
    FINANCE = "finance"  # usage and invoices
    AUDITOR = "auditor"  # reads the audit log
    ADMIN = "admin"  # manages the tenant's principals, cameras and grants


class PrincipalKind(StrEnum):
    USER = "user"
    SERVICE = "service"  # a VMS, an integration


class Right(StrEnum):
    LIVE = "live"
    PLAYBACK = "playback"
    PTZ = "ptz"
    EXPORT = "export"
    UNMASK = "unmask"


class AreaType(StrEnum):
    TRANSPORT_HUB = "transport_hub"
    HIGH_STREET = "high_street"
    RESIDENTIAL = "residential"
    ESTATE = "estate"
    HEALTH = "health"
    RETAIL = "retail"
    STADIUM = "stadium"
    PARK = "park"
    OTHER = "other"


class Quality(StrEnum):
    MAIN = "main"
    SUB = "sub"


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    kind: TenantKind
    status: TenantStatus = TenantStatus.ACTIVE
    # A partner's own identity provider: tokens it signs are accepted for this tenant.
    jwks_url: str | None = None
    issuer: str | None = None  # the `iss` its tokens carry
    algorithms: tuple[str, ...] = ()  # pinned, e.g. ("ES256",)

    def __post_init__(self) -> None:
        check_id("tenant", self.id)

    @property
    def active(self) -> bool:
        return self.status == TenantStatus.ACTIVE


@dataclass(frozen=True)
class Principal:
    id: str
    tenant_id: str
    name: str
    kind: PrincipalKind = PrincipalKind.USER
    roles: frozenset[Role] = frozenset()
    # VMS clients that cannot carry a token authenticate with Digest; we keep HA1 only
    # (MD5(user:realm:password)), never the password.
    digest_ha1: str | None = None
    disabled: bool = False
    # The console's sign-in password, as an scrypt hash (tenants/passwords.py).
    password_hash: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_id("principal", self.id)
        check_id("tenant", self.tenant_id)


@dataclass(frozen=True)
class Camera:
    id: str
    owner_tenant: str
    name: str = ""
    tags: frozenset[str] = frozenset()
    location: str = ""  # free text (a street, a landmark)
    area_type: AreaType = AreaType.OTHER
    retention_days: int = 31
    # WGS84 degrees, both or neither: where the console's map draws the camera.
    latitude: float | None = None
    longitude: float | None = None

    def __post_init__(self) -> None:
        check_id("camera", self.id)
        check_id("tenant", self.owner_tenant)
        if not 0 < self.retention_days <= 3650:
            raise DomainError(f"camera {self.id}: retention_days must be 1..3650")
        if (self.latitude is None) != (self.longitude is None):
            raise DomainError(f"camera {self.id}: give both latitude and longitude, or neither")
        if self.latitude is not None and self.longitude is not None:
            if not (-90.0 <= self.latitude <= 90.0 and -180.0 <= self.longitude <= 180.0):
                raise DomainError(f"camera {self.id}: latitude -90..90, longitude -180..180")

    @property
    def position(self) -> tuple[float, float] | None:
        """(latitude, longitude), or None when the register has no position."""
        if self.latitude is None or self.longitude is None:
            return None
        return (self.latitude, self.longitude)


@dataclass(frozen=True)
class TimeWindow:
    """Daily window in local time (the deployment's zone), e.g. 07:00-23:00; start > end
    wraps past midnight. It is read off the wall clock: on the night the clocks go forward an
    hour that does not exist is in no window, and on the night they go back the repeated hour
    is in the window both times."""

    start: time
    end: time
    weekdays: frozenset[int] = frozenset(range(7))  # Monday = 0

    def contains(self, when: datetime, zone: tzinfo) -> bool:
        """Whether the instant `when` is inside the window, in `zone`'s local time."""
        when = when.astimezone(zone)
        t = when.time()
        if self.start <= self.end:
            return when.weekday() in self.weekdays and self.start <= t < self.end
        # Wrapping window: the part after midnight belongs to the previous day's window.
        if t >= self.start:
            return when.weekday() in self.weekdays
        return t < self.end and (when.weekday() - 1) % 7 in self.weekdays

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        """'08:00-18:00' or '22:00-06:00@0,1,2,3,4' (weekdays, Monday = 0)."""
        span, _, days = text.partition("@")
        try:
            a, b = span.split("-")
            start, end = time.fromisoformat(a.strip()), time.fromisoformat(b.strip())
            weekdays = frozenset(int(d) for d in days.split(",")) if days else frozenset(range(7))
        except ValueError:
            raise DomainError(f"time window {text!r}: expected HH:MM-HH:MM[@d,d,...]") from None
        if not weekdays <= frozenset(range(7)):
            raise DomainError(f"time window {text!r}: weekdays are 0 (Monday) .. 6")
        return cls(start, end, weekdays)

    def __str__(self) -> str:
        s = f"{self.start:%H:%M}-{self.end:%H:%M}"
        if self.weekdays != frozenset(range(7)):
            s += "@" + ",".join(str(d) for d in sorted(self.weekdays))
        return s


@dataclass(frozen=True)
class Constraints:
    time_windows: tuple[TimeWindow, ...] = ()  # empty: any time
    max_concurrent_streams: int | None = None  # for the grantee tenant under this grant
    max_playback_age_s: int | None = None
    purpose_required: bool = False
    quality_cap: Quality = Quality.MAIN
    ptz_priority: int = 0  # 1..32000 like Milestone; higher wins


@dataclass(frozen=True)
class Grant:
    """A camera owner lets a grantee tenant use a set of its cameras with some rights."""

    id: str
    owner_tenant: str
    grantee_tenant: str
    camera_ids: frozenset[str] = frozenset()
    camera_tags: frozenset[str] = frozenset()  # any camera of the owner with one of these tags
    rights: frozenset[Right] = frozenset({Right.LIVE})
    constraints: Constraints = field(default_factory=Constraints)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        check_id("grant", self.id)
        check_id("tenant", self.owner_tenant)
        check_id("tenant", self.grantee_tenant)
        if not self.camera_ids and not self.camera_tags:
            raise DomainError(f"grant {self.id}: names no cameras (camera_ids or camera_tags)")

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def covers(self, camera: Camera) -> bool:
        if camera.owner_tenant != self.owner_tenant:
            return False
        return camera.id in self.camera_ids or bool(camera.tags & self.camera_tags)


class MaskKind(StrEnum):
    PERMANENT = "permanent"  # nobody sees through it
    LIFTABLE = "liftable"  # a tenant with the unmask right may lift it, for a stated purpose


MAX_MASK_POINTS = 64


@dataclass(frozen=True)
class MaskZone:
    """A black-out polygon on one camera, in normalised coordinates (0..1, origin top left),
    so it survives resolution changes. ``tenant_kinds`` empty: it applies to every tenant;
    otherwise only to tenants of those kinds (a retail partner may have more zones than the
    police on the same camera)."""

    id: str
    camera_id: str
    points: tuple[tuple[float, float], ...]
    kind: MaskKind = MaskKind.PERMANENT
    tenant_kinds: frozenset[TenantKind] = frozenset()
    label: str = ""

    def __post_init__(self) -> None:
        check_id("mask", self.id)
        check_id("camera", self.camera_id)
        if not 3 <= len(self.points) <= MAX_MASK_POINTS:
            raise DomainError(f"mask {self.id}: needs 3..{MAX_MASK_POINTS} points")
        for x, y in self.points:
            if not (isinstance(x, (int, float)) and isinstance(y, (int, float))):
                raise DomainError(f"mask {self.id}: points must be numbers")
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise DomainError(f"mask {self.id}: point ({x}, {y}) outside 0..1")

    def applies_to(self, kind: TenantKind) -> bool:
        return not self.tenant_kinds or kind in self.tenant_kinds
