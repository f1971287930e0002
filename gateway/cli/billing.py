"""``feedgate usage`` and ``feedgate invoices``: what council finance runs each month.

They work on the gateway's data (the config's database and plans), so finance can run them on
the gateway host or on a copy of its database; ``usage reconcile`` also asks a running gateway
what it metered.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.request
from datetime import UTC, datetime
from typing import Any

from billing.invoices import InvoiceStore, run_invoices
from billing.ledger import Ledger
from billing.model import BillingError, Invoice, InvoiceStatus, Metric, parse_period
from billing.money import (
    BYTES_PER_GB,
    MS_PER_HOUR,
    MS_PER_MINUTE,
    format_money,
    format_quantity,
    vat_label,
)
from billing.rating import PlanError, load_plans, plan_assignments
from gateway.config import Config, ConfigError, load_config
from tenants.db import Database, DatabaseError


def _fail(message: str) -> int:
    print(f"feedgate: {message}", file=sys.stderr)
    return 2


def _open(args: argparse.Namespace) -> tuple[Config, Database, Ledger, InvoiceStore]:
    config = load_config(args.config)
    if not config.billing.enabled:
        raise ConfigError(str(args.config or "<defaults>"), "billing.enabled", "billing is off")
    # The gateway's ledger as it is: a missing database is refused, not created empty.
    db = Database.open(config.billing.ledger or config.database_url, create=False)
    ledger = Ledger(db, zone=config.zone)
    return config, db, ledger, InvoiceStore(db, ledger=ledger)


def _plans(config: Config) -> tuple[dict[str, Any], dict[str, str]]:
    if not config.billing.plans:
        raise ConfigError("config", "billing.plans", "no price plans file configured")
    plans = load_plans(config.billing.plans)
    return plans, plan_assignments(config.billing.plans, plans)


def _invoice_dict(inv: Invoice) -> dict[str, Any]:
    return {
        "invoice_id": inv.invoice_id,
        "tenant": inv.tenant,
        "period": inv.period,
        "currency": inv.currency,
        "status": inv.status.value,
        "subtotal_pence": inv.subtotal_pence,
        "vat_rate": inv.vat_rate,
        "vat_pence": inv.vat_pence,
        "total_pence": inv.total_pence,
        "credit_note_for": inv.credit_note_for,
        "stripe_invoice_id": inv.stripe_invoice_id,
        "lines": [
            {
                "line_id": line.line_id,
                "kind": line.kind.value,
                "description": line.description,
                "quantity": line.quantity,
                "unit": line.unit,
                "unit_price": line.unit_price,
                "amount_pence": line.amount_pence,
            }
            for line in inv.lines
        ],
    }


def _print_invoice(inv: Invoice) -> None:
    print(f"Invoice {inv.invoice_id}  tenant {inv.tenant}  period {inv.period}  [{inv.status}]")
    for line in inv.lines:
        print(f"  {line.description:<64} {format_money(line.amount_pence, inv.currency):>14}")
    print(f"  {'Subtotal':<64} {format_money(inv.subtotal_pence, inv.currency):>14}")
    print(f"  {vat_label(inv.vat_rate):<64} {format_money(inv.vat_pence, inv.currency):>14}")
    print(f"  {'Total':<64} {format_money(inv.total_pence, inv.currency):>14}")


def cmd_usage(args: argparse.Namespace) -> int:
    try:
        config, _db, ledger, invoices = _open(args)
        if args.action == "reconcile":
            return _reconcile(args, config, ledger, invoices)
        if not args.tenant or not args.period:
            return _fail("usage needs --tenant and --period")
        parse_period(args.period, config.zone)
        usage = ledger.usage(args.tenant, args.period)
        by_camera = ledger.usage_by_camera(args.tenant, args.period)
    except (ConfigError, BillingError, DatabaseError) as exc:
        return _fail(str(exc))
    out = {
        "tenant": args.tenant,
        "period": args.period,
        "units": {"*_seconds": "milliseconds", "bytes": "bytes", "exports": "count"},
        "usage": {m.value: v for m, v in usage.items()},
        "by_camera": {c: {m.value: v for m, v in u.items()} for c, u in by_camera.items()},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"Usage of {args.tenant} in {args.period}")
    live = format_quantity(usage[Metric.LIVE_SECONDS], MS_PER_HOUR)
    playback = format_quantity(usage[Metric.PLAYBACK_SECONDS], MS_PER_HOUR)
    print(f"  live viewing      {live:>14} camera-hours")
    print(f"  playback          {playback:>14} hours")
    print(f"  delivered         {format_quantity(usage[Metric.BYTES], BYTES_PER_GB, 3):>14} GB")
    ptz = format_quantity(usage[Metric.PTZ_SECONDS], MS_PER_MINUTE)
    print(f"  PTZ control       {ptz:>14} minutes")
    print(f"  exports           {usage[Metric.EXPORTS]:>14,}")
    for camera, u in by_camera.items():
        hours = format_quantity(u[Metric.LIVE_SECONDS], MS_PER_HOUR)
        gb = format_quantity(u[Metric.BYTES], BYTES_PER_GB, 3)
        print(f"    {camera:<30} {hours:>10} h  {gb:>10} GB")
    return 0


def _reconcile(
    args: argparse.Namespace, config: Config, ledger: Ledger, invoices: InvoiceStore
) -> int:
    """Exit 0 when everything agrees, 1 on differences (each named), 2 when it cannot ask."""
    cameras: list[dict[str, Any]] = []
    stripe: list[str] = []
    if args.gateway:
        # What the running gateway says it metered since it started, against the ledger.
        url = args.gateway.rstrip("/") + "/v1/usage/emitted"
        try:
            with urllib.request.urlopen(
                urllib.request.Request(
                    url,
                    headers={"Authorization": f"Bearer {args.token}"} if args.token else {},
                ),
                timeout=10,
                # An https:// gateway whose certificate comes from the council's own CA.
                context=ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None,
            ) as resp:
                emitted = json.load(resp)
        except (OSError, ValueError) as exc:  # URLError, HTTPError, a bad CA file, not JSON
            return _fail(f"cannot read {url}: {getattr(exc, 'reason', None) or exc}")
        since = datetime.fromisoformat(emitted["since"])
        recorded = ledger.totals_since(since)
        for camera, (n, ms, nbytes) in sorted(emitted["cameras"].items()):
            got = recorded.get(camera, (0, 0, 0))
            cameras.append(
                {
                    "camera": camera,
                    "gateway": {"events": n, "milliseconds": ms, "bytes": nbytes},
                    "ledger": {"events": got[0], "milliseconds": got[1], "bytes": got[2]},
                    "ok": got == (n, ms, nbytes),
                }
            )
    if args.period and config.billing.stripe_api_key:
        from billing.stripe_sync import StripeSync

        sync = StripeSync(
            ledger.db,
            api_key=config.billing.stripe_api_key,
            api_base=config.billing.stripe_api_base or None,
        )
        synced = [
            i
            for i in invoices.list(period=args.period)
            if i.status in (InvoiceStatus.FINALIZED, InvoiceStatus.PAID)
        ]
        stripe = list(sync.reconcile(synced))
    differences = sum(not c["ok"] for c in cameras) + len(stripe)
    if args.json:
        print(
            json.dumps({"cameras": cameras, "stripe": stripe, "differences": differences}, indent=2)
        )
        return 1 if differences else 0
    for c in cameras:
        gw, lg = c["gateway"], c["ledger"]
        print(
            f"{c['camera']:<30} gateway {gw['events']} events {gw['bytes']:,} B | ledger "
            f"{lg['events']} events {lg['bytes']:,} B  {'ok' if c['ok'] else 'DIFFERS'}"
        )
    for diff in stripe:
        print(f"stripe: {diff}")
    print(f"{differences} difference(s)" if differences else "no differences")
    return 1 if differences else 0


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], text: list[str]) -> int:
    """The action's result: JSON with ``--json`` (an empty list is a result, not an error),
    else its lines of text."""
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for line in text:
            print(line)
    return 0


def _wanted(args: argparse.Namespace, inv: Invoice) -> bool:
    return not args.tenant or inv.tenant == args.tenant


def cmd_invoices(args: argparse.Namespace) -> int:
    try:
        config, _db, ledger, store = _open(args)
        parse_period(args.period, config.zone)
        now = datetime.now(UTC)
        if args.action == "run":
            plans, assignments = _plans(config)
            done = [
                i
                for i in run_invoices(ledger, store, plans, assignments, args.period, now=now)
                if _wanted(args, i)
            ]
            return _emit(
                args,
                [_invoice_dict(i) for i in done],
                [
                    f"{i.invoice_id:<40} {i.status.value:<10} "
                    f"{format_money(i.total_pence, i.currency):>14}"
                    for i in done
                ]
                or [f"no invoices for {args.period}"],
            )
        if args.action == "finalize":
            done = [
                store.finalize(i.invoice_id, now)
                for i in store.list(period=args.period)
                if i.status == InvoiceStatus.DRAFT and _wanted(args, i)
            ]
            return _emit(
                args,
                [_invoice_dict(i) for i in done],
                [
                    f"{i.invoice_id} finalized: {format_money(i.total_pence, i.currency)}"
                    for i in done
                ]
                or [f"no drafts to finalize for {args.period}"],
            )
        if args.action == "show":
            found = [i for i in store.list(period=args.period) if _wanted(args, i)]
            if args.json:
                return _emit(args, [_invoice_dict(i) for i in found], [])
            for inv in found:
                _print_invoice(inv)
            if not found:
                print(f"no invoices for {args.period}")
            return 0
        if args.action == "sync":
            from billing.stripe_sync import StripeSync

            if not config.billing.stripe_api_key:
                return _fail("billing.stripe_api_key is not set")
            sync = StripeSync(
                store.db,
                api_key=config.billing.stripe_api_key,
                api_base=config.billing.stripe_api_base or None,
            )
            names = _tenant_names(config)
            synced: list[dict[str, Any]] = []
            for inv in store.list(period=args.period):
                if inv.status not in (InvoiceStatus.FINALIZED, InvoiceStatus.PAID):
                    continue
                if not _wanted(args, inv):
                    continue
                sync.ensure_customer(inv.tenant, names.get(inv.tenant, inv.tenant))
                stripe_id = sync.sync_invoice(inv)
                store.attach_stripe_id(inv.invoice_id, stripe_id)
                synced.append({"invoice_id": inv.invoice_id, "stripe_invoice_id": stripe_id})
            return _emit(
                args,
                synced,
                [f"{r['invoice_id']} -> {r['stripe_invoice_id']}" for r in synced],
            )
    except (ConfigError, BillingError, PlanError, DatabaseError) as exc:
        return _fail(str(exc))
    return _fail(f"unknown action {args.action}")


def _tenant_names(config: Config) -> dict[str, str]:
    from tenants.store import TenantStore

    store = TenantStore(Database.open(config.database_url))
    return {t.id: t.name for t in store.list_tenants()}


def register(sub: Any) -> None:
    usage = sub.add_parser("usage", help="metered usage by tenant and month; reconciliation")
    usage.add_argument("action", nargs="?", choices=["show", "reconcile"], default="show")
    usage.add_argument("--config", help="the gateway's TOML config")
    usage.add_argument("--tenant")
    usage.add_argument("--period", help="YYYY-MM")
    usage.add_argument("--json", action="store_true")
    usage.add_argument("--gateway", help="reconcile: a running gateway's HTTP base URL")
    usage.add_argument("--token", help="reconcile: a bearer token for that gateway")
    usage.add_argument(
        "--tls-ca",
        default=os.environ.get("FEEDGATE_TLS_CA"),
        help="reconcile: trust this CA (PEM) for an https:// gateway",
    )
    usage.set_defaults(func=cmd_usage)

    inv = sub.add_parser("invoices", help="monthly invoices: run, finalize, show, sync to Stripe")
    inv.add_argument("action", choices=["run", "finalize", "show", "sync"])
    inv.add_argument("--config", help="the gateway's TOML config")
    inv.add_argument("--period", required=True, help="YYYY-MM")
    inv.add_argument("--tenant")
    inv.add_argument("--json", action="store_true")
    inv.set_defaults(func=cmd_invoices)
