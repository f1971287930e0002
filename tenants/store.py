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
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

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
    check_id,
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
]


class NotFound(LookupError):
    """No such tenant, principal, camera or grant."""

    def __init__(self, kind: str, id: str, detail: str = "") -> None:
        self.kind = kind
        self.id = id
        super().__init__(f"{kind} {id!r} not found{detail}")


class SeedError(ValueError):
    """A seed file that cannot be loaded; the message names the file, the key and the reason."""


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
_PRINCIPAL_COLS = "id, tenant_id, name, kind, roles, digest_ha1, disabled"
_CAMERA_COLS = "id, owner_tenant, name, tags, location, area_type, retention_days"
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
                f"INSERT INTO principals ({_PRINCIPAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id,"
                " name = excluded.name, kind = excluded.kind, roles = excluded.roles,"
                " digest_ha1 = excluded.digest_ha1, disabled = excluded.disabled",
                (
                    p.id,
                    p.tenant_id,
                    p.name,
                    str(p.kind),
                    _set(p.roles),
                    p.digest_ha1,
                    int(p.disabled),
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
                f"INSERT INTO cameras ({_CAMERA_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET owner_tenant = excluded.owner_tenant,"
                " name = excluded.name, tags = excluded.tags, location = excluded.location,"
                " area_type = excluded.area_type, retention_days = excluded.retention_days",
                (
                    c.id,
                    c.owner_tenant,
                    c.name,
                    _set(c.tags),
                    c.location,
                    str(c.area_type),
                    c.retention_days,
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


# -- seed files ----------------------------------------------------------------------------

_E = TypeVar("_E", bound=StrEnum)


def digest_ha1(principal_id: str, password: str, realm: str = DIGEST_REALM) -> str:
    """HTTP/RTSP Digest HA1: MD5(user:realm:password)."""
    return hashlib.md5(f"{principal_id}:{realm}:{password}".encode()).hexdigest()


class _Entry:
    """One [[table]] entry of a seed file, read key by key with precise error messages."""

    def __init__(self, file: str, table: str, index: int, raw: Any, keys: set[str]) -> None:
        self.file, self.where = file, f"{table}[{index}]"
        if not isinstance(raw, dict):
            raise SeedError(f"{file}: {self.where}: expected a table, got {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        for key in raw:
            if key not in keys:
                raise self.error(key, f"unknown key (expected one of {', '.join(sorted(keys))})")

    def error(self, key: str, reason: str) -> SeedError:
        return SeedError(f"{self.file}: {self.where}.{key}: {reason}")

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        if key not in self.raw:
            if required:
                raise self.error(key, "missing")
            return default
        value = self.raw[key]
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {value!r}")
        return value

    def req(self, key: str) -> str:
        value = self.text(key, required=True)
        assert value is not None
        return value

    def ident(self, key: str, kind: str) -> str:
        value = self.req(key)
        try:
            return check_id(kind, value)
        except DomainError as exc:
            raise self.error(key, str(exc)) from None

    def integer(self, key: str, lo: int, hi: int) -> int | None:
        if key not in self.raw:
            return None
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.error(key, f"{value} is out of range {lo}..{hi}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def strs(self, key: str) -> list[str]:
        value = self.raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return value

    def enum(self, key: str, cls: type[_E], noun: str, default: _E | None = None) -> _E:
        value = self.text(key, required=default is None)
        if value is None:
            assert default is not None
            return default
        return self._member(key, cls, noun, value)

    def enums(self, key: str, cls: type[_E], noun: str) -> frozenset[_E]:
        return frozenset(self._member(key, cls, noun, v) for v in self.strs(key))

    def _member(self, key: str, cls: type[_E], noun: str, value: str) -> _E:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise self.error(key, f"unknown {noun} {value!r} (known: {known})") from None


_SEED_TABLES = ("tenants", "principals", "cameras", "grants", "masks")


def _entries(file: str, doc: dict[str, Any], table: str, keys: set[str]) -> list[_Entry]:
    items = doc.get(table, [])
    if not isinstance(items, list):
        raise SeedError(f"{file}: {table}: expected an array of tables ([[{table}]])")
    return [_Entry(file, table, i, raw, keys) for i, raw in enumerate(items)]


def _unique(file: str, table: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise SeedError(f"{file}: {table}[{i}].id: duplicate id {x!r}")
        seen.add(x)


def load_seed(store: TenantStore, path: str | Path) -> None:
    """Upsert tenants, principals, cameras and grants from a TOML seed file.

    Idempotent. The whole file is validated first and written in one transaction, so a bad
    file changes nothing. A grant already revoked in the store is left revoked (a seed does
    not resurrect it); an existing grant keeps its creation time.
    """
    file = str(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise SeedError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SeedError(f"{file}: invalid TOML: {exc}") from None
    for key in doc:
        if key not in _SEED_TABLES:
            raise SeedError(f"{file}: {key}: unknown table (expected {', '.join(_SEED_TABLES)})")

    # A seed re-run does not undo admin actions: a tenant without `status` keeps its stored
    # status, a principal its `disabled` flag, and revoked grants stay revoked (see below).
    stored_status = {t.id: t.status for t in store.list_tenants()}
    stored_disabled = {p.id: p.disabled for p in store.list_principals()}
    tenants: list[Tenant] = []
    for e in _entries(
        file, doc, "tenants", {"id", "name", "kind", "status", "jwks_url", "issuer", "algorithms"}
    ):
        tenants.append(
            Tenant(
                id=e.ident("id", "tenant"),
                name=e.req("name"),
                kind=e.enum("kind", TenantKind, "tenant kind"),
                status=e.enum(
                    "status",
                    TenantStatus,
                    "status",
                    stored_status.get(str(e.raw.get("id")), TenantStatus.ACTIVE),
                ),
                jwks_url=e.text("jwks_url"),
                issuer=e.text("issuer"),
                algorithms=tuple(e.strs("algorithms")),
            )
        )
    _unique(file, "tenants", [t.id for t in tenants])
    known_tenants = {t.id for t in tenants} | set(stored_status)

    def tenant_ref(e: _Entry, key: str) -> str:
        tid = e.ident(key, "tenant")
        if tid not in known_tenants:
            raise e.error(key, f"unknown tenant {tid!r}")
        return tid

    principals: list[Principal] = []
    for e in _entries(
        file, doc, "principals", {"id", "tenant", "name", "kind", "roles", "digest_password"}
    ):
        pid = e.ident("id", "principal")
        password = e.text("digest_password")
        principals.append(
            Principal(
                id=pid,
                tenant_id=tenant_ref(e, "tenant"),
                name=e.req("name"),
                kind=e.enum("kind", PrincipalKind, "principal kind", PrincipalKind.USER),
                roles=e.enums("roles", Role, "role"),
                digest_ha1=digest_ha1(pid, password) if password is not None else None,
                disabled=stored_disabled.get(pid, False),
            )
        )
    _unique(file, "principals", [p.id for p in principals])

    cameras: list[Camera] = []
    for e in _entries(
        file,
        doc,
        "cameras",
        {"id", "owner", "name", "tags", "location", "area_type", "retention_days"},
    ):
        retention = e.integer("retention_days", 1, 3650)
        cameras.append(
            Camera(
                id=e.ident("id", "camera"),
                owner_tenant=tenant_ref(e, "owner"),
                name=e.text("name", "") or "",
                tags=frozenset(e.strs("tags")),
                location=e.text("location", "") or "",
                area_type=e.enum("area_type", AreaType, "area type", AreaType.OTHER),
                retention_days=31 if retention is None else retention,
            )
        )
    _unique(file, "cameras", [c.id for c in cameras])
    camera_owner = {c.id: c.owner_tenant for c in store.list_cameras()}
    camera_owner.update({c.id: c.owner_tenant for c in cameras})

    grants: list[Grant] = []
    grant_keys = {
        "id",
        "owner",
        "grantee",
        "cameras",
        "tags",
        "rights",
        "time_windows",
        "max_concurrent_streams",
        "max_playback_age_s",
        "purpose_required",
        "quality_cap",
        "ptz_priority",
    }
    for e in _entries(file, doc, "grants", grant_keys):
        gid = e.ident("id", "grant")
        owner = tenant_ref(e, "owner")
        grantee = tenant_ref(e, "grantee")
        camera_ids = e.strs("cameras")
        for cid in camera_ids:
            if cid not in camera_owner:
                raise e.error("cameras", f"unknown camera {cid!r}")
            if camera_owner[cid] != owner:
                raise e.error(
                    "cameras", f"camera {cid!r} belongs to {camera_owner[cid]!r}, not {owner!r}"
                )
        tags = e.strs("tags")
        if not camera_ids and not tags:
            raise e.error("cameras", "names no cameras (give cameras or tags)")
        if "rights" not in e.raw:
            raise e.error("rights", "missing")
        rights = e.enums("rights", Right, "right")
        if not rights:
            raise e.error("rights", "empty")
        windows: list[TimeWindow] = []
        for text in e.strs("time_windows"):
            try:
                windows.append(TimeWindow.parse(text))
            except DomainError as exc:
                raise e.error("time_windows", str(exc)) from None
        ptz = e.integer("ptz_priority", 0, 32000)
        grants.append(
            Grant(
                id=gid,
                owner_tenant=owner,
                grantee_tenant=grantee,
                camera_ids=frozenset(camera_ids),
                camera_tags=frozenset(tags),
                rights=rights,
                constraints=Constraints(
                    time_windows=tuple(windows),
                    max_concurrent_streams=e.integer("max_concurrent_streams", 1, 1_000_000),
                    max_playback_age_s=e.integer("max_playback_age_s", 1, 100 * 365 * 86400),
                    purpose_required=e.flag("purpose_required", False),
                    quality_cap=e.enum("quality_cap", Quality, "quality", Quality.MAIN),
                    ptz_priority=0 if ptz is None else ptz,
                ),
            )
        )
    _unique(file, "grants", [g.id for g in grants])

    masks: list[MaskZone] = []
    for e in _entries(
        file, doc, "masks", {"id", "camera", "points", "kind", "tenant_kinds", "label"}
    ):
        mid = e.ident("id", "mask")
        cam = e.req("camera")
        if cam not in camera_owner:
            raise e.error("camera", f"unknown camera {cam!r}")
        raw_points = e.raw.get("points")
        if not isinstance(raw_points, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in raw_points
        ):
            raise e.error("points", "expected a list of [x, y] pairs in 0..1")
        try:
            masks.append(
                MaskZone(
                    id=mid,
                    camera_id=cam,
                    points=tuple((float(x), float(y)) for x, y in raw_points),
                    kind=e.enum("kind", MaskKind, "mask kind", MaskKind.PERMANENT),
                    tenant_kinds=e.enums("tenant_kinds", TenantKind, "tenant kind"),
                    label=e.text("label") or "",
                )
            )
        except (DomainError, TypeError, ValueError) as exc:
            raise e.error("points", str(exc)) from None
    _unique(file, "masks", [m.id for m in masks])

    with store.db.transaction():
        for t in tenants:
            store.put_tenant(t)
        for p in principals:
            store.put_principal(p)
        for c in cameras:
            store.put_camera(c)
        revoked = {g.id for g in store.list_grants(include_revoked=True) if not g.active}
        for g in grants:
            if g.id not in revoked:
                store.put_grant(g)
        for m in masks:
            store.put_mask(m)
