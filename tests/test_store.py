"""TenantStore on both backends (``db_url``: a SQLite file and a private PostgreSQL cluster)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tenants.db import Database, IntegrityError
from tenants.model import (
    AreaType,
    Camera,
    Constraints,
    DomainError,
    Grant,
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
from tenants.seed import SeedError, load_seed
from tenants.store import MIGRATIONS, NotFound, TenantStore

T0 = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def store(db: Database) -> TenantStore:
    return TenantStore(db)


def tenant(tid: str = "council", **kw: Any) -> Tenant:
    return Tenant(
        id=tid, name=kw.pop("name", tid.title()), kind=kw.pop("kind", TenantKind.COUNCIL), **kw
    )


def populate(store: TenantStore) -> None:
    store.put_tenant(tenant("council"))
    store.put_tenant(tenant("police", kind=TenantKind.POLICE))
    store.put_camera(Camera("cam-1", "council", tags=frozenset({"high-street"})))


def grant(gid: str, **kw: Any) -> Grant:
    kw.setdefault("camera_ids", frozenset({"cam-1"}))
    kw.setdefault("created_at", T0)
    return Grant(gid, kw.pop("owner", "council"), kw.pop("grantee", "police"), **kw)


# -- CRUD ----------------------------------------------------------------------------------


def test_tenant_crud_and_upsert(store: TenantStore) -> None:
    assert store.list_tenants() == []
    store.put_tenant(tenant("police", kind=TenantKind.POLICE))
    store.put_tenant(tenant("council"))
    assert [t.id for t in store.list_tenants()] == ["council", "police"]
    assert store.get_tenant("council") == tenant("council")

    renamed = tenant("council", name="Borough Council", algorithms=("ES256",))
    store.put_tenant(renamed)  # upsert: same id, new values, no duplicate
    assert store.get_tenant("council") == renamed
    assert len(store.list_tenants()) == 2

    suspended = store.set_tenant_status("council", TenantStatus.SUSPENDED)
    assert suspended.status is TenantStatus.SUSPENDED and not suspended.active
    assert store.get_tenant("council") == suspended
    assert suspended.name == "Borough Council"


def test_principal_crud_and_upsert(store: TenantStore) -> None:
    populate(store)
    alice = Principal("alice", "council", "Alice", roles=frozenset({Role.OPERATOR}))
    vms = Principal("vms", "police", "VMS", kind=PrincipalKind.SERVICE, digest_ha1="ab" * 16)
    store.put_principal(alice)
    store.put_principal(vms)
    assert store.get_principal("alice") == alice
    assert store.list_principals() == [alice, vms]
    assert store.list_principals("police") == [vms]
    assert store.list_principals("nobody") == []

    moved = Principal("alice", "police", "Alice B", roles=frozenset(), disabled=True)
    store.put_principal(moved)
    assert store.get_principal("alice") == moved
    assert store.list_principals("council") == []

    store.delete_principal("alice")
    assert store.list_principals() == [vms]
    with pytest.raises(NotFound):
        store.get_principal("alice")


def test_camera_crud_and_upsert(store: TenantStore) -> None:
    populate(store)
    cam2 = Camera("cam-2", "police", "Station", frozenset({"a", "b"}), "51.5,-0.1")
    store.put_camera(cam2)
    assert store.get_camera("cam-2") == cam2
    assert [c.id for c in store.list_cameras()] == ["cam-1", "cam-2"]
    assert store.list_cameras("police") == [cam2]

    changed = Camera("cam-2", "police", "Station east", retention_days=90)
    store.put_camera(changed)
    assert store.get_camera("cam-2") == changed
    assert len(store.list_cameras()) == 2

    store.delete_camera("cam-2")
    assert [c.id for c in store.list_cameras()] == ["cam-1"]


def test_grant_crud_filters_and_upsert(store: TenantStore) -> None:
    populate(store)
    store.put_tenant(tenant("health", kind=TenantKind.HEALTH))
    g1 = grant("g1")
    g2 = grant("g2", grantee="health", created_at=T0 + timedelta(seconds=1))
    g3 = grant("g3", owner="police", grantee="council", camera_tags=frozenset({"x"}))
    for g in (g2, g1, g3):
        store.put_grant(g)
    assert store.get_grant("g1") == g1
    assert store.list_grants() == [g1, g3, g2]  # by created_at, then id
    assert store.list_grants(owner="council") == [g1, g2]
    assert store.list_grants(grantee="health") == [g2]
    assert store.list_grants(owner="council", grantee="police") == [g1]
    assert store.list_grants(owner="nobody") == []

    # Upsert changes the terms but keeps the first creation time.
    wider = grant("g1", rights=frozenset(Right), created_at=T0 + timedelta(days=1))
    store.put_grant(wider)
    got = store.get_grant("g1")
    assert got.rights == frozenset(Right)
    assert got.created_at == T0
    assert len(store.list_grants()) == 3


@pytest.mark.parametrize(
    ("call", "kind", "ident"),
    [
        (lambda s: s.get_tenant("ghost"), "tenant", "ghost"),
        (lambda s: s.set_tenant_status("ghost", TenantStatus.ACTIVE), "tenant", "ghost"),
        (lambda s: s.get_principal("nobody"), "principal", "nobody"),
        (lambda s: s.delete_principal("nobody"), "principal", "nobody"),
        (lambda s: s.get_camera("cam-x"), "camera", "cam-x"),
        (lambda s: s.delete_camera("cam-x"), "camera", "cam-x"),
        (lambda s: s.get_grant("g-x"), "grant", "g-x"),
        (lambda s: s.revoke_grant("g-x", T0), "grant", "g-x"),
    ],
)
def test_not_found_messages(
    store: TenantStore, call: Callable[[TenantStore], Any], kind: str, ident: str
) -> None:
    before = store.version()
    with pytest.raises(NotFound) as err:
        call(store)
    assert str(err.value) == f"{kind} {ident!r} not found"
    assert (err.value.kind, err.value.id) == (kind, ident)
    assert isinstance(err.value, LookupError)
    assert store.version() == before  # the failed write rolled back its bump


def test_foreign_keys_refuse_unknown_tenants(store: TenantStore, db: Database) -> None:
    populate(store)
    before = store.version()
    cases: list[tuple[Callable[[], None], str]] = [
        (lambda: store.put_principal(Principal("p", "ghost", "P")), "principal 'p'"),
        (lambda: store.put_camera(Camera("c", "ghost")), "camera 'c'"),
        (lambda: store.put_grant(grant("g", owner="ghost")), "grant 'g' as owner"),
        (lambda: store.put_grant(grant("g", grantee="ghost")), "grant 'g' as grantee"),
    ]
    for write, referrer in cases:
        with pytest.raises(NotFound) as err:
            write()
        assert str(err.value) == f"tenant 'ghost' not found (referred to by {referrer})"
        assert err.value.kind == "tenant"
    assert store.version() == before
    assert store.list_principals() == [] and len(store.list_cameras()) == 1
    assert store.list_grants(include_revoked=True) == []

    # The schema itself refuses too (for writers that bypass the store).
    with pytest.raises(IntegrityError):
        db.execute(
            "INSERT INTO principals (id, tenant_id, name, kind, roles, digest_ha1, disabled)"
            " VALUES ('p', 'ghost', 'P', 'user', '[]', NULL, 0)"
        )
    with pytest.raises(IntegrityError):
        db.execute(
            "INSERT INTO tenants (id, name, kind, status, algorithms) VALUES (?, ?, ?, ?, ?)",
            ("council", "dup", "council", "active", "[]"),
        )


# -- grants: revocation keeps history ------------------------------------------------------


def test_revoke_keeps_history_and_hides_from_snapshot(store: TenantStore) -> None:
    populate(store)
    store.put_grant(grant("g1"))
    store.put_grant(grant("g2", created_at=T0 + timedelta(seconds=1)))
    when = T0 + timedelta(hours=2)

    revoked = store.revoke_grant("g1", when)
    assert revoked.revoked_at == when and not revoked.active
    assert store.get_grant("g1") == revoked  # still there
    assert [g.id for g in store.list_grants()] == ["g2"]
    assert [g.id for g in store.list_grants(include_revoked=True)] == ["g1", "g2"]
    assert [g.id for g in store.list_grants(owner="council", include_revoked=True)] == ["g1", "g2"]
    assert [g.id for g in store.snapshot().grants] == ["g2"]

    # Revoking again changes nothing: the first revocation time stands, no version bump.
    v = store.version()
    assert store.revoke_grant("g1", when + timedelta(days=1)) == revoked
    assert store.version() == v

    # A revoked grant is history: it cannot be rewritten (or resurrected).
    with pytest.raises(IntegrityError, match="revoked"):
        store.put_grant(grant("g1"))
    assert store.get_grant("g1") == revoked
    assert store.version() == v


# -- change detection ----------------------------------------------------------------------


def test_version_bumps_on_every_write_and_not_on_reads(store: TenantStore) -> None:
    assert store.version() == 0
    writes: list[Callable[[], object]] = [
        lambda: store.put_tenant(tenant("council")),
        lambda: store.put_tenant(tenant("council", name="Again")),  # an update counts too
        lambda: store.put_tenant(tenant("police", kind=TenantKind.POLICE)),
        lambda: store.set_tenant_status("police", TenantStatus.SUSPENDED),
        lambda: store.put_principal(Principal("p1", "council", "P1")),
        lambda: store.delete_principal("p1"),
        lambda: store.put_camera(Camera("cam-1", "council")),
        lambda: store.put_grant(grant("g1")),
        lambda: store.revoke_grant("g1", T0),
        lambda: store.delete_camera("cam-1"),
    ]
    reads: list[Callable[[], object]] = [
        store.version,
        store.snapshot,
        store.list_tenants,
        store.list_principals,
        store.list_cameras,
        lambda: store.list_grants(include_revoked=True),
        lambda: store.get_tenant("council"),
    ]
    for n, write in enumerate(writes, start=1):
        write()
        assert store.version() == n
        for read in reads:
            read()
        assert store.version() == n


def test_snapshot_is_consistent(store: TenantStore, db: Database, db_url: str) -> None:
    populate(store)
    store.put_principal(Principal("alice", "council", "Alice"))
    store.put_grant(grant("g1"))
    store.put_grant(grant("g2"))
    store.revoke_grant("g2", T0)

    snap = store.snapshot()
    assert snap.version == store.version()
    assert snap.tenants == {t.id: t for t in store.list_tenants()}
    assert snap.principals == {"alice": store.get_principal("alice")}
    assert snap.cameras == {"cam-1": store.get_camera("cam-1")}
    assert snap.grants == (store.get_grant("g1"),)

    # Another connection (another node) keeps writing: each write adds one tenant and bumps
    # the version once, so a consistent snapshot has exactly `version - base` extra tenants.
    base = snap.version - len(snap.tenants)
    other = TenantStore(Database.open(db_url))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            i = 0
            while not stop.is_set() and i < 400:
                other.put_tenant(tenant(f"t{i:04d}"))
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(30):
            s = store.snapshot()
            assert len(s.tenants) == s.version - base, s.version
    finally:
        stop.set()
        thread.join(30)
        other.db.close()
    assert not errors
    assert store.version() == base + len(store.list_tenants())


def test_migrations_run_once(db_url: str) -> None:
    first = Database.open(db_url)
    try:
        store = TenantStore(first)
        populate(store)
        v = store.version()
    finally:
        first.close()

    again = Database.open(db_url)
    try:
        assert again.migrate("tenants", MIGRATIONS) == 0
        store = TenantStore(again)  # opening twice does not re-run (or fail on) the DDL
        assert store.version() == v
        assert [t.id for t in store.list_tenants()] == ["council", "police"]
        row = again.query_one(
            "SELECT COUNT(*), MAX(version) FROM schema_migrations WHERE component = ?",
            ("tenants",),
        )
        assert row is not None and (int(row[0]), int(row[1])) == (len(MIGRATIONS),) * 2
    finally:
        again.close()


# -- exact round trips ---------------------------------------------------------------------


def test_values_round_trip_exactly(store: TenantStore) -> None:
    t = Tenant(
        "police",
        "Met Police — Süd",  # non-ASCII survives
        TenantKind.POLICE,
        TenantStatus.SUSPENDED,
        jwks_url="https://idp.example/jwks.json",
        issuer="https://idp.example",
        algorithms=("ES256", "RS256"),
    )
    store.put_tenant(t)
    store.put_tenant(tenant("council"))
    p = Principal(
        "vms.1",
        "police",
        "VMS",
        PrincipalKind.SERVICE,
        frozenset({Role.VIEWER, Role.INVESTIGATOR}),
        digest_ha1="0123456789abcdef" * 2,
        disabled=True,
    )
    c = Camera(
        "cam_9",
        "council",
        "Stadium gate 'A'",
        frozenset({"stadium", "gate", "night"}),
        "51.556,-0.279",
        AreaType.STADIUM,
        3650,
    )
    plus2 = timezone(timedelta(hours=2))
    g = Grant(
        "g-1",
        "council",
        "police",
        camera_ids=frozenset({"cam_9", "cam-missing"}),
        camera_tags=frozenset({"night"}),
        rights=frozenset({Right.LIVE, Right.PTZ, Right.UNMASK}),
        constraints=Constraints(
            time_windows=(
                TimeWindow(time(8, 0), time(18, 0)),
                TimeWindow(time(22, 0, 30), time(6, 15, 0, 250), frozenset({4, 5})),
                TimeWindow.parse("00:00-23:59@0"),
            ),
            max_concurrent_streams=3,
            max_playback_age_s=7 * 86400,
            purpose_required=True,
            quality_cap=Quality.SUB,
            ptz_priority=32000,
        ),
        created_at=datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=plus2),
        revoked_at=None,
    )
    store.put_principal(p)
    store.put_camera(c)
    store.put_grant(g)

    got = (
        store.get_tenant("police"),
        store.get_principal("vms.1"),
        store.get_camera("cam_9"),
        store.get_grant("g-1"),
    )
    assert got == (t, p, c, g)
    assert got == tuple(
        x
        for x in (
            store.snapshot().tenants["police"],
            store.snapshot().principals["vms.1"],
            store.snapshot().cameras["cam_9"],
            store.snapshot().grants[0],
        )
    )
    tg, pg, cg, gg = got
    assert type(tg.kind) is TenantKind and type(tg.status) is TenantStatus
    assert type(pg.kind) is PrincipalKind and all(type(r) is Role for r in pg.roles)
    assert isinstance(pg.roles, frozenset) and isinstance(cg.tags, frozenset)
    assert type(cg.area_type) is AreaType
    assert all(type(r) is Right for r in gg.rights) and type(gg.constraints.quality_cap) is Quality
    assert isinstance(gg.camera_ids, frozenset) and isinstance(gg.camera_tags, frozenset)
    assert gg.constraints.time_windows == g.constraints.time_windows  # order kept
    assert gg.constraints.time_windows[1].weekdays == frozenset({4, 5})
    assert gg.created_at.utcoffset() == timedelta(0) and gg.created_at.tzinfo == UTC
    assert gg.created_at == datetime(2024, 12, 31, 21, 59, 59, 999999, tzinfo=UTC)

    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=plus2)
    revoked = store.revoke_grant("g-1", when)
    assert revoked.revoked_at == when and revoked.revoked_at.tzinfo == UTC
    assert store.get_grant("g-1") == Grant(**{**g.__dict__, "revoked_at": when})


def test_naive_datetimes_are_refused(store: TenantStore) -> None:
    populate(store)
    with pytest.raises(DomainError, match="time zone"):
        store.put_grant(grant("g1", created_at=datetime(2025, 1, 1)))
    store.put_grant(grant("g1"))
    with pytest.raises(DomainError, match="time zone"):
        store.revoke_grant("g1", datetime(2025, 1, 1))
    assert store.get_grant("g1").active


# -- seed files ----------------------------------------------------------------------------

GOOD_SEED = """
[[tenants]]
id = "council"
name = "Borough Council"
kind = "council"

[[tenants]]
id = "police"
name = "Met Police"
kind = "police"
jwks_url = "https://idp.police.example/jwks.json"
issuer = "https://idp.police.example"
algorithms = ["ES256"]

[[tenants]]
id = "mall"
name = "Mall"
kind = "retail"
status = "suspended"

[[principals]]
id = "ops1"
tenant = "council"
name = "Control room"
roles = ["operator", "viewer"]

[[principals]]
id = "vms"
tenant = "police"
name = "Police VMS"
kind = "service"
roles = ["viewer"]
digest_password = "s3cret"

[[cameras]]
id = "cam-1"
owner = "council"
name = "High St north"
tags = ["high-street", "night"]
location = "51.5,-0.12"
area_type = "high_street"
retention_days = 30

[[cameras]]
id = "cam-2"
owner = "council"
tags = ["station"]

[[grants]]
id = "g-police"
owner = "council"
grantee = "police"
cameras = ["cam-1"]
tags = ["station"]
rights = ["live", "playback", "ptz"]
time_windows = ["08:00-18:00", "22:00-06:00@4,5"]
max_concurrent_streams = 4
max_playback_age_s = 86400
purpose_required = true
quality_cap = "sub"
ptz_priority = 200

[[grants]]
id = "g-mall"
owner = "council"
grantee = "mall"
tags = ["high-street"]
rights = ["live"]
"""


def test_load_seed(store: TenantStore, tmp_path: Path) -> None:
    path = tmp_path / "seed.toml"
    path.write_text(GOOD_SEED)
    load_seed(store, path)

    assert [t.id for t in store.list_tenants()] == ["council", "mall", "police"]
    police = store.get_tenant("police")
    assert police.algorithms == ("ES256",) and police.issuer == "https://idp.police.example"
    assert store.get_tenant("mall").status is TenantStatus.SUSPENDED
    assert store.get_tenant("council").status is TenantStatus.ACTIVE

    ops = store.get_principal("ops1")
    assert ops.roles == {Role.OPERATOR, Role.VIEWER} and ops.kind is PrincipalKind.USER
    assert ops.digest_ha1 is None
    vms = store.get_principal("vms")
    assert vms.kind is PrincipalKind.SERVICE
    assert vms.digest_ha1 == hashlib.md5(b"vms:feedgate:s3cret").hexdigest()

    assert store.get_camera("cam-1") == Camera(
        "cam-1",
        "council",
        "High St north",
        frozenset({"high-street", "night"}),
        "51.5,-0.12",
        AreaType.HIGH_STREET,
        30,
    )
    assert store.get_camera("cam-2") == Camera("cam-2", "council", tags=frozenset({"station"}))

    g = store.get_grant("g-police")
    assert (g.owner_tenant, g.grantee_tenant) == ("council", "police")
    assert g.camera_ids == {"cam-1"} and g.camera_tags == {"station"}
    assert g.rights == {Right.LIVE, Right.PLAYBACK, Right.PTZ}
    assert g.constraints == Constraints(
        time_windows=(TimeWindow.parse("08:00-18:00"), TimeWindow.parse("22:00-06:00@4,5")),
        max_concurrent_streams=4,
        max_playback_age_s=86400,
        purpose_required=True,
        quality_cap=Quality.SUB,
        ptz_priority=200,
    )
    assert store.get_grant("g-mall").constraints == Constraints()

    # Idempotent: loading again leaves the same data (grants keep their creation time).
    snap = store.snapshot()
    load_seed(store, str(path))
    again = store.snapshot()
    assert (again.tenants, again.principals, again.cameras, again.grants) == (
        snap.tenants,
        snap.principals,
        snap.cameras,
        snap.grants,
    )

    # A re-run does not undo admin actions: suspension, disabling, revocation.
    store.set_tenant_status("council", TenantStatus.SUSPENDED)
    store.put_principal(Principal(**{**ops.__dict__, "disabled": True}))
    store.revoke_grant("g-mall", T0)
    load_seed(store, path)
    assert store.get_tenant("council").status is TenantStatus.SUSPENDED
    assert store.get_principal("ops1").disabled
    assert store.get_grant("g-mall").revoked_at == T0
    assert [g.id for g in store.snapshot().grants] == ["g-police"]


_BASE = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"

[[tenants]]
id = "police"
name = "Police"
kind = "police"

[[cameras]]
id = "cam-c"
owner = "council"

[[cameras]]
id = "cam-p"
owner = "police"
"""

_GRANT = '\n[[grants]]\nid = "{id}"\nowner = "council"\ngrantee = "police"\ncameras = ["cam-c"]\n'

BAD_SEEDS: list[tuple[str, str]] = [
    # (TOML, expected "<table>[i].<key>: <reason>" after "<file>: ")
    (
        _BASE
        + _GRANT.format(id="g0")
        + 'rights = ["live"]\n'
        + _GRANT.format(id="g1")
        + 'rights = ["live"]\n'
        + _GRANT.format(id="g2")
        + 'rights = ["live", "fly"]\n',
        "grants[2].rights[1]: must be 'live', 'playback', 'ptz', 'export' or 'unmask', got 'fly'",
    ),
    (
        _BASE + '[[tenants]]\nid = "army"\nname = "A"\nkind = "army"\n',
        "tenants[2].kind: must be 'council', 'police', ",
    ),
    (_BASE + '[[tenants]]\nid = "x"\nkind = "police"\n', "tenants[2].name: required"),
    (
        _BASE + '[[tenants]]\nid = "Bad Id"\nname = "B"\nkind = "police"\n',
        "tenants[2].id: tenant id 'Bad Id'",
    ),
    (
        _BASE + '[[tenants]]\nid = "police"\nname = "P2"\nkind = "police"\n',
        "tenants[2].id: duplicate id 'police'",
    ),
    (
        _BASE + '[[tenants]]\nid = "t"\nname = "T"\nkind = "police"\nstatus = "gone"\n',
        "tenants[2].status: must be 'active' or 'suspended', got 'gone'",
    ),
    (
        _BASE + '[[principals]]\nid = "p"\ntenant = "nobody"\nname = "P"\n',
        "principals[0].tenant: unknown tenant 'nobody'",
    ),
    (
        _BASE + '[[principals]]\nid = "p"\ntenant = "police"\nname = "P"\nroles = ["king"]\n',
        "principals[0].roles[0]: must be 'operator', ",
    ),
    (
        _BASE + '[[principals]]\nid = "p"\ntenant = "police"\nname = "P"\ndigest_password = 5\n',
        "principals[0].digest_password: expected a string, got 5",
    ),
    (
        _BASE + '[[cameras]]\nid = "c"\nowner = "police"\nretention_days = 0\n',
        "cameras[2].retention_days: must be >= 1, got 0",
    ),
    (
        _BASE + '[[cameras]]\nid = "c"\nowner = "police"\ncolour = "red"\n',
        "cameras[2].colour: unknown key (known: area_type, id, latitude, location,",
    ),
    (
        _BASE + '[[cameras]]\nid = "c"\nowner = "police"\narea_type = "moon"\n',
        "cameras[2].area_type: must be 'transport_hub', ",
    ),
    (
        _BASE + '[[cameras]]\nid = "c"\nowner = "police"\ntags = "night"\n',
        "cameras[2].tags: expected a list, got 'night'",
    ),
    (
        _BASE + _GRANT.format(id="g") + 'rights = ["live"]\ntime_windows = ["8-18"]\n',
        "grants[0].time_windows[0]: time window '8-18'",
    ),
    (
        _BASE + _GRANT.format(id="g") + 'rights = ["live"]\ntime_windows = ["08:00-18:00@7"]\n',
        "grants[0].time_windows[0]: time window '08:00-18:00@7': weekdays",
    ),
    (
        _BASE + _GRANT.format(id="g").replace("cam-c", "cam-p") + 'rights = ["live"]\n',
        "grants[0].cameras: camera 'cam-p' belongs to 'police', not 'council'",
    ),
    (
        _BASE + _GRANT.format(id="g").replace("cam-c", "cam-z") + 'rights = ["live"]\n',
        "grants[0].cameras: unknown camera 'cam-z'",
    ),
    (
        _BASE + '[[grants]]\nid = "g"\nowner = "council"\ngrantee = "police"\nrights = ["live"]\n',
        "grants[0].cameras: names no cameras",
    ),
    (_BASE + _GRANT.format(id="g"), "grants[0].rights: required"),
    (
        _BASE + _GRANT.format(id="g") + 'rights = ["live"]\npurpose_required = "yes"\n',
        "grants[0].purpose_required: expected true or false",
    ),
    (
        _BASE + _GRANT.format(id="g") + 'rights = ["live"]\nptz_priority = 40000\n',
        "grants[0].ptz_priority: must be <= 32000, got 40000",
    ),
    (
        _BASE + _GRANT.format(id="g") + 'rights = ["live"]\nmax_concurrent_streams = true\n',
        "grants[0].max_concurrent_streams: expected an integer",
    ),
    (
        _BASE + _GRANT.format(id="g") + 'rights = ["live"]\nquality_cap = "4k"\n',
        "grants[0].quality_cap: must be 'main' or 'sub', got '4k'",
    ),
    (
        _BASE + "[[widgets]]\nid = 1\n",
        "widgets: unknown key (known: cameras, grants, masks, principals, tenants)",
    ),
    ("tenants = 3\n" + _BASE, "-: TOML syntax"),
    ('[[tenants]\nid = "x"\n', "-: TOML syntax"),
    ('tenants = "x"\n', "tenants: expected a list, got 'x'"),
]


def test_load_seed_rejects_bad_files(store: TenantStore, tmp_path: Path) -> None:
    path = tmp_path / "seed.toml"
    for text, expected in BAD_SEEDS:
        path.write_text(text)
        with pytest.raises(SeedError) as err:
            load_seed(store, path)
        message = str(err.value)
        assert message.startswith(f"{path}: {expected}"), message
        # All or nothing: a bad file writes nothing.
        assert store.version() == 0 and store.list_tenants() == [], expected

    with pytest.raises(SeedError, match=r"missing\.toml: -: cannot read: No such file"):
        load_seed(store, tmp_path / "missing.toml")


def test_seed_refers_to_stored_data(store: TenantStore, tmp_path: Path) -> None:
    """Seed entries may refer to tenants and cameras already in the store."""
    populate(store)
    path = tmp_path / "extra.toml"
    path.write_text(
        '[[grants]]\nid = "g"\nowner = "council"\ngrantee = "police"\ncameras = ["cam-1"]\n'
        'rights = ["playback"]\n'
    )
    load_seed(store, path)
    assert store.get_grant("g").rights == {Right.PLAYBACK}


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_grant_writers_lose_nothing(store: TenantStore) -> None:
    populate(store)
    base = store.version()
    threads, per_thread = 4, 25
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait(10)
            for i in range(per_thread):
                store.put_grant(grant(f"g{n}-{i:02d}", created_at=T0 + timedelta(seconds=i)))
                if i % 5 == 0:
                    store.snapshot()  # readers interleave with the writers
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert not errors
    ids = {g.id for g in store.list_grants()}
    assert ids == {f"g{n}-{i:02d}" for n in range(threads) for i in range(per_thread)}
    assert store.version() == base + threads * per_thread
    assert len(store.snapshot().grants) == threads * per_thread


# -- the database layer under the store (fixes made alongside it) --------------------------


def test_database_layer_is_portable(db: Database) -> None:
    """A literal % is not a placeholder on PostgreSQL; executemany reports IntegrityError."""
    assert db.query_one("SELECT 'cam%1' LIKE ?", ("cam%",)) in ((1,), (True,))
    db.execute("CREATE TABLE t (x TEXT PRIMARY KEY)")
    db.executemany("INSERT INTO t (x) VALUES (?)", [("a",), ("b",)])
    with pytest.raises(IntegrityError):
        db.executemany("INSERT INTO t (x) VALUES (?)", [("c",), ("a",)])
    assert db.query("SELECT x FROM t WHERE x LIKE 'a%' ORDER BY x") == [("a",)]
