"""``feedgate ptz``: steering from a shell over the gRPC PtzService of a running gateway whose
camera is a FAKE ONVIF camera, with the same locks, priorities and refusals as every other
entry point; and the ONVIF facade's password for a principal, from the data dir."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ptz_world import Api, fake_camera, ptz_gateway

from gateway.cli.main import main
from gateway.config import PtzConfig
from gateway.ptz.facade import onvif_password
from ops.fakes.onvif_camera import FakeOnvifCamera


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Api, FakeOnvifCamera]]:
    async with fake_camera() as cam, ptz_gateway(tmp_path, cam.base, PtzConfig()) as a:
        yield a, cam


async def feedgate(
    a: Api, capsys: pytest.CaptureFixture[str], who: str, *argv: str
) -> tuple[int, Any, str]:
    """Run ``feedgate ptz ...`` as ``who``; (exit code, its JSON output or None, stderr)."""
    common = ["--server", a.grpc_target, "--token", a.token(who), "--json"]
    code = await asyncio.to_thread(main, ["ptz", *argv, *common])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def at(cam: FakeOnvifCamera) -> tuple[float, float, float]:
    return cam.head.position(time.time())


async def test_move_presets_goto_and_status_from_the_shell(
    api: tuple[Api, FakeOnvifCamera], capsys: pytest.CaptureFixture[str]
) -> None:
    a, cam = api
    op = "council-operator"
    code, lock, err = await feedgate(a, capsys, op, "move", "cam1", "--kind", "absolute",
                                     "--pan", "0.4", "--tilt", "0.1", "--zoom", "0.2")  # fmt: skip
    assert code == 0, err
    assert lock["state"] == "held" and lock["holder_kind"] == "council"
    assert at(cam) == (0.4, 0.1, 0.2)
    code, preset, err = await feedgate(a, capsys, op, "preset", "cam1", "--name", "Gate")
    assert code == 0 and preset["name"] == "Gate", err
    code, listed, _ = await feedgate(a, capsys, op, "presets", "cam1")
    assert [p["name"] for p in listed["presets"]] == ["Gate"]
    assert (await feedgate(a, capsys, op, "goto", "cam1", "--home"))[0] == 0
    assert at(cam) == (0.0, 0.0, 0.0)
    assert (await feedgate(a, capsys, op, "goto", "cam1", "--preset", preset["token"]))[0] == 0
    assert at(cam) == (0.4, 0.1, 0.2)
    code, status, _ = await feedgate(a, capsys, op, "status", "cam1")
    assert status["position"] == {"pan": 0.4, "tilt": 0.1, "zoom": 0.2}
    assert status["lock"]["holder_kind"] == "council"
    # Neither or both of --preset and --home is a usage error, and nothing is sent.
    assert (await feedgate(a, capsys, op, "goto", "cam1"))[0] == 2


async def test_a_reservation_from_the_shell_refuses_everyone_else(
    api: tuple[Api, FakeOnvifCamera], capsys: pytest.CaptureFixture[str]
) -> None:
    a, cam = api
    code, lock, err = await feedgate(a, capsys, "police-vms", "reserve", "cam1",
                                     "--reason", "incident 4471", "--seconds", "600")  # fmt: skip
    assert code == 0 and lock["state"] == "reserved" and lock["reason"] == "incident 4471", err
    code, _, err = await feedgate(a, capsys, "council-operator", "move", "cam1",
                                  "--kind", "relative", "--pan", "0.1")  # fmt: skip
    assert code == 1 and "police" in err and "council" not in err.split("police")[0], err
    assert cam.head.commands == 0  # the camera was never asked
    code, lock, err = await feedgate(a, capsys, "police-vms", "release", "cam1")
    assert code == 0 and lock["state"] == "free", err
    assert (await feedgate(a, capsys, "council-operator", "move", "cam1", "--kind", "relative",
                           "--pan", "0.1"))[0] == 0  # fmt: skip


async def test_a_tenant_without_the_ptz_right_is_refused(
    api: tuple[Api, FakeOnvifCamera], capsys: pytest.CaptureFixture[str]
) -> None:
    a, cam = api
    code, _, err = await feedgate(a, capsys, "tfl-operator", "move", "cam1", "--kind",
                                  "absolute", "--pan", "0.5")  # fmt: skip
    assert code == 1 and "PERMISSION_DENIED" in err, err
    assert cam.head.commands == 0


def test_onvif_password_is_derived_from_the_principals_digest_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ptz_world import world_config

    from gateway.tenancy import Tenancy

    config = world_config(tmp_path, "http://127.0.0.1:9")
    cfg = tmp_path / "feedgate.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[tenancy]\nenabled = true\n'
        f'seed = "{tmp_path / "seed.toml"}"\n'
    )
    tenancy = Tenancy.open(config)
    ha1 = tenancy.policy.snapshot.principals["police-vms"].digest_ha1
    asyncio.run(tenancy.close())
    assert ha1 is not None
    assert main(["ptz", "onvif-password", "police-vms", "--local", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.strip() == onvif_password(ha1)
    assert main(["ptz", "onvif-password", "council-admin", "--local", "--config", str(cfg)]) == 1
    assert "Digest password" in capsys.readouterr().err
