"""``feedgate audit ...``: the tamper-evident audit log from a shell.

``verify`` and ``export`` call the control API, or with ``--local --config FILE`` work on the
data dir, for oversight bodies handed a copy of the database: ``verify`` prints
``ok: N entries, M checkpoints`` (exit 0) or the problem naming the first bad entry (exit 1);
``export --from D --to D`` writes the disclosures CSV. ``figures`` (local only) prints the
month's published anonymised figures; ``list`` pages through the entries.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.client import CliError
from gateway.cli.output import as_dict
from gateway.cli.parsing import audit_key_path, day_range, load_config, parse_day, rfc3339
from gateway.cli.verbs import Rpc, Verb, arg, needs_local

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from tenants.db import Database

SERVICE = "AuditService"


def _open_db(url: str) -> Database:
    """The gateway's database as it is: a missing one is refused, never created (an empty one
    would verify, export and publish nothing, and look fine)."""
    from tenants.db import Database, DatabaseError

    try:
        return Database.open(url, create=False)
    except DatabaseError as exc:
        raise CliError(
            f"{exc}: is data_dir (or tenancy.database) in the config right?", 2
        ) from None


def _report(
    ok: bool, entries: int, checkpoints: int, problem: str | None, first_bad: int | None
) -> int:
    if ok:
        print(f"ok: {entries} entries, {checkpoints} checkpoints")
        return 0
    where = f" (first bad entry: {first_bad})" if first_bad is not None else ""
    print(f"FAILED: {problem}{where}; {entries} entries, {checkpoints} checkpoints")
    return 1


def _verified(args: argparse.Namespace, rep: Any) -> int:
    first = rep.first_bad_seq if rep.HasField("first_bad_seq") else None
    return _report(rep.ok, rep.entries, rep.checkpoints, rep.problem, first)


def verify_local(args: argparse.Namespace) -> int:
    from gateway.identity import audit_ring
    from tenants.audit import verify_log
    from tenants.tokens.keyring import KeyRingError

    config = load_config(args.config)
    try:  # every checkpoint key ever used, retired ones included (tenants/audit/keys.py)
        trusted = audit_ring(config).load()
    except KeyRingError as exc:
        raise CliError(f"no audit signing key at {audit_key_path(config)}: {exc}", 2) from None
    db = _open_db(config.database_url)
    try:
        r = verify_log(db, trusted)
    finally:
        db.close()
    return _report(r.ok, r.entries, r.checkpoints, r.problem, r.first_bad_seq)


def _written(args: argparse.Namespace, text: str, rows: int) -> int:
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8", newline="")
        print(f"{rows} disclosures written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _export_fields(args: argparse.Namespace) -> dict[str, Any]:
    start, end = day_range(args.from_day, args.to_day)
    return {"from_time": rfc3339(start), "to_time": rfc3339(end)}


def export_local(args: argparse.Namespace) -> int:
    import io

    from tenants.audit import export_disclosures

    start, end = day_range(args.from_day, args.to_day)
    config = load_config(args.config)
    db = _open_db(config.database_url)
    try:
        buf = io.StringIO()
        rows = export_disclosures(db, start, end, buf)
    finally:
        db.close()
    return _written(args, buf.getvalue(), rows)


def figures_local(args: argparse.Namespace) -> int:
    """The month's published, anonymised figures (what /transparency serves)."""
    from tenants.months import previous_month
    from tenants.transparency import monthly_report, publishable

    config = load_config(args.config)
    period = args.period or previous_month(datetime.now(UTC), config.zone)
    db = _open_db(config.database_url)
    ledger_db = None
    try:
        viewing = None
        if config.billing.enabled:
            from billing.ledger import Ledger

            ledger_db = _open_db(config.billing.ledger) if config.billing.ledger else db
            viewing = Ledger(ledger_db, zone=config.zone).viewing_by_tenant(period)
        try:
            report = publishable(
                monthly_report(db, period, viewing_ms_by_tenant=viewing, zone=config.zone)
            )
        except ValueError as exc:
            raise CliError(str(exc), 2) from None
    finally:
        if ledger_db is not None and ledger_db is not db:
            ledger_db.close()
        db.close()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_figures(report)
    return 0


def _print_figures(report: dict[str, Any]) -> None:
    from tenants.transparency import ACTIVITIES

    print(f"CCTV network, {report['period']}: {report['cameras']} cameras,")
    print(f"  {report['cameras_with_privacy_masks']} with privacy masks")
    columns = ["organisations", "grants", *ACTIVITIES]
    if any("viewing_hours" in v for v in report["by_organisation_kind"].values()):
        columns.append("viewing_hours")
    print(f"  {'kind':<12}" + "".join(f"{c:>15}" for c in columns))
    for kind, entry in report["by_organisation_kind"].items():
        print(f"  {kind:<12}" + "".join(f"{entry.get(c, '')!s:>15}" for c in columns))
    print(f"  ({report['suppression']})")


def _list_fields(args: argparse.Namespace) -> dict[str, Any]:
    lo = day_range(args.from_day, args.from_day)[0] if args.from_day else None
    hi = day_range(args.to_day, args.to_day)[1] if args.to_day else None
    return {
        "limit": args.limit,
        "page": args.page,
        "from_time": lo and rfc3339(lo),
        "to_time": hi and rfc3339(hi),
    }


def _listed(args: argparse.Namespace, resp: Message) -> int:
    entries: Any = getattr(resp, "entries")  # noqa: B009 (a generated message)
    more = bool(getattr(resp, "more"))  # noqa: B009
    if args.json:
        body = {"entries": [as_dict(e) for e in entries], "more": more}
        print(json.dumps(body, indent=2, sort_keys=True))
        return 0
    for e in entries:
        when = e.time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        who = "/".join(x for x in (e.tenant, e.principal) if x) or "-"
        print(
            f"{e.seq}\t{when}\t{e.action}\t{who}\t{e.camera or '-'}\t{e.outcome}\t{e.detail_json}"
        )
    if more:
        print(f"(more: --page {args.page + 1})", file=sys.stderr)
    return 0


_FROM = arg("--from", dest="from_day", type=parse_day, help="YYYY-MM-DD")
_TO = arg("--to", dest="to_day", type=parse_day, help="YYYY-MM-DD (inclusive)")

VERBS = [
    Verb("audit", "verify", "verify every hash and checkpoint",
         Rpc(SERVICE, "Verify", lambda a: {}, _verified), local=verify_local),
    Verb("audit", "export", "export disclosures as CSV",
         Rpc(SERVICE, "ExportDisclosures", _export_fields,
             lambda a, r: _written(a, getattr(r, "csv"), getattr(r, "rows"))),  # noqa: B009
         (arg("--from", dest="from_day", type=parse_day, required=True, help="YYYY-MM-DD"),
          arg("--to", dest="to_day", type=parse_day, required=True,
              help="YYYY-MM-DD (inclusive)"),
          arg("--out", help="write to this file (default: standard output)")),
         local=export_local),
    Verb("audit", "figures", "the month's published anonymised figures",
         needs_local("figures are built from the data dir: use --local --config FILE"),
         (arg("--period", help="YYYY-MM (default: last full month)"),), local=figures_local),
    Verb("audit", "list", "list audit entries", Rpc(SERVICE, "ListEntries", _list_fields, _listed),
         (arg("--limit", type=int, default=50), arg("--page", type=int, default=0), _FROM, _TO)),
]  # fmt: skip

__all__ = ["VERBS", "export_local", "figures_local", "verify_local"]
