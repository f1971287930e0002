"""PTZ through a running gateway: REST, its lock-state event stream and gRPC, to a FAKE ONVIF
camera; the same decisions on both, as two tenants contend for one camera."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from conftest import wait_for
from feedgate.v1 import ptz_pb2, ptz_pb2_grpc
from ptz_world import Api, fake_camera, ptz_gateway

from gateway.config import PtzConfig
from ops.fakes.onvif_camera import FakeOnvifCamera


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Api, FakeOnvifCamera]]:
    async with fake_camera() as cam, ptz_gateway(tmp_path, cam.base, PtzConfig()) as a:
        yield a, cam


def _pos(cam: FakeOnvifCamera) -> tuple[float, float, float]:
    return cam.head.position(time.time())


async def _events(api: Api, who: str, want: str, out: list[dict[str, Any]]) -> None:
    """Read the SSE stream as ``who`` until an event of type ``want`` arrives."""
    headers = {"Authorization": f"Bearer {api.token(who)}"}
    async with api.session.get(f"{api.base}/v1/cameras/cam1/ptz/events", headers=headers) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        event = ""
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append({"event": event, **json.loads(line[6:])})
                if event == want:
                    return


async def test_rest_moves_presets_and_status(api: tuple[Api, FakeOnvifCamera]) -> None:
    a, cam = api
    s, body, _ = await a.call(
        "council-operator",
        "POST",
        "cam1/ptz/move",
        {"kind": "absolute", "pan": 0.4, "tilt": 0.1, "zoom": 0.2},
    )
    assert s == 200 and body["lock"]["holder"]["tenant_kind"] == "council", body
    assert _pos(cam) == (0.4, 0.1, 0.2)
    s, body, _ = await a.call("council-operator", "POST", "cam1/ptz/presets", {"name": "Gate"})
    assert s == 201
    token = body["token"]
    await a.call("council-operator", "POST", "cam1/ptz/goto", {"home": True})
    assert _pos(cam) == (0, 0, 0)
    await a.call("council-operator", "POST", "cam1/ptz/goto", {"preset": token})
    assert _pos(cam) == (0.4, 0.1, 0.2)
    s, body, _ = await a.call("council-operator", "GET", "cam1/ptz/presets")
    assert [p["name"] for p in body["presets"]] == ["Gate"]
    s, body, _ = await a.call("council-operator", "GET", "cam1/ptz/status")
    assert s == 200 and body["position"] == {"pan": 0.4, "tilt": 0.1, "zoom": 0.2}
    assert body["lock"]["state"] == "held" and body["moving"] is False
    s, body, _ = await a.call(
        "council-operator",
        "POST",
        "cam1/ptz/move",
        {"kind": "continuous", "pan": 1.0, "timeout": 0.2},
    )
    assert s == 200 and body["move"]["timeout_s"] == 0.2
    await wait_for(lambda: not cam.head.moving(time.time()), what="the move to stop by itself")
    s, body, _ = await a.call("council-operator", "POST", "cam1/ptz/stop")
    assert s == 200


async def test_a_continuous_move_ends_when_its_client_vanishes(tmp_path: Path) -> None:
    """Even on a camera whose firmware ignores the Timeout: feedgate's own deadline stops it."""
    async with (
        fake_camera(ignores_timeout=True) as cam,
        ptz_gateway(tmp_path, cam.base, PtzConfig()) as a,
    ):
        headers = {"Authorization": f"Bearer {a.token('westfield-guard')}"}
        async with aiohttp.ClientSession() as gone:
            async with gone.post(
                f"{a.base}/v1/cameras/cam1/ptz/move",
                json={"kind": "continuous", "pan": 0.2, "timeout": 0.5},
                headers=headers,
            ) as r:
                assert r.status == 200
        # The client is gone (its session closed) and never sends Stop.
        sent = time.monotonic()
        await wait_for(lambda: not cam.head.moving(time.time()), 10.0, what="the camera to stop")
        stopped_after = time.monotonic() - sent
        pan = _pos(cam)[0]
        assert 0.2 * 0.5 * 0.9 <= pan <= 0.2 * (stopped_after + 0.5), (pan, stopped_after)
        await wait_for(lambda: bool(a.audit(op="timeout_stop", outcome="ok")), what="audit")


async def test_contention_over_rest_and_grpc(api: tuple[Api, FakeOnvifCamera]) -> None:
    a, cam = api
    seen: list[dict[str, Any]] = []
    watcher = asyncio.create_task(_events(a, "westfield-guard", "preempted", seen))
    await wait_for(lambda: bool(seen), what="the stream's first state")
    assert seen[0]["event"] == "state" and seen[0]["state"] == "free"
    s, _, _ = await a.call(
        "westfield-guard", "POST", "cam1/ptz/move", {"kind": "continuous", "pan": 0.2}
    )
    assert s == 200
    # The council is above a retail partner: it preempts, and the partner's stream says so.
    s, body, _ = await a.call(
        "council-operator", "POST", "cam1/ptz/move", {"kind": "absolute", "pan": -0.5}
    )
    assert s == 200
    await asyncio.wait_for(watcher, 10)
    preempted = seen[-1]
    assert preempted["yours"] is True and preempted["by"] == {"tenant_kind": "council"}
    assert "higher priority" in preempted["why"]
    # Now the partner is refused: 423 naming the holder's kind and the lock's end.
    s, body, headers = await a.call(
        "westfield-guard", "POST", "cam1/ptz/move", {"kind": "absolute", "pan": 0.9}
    )
    assert s == 423 and headers["Content-Type"].startswith("application/problem+json")
    assert body["code"] == "ptz_locked" and body["holder_kind"] == "council"
    assert body["until"].endswith("Z") and "council-operator" not in json.dumps(body)
    assert _pos(cam)[0] == -0.5
    # gRPC: the same decision, as FAILED_PRECONDITION with the same facts in the trailers.
    async with grpc.aio.insecure_channel(a.grpc_target) as channel:
        stub = ptz_pb2_grpc.PtzServiceStub(channel)
        md = (("authorization", f"Bearer {a.token('westfield-guard')}"),)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Move(
                ptz_pb2.MoveRequest(
                    camera="cam1", kind="absolute", vector=ptz_pb2.PtzVector(pan=0.9)
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        trailers = dict(err.value.trailing_metadata() or ())
        assert trailers["ptz-holder-kind"] == "council" and trailers["ptz-until"] == body["until"]
        # The police preempt the council over gRPC.
        police = (("authorization", f"Bearer {a.token('police-vms')}"),)
        lock = await stub.Move(
            ptz_pb2.MoveRequest(camera="cam1", kind="relative", vector=ptz_pb2.PtzVector(pan=0.25)),
            metadata=police,
        )
        assert lock.holder_kind == "police" and lock.state == "held"
        assert _pos(cam)[0] == -0.25
        status = await stub.GetStatus(ptz_pb2.PtzCameraRequest(camera="cam1"), metadata=police)
        assert status.position.pan == pytest.approx(-0.25) and status.lock.holder_kind == "police"
    assert a.audit(op="lock_preempted", tenant="westfield", by_tenant="council")
    assert a.audit(op="lock_preempted", tenant="council", by_tenant="met-police")


async def test_reservation_over_grpc_and_rest(api: tuple[Api, FakeOnvifCamera]) -> None:
    a, cam = api
    async with grpc.aio.insecure_channel(a.grpc_target) as channel:
        stub = ptz_pb2_grpc.PtzServiceStub(channel)
        police = (("authorization", f"Bearer {a.token('police-vms')}"),)
        lock = await stub.Reserve(
            ptz_pb2.ReserveRequest(camera="cam1", reason="Op Trident: stabbing", seconds=600),
            metadata=police,
        )
        assert lock.state == "reserved" and lock.reason == "Op Trident: stabbing"
        guard = (("authorization", f"Bearer {a.token('westfield-guard')}"),)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Reserve(
                ptz_pb2.ReserveRequest(camera="cam1", reason="mine", seconds=60), metadata=guard
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Even the council, who owns the camera, is refused while the police hold it.
    s, body, _ = await a.call(
        "council-admin", "POST", "cam1/ptz/move", {"kind": "absolute", "pan": 0.5}
    )
    assert s == 423 and body["holder_kind"] == "police" and _pos(cam)[0] == 0.0
    s, body, _ = await a.call("police-desk", "POST", "cam1/ptz/move", {"kind": "absolute"})
    assert s == 200  # another officer of the reserving tenant
    s, body, _ = await a.call("police-vms", "POST", "cam1/ptz/release")
    assert s == 200 and body["lock"]["state"] == "free"
    s, _, _ = await a.call("council-admin", "POST", "cam1/ptz/move", {"kind": "absolute"})
    assert s == 200


async def test_refusals_and_bad_input(api: tuple[Api, FakeOnvifCamera]) -> None:
    a, cam = api
    s, body, headers = await a.call(None, "POST", "cam1/ptz/move", {"kind": "absolute"})
    assert s == 401 and "Bearer" in headers["WWW-Authenticate"]
    s, body, _ = await a.call("tfl-operator", "POST", "cam1/ptz/move", {"kind": "absolute"})
    assert s == 403 and body["code"] == "forbidden"
    assert a.audit(action="denied", tenant="tfl", principal="tfl-operator", camera="cam1")
    bad_bodies = [
        ({"kind": "continuous", "pan": 1.5}, "pan"),
        ({"kind": "absolute", "zoom": -0.1}, "zoom"),
        ({"kind": "continuous", "pan": 0.1, "timeout": 60}, "timeout"),
        ({"kind": "absolute", "pan": "0.5"}, "pan"),
        ({"kind": "absolute", "extra": 1}, "extra"),
        ({"kind": "sideways"}, "kind"),
    ]
    for b, field in bad_bodies:
        s, body, _ = await a.call("council-operator", "POST", "cam1/ptz/move", b)
        assert s == 400 and body["detail"].startswith(field), (b, body)
    headers = {
        "Authorization": f"Bearer {a.token('council-operator')}",
        "Content-Type": "application/json",
    }
    for raw, refused in (
        (b'{"kind": "continuous", "pan": NaN}', 400),
        (b"{nope", 400),
        (b"{" + b" " * 5000 + b"}", 413),  # over the 4 KiB a PTZ body may have
    ):
        async with a.session.post(
            f"{a.base}/v1/cameras/cam1/ptz/move", data=raw, headers=headers
        ) as r:
            assert r.status == refused, raw[:40]
    s, body, _ = await a.call("council-operator", "POST", "cam1/ptz/goto", {"preset": "nope"})
    assert s == 400 and "NoToken" not in body["detail"]
    s, body, _ = await a.call("council-operator", "POST", "cam1/ptz/goto", {"preset": "../x"})
    assert s == 400
    s, body, _ = await a.call("council-operator", "POST", "plain/ptz/move", {"kind": "absolute"})
    assert s == 404 and body["code"] == "no_ptz"
    s, body, _ = await a.call("council-operator", "POST", "BAD!/ptz/move", {"kind": "absolute"})
    assert s == 400
    assert cam.head.commands == 0  # nothing reached the camera
    # The audit log verifies after all that.
    from tenants.audit import verify_log

    await a.tenancy.blocking(a.tenancy.audit.checkpoint)
    report = verify_log(a.tenancy.db, a.tenancy.audit_key.private_key.public_key())
    assert report.ok, report.problem


async def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    async with (
        fake_camera() as cam,
        ptz_gateway(tmp_path, cam.base, PtzConfig(move_rate=0.5, move_burst=1)) as a,
    ):
        move = {"kind": "continuous", "pan": 0.1}
        s, _, _ = await a.call("council-operator", "POST", "cam1/ptz/move", move)
        assert s == 200
        s, body, headers = await a.call("council-operator", "POST", "cam1/ptz/move", move)
        assert s == 429 and body["code"] == "rate_limited" and int(headers["Retry-After"]) >= 1
        assert cam.head.commands == 1


async def test_the_ptz_routes_are_in_the_api_document(api: tuple[Api, FakeOnvifCamera]) -> None:
    """PTZ is rows of the REST API's route table, so its operations, bodies and refusals are
    in /v1/openapi.json like every other resource's."""
    a, _ = api
    async with a.session.get(f"{a.base}/v1/openapi.json") as r:
        doc = await r.json()
    ptz = {p: ops for p, ops in doc["paths"].items() if "/ptz/" in p}
    assert {(p.rsplit("/", 1)[1], m) for p, ops in ptz.items() for m in ops} == {
        ("move", "post"), ("stop", "post"), ("goto", "post"), ("presets", "get"),
        ("presets", "post"), ("status", "get"), ("reserve", "post"), ("release", "post"),
        ("events", "get"),
    }  # fmt: skip
    move = ptz["/v1/cameras/{id}/ptz/move"]["post"]
    assert {"423", "429", "401"} <= set(move["responses"])
    body = move["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(doc["components"]["schemas"][body.rsplit("/", 1)[1]]["properties"]) >= {
        "kind", "pan", "tilt", "zoom", "timeout", "purpose"
    }  # fmt: skip
    events = ptz["/v1/cameras/{id}/ptz/events"]["get"]["responses"]["200"]["content"]
    assert list(events) == ["text/event-stream"]
