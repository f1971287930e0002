"""Cameras: the register of who owns which camera, and its privacy masks."""

from __future__ import annotations

from typing import Any

from tenants.audit import AuditAction
from tenants.control.core import Change, Core, operation, require_admin
from tenants.control.core import existing as find
from tenants.control.errors import denied, precondition
from tenants.control.rules import (
    CAMERA_ROLES,
    Caller,
    camera_visible,
    may_register_camera,
)
from tenants.control.schemas import CameraBody, CameraView, MaskBody, MaskView
from tenants.model import Camera, MaskZone, Role


class CameraOps:
    """A tenant's admins manage its cameras; its watching roles see the cameras it owns or
    has grants on. A camera id the gateway has a source for is registered by the platform."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def _require_reader(self, caller: Caller) -> None:
        if not caller.has(CAMERA_ROLES):
            raise denied("needs a role that watches or manages cameras")

    def visible(self, caller: Caller, camera_id: str, verb: str = "see") -> Camera:
        snap = self.core.snapshot
        cam = snap.cameras.get(camera_id)
        if cam is None or not camera_visible(caller, cam, snap.grants):
            raise self.core.missing(caller, "camera", camera_id, verb)
        return cam

    @operation("PutCamera")
    async def put(self, caller: Caller, body: CameraBody) -> CameraView:
        if not caller.admin_of(body.owner_tenant):
            raise denied(f"may not manage cameras of {body.owner_tenant}")
        cam = body.to_domain()
        store, configured = self.core.store, self.core.media.configured_cameras()

        def op() -> Change[CameraView]:
            existing = find(store.get_camera, cam.id)
            if existing is not None and not caller.admin_of(existing.owner_tenant):
                raise self.core.missing(caller, "camera", cam.id, "manage")
            if not may_register_camera(caller, cam.id, existing, configured):
                raise self.core.missing(caller, "camera", cam.id, "manage")
            store.put_camera(cam)
            detail: dict[str, Any] = {
                "op": "create" if existing is None else "update",
                "owner": cam.owner_tenant,
                "tags": sorted(cam.tags),
                "area_type": cam.area_type.value,
                "retention_days": cam.retention_days,
            }
            if existing is not None and existing.owner_tenant != cam.owner_tenant:
                detail["previous_owner"] = existing.owner_tenant
            return Change(
                CameraView.of(cam),
                AuditAction.CONFIG,
                {cam.owner_tenant, *(() if existing is None else (existing.owner_tenant,))},
                detail,
                camera=cam.id,
            )

        view = await self.core.write(caller, "PutCamera", op)
        self._end_sessions(cam.id, "camera re-registered")
        return view

    @operation("GetCamera")
    async def get(self, caller: Caller, camera_id: str) -> CameraView:
        self._require_reader(caller)
        return CameraView.of(self.visible(caller, camera_id))

    @operation("ListCameras")
    async def list(self, caller: Caller, owner: str | None = None) -> list[CameraView]:
        self._require_reader(caller)
        snap = self.core.snapshot
        return [
            CameraView.of(c)
            for _, c in sorted(snap.cameras.items())
            if (owner is None or c.owner_tenant == owner) and camera_visible(caller, c, snap.grants)
        ]

    @operation("DeleteCamera")
    async def delete(self, caller: Caller, camera_id: str) -> None:
        require_admin(caller)
        store = self.core.store

        def op() -> Change[None]:
            cam = self.core.managed(
                caller, "camera", camera_id, store.get_camera, lambda c: c.owner_tenant
            )
            if store.list_masks(camera_id):
                raise precondition(f"camera {camera_id!r} has privacy masks: delete them first")
            store.delete_camera(camera_id)
            return Change(
                None,
                AuditAction.CONFIG,
                [cam.owner_tenant],
                {"op": "delete", "owner": cam.owner_tenant},
                camera=camera_id,
            )

        await self.core.write(caller, "DeleteCamera", op)
        self._end_sessions(camera_id, "camera deleted")

    def _end_sessions(self, camera_id: str, reason: str) -> None:
        """A camera whose record is gone (or changed hands) plays to nobody under the old
        decision: end its sessions in this process now (other processes' sessions end at
        their next re-check, which asks the register too)."""
        media = self.core.media
        for s in media.sessions():
            if s.camera == camera_id:
                media.kick(s.id, reason)


def mask_summary(z: MaskZone) -> dict[str, Any]:
    """What the audit log records of a mask (not its coordinates)."""
    return {
        "kind": z.kind.value,
        "tenant_kinds": sorted(k.value for k in z.tenant_kinds),
        "points": len(z.points),
        "label": z.label,
    }


class MaskOps:
    """Privacy masks: managed by the camera owner's admins, read by the admins of tenants the
    camera is granted to."""

    def __init__(self, core: Core, cameras: CameraOps) -> None:
        self.core = core
        self.cameras = cameras

    def _find(self, mask_id: str) -> MaskZone | None:
        return next((z for z in self.core.store.list_masks() if z.id == mask_id), None)

    def _managed_camera(self, caller: Caller, camera_id: str) -> Camera:
        """The camera a mask change is about, if the caller manages its masks."""
        cam = self.cameras.visible(caller, camera_id, "manage")
        if not caller.admin_of(cam.owner_tenant):
            raise denied(f"may not manage masks of {cam.owner_tenant}'s camera {cam.id}")
        return cam

    @operation("PutMask")
    async def put(self, caller: Caller, body: MaskBody) -> MaskView:
        require_admin(caller)
        zone = body.to_domain()
        store = self.core.store

        def op() -> Change[MaskView]:
            cam = self._managed_camera(caller, zone.camera_id)
            existing = self._find(zone.id)
            if existing is not None and existing.camera_id != zone.camera_id:
                other = store.get_camera(existing.camera_id)
                if not caller.admin_of(other.owner_tenant):
                    raise self.core.missing(caller, "mask", zone.id, "manage")
                raise precondition(
                    f"mask {zone.id!r} is on camera {existing.camera_id}; masks cannot move "
                    "between cameras (delete it and put a new one)"
                )
            store.put_mask(zone)
            detail: dict[str, Any] = {
                "op": "create" if existing is None else "update",
                "mask": zone.id,
                "owner": cam.owner_tenant,
                **mask_summary(zone),
            }
            if existing is not None:
                detail["previous"] = mask_summary(existing)
            return Change(
                MaskView.of(zone), AuditAction.MASK_CHANGED, [cam.owner_tenant], detail, cam.id
            )

        return await self.core.write(caller, "PutMask", op)

    @operation("GetMask")
    async def get(self, caller: Caller, mask_id: str) -> MaskView:
        require_admin(caller)
        snap = self.core.snapshot
        for zones in snap.masks.values():
            for z in zones:
                cam = snap.cameras.get(z.camera_id)
                if z.id == mask_id and cam is not None and self._readable(caller, cam):
                    return MaskView.of(z)
        raise self.core.missing(caller, "mask", mask_id)

    def _readable(self, caller: Caller, cam: Camera) -> bool:
        return Role.ADMIN in caller.roles and camera_visible(caller, cam, self.core.snapshot.grants)

    @operation("ListMasks")
    async def list(self, caller: Caller, camera_id: str | None = None) -> list[MaskView]:
        require_admin(caller)
        snap = self.core.snapshot
        if camera_id is not None:
            self.cameras.visible(caller, camera_id)
        out: list[MaskView] = []
        for cid, zones in sorted(snap.masks.items()):
            cam = snap.cameras.get(cid)
            if cam is None or (camera_id is not None and cid != camera_id):
                continue
            if self._readable(caller, cam):
                out.extend(MaskView.of(z) for z in zones)
        return sorted(out, key=lambda m: m.id)

    @operation("DeleteMask")
    async def delete(self, caller: Caller, mask_id: str) -> None:
        require_admin(caller)
        store = self.core.store

        def op() -> Change[None]:
            zone = self._find(mask_id)
            if zone is None:
                raise self.core.missing(caller, "mask", mask_id, "manage")
            cam = store.get_camera(zone.camera_id)
            if not caller.admin_of(cam.owner_tenant):
                if camera_visible(caller, cam, self.core.snapshot.grants):
                    raise denied(f"may not manage masks of {cam.owner_tenant}'s camera {cam.id}")
                raise self.core.missing(caller, "mask", mask_id, "manage")
            store.delete_mask(mask_id)
            return Change(
                None,
                AuditAction.MASK_CHANGED,
                [cam.owner_tenant],
                {"op": "delete", "mask": mask_id, "owner": cam.owner_tenant, **mask_summary(zone)},
                camera=cam.id,
            )

        await self.core.write(caller, "DeleteMask", op)
