"""What council finance runs each month, as they run it: the `feedgate usage` and
`feedgate invoices` commands against a real `feedgate serve` that metered a real ffmpeg viewer,
with Stripe played by localstripe."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import free_port, free_udp_pair, publish_argv, read_argv, wait_for
from test_billing_e2e import PLANS, SEED, _hand_computed_total
from test_grpc import _cli_env, cli
from test_stripe import API_KEY, Api, localstripe  # noqa: F401 - the localstripe fixture

from billing.ledger import Ledger
from billing.model import UsageEvent, UsageKind, period_of
from tenants.db import Database
from tenants.tokens import SigningKey, TokenIssuer

ADMIN = """
[[principals]]
id = "council-admin"
tenant = "council"
name = "Council administrator"
kind = "user"
roles = ["admin"]
"""


async def test_usage_invoices_sync_and_reconcile_from_the_cli(
    tmp_path: Path,
    procs,
    localstripe: str,  # noqa: F811
) -> None:
    rtsp, http = free_port(), free_port()
    (tmp_path / "seed.toml").write_text(SEED + ADMIN)
    (tmp_path / "plans.toml").write_text(PLANS)
    cfg = tmp_path / "feedgate.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        f'[rtsp]\nhost = "127.0.0.1"\nport = {rtsp}\nrtp_port = {free_udp_pair()}\n'
        "report_interval = 0.5\n"
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n[grpc]\nport = 0\n'
        '[tenancy]\nenabled = true\nseed = "seed.toml"\n'
        '[billing]\nenabled = true\nplans = "plans.toml"\n'
        f'stripe_api_key = "{API_KEY}"\nstripe_api_base = "{localstripe}"\n'
        '[[cameras]]\nid = "street"\nsource = "push"\n'
    )
    gateway = await procs([sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)])
    await wait_for(lambda: "feedgate listening" in gateway.text, 30, what="the gateway")
    url = f"rtsp://127.0.0.1:{rtsp}/street"
    await procs(publish_argv(url.replace("rtsp://", "rtsp://encoder:enc@")))
    await wait_for(lambda: "publishing street" in gateway.text, 30, what="the camera")
    key = SigningKey.load_or_create(tmp_path / "var" / "keys" / "token-signing.pem")
    issuer = TokenIssuer([key])
    viewer_token = issuer.issue(
        tenant="police", subject="officer", roles=["viewer"], ttl=timedelta(minutes=5)
    )
    viewer = await procs(read_argv(f"{url}?token={viewer_token}", seconds=2, decode=False))
    assert await viewer.wait(30) == 0, viewer.text

    env = _cli_env()
    period = period_of(datetime.now(UTC))
    admin = issuer.issue(
        tenant="council", subject="council-admin", roles=["admin"], ttl=timedelta(minutes=5)
    )
    reconcile = ["usage", "reconcile", "--config", str(cfg)]
    gateway_side = ["--gateway", f"http://127.0.0.1:{http}", "--token", admin]

    # Reconciliation: what the gateway metered equals what the ledger holds (once the last
    # interval of the ended session has been written).
    deadline = time.monotonic() + 20
    while True:
        rc, out, err = await cli(*reconcile, *gateway_side, env=env)
        if rc == 0 or time.monotonic() > deadline:
            break
    assert rc == 0 and "no differences" in out and "street" in out, (out, err)

    # Usage, as JSON, in base units.
    rc, out, err = await cli(
        "usage", "--config", str(cfg), "--tenant", "police", "--period", period, "--json", env=env
    )
    assert rc == 0, err
    usage = json.loads(out)["usage"]
    # 2 s of stream, part of it the GOP cache delivered at once
    assert 1000 <= usage["live_seconds"] <= 10_000 and usage["bytes"] > 10_000, usage
    rc, out, err = await cli(
        "usage", "--config", str(cfg), "--tenant", "police", "--period", period, env=env
    )
    assert rc == 0 and "camera-hours" in out and "street" in out, err

    # The invoice run, its result to the penny, finalisation, and Stripe.
    rc, out, err = await cli("invoices", "run", "--config", str(cfg), "--period", period, env=env)
    assert rc == 0 and f"inv-police-{period}" in out, err
    show = ["invoices", "show", "--config", str(cfg), "--tenant", "police", "--period", period]
    rc, out, err = await cli(*show, "--json", env=env)
    assert rc == 0, err
    (invoice,) = json.loads(out)
    assert invoice["status"] == "draft"
    assert invoice["total_pence"] == _hand_computed_total(usage["live_seconds"], usage["bytes"])
    rc, out, err = await cli(*show, env=env)
    assert rc == 0 and "Total" in out and "VAT at 20%" in out, err
    rc, out, err = await cli(
        "invoices", "finalize", "--config", str(cfg), "--period", period, env=env
    )
    assert rc == 0 and f"inv-police-{period} finalized" in out, err
    sync = ["invoices", "sync", "--config", str(cfg), "--period", period]
    rc, out, err = await cli(*sync, env=env)
    assert rc == 0, err
    stripe_ids = dict(line.split(" -> ") for line in out.splitlines())
    api = Api(localstripe)
    try:
        remote = api.get(f"/v1/invoices/{stripe_ids[f'inv-police-{period}']}")
        assert remote["total"] == invoice["total_pence"]
        rc, out, err = await cli(*sync, env=env)  # again: the same Stripe invoices, no new ones
        assert rc == 0 and dict(line.split(" -> ") for line in out.splitlines()) == stripe_ids
    finally:
        api.http.close()

    # Both halves of reconciliation agree; then a usage row goes missing and it says so.
    rc, out, err = await cli(*reconcile, *gateway_side, "--period", period, env=env)
    assert rc == 0 and "no differences" in out, (out, err)
    with sqlite3.connect(tmp_path / "var" / "feedgate.db") as db:
        db.execute("DELETE FROM usage_events WHERE seq = 0")
    rc, out, err = await cli(*reconcile, *gateway_side, env=env)
    assert rc == 1 and "DIFFERS" in out and "1 difference(s)" in out, (out, err)

    # A gateway that cannot be reached is a clear error, not a traceback.
    rc, out, err = await cli(*reconcile, "--gateway", f"http://127.0.0.1:{free_port()}", env=env)
    assert rc == 2 and "cannot read" in err and "Traceback" not in err, err


def _usage(tenant: str, camera: str, owner: str, minutes: int, n: int) -> UsageEvent:
    start = datetime(2026, 10, 3, 8, tzinfo=UTC) + timedelta(hours=n)
    sid = f"{tenant}-{camera}-{n}"
    return UsageEvent(
        event_id=UsageEvent.make_id(sid, 0), session_id=sid, seq=0, tenant=tenant,
        principal=None, camera=camera, camera_owner=owner, kind=UsageKind.LIVE,
        protocol="rtsp", variant="original", start=start,
        end=start + timedelta(minutes=minutes), duration_ms=minutes * 60_000,
        bytes_sent=2_000_000,
    )  # fmt: skip


async def test_every_json_prints_json_and_nothing_found_is_not_an_error(tmp_path: Path) -> None:
    """Issue #9 finding 9 (and 6 for the ledger): `--json` is JSON for every action; a month
    without invoices is an empty result (exit 0); a missing database is refused, not created."""
    (tmp_path / "plans.toml").write_text(PLANS)
    cfg = tmp_path / "feedgate.toml"
    cfg.write_text(
        'data_dir = "var"\n[tenancy]\nenabled = true\n'
        '[billing]\nenabled = true\nplans = "plans.toml"\n'
    )
    base = ["--config", str(cfg), "--period", "2026-10"]

    rc, out, err = await cli("invoices", "show", *base, "--json")
    assert rc == 2 and "no database at" in err and not out, (out, err)
    assert not (tmp_path / "var" / "feedgate.db").exists()

    db = Database.open(f"sqlite:///{tmp_path / 'var' / 'feedgate.db'}")
    try:
        Ledger(db).record([_usage("police", "street", "council", 90, 0)])
        Ledger(db).record([_usage("council", "street", "council", 30, 1)])
    finally:
        db.close()

    rc, out, err = await cli("invoices", "run", *base, "--json")
    assert rc == 0, err
    run = {i["invoice_id"]: i for i in json.loads(out)}
    police, council = run["inv-police-2026-10"], run["inv-council-2026-10"]
    # 1.5 camera-hours at £36 + 2 MB at 7p + £10 fee = £64.14, VAT 20 % = £12.83
    assert (police["subtotal_pence"], police["vat_pence"], police["status"]) == (
        6414, 1283, "draft"
    )  # fmt: skip
    # the council's own plan is zero-rated: no VAT at all, not 20 %
    assert (council["vat_rate"], council["vat_pence"], council["total_pence"]) == ("0", 0, 0)

    rc, out, err = await cli("invoices", "show", *base, "--tenant", "council")
    assert rc == 0 and "No VAT" in out and "VAT at" not in out, (out, err)
    rc, out, err = await cli("invoices", "show", *base, "--tenant", "police")
    assert rc == 0 and "VAT at 20%" in out, (out, err)

    empty = ["--config", str(cfg), "--period", "2026-09"]
    rc, out, err = await cli("invoices", "show", *empty, "--json")
    assert (rc, json.loads(out)) == (0, []), err
    rc, out, err = await cli("invoices", "show", *empty)
    assert rc == 0 and "no invoices for 2026-09" in out, err
    rc, out, err = await cli("invoices", "finalize", *empty, "--json")
    assert (rc, json.loads(out)) == (0, []), err

    rc, out, err = await cli("invoices", "finalize", *base, "--tenant", "police", "--json")
    assert rc == 0, err
    (done,) = json.loads(out)
    assert (done["invoice_id"], done["status"]) == ("inv-police-2026-10", "finalized")
    rc, out, err = await cli("usage", "reconcile", *base, "--json")
    assert (rc, json.loads(out)) == (0, {"cameras": [], "stripe": [], "differences": 0}), err
