"""A camera's ONVIF settings (how the gateway steers it): set and cleared by the camera
owner's admins, audited as ``config`` with whether the password was set, kept or cleared,
never the password itself. The password is write-only: no view carries it."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, model_validator

from tenants.audit import AuditAction
from tenants.control.cameras import CameraOps
from tenants.control.core import Change, Core, operation
from tenants.control.errors import denied, invalid, precondition
from tenants.control.rules import Caller
from tenants.control.schemas import Body, View
from tenants.onvif import MAX_ONVIF_PASSWORD, OnvifRegister, OnvifSettings

__all__ = ["OnvifBody", "OnvifOps", "OnvifView"]

_Text = Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")


class OnvifBody(Body):
    onvif_url: str = Field(max_length=300, description="http://host:port of the device service")
    onvif_username: str = _Text
    onvif_profile: str = Field("", max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")
    password: SecretStr | None = Field(
        None,
        max_length=MAX_ONVIF_PASSWORD,
        description="write only: sealed at rest, never returned; omit to keep the stored one",
    )
    clear_password: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> OnvifBody:
        if self.password is not None and self.clear_password:
            raise invalid("clear_password", "cannot set and clear the password at once")
        if self.password is not None and not self.password.get_secret_value():
            raise invalid("password", "is empty (use clear_password to remove it)")
        return self


class OnvifView(View):
    camera_id: str
    onvif_url: str
    onvif_username: str
    onvif_profile: str
    password_set: bool

    @classmethod
    def of(cls, s: OnvifSettings) -> OnvifView:
        return cls(
            camera_id=s.camera_id,
            onvif_url=s.url,
            onvif_username=s.username,
            onvif_profile=s.profile,
            password_set=s.password_set,
        )


class OnvifOps:
    def __init__(self, core: Core, cameras: CameraOps) -> None:
        self.core = core
        self.cameras = cameras

    def _register(self) -> OnvifRegister:
        if self.core.onvif is None:
            raise precondition("this gateway keeps no ONVIF settings in its register")
        return self.core.onvif

    def _managed(self, caller: Caller, camera_id: str, verb: str) -> str:
        cam = self.cameras.visible(caller, camera_id, verb)
        if not caller.admin_of(cam.owner_tenant):
            raise denied(f"may not manage {cam.owner_tenant}'s camera {cam.id}")
        return cam.owner_tenant

    @operation("SetCameraOnvif")
    async def set(self, caller: Caller, camera_id: str, body: OnvifBody) -> OnvifView:
        owner = self._managed(caller, camera_id, "manage")
        register = self._register()
        secret = body.password.get_secret_value() if body.password is not None else None

        def op() -> Change[OnvifView]:
            before, after = register.put(
                camera_id,
                body.onvif_url,
                body.onvif_username,
                body.onvif_profile,
                password=secret,
                clear_password=body.clear_password,
            )
            if secret is not None:
                password = "set"
            elif body.clear_password:
                password = "cleared" if before is not None and before.password_set else "none"
            else:
                password = "kept" if after.password_set else "none"
            detail: dict[str, Any] = {
                "op": "onvif_set",
                "owner": owner,
                "onvif_url": after.url,
                "onvif_username": after.username,
                "password": password,
            }
            return Change(OnvifView.of(after), AuditAction.CONFIG, [owner], detail, camera_id)

        return await self.core.write(caller, "SetCameraOnvif", op)

    @operation("GetCameraOnvif")
    async def get(self, caller: Caller, camera_id: str) -> OnvifView:
        self._managed(caller, camera_id, "see")
        register = self._register()
        found = await self.core.read(lambda: register.get(camera_id))
        if found is None:
            raise self.core.missing(caller, "onvif settings of camera", camera_id)
        return OnvifView.of(found)

    @operation("ClearCameraOnvif")
    async def clear(self, caller: Caller, camera_id: str) -> None:
        owner = self._managed(caller, camera_id, "manage")
        register = self._register()

        def op() -> Change[None]:
            before = register.delete(camera_id)
            detail = {"op": "onvif_cleared", "owner": owner}
            return Change(
                None, AuditAction.CONFIG, [owner], detail, camera_id, changed=before is not None
            )

        await self.core.write(caller, "ClearCameraOnvif", op)
