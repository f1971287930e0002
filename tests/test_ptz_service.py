"""The PTZ service as a specification, against a FAKE ONVIF camera over loopback, with the real
tenant policy and audit log; lock time is an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import wait_for
from ptz_world import Clock, audit_rows, codec, fake_camera, token, world_config

from gateway.config import Config, PtzConfig
from gateway.ptz.arbiter import EffectKind, LockState
from gateway.ptz.model import ErrorCode, PtzError, check_move
from gateway.ptz.service import Caller, PtzService
from gateway.ptz.settings import ptz_cameras
from gateway.tenancy import Tenancy
from ops.fakes.onvif_camera import FakeOnvifCamera
from tenants.audit import verify_log
from tenants.policy import AccessRequest


@dataclass
class World:
    service: PtzService
    tenancy: Tenancy
    camera: FakeOnvifCamera
    clock: Clock

    async def caller(
        self, principal: str, camera: str = "cam1", purpose: str | None = None
    ) -> Caller:
        req = AccessRequest(
            action=None,  # type: ignore[arg-type]  # the service asks for ptz
            protocol="http",
            camera=camera,
            token=token(self.tenancy, principal),
            purpose=purpose,
        )
        return await self.service.caller(req, "test")

    def audit(self, **match: object) -> list[dict[str, object]]:
        return audit_rows(self.tenancy, **match)


@contextlib.asynccontextmanager
async def serving(
    config: Config, cam: FakeOnvifCamera | None, clock: Clock
) -> AsyncIterator[World]:
    tenancy = Tenancy.open(config)
    service = PtzService(
        policy=tenancy.policy,
        audit=tenancy.audit,
        cameras=ptz_cameras(config),
        config=config.ptz,
        clock=clock,
        blocking=tenancy.blocking,
    )
    service.codec = codec()  # parsed once for the whole run
    await service.start(ticker=False)  # time moves when a test says so
    try:
        yield World(service, tenancy, cam, clock)  # type: ignore[arg-type]
    finally:
        await service.stop()
        await tenancy.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with fake_camera() as cam:
        config = world_config(tmp_path, cam.base, PtzConfig(return_after=60.0, camera_timeout=2.0))
        async with serving(config, cam, Clock()) as w:
            yield w


async def test_moves_presets_and_status_reach_the_camera(world: World) -> None:
    c = await world.caller("council-operator")
    view = await world.service.move(c, check_move("absolute", 0.5, -0.25, 0.5))
    assert view.state == LockState.HELD and view.holder_kind == "council"
    assert world.camera.head.position(time.time()) == (0.5, -0.25, 0.5)
    token_ = await world.service.set_preset(c, "Bus stop")
    await world.service.move(c, check_move("relative", -0.5, 0.25, -0.5))
    status, _ = await world.service.status(c)
    assert (status.position.pan, status.position.tilt, status.position.zoom) == (0, 0, 0)
    await world.service.goto_preset(c, token_)
    assert world.camera.head.position(time.time()) == (0.5, -0.25, 0.5)
    assert [p.name for p in await world.service.presets(c)] == ["Bus stop"]
    await world.service.goto_home(c)
    assert world.camera.head.position(time.time()) == (0.0, 0.0, 0.0)


async def test_a_continuous_move_stops_at_its_timeout_on_the_camera(world: World) -> None:
    c = await world.caller("council-operator")
    await world.service.move(c, check_move("continuous", 1.0, 0, 0, timeout=0.3))
    # Nobody sends Stop: the camera's own timer ends the move.
    await wait_for(lambda: not world.camera.head.moving(time.time()), 5.0, what="move to end")
    pan = world.camera.head.position(time.time())[0]
    assert 0.25 <= pan <= 0.35
    await asyncio.sleep(0)  # still there a moment later
    assert world.camera.head.position(time.time() + 1.0)[0] == pan


async def test_feedgate_stops_a_camera_that_ignores_the_timeout(tmp_path: Path) -> None:
    async with fake_camera(ignores_timeout=True) as cam:
        clock = Clock()
        async with serving(world_config(tmp_path, cam.base, PtzConfig()), cam, clock) as w:
            c = await w.caller("council-operator")
            await w.service.move(c, check_move("continuous", 0.2, 0, 0, timeout=0.5))
            clock.advance(0.3)
            # A joystick refreshes its move before the Timeout runs out: that later move is the
            # one watched, and the first one's deadline sends nothing.
            await w.service.move(c, check_move("continuous", 0.2, 0, 0, timeout=1.0))
            clock.advance(0.5)
            await w.service.tick()
            assert cam.head.moving(time.time()) and cam.head.commands == 2
            assert not w.audit(op="timeout_stop")
            clock.advance(0.75)  # the second move's Timeout and the grace are over
            await w.service.tick()
            await wait_for(lambda: not cam.head.moving(time.time()), what="feedgate's Stop")
            await wait_for(lambda: bool(w.audit(op="timeout_stop")), what="its audit entry")
            assert w.audit(op="timeout_stop")[0]["principal"] == "feedgate"
            assert w.service.deadline() is not None  # only the lock's lapse is left
            assert w.service.motion.deadline() is None


async def test_contention_lower_refused_higher_preempts_idle_releases(world: World) -> None:
    guard = await world.caller("westfield-guard")
    police = await world.caller("police-vms")
    council = await world.caller("council-operator")
    assert police.claimant.priority > council.claimant.priority > guard.claimant.priority
    sub = world.service.subscribe("cam1")
    await world.service.move(council, check_move("continuous", 0.1, 0, 0))
    with pytest.raises(PtzError) as err:
        await world.service.move(guard, check_move("continuous", -0.1, 0, 0))
    assert err.value.code == ErrorCode.LOCKED and err.value.status == 423
    assert err.value.detail["holder_kind"] == "council"
    assert "until" in err.value.detail and "council-operator" not in err.value.message
    await world.service.move(police, check_move("absolute", 0.2, 0.2, 0))
    events = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    preempted = [e for e in events if e.type == "preempted"]
    assert len(preempted) == 1 and preempted[0].by_kind == "police"
    assert preempted[0].json_for("council", "council-operator")["yours"] is True
    assert preempted[0].json_for("westfield", "westfield-guard")["yours"] is False
    # The lock lapses 5 s after the last move (1 s continuous timeout counts too).
    world.clock.advance(5.1)
    lapsed = await world.service.tick()
    assert [e.kind for e in lapsed] == [EffectKind.RELEASED]
    assert (await world.service.lock_view("cam1")).state == LockState.FREE
    await world.service.move(guard, check_move("absolute", 0, 0, 0))
    assert world.audit(op="lock_preempted", tenant="council", by_tenant="met-police")
    assert world.audit(op="lock_released", tenant="met-police", reason="idle")
    assert world.audit(outcome="refused: ptz_locked", tenant="westfield")


async def test_a_reserved_camera_refuses_even_the_police(world: World) -> None:
    admin = await world.caller("council-admin")
    police = await world.caller("police-vms")
    guard = await world.caller("westfield-guard")
    with pytest.raises(PtzError) as err:
        await world.service.reserve(guard, "I want it", 600)
    assert err.value.code == ErrorCode.FORBIDDEN
    view = await world.service.reserve(admin, "Incident 4471: fire", 600)
    assert view.state == LockState.RESERVED and view.reason == "Incident 4471: fire"
    with pytest.raises(PtzError) as err:
        await world.service.move(police, check_move("absolute", 0.9, 0, 0))
    assert err.value.code == ErrorCode.LOCKED and err.value.detail["holder_kind"] == "council"
    assert world.camera.head.position(time.time())[0] == 0.0
    operator = await world.caller("council-operator")
    await world.service.move(operator, check_move("absolute", 0.3, 0, 0))
    await world.service.release(admin)
    await world.service.move(police, check_move("absolute", 0.9, 0, 0))
    assert world.audit(op="lock_reserved", tenant="council", reason="Incident 4471: fire")
    assert world.audit(op="lock_reservation_ended", reason="released")


async def test_the_camera_goes_home_after_idle(world: World) -> None:
    c = await world.caller("council-operator")
    await world.service.move(c, check_move("absolute", 0.7, 0.7, 0.7))
    world.clock.advance(5.0)
    await world.service.tick()  # the lock lapses; the camera stays where it was put
    world.clock.advance(54.9)
    assert not await world.service.tick()
    world.clock.advance(0.1)  # 60 s after the last move
    assert [e.kind for e in await world.service.tick()] == [EffectKind.RETURN_HOME]
    await wait_for(
        lambda: world.camera.head.position(time.time()) == (0.0, 0.0, 0.0), what="camera home"
    )
    await wait_for(lambda: bool(world.audit(op="idle_home", outcome="ok")), what="audit")


async def test_no_ptz_right_is_refused_and_audited(world: World) -> None:
    with pytest.raises(PtzError) as err:
        await world.caller("tfl-operator")
    assert err.value.code == ErrorCode.FORBIDDEN and err.value.status == 403
    assert world.audit(action="denied", tenant="tfl", principal="tfl-operator", camera="cam1")
    with pytest.raises(PtzError) as err:
        await world.caller("police-vms", camera="plain")  # granted, but no ONVIF endpoint
    assert err.value.code == ErrorCode.NO_PTZ
    with pytest.raises(PtzError) as err:
        await world.caller("police-vms", camera="nowhere")
    assert err.value.code == ErrorCode.NOT_FOUND


async def test_bad_input_leaves_the_camera_untouched(world: World) -> None:
    c = await world.caller("council-operator")
    before = world.camera.head.commands
    with pytest.raises(PtzError) as err:
        await world.service.goto_preset(c, "no-such-preset")
    assert err.value.code == ErrorCode.BAD_REQUEST  # the camera's ter:NoToken
    for bad in ("../x", "", None):
        with pytest.raises(PtzError):
            await world.service.goto_preset(c, bad)
    with pytest.raises(PtzError):
        await world.service.reserve(await world.caller("council-admin"), "x" * 300, 60)
    assert world.camera.head.commands == before


async def test_moves_are_rate_limited_per_holder(tmp_path: Path) -> None:
    async with fake_camera() as cam:
        config = world_config(tmp_path, cam.base, PtzConfig(move_rate=1.0, move_burst=2))
        async with serving(config, cam, Clock()) as w:
            c = await w.caller("council-operator")
            move = check_move("continuous", 0.1, 0, 0)
            await w.service.move(c, move)
            await w.service.move(c, move)
            with pytest.raises(PtzError) as err:
                await w.service.move(c, move)
            assert err.value.code == ErrorCode.RATE_LIMITED and err.value.status == 429
            assert err.value.detail["retry_after"] == pytest.approx(1.0)
            assert cam.head.commands == 2
            w.clock.advance(1.0)
            await w.service.move(c, move)


async def test_an_unreachable_camera_fails_within_the_timeout_and_frees_the_lock(
    tmp_path: Path,
) -> None:
    # A camera that accepts the connection and never answers.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 20)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = world_config(tmp_path, f"http://127.0.0.1:{port}", PtzConfig(camera_timeout=0.5))
    try:
        async with serving(config, None, Clock()) as w:
            c = await w.caller("council-operator")
            started = time.monotonic()
            with pytest.raises(PtzError) as err:
                await w.service.move(c, check_move("continuous", 0.5, 0, 0))
            elapsed = time.monotonic() - started
            assert err.value.code == ErrorCode.UNREACHABLE and err.value.status == 504
            assert f"127.0.0.1:{port}" in err.value.message
            assert "fake-camera" not in err.value.message  # the password
            assert elapsed < 1.5
            assert (await w.service.lock_view("cam1")).state == LockState.FREE
            released = w.audit(op="lock_released")
            assert [e["reason"] for e in released] == ["camera unreachable"]
            assert w.audit(op="continuous_move")[-1]["outcome"] == "failed: camera_unreachable"
    finally:
        server.close()


async def test_every_move_is_in_the_audit_log_and_it_verifies(world: World) -> None:
    c = await world.caller("police-vms", purpose="incident 99")
    for i in range(5):
        await world.service.move(c, check_move("absolute", i / 10, 0, 0))
    moves = world.audit(op="absolute_move", tenant="met-police", principal="police-vms")
    assert len(moves) == 5 and all(m["purpose"] == "incident 99" for m in moves)
    world.tenancy.audit.checkpoint()
    report = verify_log(world.tenancy.db, world.tenancy.audit_key.private_key.public_key())
    assert report.ok, report.problem


async def test_no_camera_credential_reaches_the_log_even_at_debug(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = await world.caller("council-operator")
    await world.service.move(c, check_move("absolute", 0.2, 0, 0))
    await world.service.presets(c)
    text = caplog.text
    assert "wsse:Password" in text  # zeep logged the SOAP envelopes whole...
    # ...but neither the WS-Security digest nor its nonce (replayable within the camera's
    # window), and never the camera's password.
    assert re.search(r"wsse:Password[^>]*>(?!<redacted>)[^<]", text) is None
    assert re.search(r"wsse:Nonce[^>]*>(?!<redacted>)[^<]", text) is None
    assert "fake-camera" not in text
