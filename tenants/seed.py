"""Seed files: tenants, principals, cameras, grants and masks in TOML, upserted at start.

The file is declared as pydantic models (:class:`SeedFile`), so a wrong type, an unknown key, a
bad enum value or a number out of range is named by pydantic's location
(``grants[2].rights[1]``). What only the whole file (and the store) can tell is checked after
that: duplicate ids, references to tenants and cameras, a grant naming another owner's camera.
Every error names the file, the key and the reason (:class:`SeedError`), and a bad file changes
nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from tenants.loader import FileError, read_toml, validate
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
from tenants.onvif import OnvifRegister, check_onvif_url
from tenants.store import TenantStore, digest_ha1

__all__ = ["SeedError", "SeedFile", "load_seed"]


class SeedError(FileError):
    """A seed file that cannot be loaded: ``"{file}: {key}: {reason}"``."""


def _id(kind: str) -> AfterValidator:
    def check(value: str) -> str:
        try:
            return check_id(kind, value)
        except DomainError as exc:
            raise ValueError(str(exc)) from None

    return AfterValidator(check)


def _window(text: str) -> str:
    try:
        TimeWindow.parse(text)
    except DomainError as exc:
        raise ValueError(str(exc)) from None
    return text


TenantId = Annotated[StrictStr, _id("tenant")]
Texts = list[StrictStr]
Coordinate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantSeed(_Entry):
    id: TenantId
    name: Annotated[StrictStr, Field(min_length=1)]
    kind: TenantKind
    # Absent: a tenant already stored keeps its status (a seed re-run does not undo a
    # suspension); a new one is active.
    status: TenantStatus | None = None
    jwks_url: StrictStr | None = None
    issuer: StrictStr | None = None
    algorithms: Texts = []


class PrincipalSeed(_Entry):
    id: Annotated[StrictStr, _id("principal")]
    tenant: TenantId
    name: Annotated[StrictStr, Field(min_length=1)]
    kind: PrincipalKind = PrincipalKind.USER
    roles: list[Role] = []
    # For VMS clients that cannot carry a token; only its HA1 is stored.
    digest_password: StrictStr | None = None


class CameraSeed(_Entry):
    id: Annotated[StrictStr, _id("camera")]
    owner: TenantId
    name: StrictStr = ""
    tags: Texts = []
    location: StrictStr = ""
    area_type: AreaType = AreaType.OTHER
    retention_days: Annotated[StrictInt, Field(ge=1, le=3650)] = 31
    # WGS84 degrees (both or neither): where the console's map draws it.
    latitude: Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)] | None = None
    longitude: Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)] | None = None
    # How the gateway steers it over ONVIF (tenants/onvif.py): the password is sealed at rest.
    onvif_url: StrictStr = ""
    onvif_username: StrictStr = ""
    onvif_password: StrictStr | None = Field(None, repr=False)
    onvif_profile: StrictStr = ""


class GrantSeed(_Entry):
    id: Annotated[StrictStr, _id("grant")]
    owner: TenantId
    grantee: TenantId
    cameras: Texts = []
    tags: Texts = []
    rights: Annotated[list[Right], Field(min_length=1)]
    # "HH:MM-HH:MM[@d,d,...]" in the deployment's local time, weekdays Monday = 0.
    time_windows: list[Annotated[StrictStr, AfterValidator(_window)]] = []
    max_concurrent_streams: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    max_playback_age_s: Annotated[StrictInt, Field(ge=1, le=100 * 365 * 86400)] | None = None
    purpose_required: StrictBool = False
    quality_cap: Quality = Quality.MAIN
    ptz_priority: Annotated[StrictInt, Field(ge=0, le=32000)] = 0


class MaskSeed(_Entry):
    id: Annotated[StrictStr, _id("mask")]
    camera: StrictStr
    points: Annotated[
        list[tuple[Coordinate, Coordinate]], Field(min_length=3, max_length=MAX_MASK_POINTS)
    ]
    kind: MaskKind = MaskKind.PERMANENT
    tenant_kinds: list[TenantKind] = []
    label: StrictStr = ""


class SeedFile(_Entry):
    tenants: list[TenantSeed] = []
    principals: list[PrincipalSeed] = []
    cameras: list[CameraSeed] = []
    grants: list[GrantSeed] = []
    masks: list[MaskSeed] = []


class _Check:
    """The whole-file rules, against what the file and the store hold together."""

    def __init__(self, file: str, seed: SeedFile, store: TenantStore) -> None:
        self.file = file
        self.stored_status = {t.id: t.status for t in store.list_tenants()}
        self.tenants = {t.id for t in seed.tenants} | set(self.stored_status)
        self.camera_owner = {c.id: c.owner_tenant for c in store.list_cameras()}
        self.camera_owner.update({c.id: c.owner for c in seed.cameras})

    def error(self, key: str, reason: str) -> SeedError:
        return SeedError(self.file, key, reason)

    def unique(self, table: str, ids: list[str]) -> None:
        seen: set[str] = set()
        for i, x in enumerate(ids):
            if x in seen:
                raise self.error(f"{table}[{i}].id", f"duplicate id {x!r}")
            seen.add(x)

    def tenant(self, key: str, tenant_id: str) -> None:
        if tenant_id not in self.tenants:
            raise self.error(key, f"unknown tenant {tenant_id!r}")

    def grant(self, i: int, g: GrantSeed) -> None:
        self.tenant(f"grants[{i}].owner", g.owner)
        self.tenant(f"grants[{i}].grantee", g.grantee)
        for cid in g.cameras:
            owner = self.camera_owner.get(cid)
            if owner is None:
                raise self.error(f"grants[{i}].cameras", f"unknown camera {cid!r}")
            if owner != g.owner:
                raise self.error(
                    f"grants[{i}].cameras", f"camera {cid!r} belongs to {owner!r}, not {g.owner!r}"
                )
        if not g.cameras and not g.tags:
            raise self.error(f"grants[{i}].cameras", "names no cameras (give cameras or tags)")


def _grant(g: GrantSeed) -> Grant:
    return Grant(
        id=g.id,
        owner_tenant=g.owner,
        grantee_tenant=g.grantee,
        camera_ids=frozenset(g.cameras),
        camera_tags=frozenset(g.tags),
        rights=frozenset(g.rights),
        constraints=Constraints(
            time_windows=tuple(TimeWindow.parse(w) for w in g.time_windows),
            max_concurrent_streams=g.max_concurrent_streams,
            max_playback_age_s=g.max_playback_age_s,
            purpose_required=g.purpose_required,
            quality_cap=g.quality_cap,
            ptz_priority=g.ptz_priority,
        ),
    )


def load_seed(store: TenantStore, path: str | Path, onvif: OnvifRegister | None = None) -> None:
    """Upsert tenants, principals, cameras, grants and masks from a TOML seed file.

    Idempotent. The whole file is validated first and written in one transaction, so a bad
    file changes nothing. A seed re-run does not undo admin actions: a tenant without
    ``status`` keeps its stored status, a principal its ``disabled`` flag, and a grant already
    revoked in the store stays revoked; an existing grant keeps its creation time.
    """
    file = str(path)
    seed = validate(SeedFile, read_toml(path, SeedError), file, SeedError)
    check = _Check(file, seed, store)
    check.unique("tenants", [t.id for t in seed.tenants])
    check.unique("principals", [p.id for p in seed.principals])
    check.unique("cameras", [c.id for c in seed.cameras])
    check.unique("grants", [g.id for g in seed.grants])
    check.unique("masks", [m.id for m in seed.masks])
    for i, p in enumerate(seed.principals):
        check.tenant(f"principals[{i}].tenant", p.tenant)
    for i, c in enumerate(seed.cameras):
        check.tenant(f"cameras[{i}].owner", c.owner)
        if (c.latitude is None) != (c.longitude is None):
            missing = "latitude" if c.latitude is None else "longitude"
            raise check.error(f"cameras[{i}].{missing}", "give both latitude and longitude")
        if c.onvif_url:
            try:
                check_onvif_url(c.onvif_url)
            except DomainError as exc:
                raise check.error(f"cameras[{i}].onvif_url", str(exc)) from None
            if onvif is None:
                raise check.error(f"cameras[{i}].onvif_url", "this store keeps no ONVIF settings")
        elif c.onvif_username or c.onvif_password or c.onvif_profile:
            raise check.error(f"cameras[{i}].onvif_url", "give it with the other onvif_ keys")
    for i, g in enumerate(seed.grants):
        check.grant(i, g)
    for i, m in enumerate(seed.masks):
        if m.camera not in check.camera_owner:
            raise check.error(f"masks[{i}].camera", f"unknown camera {m.camera!r}")

    # A seed re-run keeps what admins set since: a principal's disabled flag and password.
    stored = {p.id: p for p in store.list_principals()}
    tenants = [
        Tenant(
            id=t.id,
            name=t.name,
            kind=t.kind,
            status=t.status or check.stored_status.get(t.id, TenantStatus.ACTIVE),
            jwks_url=t.jwks_url,
            issuer=t.issuer,
            algorithms=tuple(t.algorithms),
        )
        for t in seed.tenants
    ]
    principals = [
        Principal(
            id=p.id,
            tenant_id=p.tenant,
            name=p.name,
            kind=p.kind,
            roles=frozenset(p.roles),
            digest_ha1=digest_ha1(p.id, p.digest_password)
            if p.digest_password is not None
            else None,
            disabled=p.id in stored and stored[p.id].disabled,
            password_hash=stored[p.id].password_hash if p.id in stored else None,
        )
        for p in seed.principals
    ]
    cameras = [
        Camera(
            id=c.id,
            owner_tenant=c.owner,
            name=c.name,
            tags=frozenset(c.tags),
            location=c.location,
            area_type=c.area_type,
            retention_days=c.retention_days,
            latitude=c.latitude,
            longitude=c.longitude,
        )
        for c in seed.cameras
    ]
    masks = [
        MaskZone(
            id=m.id,
            camera_id=m.camera,
            points=tuple(m.points),
            kind=m.kind,
            tenant_kinds=frozenset(m.tenant_kinds),
            label=m.label,
        )
        for m in seed.masks
    ]
    with store.db.transaction():
        for tenant in tenants:
            store.put_tenant(tenant)
        for principal in principals:
            store.put_principal(principal)
        for camera in cameras:
            store.put_camera(camera)
        for i, c in enumerate(seed.cameras):
            if c.onvif_url and onvif is not None:
                try:
                    onvif.put(c.id, c.onvif_url, c.onvif_username, c.onvif_profile,
                              password=c.onvif_password)  # fmt: skip
                except DomainError as exc:  # "onvif_username: ...", "password: ..."
                    name = str(exc).partition(":")[0].removeprefix("onvif_")
                    raise check.error(f"cameras[{i}].onvif_{name}", str(exc)) from None
        revoked = {g.id for g in store.list_grants(include_revoked=True) if not g.active}
        for g in seed.grants:
            if g.id not in revoked:
                store.put_grant(_grant(g))
        for zone in masks:
            store.put_mask(zone)
