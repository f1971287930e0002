"""feedgate.v1.CameraService and MaskService: the camera register and its privacy masks."""

from __future__ import annotations

from feedgate.v1 import cameras_pb2, common_pb2, masks_pb2

from gateway.grpc import converters as c
from tenants.control import Caller, ControlService
from tenants.control import schemas as s
from tenants.control.errors import invalid
from tenants.control.onvif import OnvifBody, OnvifView

DESCRIPTOR = cameras_pb2.DESCRIPTOR.services_by_name["CameraService"]
MASK_DESCRIPTOR = masks_pb2.DESCRIPTOR.services_by_name["MaskService"]


class CameraService:
    def __init__(self, service: ControlService) -> None:
        self.cameras = service.cameras
        self.onvif = service.onvif

    async def PutCamera(
        self, req: cameras_pb2.PutCameraRequest, caller: Caller
    ) -> common_pb2.Camera:
        if not req.HasField("camera"):
            raise invalid("camera", "required")
        return c.camera_pb(await self.cameras.put(caller, c.camera_body(req.camera)))

    async def GetCamera(
        self, req: cameras_pb2.GetCameraRequest, caller: Caller
    ) -> common_pb2.Camera:
        return c.camera_pb(await self.cameras.get(caller, c.ident("id", req.id)))

    async def ListCameras(
        self, req: cameras_pb2.ListCamerasRequest, caller: Caller
    ) -> cameras_pb2.ListCamerasResponse:
        owner = c.optional_ident("owner_tenant", req.owner_tenant)
        found = await self.cameras.list(caller, owner)
        return cameras_pb2.ListCamerasResponse(cameras=[c.camera_pb(x) for x in found])

    async def DeleteCamera(
        self, req: cameras_pb2.DeleteCameraRequest, caller: Caller
    ) -> cameras_pb2.DeleteCameraResponse:
        await self.cameras.delete(caller, c.ident("id", req.id))
        return cameras_pb2.DeleteCameraResponse()

    async def SetCameraOnvif(
        self, req: cameras_pb2.SetCameraOnvifRequest, caller: Caller
    ) -> cameras_pb2.CameraOnvif:
        d: dict[str, object] = {
            "onvif_url": req.onvif_url,
            "onvif_username": req.onvif_username,
            "onvif_profile": req.onvif_profile,
            "clear_password": req.clear_password,
        }
        if req.HasField("password"):
            d["password"] = req.password
        body = s.parse(OnvifBody, d)
        camera = c.ident("camera_id", req.camera_id)
        return _onvif_pb(await self.onvif.set(caller, camera, body))

    async def GetCameraOnvif(
        self, req: cameras_pb2.GetCameraOnvifRequest, caller: Caller
    ) -> cameras_pb2.CameraOnvif:
        return _onvif_pb(await self.onvif.get(caller, c.ident("camera_id", req.camera_id)))

    async def ClearCameraOnvif(
        self, req: cameras_pb2.ClearCameraOnvifRequest, caller: Caller
    ) -> cameras_pb2.ClearCameraOnvifResponse:
        await self.onvif.clear(caller, c.ident("camera_id", req.camera_id))
        return cameras_pb2.ClearCameraOnvifResponse()


def _onvif_pb(v: OnvifView) -> cameras_pb2.CameraOnvif:
    return cameras_pb2.CameraOnvif(
        camera_id=v.camera_id,
        onvif_url=v.onvif_url,
        onvif_username=v.onvif_username,
        onvif_profile=v.onvif_profile,
        password_set=v.password_set,
    )


class MaskService:
    def __init__(self, service: ControlService) -> None:
        self.masks = service.masks

    async def PutMask(self, req: masks_pb2.PutMaskRequest, caller: Caller) -> masks_pb2.Mask:
        if not req.HasField("mask"):
            raise invalid("mask", "required")
        return c.mask_pb(await self.masks.put(caller, c.mask_body(req.mask)))

    async def ListMasks(
        self, req: masks_pb2.ListMasksRequest, caller: Caller
    ) -> masks_pb2.ListMasksResponse:
        cid = c.optional_ident("camera_id", req.camera_id)
        found = await self.masks.list(caller, cid)
        return masks_pb2.ListMasksResponse(masks=[c.mask_pb(z) for z in found])

    async def DeleteMask(
        self, req: masks_pb2.DeleteMaskRequest, caller: Caller
    ) -> masks_pb2.DeleteMaskResponse:
        await self.masks.delete(caller, c.ident("id", req.id))
        return masks_pb2.DeleteMaskResponse()
