"""Issue #10 finding 8 at the entry points the control API does not cover: every refusal goes
through the one refusal log (``tenants/refusals.py``: audited, rate-limited per source),
including the HTTP middleware's, the MediaMTX hook's refusal of a caller that is not our
MediaMTX, RTSP's refusal of unreadable credentials and a viewer turned away at its tenant's
concurrent-stream cap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import publish_argv, wait_for
from rest_fixtures import Rest, rest_gateway
from rtsp_probe import Probe, play_status

from gateway.http.mediamtx import mediamtx_handler
from tenants.model import Constraints


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


async def test_refusals_at_the_stream_cap_are_rate_limited_per_source(
    rest: Rest, procs: Any
) -> None:
    """A tenant at its grant's cap is refused with 453; those refusals go through the refusal
    log like every other: each names its source, and a flood writes at most ``per_source``
    entries (the next one says how many were left out)."""
    tenancy = rest.tenancy
    store = tenancy.store
    grant = store.get_grant("street-police")
    store.put_grant(replace(grant, constraints=Constraints(max_concurrent_streams=1)))
    tenancy.policy.reload()
    tenancy.refusals.per_source = 3
    await procs(publish_argv(f"rtsp://cop:cop-secret@127.0.0.1:{rest.rtsp_port}/street"))
    await wait_for(lambda: (s := rest.gateway.hub.get("street")) is not None
                   and s.gop_cached_bytes > 0, 20, what="street published")  # fmt: skip
    path = f"street?token={rest.token('pview')}"
    url = f"rtsp://127.0.0.1:{rest.rtsp_port}/{path}"
    holder = await Probe.connect("127.0.0.1", rest.rtsp_port)
    try:
        assert await holder.play(path) == 200
        statuses = [await play_status(url) for _ in range(6)]
    finally:
        await holder.close()
    assert statuses == [453] * 6
    capped = [e for e in rest.denials() if e.detail.get("status") == 453]
    assert len(capped) == 3
    assert all(e.detail["protocol"] == "rtsp" and e.detail["peer"] for e in capped)
    assert all((e.tenant, e.principal, e.camera) == ("police", "pview", "street") for e in capped)
    assert tenancy.refusals.suppressed_total == 3
