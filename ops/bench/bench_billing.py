"""Billing throughput: usage events into the ledger, and a month's invoice run at scale.

    python ops/bench/bench_billing.py                    # SQLite file in a temp dir, defaults
    python ops/bench/bench_billing.py --ingest-events 500000 --hours-per-camera 6
    python ops/bench/bench_billing.py --db-url postgresql://user@127.0.0.1:5432/bench

Measures, on a fresh database:

(a) ingest: ``--ingest-events`` usage events (built beforehand, not timed) recorded through
    ``Ledger.record`` in batches of ``--batch`` (1,000), each batch one transaction with
    ``INSERT ... ON CONFLICT DO NOTHING``; then the same events replayed (all duplicates).
(b) a month: ``--tenants`` (100) tenants x ``--cameras`` (1,000) cameras for 2026-10. Every
    tenant watches every camera in ``--hours-per-camera`` (3) distinct clock hours of the month
    (chosen by a seeded RNG); a session's use of one camera in one hour is aggregated into ONE
    interval event (10-50 min of viewing, bytes at 2 Mbit/s). Every 10th event is playback,
    every 50th PTZ, every 200th an export. So the ledger holds tenants x cameras x hours rows
    (300,000 by default). The cameras belong to the first ``--owners`` (10) tenants (100
    cameras each), whose plan shares 10 % of others' viewing charges; the other tenants cycle
    through graduated, volume, minimum-commitment, nominal-cost and zero-rated plans.
    Timed: ``run_invoices`` (rating + contributor credits + drafts), a second identical run
    (idempotency check: it must change nothing), and finalizing every invoice (postings).

With --db-url the tables must not exist yet (use an empty database).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from billing.invoices import InvoiceStore, run_invoices
from billing.ledger import Ledger
from billing.model import Metric, UsageEvent, UsageKind
from billing.rating import MetricPrice, PricePlan, Tier, TierMode
from tenants.db import Database

PERIOD = "2026-10"
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
MONTH_HOURS = 31 * 24
BITRATE_BPS = 2_000_000
D = Decimal
VAT = D("0.20")


def _plans() -> dict[str, PricePlan]:
    live_tiers = (Tier(D(500), D(45)), Tier(D(2000), D(35)), Tier(None, D(25)))
    prices = (
        MetricPrice(Metric.LIVE_SECONDS, "camera-hour", live_tiers, TierMode.GRADUATED),
        MetricPrice(Metric.PLAYBACK_SECONDS, "hour", (Tier(None, D(60)),)),
        MetricPrice(Metric.BYTES, "GB", (Tier(D(1000), D(8)), Tier(None, D(5)))),
        MetricPrice(Metric.PTZ_SECONDS, "minute", (Tier(None, D("2.5")),)),
        MetricPrice(Metric.EXPORTS, "export", (Tier(None, D(500)),)),
    )
    volume = tuple(
        MetricPrice(p.metric, p.unit, p.tiers, TierMode.VOLUME) if len(p.tiers) > 1 else p
        for p in prices
    )
    return {
        "owner": PricePlan("owner", vat_rate=VAT, prices=prices, contributor_share=D("0.10")),
        "graduated": PricePlan("graduated", vat_rate=VAT, prices=prices, platform_fee_pence=5000),
        "volume": PricePlan("volume", vat_rate=VAT, prices=volume, platform_fee_pence=5000),
        "minimum": PricePlan(
            "minimum", vat_rate=VAT, prices=prices, minimum_commitment_pence=5_000_000
        ),
        "nominal": PricePlan("nominal", vat_rate=VAT, prices=prices, nominal_fee_pence=100),
        "zero": PricePlan("zero", prices=prices, zero_rated=True),
    }


def _event(
    tenant: str, camera: str, owner: str, hour: int, n: int, rng: random.Random
) -> UsageEvent:
    start = MONTH_START + timedelta(hours=hour, minutes=rng.randrange(0, 10))
    ms = rng.randrange(10, 51) * 60_000  # 10-50 min, ends inside the hour
    kind = (
        UsageKind.EXPORT
        if n % 200 == 0
        else UsageKind.PTZ
        if n % 50 == 0
        else UsageKind.PLAYBACK
        if n % 10 == 0
        else UsageKind.LIVE
    )
    sid = f"{tenant}/{camera}/{hour}"
    return UsageEvent(
        event_id=UsageEvent.make_id(sid, 0),
        session_id=sid,
        seq=0,
        tenant=tenant,
        principal=f"{tenant}-op{n % 7}",
        camera=camera,
        camera_owner=owner,
        kind=kind,
        protocol="rtsp" if n % 3 else "webrtc",
        variant="masked",
        start=start,
        end=start + timedelta(milliseconds=ms),
        duration_ms=ms,
        bytes_sent=ms * BITRATE_BPS // 8000,
        final=True,
    )


def _month(tenants: int, cameras: int, hours: int, owners: int, seed: int) -> list[UsageEvent]:
    rng = random.Random(seed)
    names = [f"t{i:03d}" for i in range(tenants)]
    cams = [(f"cam{c:04d}", names[c * owners // cameras]) for c in range(cameras)]
    events: list[UsageEvent] = []
    n = 0
    for tenant in names:
        for camera, owner in cams:
            for hour in rng.sample(range(MONTH_HOURS), hours):
                events.append(_event(tenant, camera, owner, hour, n, rng))
                n += 1
    return events


def _ingest_events(count: int, seed: int) -> list[UsageEvent]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        start = MONTH_START + timedelta(seconds=rng.randrange(0, MONTH_HOURS * 3600 - 60))
        sid = f"ingest-{i // 60}"
        out.append(
            UsageEvent(
                event_id=UsageEvent.make_id(sid, i % 60),
                session_id=sid,
                seq=i % 60,
                tenant=f"t{i % 100:03d}",
                principal="op",
                camera=f"cam{i % 1000:04d}",
                camera_owner=f"t{i % 10:03d}",
                kind=UsageKind.LIVE,
                protocol="rtsp",
                variant="masked",
                start=start,
                end=start + timedelta(seconds=60),
                duration_ms=60_000,
                bytes_sent=15_000_000,
            )
        )
    return out


def _record(ledger: Ledger, events: list[UsageEvent], batch: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    new = 0
    for i in range(0, len(events), batch):
        new += ledger.record(events[i : i + batch])
    return new, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ingest-events", type=int, default=200_000, help="(a) events to record")
    ap.add_argument("--batch", type=int, default=1000, help="events per Ledger.record call")
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--cameras", type=int, default=1000)
    ap.add_argument("--hours-per-camera", type=int, default=3, help="hours each tenant watches")
    ap.add_argument("--owners", type=int, default=10, help="tenants that own the cameras")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--db-url", default=None, help="default: a SQLite file in a temp dir")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if not 1 <= args.owners <= args.tenants or args.hours_per_camera > MONTH_HOURS:
        ap.error("need 1 <= --owners <= --tenants and --hours-per-camera <= 744")

    figures: dict[str, float | int | str] = {"command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="feedgate-billing-bench-") as tmp:
        # (a) ingest
        url_a = args.db_url or f"sqlite:///{tmp}/ingest.db"
        db = Database.open(url_a)
        ledger = Ledger(db)
        events = _ingest_events(args.ingest_events, args.seed)
        new, secs = _record(ledger, events, args.batch)
        assert new == len(events), (new, len(events))
        dup, dup_secs = _record(ledger, events, args.batch)
        assert dup == 0
        figures |= {
            "ingest_events": len(events),
            "ingest_seconds": round(secs, 3),
            "ingest_events_per_second": round(len(events) / secs),
            "replay_events_per_second": round(len(events) / dup_secs),
        }
        print(
            f"(a) ingest: {len(events):,} events in batches of {args.batch:,}: {secs:.2f} s"
            f" = {len(events) / secs:,.0f} events/s; replay (all duplicates):"
            f" {len(events) / dup_secs:,.0f} events/s",
            flush=True,
        )
        del events
        db.close()

        # (b) a month of invoices
        if args.db_url:
            db = Database.open(args.db_url)
            db.execute("DROP TABLE IF EXISTS invoice_lines")
            db.execute("DROP TABLE IF EXISTS invoices")
            db.execute("DROP TABLE IF EXISTS postings")
            db.execute("DROP TABLE IF EXISTS usage_events")
            db.execute("DELETE FROM schema_migrations WHERE component LIKE 'billing%'")
        else:
            db = Database.open(f"sqlite:///{tmp}/month.db")
        ledger = Ledger(db)
        store = InvoiceStore(db, ledger=ledger)
        t0 = time.perf_counter()
        month = _month(args.tenants, args.cameras, args.hours_per_camera, args.owners, args.seed)
        gen_secs = time.perf_counter() - t0
        new, fill_secs = _record(ledger, month, args.batch)
        print(
            f"(b) month {PERIOD}: {args.tenants} tenants x {args.cameras:,} cameras x"
            f" {args.hours_per_camera} h = {new:,} per-camera-per-hour events"
            f" (generated in {gen_secs:.1f} s, recorded in {fill_secs:.1f} s ="
            f" {new / fill_secs:,.0f} events/s)",
            flush=True,
        )
        del month
        plans = _plans()
        cycle = ["graduated", "volume", "minimum", "nominal", "zero"]
        assignments = {
            f"t{i:03d}": "owner" if i < args.owners else cycle[i % len(cycle)]
            for i in range(args.tenants)
        }
        now = datetime(2026, 11, 1, 3, tzinfo=UTC)
        t0 = time.perf_counter()
        invoices = run_invoices(ledger, store, plans, assignments, PERIOD, now=now)
        run_secs = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = run_invoices(ledger, store, plans, assignments, PERIOD, now=now)
        rerun_secs = time.perf_counter() - t0
        assert again == invoices, "invoice run is not idempotent"
        t0 = time.perf_counter()
        for inv in invoices:
            store.finalize(inv.invoice_id, now)
        fin_secs = time.perf_counter() - t0
        balances = ledger.balances()
        assert sum(balances.values()) == 0
        total = sum(i.total_pence for i in invoices)
        credits = -sum(
            line.amount_pence
            for i in invoices
            for line in i.lines
            if line.line_id == "contributor_credit"
        )
        lines = sum(len(i.lines) for i in invoices)
        db.close()

    figures |= {
        "month_events": new,
        "month_record_seconds": round(fill_secs, 3),
        "run_invoices_seconds": round(run_secs, 3),
        "rerun_invoices_seconds": round(rerun_secs, 3),
        "finalize_seconds": round(fin_secs, 3),
        "invoices": len(invoices),
        "invoice_lines": lines,
        "total_invoiced_pence": total,
        "contributor_credits_pence": credits,
    }
    print(
        f"    run_invoices (rate + contributor credits + {len(invoices)} drafts, {lines} lines):"
        f" {run_secs:.2f} s (target < 30 s)\n"
        f"    second run (idempotent, nothing changed): {rerun_secs:.2f} s\n"
        f"    finalize all (balanced postings): {fin_secs:.2f} s\n"
        f"    invoiced £{total / 100:,.2f} incl. VAT; contributor credits £{credits / 100:,.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
