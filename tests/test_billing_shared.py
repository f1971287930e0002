"""Shared mode, end to end: a gateway whose usage goes through a real Redis stream into a real
PostgreSQL ledger, with Redis killed and restarted while a real ffmpeg viewer is watching."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from conftest import make_config, publish_argv, publishing, read_argv, running_gateway, wait_for
from fixtures_redis import RedisServer
from test_billing_e2e import SEED

from gateway.config import BillingConfig, CameraConfig, TenancyConfig
from tenants.db import Database


async def test_usage_reaches_the_postgresql_ledger_through_a_redis_outage(
    tmp_path: Path, procs, redis_server: RedisServer, pg_url: str
) -> None:
    seed, plans = tmp_path / "seed.toml", tmp_path / "plans.toml"
    seed.write_text(SEED)
    plans.write_text('[plans.p]\nprices = []\nzero_rated = true\n[assignments]\npolice = "p"\n')
    config = make_config((CameraConfig(id="street"),), report_interval=0.3)
    config = replace(
        config,
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed)),
        billing=BillingConfig(
            enabled=True,
            plans=str(plans),
            redis_url=redis_server.url,
            ledger=pg_url,
            consumers=2,
        ),
    )
    check = Database.open(pg_url)

    def rows() -> list[tuple[str, str, int, int, int]]:
        if not _has_table(check):  # the gateway creates it when it starts
            return []
        query = "SELECT event_id, session_id, seq, bytes_sent, final FROM usage_events"
        return [(str(a), str(b), int(c), int(d), int(e)) for a, b, c, d, e in check.query(query)]

    try:
        async with running_gateway(config) as gw:
            metering, tenancy = gw.gateway.metering, gw.gateway.tenancy
            assert metering is not None and tenancy is not None
            assert len(metering.consumers) == 2
            await procs(publish_argv(f"rtsp://encoder:enc@127.0.0.1:{gw.port}/street"))
            await publishing(gw, "street")
            token = tenancy.issuer.issue(
                tenant="police", subject="officer", roles=["viewer"], ttl=timedelta(minutes=5)
            )
            url = gw.url(f"street?token={token}")
            viewer = await procs(read_argv(url, seconds=60, decode=False))
            await wait_for(lambda: len(rows()) >= 2, 30, what="usage in PostgreSQL")

            redis_server.kill()  # the relay keeps running; intervals go to the local spool
            spool = metering.spool.stats
            await wait_for(lambda: spool.appended_events >= 2, 20, what="spooled intervals")
            redis_server.start()
            await wait_for(lambda: spool.replayed_events >= 2, 30, what="the spool replayed")

            viewer.kill()  # the session ends: its final interval is reported
            await wait_for(
                lambda: any(r[4] for r in rows()) and len(rows()) >= metering.meter.events_emitted,
                30,
                what="every emitted interval in the ledger",
            )
            r = redis_server.client()
            consumers = {c["name"] for c in r.xinfo_consumers("feedgate:usage", "ledger")}
            r.close()
            assert len(consumers) == 2, consumers
            emitted = metering.meter.emitted["street"]
            events = metering.meter.events_emitted

        stored = rows()
        assert len({row[1] for row in stored}) == 1  # one viewing session
        assert len(stored) == events == emitted[0]  # nothing lost, nothing twice
        assert len({row[0] for row in stored}) == len(stored)
        assert sorted(row[2] for row in stored) == list(range(len(stored)))  # dense
        assert sum(row[3] for row in stored) == emitted[2]  # bytes, to the byte
        assert [row[4] for row in stored].count(1) == 1  # one final interval
    finally:
        check.close()


def _has_table(db: Database) -> bool:
    row = db.query_one("SELECT to_regclass('usage_events') IS NOT NULL")
    return bool(row and row[0])
