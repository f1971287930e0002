"""A session is admitted before anything is metered: its lease is taken and its start is in
the audit log first. A refusal or a failure at any step leaves nothing running and bills
nothing (issue #9's ghost billing: six refused probes were billed 511.6 s)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import RunningGateway, make_config, publish_argv, publishing, running_gateway
from rtsp_probe import play_status

from gateway.config import BillingConfig, CameraConfig, TenancyConfig
from gateway.stream.hub import Reader
from tenants.audit import AuditAction
from tenants.policy import AccessRequest, Action

SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[tenants]]
id = "police"
name = "Police"
kind = "police"
[[tenants]]
id = "shop"
name = "Shop"
kind = "retail"
[[principals]]
id = "encoder"
tenant = "council"
name = "Encoder"
kind = "service"
roles = ["operator"]
digest_password = "enc"
[[principals]]
id = "officer"
tenant = "police"
name = "Officer"
roles = ["viewer"]
[[principals]]
id = "guard"
tenant = "shop"
name = "Guard"
roles = ["viewer"]
[[cameras]]
id = "street"
owner = "council"
[[grants]]
id = "police-street"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live"]
[[grants]]
id = "shop-street"
owner = "council"
grantee = "shop"
cameras = ["street"]
rights = ["live"]
max_concurrent_streams = 5
"""


@pytest.fixture
async def billed_gw(tmp_path: Path, procs) -> AsyncIterator[RunningGateway]:
    (tmp_path / "seed.toml").write_text(SEED)
    config = replace(
        make_config((CameraConfig(id="street"),), report_interval=0.2),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(tmp_path / "seed.toml")),
        billing=BillingConfig(enabled=True),
    )
    async with running_gateway(config) as gw:
        await procs(publish_argv(f"rtsp://encoder:enc@127.0.0.1:{gw.port}/street"))
        await publishing(gw, "street")
        yield gw


def _token(gw: RunningGateway, tenant: str, subject: str) -> str:
    tenancy = gw.gateway.tenancy
    assert tenancy is not None
    return tenancy.issuer.issue(
        tenant=tenant, subject=subject, roles=["viewer"], ttl=timedelta(minutes=5)
    )


def tenancy_caps(gw: RunningGateway):
    tenancy = gw.gateway.tenancy
    assert tenancy is not None
    return tenancy.caps


def _read_only(gw: RunningGateway, on: bool) -> None:
    """The store refuses every write from now on (as a full disk or a lost primary would),
    while reads still work."""
    tenancy = gw.gateway.tenancy
    assert tenancy is not None
    tenancy.db.execute(f"PRAGMA query_only = {1 if on else 0}")


async def test_a_play_whose_start_cannot_be_audited_is_refused_and_never_metered(billed_gw):
    gw = billed_gw
    metering, access = gw.gateway.metering, gw.gateway.access
    assert metering is not None and access is not None
    live_before = dict(access.live)  # the publisher
    url = gw.url(f"street?token={_token(gw, 'police', 'officer')}")
    _read_only(gw, True)
    try:
        statuses = [await play_status(url) for _ in range(6)]
    finally:
        _read_only(gw, False)
    # Nothing of the six probes is left running or billed, and each was told to come back
    # later (503), not that the gateway broke (500).
    assert not metering.meter._live
    assert metering.meter.events_emitted == 0
    assert access.live == live_before
    assert statuses == [503] * 6
    # Once the store is back the same viewer is admitted and metered.
    assert await play_status(url) == 200


async def test_a_capped_play_whose_lease_cannot_be_stored_is_refused_and_never_metered(billed_gw):
    gw = billed_gw
    metering, access = gw.gateway.metering, gw.gateway.access
    assert metering is not None and access is not None
    url = gw.url(f"street?token={_token(gw, 'shop', 'guard')}")
    _read_only(gw, True)
    try:
        statuses = [await play_status(url) for _ in range(3)]
    finally:
        _read_only(gw, False)
    assert statuses == [503] * 3
    assert not metering.meter._live
    assert tenancy_caps(gw).streams("shop", "shop-street") == 0
    tenancy = gw.gateway.tenancy
    assert tenancy is not None
    assert tenancy.db.query_one("SELECT COUNT(*) FROM stream_leases") == (0,)


async def test_a_session_that_ends_while_its_start_is_stored_is_closed_in_the_log(billed_gw):
    """The start is stored on the database thread while the loop serves others; a client that
    leaves meanwhile gets its end recorded after its start, and is never metered."""
    import asyncio
    import threading

    from gateway.live import Live

    gw = billed_gw
    live_sessions, tenancy, metering = gw.gateway.live, gw.gateway.tenancy, gw.gateway.metering
    assert live_sessions is not None and tenancy is not None and metering is not None
    decision = await tenancy.policy.authorize(
        AccessRequest(Action.LIVE, "rtsp", camera="street", token=_token(gw, "police", "officer"))
    )
    assert decision.allow
    stopped: list[str] = []
    live = await live_sessions.admit(
        "s-leaver", decision, protocol="rtsp", mode="play", path="street", peer="x",
        stop=stopped.append,
    )  # fmt: skip
    assert isinstance(live, Live)
    # A control-plane thread holds the database: the start cannot be stored yet.
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with tenancy.db.transaction():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    starting = asyncio.get_running_loop().create_task(live_sessions.start(live, Reader(channels=(0,))))
    await asyncio.sleep(0)  # the loop is free meanwhile: this test is running on it
    live_sessions.end("s-leaver", "connection closed")
    release.set()
    assert await starting is None
    holder.join(10)
    await tenancy.blocking(lambda: None)  # everything queued before this is stored
    kinds = [e.action for e in tenancy.audit.entries() if e.detail.get("session") == "s-leaver"]
    assert kinds == [AuditAction.SESSION_START, AuditAction.SESSION_END]
    assert "s-leaver" not in metering.meter._live
    assert tenancy.caps.streams("police", "police-street") == 0
