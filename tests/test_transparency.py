"""The published, anonymised figures. Specification: counted by kind of organisation from
the audit log and the register; nobody named; activity counts from 1 to 4 shown as "<5";
served to anyone at /transparency, without a token, while everything else still needs one."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_access import tenancy_gw  # noqa: F401 - the gateway fixture
from test_grpc import cli

from gateway.http.app import make_http_app
from tenants.audit import AuditAction, AuditLog
from tenants.db import Database
from tenants.model import Camera, Grant, MaskZone, Tenant, TenantKind
from tenants.months import add_months, month_bounds, month_days, month_of, previous_month
from tenants.store import TenantStore
from tenants.transparency import monthly_report, publishable

MONTH = "2026-10"
IN_MONTH = datetime(2026, 10, 14, 12, tzinfo=UTC)


def _register(db: Database) -> None:
    store = TenantStore(db)
    for tid, name, kind in [
        ("council", "Camden Council", TenantKind.COUNCIL),
        ("met", "Metropolitan Police", TenantKind.POLICE),
        ("mall", "Brent Cross Shopping", TenantKind.RETAIL),
        ("arcade", "Old Arcade Traders", TenantKind.RETAIL),
        ("royal-free", "Royal Free Hospital", TenantKind.HEALTH),
    ]:
        store.put_tenant(Tenant(tid, name, kind))
    for cid in ("high-st", "estate-a", "station"):
        store.put_camera(Camera(cid, "council"))
    store.put_mask(MaskZone("m1", "estate-a", ((0, 0), (0.5, 0), (0.5, 0.5))))
    for gid, grantee in [("g1", "met"), ("g2", "mall"), ("g3", "arcade"), ("g4", "royal-free")]:
        store.put_grant(Grant(gid, "council", grantee, camera_ids=frozenset({"high-st"})))


def _activity(db: Database) -> None:
    log = AuditLog(db, Ed25519PrivateKey.generate())

    def add(
        n: int,
        action: AuditAction,
        tenant: str | None,
        *,
        when: datetime = IN_MONTH,
        outcome: str = "ok",
        mode: str = "play",
    ) -> None:
        for i in range(n):
            log.append(
                action,
                tenant=tenant,
                principal=f"{tenant}-officer-{i}",
                camera="high-st",
                purpose="investigation 2026/123",
                time=when,
                detail={"mode": mode},
                outcome=outcome,
            )

    # The audit log only moves forward: the month's neighbours first and last (London's
    # months: 22:59 UTC on 30 September is 23:59 BST, still September).
    add(1, AuditAction.SESSION_START, "met", when=datetime(2026, 9, 30, 22, 59, tzinfo=UTC))
    add(7, AuditAction.SESSION_START, "met")
    add(5, AuditAction.PLAYBACK, "met")
    add(2, AuditAction.MASK_LIFT, "met")
    add(3, AuditAction.SESSION_START, "mall")
    add(3, AuditAction.SESSION_START, "arcade")
    add(2, AuditAction.SESSION_START, "royal-free")
    add(1, AuditAction.DENIED, None, outcome="denied")  # a bad token: nobody identified
    add(6, AuditAction.DENIED, "mall", outcome="denied")
    add(4, AuditAction.SESSION_START, "council", mode="record")  # cameras publishing
    add(9, AuditAction.TOKEN_ISSUED, "met")  # not a disclosure
    add(1, AuditAction.SESSION_START, "met", when=datetime(2026, 11, 1, tzinfo=UTC))


def test_figures_are_counted_by_kind_of_organisation(db: Database) -> None:
    _register(db)
    _activity(db)
    report = monthly_report(db, MONTH, viewing_ms_by_tenant={"met": 9_000_000, "mall": 360_000})
    kinds = report["by_organisation_kind"]
    assert report["cameras"] == 3 and report["cameras_with_privacy_masks"] == 1
    assert kinds["police"] == {
        "organisations": 1,
        "grants": 1,
        "live_views": 7,  # the two just outside the month are not counted
        "playbacks": 5,
        "exports": 0,
        "mask_lifts": 2,
        "refused": 0,
        "viewing_hours": 2.5,
    }
    assert kinds["retail"]["organisations"] == 2 and kinds["retail"]["live_views"] == 6
    assert kinds["retail"]["refused"] == 6 and kinds["retail"]["viewing_hours"] == 0.1
    assert kinds["council"]["live_views"] == 0  # publishing is not viewing
    assert kinds["unidentified"]["refused"] == 1
    assert kinds["health"]["live_views"] == 2 and kinds["health"]["grants"] == 1


def test_published_figures_suppress_small_counts_and_name_nobody(db: Database) -> None:
    _register(db)
    _activity(db)
    published = publishable(
        monthly_report(db, MONTH, viewing_ms_by_tenant={"met": 9_000_000, "royal-free": 60_000})
    )
    police = published["by_organisation_kind"]["police"]
    assert police["live_views"] == 7 and police["playbacks"] == 5
    assert police["mask_lifts"] == "<5"  # 2 mask lifts would point at the individuals
    assert police["exports"] == 0  # zero is not disclosive
    assert police["organisations"] == 1  # the register is public: the Met is a partner
    health = published["by_organisation_kind"]["health"]
    assert health["live_views"] == "<5"
    assert health["viewing_hours"] == "suppressed"  # hours where the views are few
    assert published["by_organisation_kind"]["unidentified"]["refused"] == "<5"
    text = json.dumps(published)
    for secret in ("met", "Metropolitan", "mall", "Brent", "royal-free", "officer", "high-st",
                   "investigation", "estate-a"):  # fmt: skip
        assert secret not in text.replace("police", ""), secret
    assert "<5" in published["suppression"]


def test_a_bad_period_is_refused(db: Database) -> None:
    for bad in ("2026-13", "2026-1", "26-10", "2026-10-01", ""):
        with pytest.raises(ValueError, match="YYYY-MM"):
            monthly_report(db, bad)


def test_months() -> None:
    assert previous_month(datetime(2026, 1, 15, tzinfo=UTC)) == "2025-12"
    assert previous_month(datetime(2026, 11, 22, tzinfo=UTC)) == "2026-10"
    assert month_bounds("2026-12") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    for bad in ("2026-11\n", "9999-12", "0000-01", "2026-00"):
        with pytest.raises(ValueError):
            month_bounds(bad)
    assert month_days("2026-02") == (date(2026, 2, 1), date(2026, 2, 28))
    assert add_months("2026-11", 2) == "2027-01" and add_months("2026-01", -1) == "2025-12"


def test_months_are_the_deployments_local_months() -> None:
    # Issue #9 finding 5: a London month runs from local midnight to local midnight; in
    # summer that is 23:00 UTC the evening before.
    assert month_bounds("2026-07") == (
        datetime(2026, 6, 30, 23, tzinfo=UTC),
        datetime(2026, 7, 31, 23, tzinfo=UTC),
    )
    # March loses an hour, October gains one: 743 and 745 hours
    start, end = month_bounds("2026-03")
    assert (start, end) == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31, 23, tzinfo=UTC))
    assert end - start == timedelta(hours=31 * 24 - 1)
    start, end = month_bounds("2026-10")
    assert end - start == timedelta(hours=31 * 24 + 1)
    # 00:30 BST on 1 August is August in London, though still July in UTC
    assert month_of(datetime(2026, 7, 31, 23, 30, tzinfo=UTC)) == "2026-08"
    assert previous_month(datetime(2026, 7, 31, 23, 30, tzinfo=UTC)) == "2026-07"
    # another deployment's zone
    tokyo = ZoneInfo("Asia/Tokyo")
    assert month_bounds("2026-07", tokyo)[0] == datetime(2026, 6, 30, 15, tzinfo=UTC)
    assert month_of(datetime(2026, 7, 31, 15, tzinfo=UTC), tokyo) == "2026-08"


async def test_published_month_is_local(db: Database) -> None:
    # Activity at 23:30 UTC on 31 July is 00:30 BST on 1 August: August's figures.
    _register(db)
    log = AuditLog(db, Ed25519PrivateKey.generate())
    late = datetime(2026, 7, 31, 23, 30, tzinfo=UTC)
    log.append(AuditAction.SESSION_START, tenant="met", camera="high-st", outcome="allowed",
               detail={"mode": "play"}, time=late)  # fmt: skip
    police = "police"
    assert monthly_report(db, "2026-08")["by_organisation_kind"][police]["live_views"] == 1
    assert monthly_report(db, "2026-07")["by_organisation_kind"][police]["live_views"] == 0
    utc = monthly_report(db, "2026-07", zone=UTC)["by_organisation_kind"][police]
    assert utc["live_views"] == 1


async def test_served_to_anyone_without_a_token(tenancy_gw) -> None:  # noqa: F811
    app = make_http_app(tenancy_gw.gateway)
    app.cleanup_ctx.clear()  # the fixture runs this gateway already
    period = (datetime.now(UTC) - timedelta(days=0)).strftime("%Y-%m")
    async with TestClient(TestServer(app)) as client:
        r = await client.get(f"/transparency/{period}.json")
        assert r.status == 200
        report = await r.json()
        # The fixture's publishing encoder is a session start, but not a view.
        assert report["period"] == period and report["cameras"] >= 1
        assert "police" in report["by_organisation_kind"]
        page = await client.get(f"/transparency?period={period}")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        html = await page.text()
        assert f"published figures for {period}" in html and '<table id="figures">' in html
        assert 'id="subject-access"' in html  # requests received, answered, overdue
        assert set(report["subject_access_requests"]) >= {"opened", "fulfilled", "overdue"}
        assert (await client.get("/transparency/2026-13.json")).status == 400
        assert (await client.get("/transparency/2099-01.json")).status == 404
        assert (await client.get("/transparency?period=<script>")).status == 400
        # Everything else still needs a token.
        assert (await client.get("/v1/sessions")).status == 401


async def test_figures_from_the_cli(tmp_path: Path) -> None:
    (tmp_path / "feedgate.toml").write_text(f'data_dir = "{tmp_path}"\n[tenancy]\nenabled = true\n')
    db = Database.open(f"sqlite://{tmp_path / 'feedgate.db'}")
    try:
        _register(db)
        _activity(db)
    finally:
        db.close()
    args = ["audit", "figures", "--local", "--config", str(tmp_path / "feedgate.toml")]
    rc, out, err = await cli(*args, "--period", MONTH, "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["by_organisation_kind"]["police"]["live_views"] == 7
    assert report["by_organisation_kind"]["police"]["mask_lifts"] == "<5"
    rc, out, err = await cli(*args, "--period", MONTH)
    assert rc == 0 and "police" in out and "<5" in out, err
    rc, out, err = await cli(*args, "--period", "2026-13")
    assert rc == 2 and "YYYY-MM" in err


async def test_local_commands_refuse_a_missing_database(tmp_path: Path) -> None:
    # Issue #9 finding 6: from a config whose data dir holds no database, figures, verify and
    # export say so (exit 2) instead of creating an empty one and reporting "0 cameras".
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "feedgate.toml"
    config.write_text('data_dir = "var"\n[tenancy]\nenabled = true\n')
    local = ["--local", "--config", str(config)]
    for argv in (
        ["audit", "figures", *local, "--period", MONTH],
        ["audit", "export", *local, "--from", "2026-10-01", "--to", "2026-11-01"],
    ):
        rc, out, err = await cli(*argv)
        assert rc == 2 and "no database at" in err and str(tmp_path / "conf" / "var") in err, err
        assert "cameras" not in out
    assert not (tmp_path / "conf" / "var" / "feedgate.db").exists()
