"""A camera's ONVIF settings live in the camera register (issue #14.1, credentials): set over
REST by the camera owner's admin, with a write-only password sealed at rest; the PTZ service
reads them at decision time, so a change applies at the next command without a restart. The
camera steered is the FAKE ONVIF camera (ops/fakes/), signing in with the register's
credentials; ``plain`` has no ONVIF keys in the config at all."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ptz_world import Api, fake_camera, ptz_gateway

from gateway.cli.main import main
from gateway.config import PtzConfig
from ops.fakes.onvif_camera import FakeOnvifCamera

SECRET = "Reg1ster-Only-s3cret"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Api, FakeOnvifCamera]]:
    async with (
        fake_camera(username="feedgate", password=SECRET) as cam,
        ptz_gateway(tmp_path, "http://127.0.0.1:9", PtzConfig(camera_timeout=3.0)) as a,
    ):
        yield a, cam


def _settings(cam: FakeOnvifCamera, password: str | None = SECRET) -> dict[str, object]:
    body: dict[str, object] = {"onvif_url": cam.base, "onvif_username": "feedgate"}
    if password is not None:
        body["password"] = password
    return body


def _move(pan: float) -> dict[str, object]:
    return {"kind": "absolute", "pan": pan, "tilt": 0.0, "zoom": 0.0}


async def test_settings_set_over_rest_steer_the_camera_and_the_password_is_write_only(
    api: tuple[Api, FakeOnvifCamera], caplog: pytest.LogCaptureFixture
) -> None:
    a, cam = api
    caplog.set_level(logging.DEBUG)
    # No ONVIF keys in the config: the camera cannot be steered yet.
    s, body, _ = await a.call("police-desk", "POST", "plain/ptz/move", _move(0.3))
    assert s == 404 and body["code"] == "no_ptz", body
    # Only the owner's admin sets them; an operator of the owner is refused.
    s, _, _ = await a.call("council-operator", "PUT", "plain/onvif", _settings(cam))
    assert s == 403
    s, body, _ = await a.call("council-admin", "PUT", "plain/onvif", _settings(cam))
    assert s == 200, body
    assert body == {
        "camera_id": "plain",
        "onvif_url": cam.base,
        "onvif_username": "feedgate",
        "onvif_profile": "",
        "password_set": True,
    }
    # The police steer it at once, signing in with the register's credentials.
    s, body, _ = await a.call("police-desk", "POST", "plain/ptz/move", _move(0.3))
    assert s == 200, body
    assert cam.head.position(time.time())[0] == pytest.approx(0.3)
    s, shown, _ = await a.call("council-admin", "GET", "plain/onvif")
    assert s == 200 and shown["password_set"] is True and SECRET not in json.dumps(shown)
    # Changing the username without a password keeps the stored one.
    s, body, _ = await a.call("council-admin", "PUT", "plain/onvif", _settings(cam, None))
    assert s == 200 and body["password_set"] is True
    s, _, _ = await a.call("police-desk", "POST", "plain/ptz/move", _move(-0.2))
    assert s == 200 and cam.head.position(time.time())[0] == pytest.approx(-0.2)
    # Audited as set, then kept; the password is in no entry.
    entries = a.audit(action="config", camera="plain")
    assert [e["password"] for e in entries if e.get("op") == "onvif_set"] == ["set", "kept"]
    assert all(e["principal"] == "council-admin" for e in entries)
    everything = json.dumps([e.detail for e in a.tenancy.audit.entries()])
    assert SECRET not in everything
    # Sealed at rest: the database file does not hold it in the clear.
    db_path = a.gateway.config.database_url.removeprefix("sqlite://")
    with sqlite3.connect(db_path) as db:
        (sealed,) = db.execute("SELECT password_sealed FROM camera_onvif").fetchone()
    assert sealed and SECRET not in sealed
    # Cleared: the camera is not steerable any more, and that is audited too.
    s, _, _ = await a.call("council-admin", "DELETE", "plain/onvif")
    assert s == 204
    s, body, _ = await a.call("police-desk", "POST", "plain/ptz/move", _move(0.1))
    assert s == 404 and body["code"] == "no_ptz"
    assert a.audit(action="config", camera="plain", op="onvif_cleared")
    # Nothing logged it, even at DEBUG with zeep printing whole envelopes.
    assert SECRET not in caplog.text


async def test_a_wrong_password_is_a_clear_error_frees_the_lock_and_a_fix_applies_at_once(
    api: tuple[Api, FakeOnvifCamera],
) -> None:
    a, cam = api
    s, _, _ = await a.call("council-admin", "PUT", "plain/onvif", _settings(cam, "not-it"))
    assert s == 200
    s, body, _ = await a.call("police-desk", "POST", "plain/ptz/move", _move(0.4))
    assert s == 502, body
    assert body["code"] == "camera_fault" and "credentials" in body["detail"], body
    assert "not-it" not in json.dumps(body)
    assert cam.head.position(time.time())[0] == 0.0
    # The failed attempt holds no lock: the council's operator, below the police, may steer
    # next (else 423), and the corrected password applies without a restart.
    s, _, _ = await a.call("council-admin", "PUT", "plain/onvif", _settings(cam))
    assert s == 200
    s, body, _ = await a.call("council-operator", "POST", "plain/ptz/move", _move(0.4))
    assert s == 200, body
    assert cam.head.position(time.time())[0] == pytest.approx(0.4)
    failed = a.audit(action="ptz", camera="plain", outcome="failed: camera_fault")
    assert len(failed) == 1 and failed[0]["principal"] == "police-desk"
    assert a.audit(action="ptz", camera="plain", op="lock_released")


async def test_bad_settings_are_refused_with_the_field_named(
    api: tuple[Api, FakeOnvifCamera],
) -> None:
    a, cam = api
    bad = [
        ({**_settings(cam), "onvif_url": "ftp://127.0.0.1:21"}, "onvif_url"),
        ({**_settings(cam), "onvif_url": "http://u:p@127.0.0.1:80"}, "onvif_url"),
        ({**_settings(cam), "password": "x" * 300}, "password"),
        ({**_settings(cam), "password": ""}, "password"),
        ({**_settings(cam), "clear_password": True}, "clear_password"),
        ({**_settings(cam), "secret": "x"}, "secret"),
    ]
    for payload, field in bad:
        s, body, _ = await a.call("council-admin", "PUT", "plain/onvif", payload)
        assert s == 400 and field in json.dumps(body), (payload, body)
        assert SECRET not in json.dumps(body)
    s, _, _ = await a.call("council-admin", "GET", "plain/onvif")
    assert s == 404
    # Another tenant's admin does not learn the camera exists.
    s, _, _ = await a.call("police-desk", "PUT", "plain/onvif", _settings(cam))
    assert s in (403, 404)


async def test_the_admin_cli_sets_the_password_from_stdin_over_grpc(
    api: tuple[Api, FakeOnvifCamera],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, cam = api
    common = ["--server", a.grpc_target, "--token", a.token("council-admin"), "--json"]

    async def feedgate(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = await asyncio.to_thread(main, ["cameras", *argv, *common])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await feedgate(
        "onvif-set", "plain", "--url", cam.base, "--username", "feedgate", "--password-stdin",
        stdin=f"{SECRET}\n",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["password_set"] is True and SECRET not in out + err
    s, body, _ = await a.call("police-desk", "POST", "plain/ptz/move", _move(0.25))
    assert s == 200, body
    assert cam.head.position(time.time())[0] == pytest.approx(0.25)
    code, out, _ = await feedgate("onvif-show", "plain")
    assert code == 0 and json.loads(out)["onvif_username"] == "feedgate" and SECRET not in out
    # No password on stdin is a usage error; nothing is changed.
    code, _, err = await feedgate(
        "onvif-set", "plain", "--url", cam.base, "--username", "x", "--password-stdin"
    )
    assert code == 2 and "standard input" in err
    entries = a.audit(action="config", camera="plain", op="onvif_set")
    assert [(e["via"], e["password"]) for e in entries] == [("grpc", "set")]
    code, out, _ = await feedgate("onvif-clear", "plain")
    assert code == 0
    s, _, _ = await a.call("council-admin", "GET", "plain/onvif")
    assert s == 404
