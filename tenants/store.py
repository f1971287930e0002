"""Where tenancy data lives: tenants, principals, cameras and grants over a ``Database``.

The single place tenancy data is persisted. Readers (the policy) keep an in-memory
``Snapshot`` and reload it when ``version()`` changes; every write bumps that counter in the
same transaction, so a node sharing PostgreSQL with others sees their changes too.

Portable SQL only (runs unchanged on SQLite and PostgreSQL): TEXT and INTEGER/BIGINT columns,
sets and constraints as JSON text, datetimes as fixed-width ISO-8601 UTC text (``...Z``),
booleans as 0/1.

Grants are never deleted: they are revoked, so the history stays auditable. A revoked grant
cannot be changed any more, and a grant keeps the ``created_at`` it was first stored with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

from tenants.db import Database, IntegrityError
from tenants.model import (
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
)

DIGEST_REALM = "feedgate"

MIGRATIONS: list[str] = [
    # 1: the tenancy tables and the change counter.
    """
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        jwks_url TEXT,
        issuer TEXT,
        algorithms TEXT NOT NULL
    );
    CREATE TABLE principals (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants (id),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        roles TEXT NOT NULL,
        digest_ha1 TEXT,
        disabled INTEGER NOT NULL
    );
    CREATE INDEX principals_tenant ON principals (tenant_id);
    CREATE TABLE cameras (
        id TEXT PRIMARY KEY,
        owner_tenant TEXT NOT NULL REFERENCES tenants (id),
        name TEXT NOT NULL,
        tags TEXT NOT NULL,
        location TEXT NOT NULL,
        area_type TEXT NOT NULL,
        retention_days INTEGER NOT NULL
    );
    CREATE INDEX cameras_owner ON cameras (owner_tenant);
    CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        owner_tenant TEXT NOT NULL REFERENCES tenants (id),
        grantee_tenant TEXT NOT NULL REFERENCES tenants (id),
        camera_ids TEXT NOT NULL,
        camera_tags TEXT NOT NULL,
        rights TEXT NOT NULL,
        constraints_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE INDEX grants_owner ON grants (owner_tenant);
    CREATE INDEX grants_grantee ON grants (grantee_tenant);
    CREATE TABLE tenancy_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    );
    INSERT INTO tenancy_version (id, version) VALUES (1, 0)
    """,
    # 2: privacy masks per camera.
    """
    CREATE TABLE masks (
        id TEXT PRIMARY KEY,
        camera_id TEXT NOT NULL REFERENCES cameras (id),
        points TEXT NOT NULL,
        kind TEXT NOT NULL,
        tenant_kinds TEXT NOT NULL,
        label TEXT NOT NULL
    );
    CREATE INDEX masks_camera ON masks (camera_id)
    """,
    # 3: the console: principals' sign-in passwords (scrypt), cameras' map positions.
    """
    ALTER TABLE principals ADD COLUMN password_hash TEXT;
    ALTER TABLE cameras ADD COLUMN latitude DOUBLE PRECISION;
    ALTER TABLE cameras ADD COLUMN longitude DOUBLE PRECISION
    """,
]


class NotFound(LookupError):
    """No such tenant, principal, camera or grant."""

    def __init__(self, kind: str, id: str, detail: str = "") -> None:
        self.kind = kind
        self.id = id
        super().__init__(f"{kind} {id!r} not found{detail}")


@dataclass(frozen=True)
class Snapshot:
    """Everything at one version, read in one transaction. ``grants``: active ones only."""

    version: int
    tenants: dict[str, Tenant]
    principals: dict[str, Principal]
    cameras: dict[str, Camera]
    grants: tuple[Grant, ...]
    masks: dict[str, tuple[MaskZone, ...]] = field(default_factory=dict)  # by camera id


# -- encoding ------------------------------------------------------------------------------


def _ts(when: datetime) -> str:
    if when.tzinfo is None or when.utcoffset() is None:
        raise DomainError(f"datetime {when.isoformat()} has no time zone (use UTC)")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _set(values: Iterable[str]) -> str:
    return json.dumps(sorted(str(v) for v in values))


def _window_json(w: TimeWindow) -> dict[str, Any]:
    return {"start": w.start.isoformat(), "end": w.end.isoformat(), "weekdays": sorted(w.weekdays)}


def _constraints_json(c: Constraints) -> str:
    return json.dumps(
        {
            "time_windows": [_window_json(w) for w in c.time_windows],
            "max_concurrent_streams": c.max_concurrent_streams,
            "max_playback_age_s": c.max_playback_age_s,
            "purpose_required": c.purpose_required,
            "quality_cap": str(c.quality_cap),
            "ptz_priority": c.ptz_priority,
        },
        sort_keys=True,
    )


def _constraints(text: str) -> Constraints:
    d = json.loads(text)
    return Constraints(
        time_windows=tuple(
            TimeWindow(
                time.fromisoformat(w["start"]),
                time.fromisoformat(w["end"]),
                frozenset(int(x) for x in w["weekdays"]),
            )
            for w in d["time_windows"]
        ),
        max_concurrent_streams=d["max_concurrent_streams"],
        max_playback_age_s=d["max_playback_age_s"],
        purpose_required=bool(d["purpose_required"]),
        quality_cap=Quality(d["quality_cap"]),
        ptz_priority=int(d["ptz_priority"]),
    )


_TENANT_COLS = "id, name, kind, status, jwks_url, issuer, algorithms"
_PRINCIPAL_COLS = "id, tenant_id, name, kind, roles, digest_ha1, disabled, password_hash"
_CAMERA_COLS = (
    "id, owner_tenant, name, tags, location, area_type, retention_days, latitude, longitude"
)
_GRANT_COLS = (
    "id, owner_tenant, grantee_tenant, camera_ids, camera_tags, rights, constraints_json,"
    " created_at, revoked_at"
)


def _tenant(r: tuple[Any, ...]) -> Tenant:
    return Tenant(
        id=r[0],
        name=r[1],
        kind=TenantKind(r[2]),
        status=TenantStatus(r[3]),
        jwks_url=r[4],
        issuer=r[5],
        algorithms=tuple(json.loads(r[6])),
    )


def _principal(r: tuple[Any, ...]) -> Principal:
    return Principal(
        id=r[0],
        tenant_id=r[1],
        name=r[2],
        kind=PrincipalKind(r[3]),
        roles=frozenset(Role(x) for x in json.loads(r[4])),
        digest_ha1=r[5],
        disabled=bool(r[6]),
        password_hash=r[7],
    )


def _camera(r: tuple[Any, ...]) -> Camera:
    return Camera(
        id=r[0],
        owner_tenant=r[1],
        name=r[2],
        tags=frozenset(json.loads(r[3])),
        location=r[4],
        area_type=AreaType(r[5]),
        retention_days=int(r[6]),
        latitude=None if r[7] is None else float(r[7]),
        longitude=None if r[8] is None else float(r[8]),
    )


def _grant(r: tuple[Any, ...]) -> Grant:
    return Grant(
        id=r[0],
        owner_tenant=r[1],
        grantee_tenant=r[2],
        camera_ids=frozenset(json.loads(r[3])),
        camera_tags=frozenset(json.loads(r[4])),
        rights=frozenset(Right(x) for x in json.loads(r[5])),
        constraints=_constraints(r[6]),
        created_at=_dt(r[7]),
        revoked_at=_dt(r[8]) if r[8] is not None else None,
    )


# -- the store -----------------------------------------------------------------------------


class TenantStore:
    """Tenancy data over a ``Database`` (SQLite or PostgreSQL). Thread-safe: the database
    serialises statements and transactions."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate("tenants", MIGRATIONS)

    @property
    def db(self) -> Database:
        return self._db

    # Every write runs inside _write(): the counter is bumped first, which also takes the
    # version row's lock on PostgreSQL and so serialises writers across nodes.
    def _bump(self) -> None:
        self._db.execute("UPDATE tenancy_version SET version = version + 1 WHERE id = 1")

    def _require_tenant(self, tenant_id: str, referrer: str) -> None:
        if self._db.query_one("SELECT 1 FROM tenants WHERE id = ?", (tenant_id,)) is None:
            raise NotFound("tenant", tenant_id, f" (referred to by {referrer})")

    # tenants

    def put_tenant(self, t: Tenant) -> None:
        with self._db.transaction():
            self._bump()
            self._db.execute(
                f"INSERT INTO tenants ({_TENANT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,"
                " status = excluded.status, jwks_url = excluded.jwks_url,"
                " issuer = excluded.issuer, algorithms = excluded.algorithms",
                (
                    t.id,
                    t.name,
                    str(t.kind),
                    str(t.status),
                    t.jwks_url,
                    t.issuer,
                    json.dumps(list(t.algorithms)),
                ),
            )

    def get_tenant(self, tenant_id: str) -> Tenant:
        row = self._db.query_one(f"SELECT {_TENANT_COLS} FROM tenants WHERE id = ?", (tenant_id,))
        if row is None:
            raise NotFound("tenant", tenant_id)
        return _tenant(row)

    def list_tenants(self) -> list[Tenant]:
        return [
            _tenant(r) for r in self._db.query(f"SELECT {_TENANT_COLS} FROM tenants ORDER BY id")
        ]

    def set_tenant_status(self, tenant_id: str, status: TenantStatus) -> Tenant:
        with self._db.transaction():
            self._bump()
            n = self._db.execute(
                "UPDATE tenants SET status = ? WHERE id = ?", (str(TenantStatus(status)), tenant_id)
            )
            if n == 0:
                raise NotFound("tenant", tenant_id)
            return self.get_tenant(tenant_id)

    # principals

    def put_principal(self, p: Principal) -> None:
        with self._db.transaction():
            self._bump()
            self._require_tenant(p.tenant_id, f"principal {p.id!r}")
            self._db.execute(
                f"INSERT INTO principals ({_PRINCIPAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id,"
                " name = excluded.name, kind = excluded.kind, roles = excluded.roles,"
                " digest_ha1 = excluded.digest_ha1, disabled = excluded.disabled,"
                " password_hash = excluded.password_hash",
                (
                    p.id,
                    p.tenant_id,
                    p.name,
                    str(p.kind),
                    _set(p.roles),
                    p.digest_ha1,
                    int(p.disabled),
                    p.password_hash,
                ),
            )

    def get_principal(self, principal_id: str) -> Principal:
        row = self._db.query_one(
            f"SELECT {_PRINCIPAL_COLS} FROM principals WHERE id = ?", (principal_id,)
        )
        if row is None:
            raise NotFound("principal", principal_id)
        return _principal(row)

    def list_principals(self, tenant_id: str | None = None) -> list[Principal]:
        if tenant_id is None:
            rows = self._db.query(f"SELECT {_PRINCIPAL_COLS} FROM principals ORDER BY id")
        else:
            rows = self._db.query(
                f"SELECT {_PRINCIPAL_COLS} FROM principals WHERE tenant_id = ? ORDER BY id",
                (tenant_id,),
            )
        return [_principal(r) for r in rows]

    def delete_principal(self, principal_id: str) -> None:
        with self._db.transaction():
            self._bump()
            if self._db.execute("DELETE FROM principals WHERE id = ?", (principal_id,)) == 0:
                raise NotFound("principal", principal_id)

    # cameras

    def put_camera(self, c: Camera) -> None:
        with self._db.transaction():
            self._bump()
            self._require_tenant(c.owner_tenant, f"camera {c.id!r}")
            self._db.execute(
                f"INSERT INTO cameras ({_CAMERA_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET owner_tenant = excluded.owner_tenant,"
                " name = excluded.name, tags = excluded.tags, location = excluded.location,"
                " area_type = excluded.area_type, retention_days = excluded.retention_days,"
                " latitude = excluded.latitude, longitude = excluded.longitude",
                (
                    c.id,
                    c.owner_tenant,
                    c.name,
                    _set(c.tags),
                    c.location,
                    str(c.area_type),
                    c.retention_days,
                    c.latitude,
                    c.longitude,
                ),
            )

    def get_camera(self, camera_id: str) -> Camera:
        row = self._db.query_one(f"SELECT {_CAMERA_COLS} FROM cameras WHERE id = ?", (camera_id,))
        if row is None:
            raise NotFound("camera", camera_id)
        return _camera(row)

    def list_cameras(self, owner_tenant: str | None = None) -> list[Camera]:
        if owner_tenant is None:
            rows = self._db.query(f"SELECT {_CAMERA_COLS} FROM cameras ORDER BY id")
        else:
            rows = self._db.query(
                f"SELECT {_CAMERA_COLS} FROM cameras WHERE owner_tenant = ? ORDER BY id",
                (owner_tenant,),
            )
        return [_camera(r) for r in rows]

    def delete_camera(self, camera_id: str) -> None:
        with self._db.transaction():
            self._bump()
            if self._db.execute("DELETE FROM cameras WHERE id = ?", (camera_id,)) == 0:
                raise NotFound("camera", camera_id)

    # grants

    def put_grant(self, g: Grant) -> None:
        """Insert, or update an active grant (its first ``created_at`` is kept). A revoked
        grant is history and cannot be changed: IntegrityError."""
        created = _ts(g.created_at)
        revoked = _ts(g.revoked_at) if g.revoked_at is not None else None
        with self._db.transaction():
            self._bump()
            self._require_tenant(g.owner_tenant, f"grant {g.id!r} as owner")
            self._require_tenant(g.grantee_tenant, f"grant {g.id!r} as grantee")
            row = self._db.query_one("SELECT revoked_at FROM grants WHERE id = ?", (g.id,))
            if row is not None and row[0] is not None:
                raise IntegrityError(
                    f"grant {g.id!r} was revoked at {row[0]}; revoked grants cannot be changed"
                )
            self._db.execute(
                f"INSERT INTO grants ({_GRANT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET owner_tenant = excluded.owner_tenant,"
                " grantee_tenant = excluded.grantee_tenant, camera_ids = excluded.camera_ids,"
                " camera_tags = excluded.camera_tags, rights = excluded.rights,"
                " constraints_json = excluded.constraints_json,"
                " revoked_at = excluded.revoked_at",
                (
                    g.id,
                    g.owner_tenant,
                    g.grantee_tenant,
                    _set(g.camera_ids),
                    _set(g.camera_tags),
                    _set(g.rights),
                    _constraints_json(g.constraints),
                    created,
                    revoked,
                ),
            )

    def get_grant(self, grant_id: str) -> Grant:
        row = self._db.query_one(f"SELECT {_GRANT_COLS} FROM grants WHERE id = ?", (grant_id,))
        if row is None:
            raise NotFound("grant", grant_id)
        return _grant(row)

    def list_grants(
        self,
        *,
        owner: str | None = None,
        grantee: str | None = None,
        include_revoked: bool = False,
    ) -> list[Grant]:
        """Ordered by creation time, then id."""
        where: list[str] = []
        params: list[Any] = []
        if owner is not None:
            where.append("owner_tenant = ?")
            params.append(owner)
        if grantee is not None:
            where.append("grantee_tenant = ?")
            params.append(grantee)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        sql = f"SELECT {_GRANT_COLS} FROM grants"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        return [_grant(r) for r in self._db.query(sql, params)]

    def revoke_grant(self, grant_id: str, at: datetime) -> Grant:
        """Mark revoked at ``at``. Revoking an already revoked grant changes nothing (the
        first revocation time stands) and does not bump the version."""
        stamp = _ts(at)
        with self._db.transaction():
            current = self.get_grant(grant_id)
            if current.revoked_at is not None:
                return current
            self._bump()
            self._db.execute(
                "UPDATE grants SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (stamp, grant_id),
            )
            return self.get_grant(grant_id)

    # change detection

    def version(self) -> int:
        row = self._db.query_one("SELECT version FROM tenancy_version WHERE id = 1")
        if row is None:  # pragma: no cover - the migration inserts the row
            raise NotFound("tenancy_version", "1")
        return int(row[0])

    def snapshot(self) -> Snapshot:
        """Everything at one version. Do not call inside an open transaction: on PostgreSQL
        it asks for REPEATABLE READ so every statement sees the same committed state."""
        with self._db.transaction():
            if self._db.dialect == "postgres":
                self._db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            version = self.version()
            tenants = {t.id: t for t in self.list_tenants()}
            principals = {p.id: p for p in self.list_principals()}
            cameras = {c.id: c for c in self.list_cameras()}
            grants = tuple(self.list_grants())
            masks: dict[str, list[MaskZone]] = {}
            for zone in self.list_masks():
                masks.setdefault(zone.camera_id, []).append(zone)
        return Snapshot(
            version,
            tenants,
            principals,
            cameras,
            grants,
            {cam: tuple(zones) for cam, zones in masks.items()},
        )

    # -- masks ------------------------------------------------------------------------------

    def put_mask(self, zone: MaskZone) -> None:
        with self._db.transaction():
            self._bump()
            if self._db.query_one("SELECT 1 FROM cameras WHERE id = ?", (zone.camera_id,)) is None:
                raise NotFound("camera", zone.camera_id, f" (referred to by mask {zone.id!r})")
            self._db.execute(
                "INSERT INTO masks (id, camera_id, points, kind, tenant_kinds, label)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " camera_id = excluded.camera_id, points = excluded.points,"
                " kind = excluded.kind, tenant_kinds = excluded.tenant_kinds,"
                " label = excluded.label",
                (
                    zone.id,
                    zone.camera_id,
                    json.dumps([[x, y] for x, y in zone.points]),
                    str(zone.kind),
                    _set(str(k) for k in zone.tenant_kinds),
                    zone.label,
                ),
            )

    def list_masks(self, camera_id: str | None = None) -> list[MaskZone]:
        sql = "SELECT id, camera_id, points, kind, tenant_kinds, label FROM masks"
        rows = (
            self._db.query(sql + " ORDER BY id")
            if camera_id is None
            else self._db.query(sql + " WHERE camera_id = ? ORDER BY id", (camera_id,))
        )
        return [
            MaskZone(
                id=r[0],
                camera_id=r[1],
                points=tuple((float(x), float(y)) for x, y in json.loads(r[2])),
                kind=MaskKind(r[3]),
                tenant_kinds=frozenset(TenantKind(k) for k in json.loads(r[4])),
                label=r[5],
            )
            for r in rows
        ]

    def delete_mask(self, mask_id: str) -> None:
        with self._db.transaction():
            self._bump()
            if self._db.execute("DELETE FROM masks WHERE id = ?", (mask_id,)) == 0:
                raise NotFound("mask", mask_id)


# -- credentials --------------------------------------------------------------------------


def digest_ha1(principal_id: str, password: str, realm: str = DIGEST_REALM) -> str:
    """HTTP/RTSP Digest HA1: MD5(user:realm:password)."""
    return hashlib.md5(f"{principal_id}:{realm}:{password}".encode()).hexdigest()
