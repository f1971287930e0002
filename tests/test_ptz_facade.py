"""The ONVIF facade, with onvif-zeep-async acting as a police VMS: it discovers the services and
the stream URI through feedgate and steers the (FAKE) camera with the same arbitration."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zeep.exceptions
from ptz_world import Api, codec, fake_camera, ptz_gateway

from gateway.config import PtzConfig
from gateway.ptz.facade import onvif_password
from gateway.ptz.soap import import_onvif
from ops.fakes.onvif_camera import FakeOnvifCamera
from tenants.policy import digest_ha1

import_onvif()
from onvif import ONVIFCamera  # noqa: E402


class Vms(ONVIFCamera):  # type: ignore[misc]
    """A VMS adds a device by its device-service URL (feedgate has one per camera)."""

    def __init__(self, device_url: str, user: str, password: str) -> None:
        super().__init__("127.0.0.1", 80, user, password, no_cache=True)
        self.device_url = device_url

    def get_definition(self, name: str, port_type: str | None = None) -> tuple[str, str, str]:
        xaddr, wsdl, binding = super().get_definition(name, port_type)
        return (self.device_url if name == "devicemgmt" else xaddr), wsdl, binding


def vms(a: Api, who: str, password: str, camera: str = "cam1") -> Vms:
    return Vms(f"{a.base}/onvif/{camera}/device_service", who, password)


def onvif_pw(who: str, password: str) -> str:
    return onvif_password(digest_ha1(who, password))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Api, FakeOnvifCamera]]:
    async with fake_camera() as cam, ptz_gateway(tmp_path, cam.base, PtzConfig()) as a:
        yield a, cam


async def test_a_vms_discovers_the_stream_and_steers_through_feedgate(
    api: tuple[Api, FakeOnvifCamera],
) -> None:
    a, cam = api
    v = vms(a, "police-vms", onvif_pw("police-vms", "police-pw"))
    try:
        await v.update_xaddrs()
        assert v.xaddrs["http://www.onvif.org/ver20/ptz/wsdl"] == f"{a.base}/onvif/cam1/ptz_service"
        devicemgmt = await v.create_devicemgmt_service()
        info = await devicemgmt.GetDeviceInformation()
        assert info.Manufacturer == "feedgate" and info.SerialNumber == "cam1"
        media = await v.create_media_service()
        profiles = await media.GetProfiles()
        assert [p.token for p in profiles] == ["main"] and profiles[0].PTZConfiguration
        uri = await media.GetStreamUri(
            {
                "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                "ProfileToken": "main",
            }
        )
        assert uri.Uri == f"rtsp://127.0.0.1:{a.gateway.rtsp.port}/cam1"
        ptz = await v.create_ptz_service()
        req = ptz.create_type("ContinuousMove")
        req.ProfileToken = "main"
        req.Velocity = {"PanTilt": {"x": 0.5, "y": 0.0}, "Zoom": {"x": 0.0}}
        req.Timeout = "PT0.2S"
        await ptz.ContinuousMove(req)
        assert cam.head.velocity == (0.5, 0.0, 0.0)
        await ptz.AbsoluteMove(
            {"ProfileToken": "main", "Position": {"PanTilt": {"x": -0.3, "y": 0.4}}}
        )
        assert cam.head.position(time.time())[:2] == (-0.3, 0.4)  # zoom kept where it was
        status = await ptz.GetStatus({"ProfileToken": "main"})
        assert status.Position.PanTilt.x == pytest.approx(-0.3)
        await ptz.GotoHomePosition({"ProfileToken": "main"})
        await ptz.Stop({"ProfileToken": "main"})
        assert cam.head.position(time.time()) == (0.0, 0.0, 0.0)
        assert await ptz.GetPresets({"ProfileToken": "main"}) == []
        # Presets belong to the camera's owner: the police may use but not set them.
        with pytest.raises(zeep.exceptions.Fault) as err:
            await ptz.SetPreset({"ProfileToken": "main", "PresetName": "mine"})
        assert "owner" in err.value.message
    finally:
        await v.close()
    moves = a.audit(tenant="met-police", principal="police-vms", op="continuous_move")
    assert moves and moves[0]["outcome"] == "ok"


async def test_the_same_arbitration_applies_to_a_vms(api: tuple[Api, FakeOnvifCamera]) -> None:
    a, cam = api
    s, _, _ = await a.call(
        "council-admin", "POST", "cam1/ptz/reserve", {"reason": "Incident 12", "seconds": 300}
    )
    assert s == 200
    v = vms(a, "police-vms", onvif_pw("police-vms", "police-pw"))
    try:
        await v.update_xaddrs()
        ptz = await v.create_ptz_service()
        with pytest.raises(zeep.exceptions.Fault) as err:
            await ptz.AbsoluteMove(
                {"ProfileToken": "main", "Position": {"PanTilt": {"x": 0.5, "y": 0.5}}}
            )
        assert "reserved by council" in err.value.message
        assert [q.localname for q in err.value.subcodes] == ["OperationProhibited", "PTZLocked"]
        assert cam.head.commands == 0
    finally:
        await v.close()


async def test_a_principal_without_the_right_or_the_password_is_refused(
    api: tuple[Api, FakeOnvifCamera],
) -> None:
    a, cam = api
    # TfL may watch cam1 but not steer it.
    v = vms(a, "tfl-operator", onvif_pw("tfl-operator", "tfl-pw"))
    try:
        await v.update_xaddrs()
        media = await v.create_media_service()
        assert (await media.GetProfiles())[0].token == "main"
        ptz = await v.create_ptz_service()
        with pytest.raises(zeep.exceptions.Fault) as err:
            await ptz.GotoHomePosition({"ProfileToken": "main"})
        assert [q.localname for q in err.value.subcodes] == ["NotAuthorized"]
    finally:
        await v.close()
    assert a.audit(action="denied", tenant="tfl", principal="tfl-operator", camera="cam1")
    # The RTSP Digest password itself is not the ONVIF password.
    for who, pw in (("police-vms", "police-pw"), ("police-vms", onvif_pw("x", "y"))):
        bad = vms(a, who, pw)
        try:
            with pytest.raises(zeep.exceptions.Fault) as err:
                d = await bad.create_devicemgmt_service()
                await d.GetServices({"IncludeCapability": False})
            assert [q.localname for q in err.value.subcodes] == ["NotAuthorized"]
        finally:
            await bad.close()
    assert cam.head.commands == 0


async def _post(a: Api, path: str, body: bytes) -> tuple[int, str]:
    headers = {"Content-Type": "application/soap+xml"}
    async with a.session.post(f"{a.base}/onvif/cam1/{path}", data=body, headers=headers) as r:
        return r.status, await r.text()


async def test_hostile_soap_gets_a_fault_and_the_camera_is_untouched(
    api: tuple[Api, FakeOnvifCamera],
) -> None:
    a, cam = api
    c = codec()
    big = c.request("ptz", "GotoPreset", {"ProfileToken": "main", "PresetToken": "x" * 70_000})
    status, text = await _post(a, "ptz_service", big)
    assert status == 400 and "larger than" in text
    dtd = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    status, text = await _post(a, "ptz_service", dtd)
    assert status == 400 and "DTD" in text
    status, text = await _post(a, "device_service", b"<not-soap")
    assert status == 400 and "malformed" in text
    # An unsigned move is refused before anything else is looked at.
    nan = c.request(
        "ptz",
        "ContinuousMove",
        {"ProfileToken": "main", "Velocity": {"PanTilt": {"x": float("nan"), "y": 0}}},
    )
    status, text = await _post(a, "ptz_service", nan)
    assert status == 400 and "NotAuthorized" in text
    # Signed, NaN and out-of-range values are refused as InvalidArgVal.
    v = vms(a, "police-vms", onvif_pw("police-vms", "police-pw"))
    try:
        await v.update_xaddrs()
        ptz = await v.create_ptz_service()
        bad: list[dict[str, Any]] = [
            {"Velocity": {"PanTilt": {"x": float("nan"), "y": 0}}},
            {"Velocity": {"PanTilt": {"x": 3.0, "y": 0}}},
        ]
        for params in bad:
            with pytest.raises(zeep.exceptions.Fault) as err:
                await ptz.ContinuousMove({"ProfileToken": "main", **params})
            assert [q.localname for q in err.value.subcodes] == ["InvalidArgVal"]
        with pytest.raises(zeep.exceptions.Fault):
            await ptz.GotoPreset({"ProfileToken": "main", "PresetToken": "no-such"})
        with pytest.raises(zeep.exceptions.Fault) as err:
            await ptz.Stop({"ProfileToken": "other"})
        assert "NoProfile" in [q.localname for q in err.value.subcodes]
    finally:
        await v.close()
    assert cam.head.commands == 0
