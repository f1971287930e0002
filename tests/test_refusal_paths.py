"""Issue #10 finding 8 at the entry points the control API does not cover: every refusal goes
through the one refusal log (``tenants/refusals.py``: audited, rate-limited per source),
including the HTTP middleware's, the MediaMTX hook's refusal of a caller that is not our
MediaMTX, RTSP's refusal of unreadable credentials and a viewer turned away at its tenant's
concurrent-stream cap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from rest_fixtures import Rest, rest_gateway
from rtsp_probe import Probe

from gateway.http.mediamtx import mediamtx_handler


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[Rest]:
    async with rest_gateway(tmp_path) as r:
        yield r


async def test_the_http_middlewares_refusals_are_audited(rest: Rest) -> None:
    for token in (None, "not-a-token"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with rest.session.get(rest.base + "/finance/usage", headers=headers) as r:
            assert r.status == 401
    denied = rest.denials()
    assert [(e.detail["protocol"], e.detail["status"], e.detail["path"]) for e in denied] == [
        ("http", 401, "/finance/usage"),
        ("http", 401, "/finance/usage"),
    ]
    assert all(e.outcome == "unauthenticated" for e in denied)
    assert all("not-a-token" not in str(e.detail) for e in denied)


async def test_a_caller_that_is_not_our_mediamtx_is_audited(rest: Rest) -> None:
    app = web.Application()
    app.router.add_post("/mediamtx/auth", mediamtx_handler(rest.tenancy, secret="hook-secret"))
    async with TestClient(TestServer(app)) as client:
        body = {"action": "read", "path": "street", "user": "cop", "password": "cop-secret"}
        resp = await client.post("/mediamtx/auth", json=body)
        assert resp.status == 401
        resp = await client.post(
            "/mediamtx/auth", json=body, headers={"Authorization": "Bearer hook-secret"}
        )
        assert resp.status == 200
    denied = rest.denials()
    assert [(e.detail["protocol"], e.detail["status"], e.outcome) for e in denied] == [
        ("mediamtx", 401, "unauthenticated")
    ]
    assert "cop" not in str(denied[0].detail) and denied[0].principal is None


async def test_unreadable_rtsp_credentials_are_a_refusal_like_any_other(rest: Rest) -> None:
    probe = await Probe.connect("127.0.0.1", rest.rtsp_port)
    try:
        url = f"rtsp://127.0.0.1:{rest.rtsp_port}/street"
        reply = await probe.request("DESCRIBE", url, (("Authorization", "Basic !!not-base64"),))
        assert reply.status == 401
    finally:
        await probe.close()
    denied = rest.denials()
    assert [(e.detail["protocol"], e.detail["status"], e.camera) for e in denied] == [
        ("rtsp", 401, "street")
    ]
