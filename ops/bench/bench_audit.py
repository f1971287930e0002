"""Audit log throughput: appends per second, and how long verification takes at scale.

    python ops/bench/bench_audit.py                       # SQLite file in a temp dir
    python ops/bench/bench_audit.py --appends 20000 --verify-entries 100000
    python ops/bench/bench_audit.py --db-url postgresql://user@127.0.0.1:5432/bench

Measures, on a fresh database:
1. single appends (each its own committed transaction, as the gateway does), per second;
2. filling to --verify-entries entries (batches of 1,000 appends per transaction), then
   the time to reopen the log (frontier rebuilt from the table), to verify_log the whole table,
   and to build + check one inclusion and one consistency proof;
3. the time to build the month's public anonymised figures (tenants.transparency) over it.

With --db-url the tables must not exist yet (use an empty database): the run appends to them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenants.audit import AuditAction, AuditLog, verify_log
from tenants.db import Database
from tenants.transparency import ACTIVITIES, monthly_report


def _entry_kwargs(i: int) -> dict[str, object]:
    return {
        "tenant": f"tenant{i % 12}",
        "principal": f"user{i % 97}",
        "camera": f"cam{i % 800}",
        "purpose": f"CAD {i}/24" if i % 3 == 0 else None,
        "outcome": "ok" if i % 10 else "denied",
        "detail": {"session": f"s{i}", "bytes": i * 1000, "protocol": "rtsp"},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--appends", type=int, default=10_000, help="single appends to time")
    ap.add_argument("--verify-entries", type=int, default=100_000, help="log size for verify")
    ap.add_argument("--db-url", default=None, help="default: a SQLite file in a temp dir")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="feedgate-audit-bench-") as tmp:
        url = args.db_url or f"sqlite:///{tmp}/audit.db"
        db = Database.open(url)
        key = Ed25519PrivateKey.generate()
        log = AuditLog(db, key)  # defaults: checkpoint every 256 entries or 5 s

        t0 = time.perf_counter()
        for i in range(args.appends):
            log.append(AuditAction.SESSION_START, **_entry_kwargs(i))  # type: ignore[arg-type]
        append_s = time.perf_counter() - t0
        rate = args.appends / append_s

        t0 = time.perf_counter()
        i = log.size()
        while i < args.verify_entries:
            with db.transaction():
                for _ in range(min(1000, args.verify_entries - i)):
                    log.append(AuditAction.PLAYBACK, **_entry_kwargs(i))  # type: ignore[arg-type]
                    i += 1
        fill_s = time.perf_counter() - t0
        log.close()
        n = log.size()

        t0 = time.perf_counter()
        reopened = AuditLog(db, key, checkpoint_interval=math.inf)
        reopen_s = time.perf_counter() - t0
        assert reopened.root() == log.root()

        t0 = time.perf_counter()
        report = verify_log(db, key.public_key())
        verify_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        seq, old = n // 3, n // 2 + 1
        leaf = next(reopened.entries(seq, seq + 1)).leaf_hash()
        inc = reopened.inclusion_proof(seq, n)
        con = reopened.consistency_proof(old, n)
        proofs_ok = AuditLog.verify_inclusion(
            leaf, seq, n, inc, reopened.root()
        ) and AuditLog.verify_consistency(old, n, reopened.root(old), reopened.root(), con)
        proof_s = time.perf_counter() - t0

        # The public monthly figures scan the whole month of entries (all of them are now).
        t0 = time.perf_counter()
        published = monthly_report(db, datetime.now(UTC).strftime("%Y-%m"))
        report_s = time.perf_counter() - t0
        counted = sum(
            sum(v for k, v in entry.items() if k in ACTIVITIES)
            for entry in published["by_organisation_kind"].values()
        )
        assert counted == n, (counted, n)

        figures = {
            "backend": db.dialect,
            "appends": args.appends,
            "appends_per_s": round(rate),
            "append_us": round(append_s / args.appends * 1e6, 1),
            "batched_appends_per_s": round((n - args.appends) / fill_s)
            if n > args.appends
            else None,
            "entries": n,
            "checkpoints": report.checkpoints,
            "reopen_s": round(reopen_s, 3),
            "verify_s": round(verify_s, 3),
            "verify_entries_per_s": round(n / verify_s),
            "verify_ok": report.ok,
            "proofs_s": round(proof_s, 4),
            "proof_hashes": [len(inc), len(con)],
            "proofs_ok": proofs_ok,
            "figures_s": round(report_s, 3),
            "figures_entries_per_s": round(n / report_s),
        }
        db.close()

    print(f"backend            {figures['backend']}")
    print(
        f"appends            {figures['appends_per_s']:,}/s "
        f"({figures['append_us']} µs each, one commit per append, {args.appends:,} appends)"
    )
    if figures["batched_appends_per_s"]:
        print(f"batched appends    {figures['batched_appends_per_s']:,}/s (1,000 per transaction)")
    print(f"log size           {n:,} entries, {figures['checkpoints']} checkpoints")
    print(f"reopen (frontier)  {figures['reopen_s']} s")
    print(
        f"verify_log         {figures['verify_s']} s "
        f"({figures['verify_entries_per_s']:,} entries/s), ok={figures['verify_ok']}"
    )
    print(
        f"proofs             {figures['proofs_s'] * 1000:.1f} ms for one inclusion "
        f"({len(inc)} hashes) + one consistency ({len(con)} hashes), ok={proofs_ok}"
    )
    print(
        f"published figures  {figures['figures_s']} s for a month of {n:,} entries "
        f"({figures['figures_entries_per_s']:,} entries/s)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if report.ok and proofs_ok else 1


if __name__ == "__main__":
    sys.exit(main())
