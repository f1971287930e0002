"""Nothing is lost or counted twice when the gateway is killed mid-session: kill -9 a real
`feedgate serve`, restart it on the same data, and read the ledger."""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from conftest import free_port, free_udp_pair, publish_argv, read_argv, wait_for

from tenants.tokens import SigningKey, TokenIssuer

SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[tenants]]
id = "police"
name = "Police"
kind = "police"
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
name = "officer"
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
"""

INTERVAL = 1.0


def _rows(db: Path) -> list[tuple[str, str, int, int, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT event_id, session_id, seq, duration_ms, start_at, end_at FROM usage_events"
        ).fetchall()


async def test_kill_9_loses_at_most_one_interval_and_counts_nothing_twice(tmp_path, procs):
    rtsp, http = free_port(), free_port()
    (tmp_path / "seed.toml").write_text(SEED)
    (tmp_path / "plans.toml").write_text(
        '[plans.p]\nprices = []\nzero_rated = true\n[assignments]\npolice = "p"\n'
    )
    cfg = tmp_path / "feedgate.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        f'[rtsp]\nhost = "127.0.0.1"\nport = {rtsp}\nrtp_port = {free_udp_pair()}\n'
        f"report_interval = {INTERVAL}\n"
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n[grpc]\nport = 0\n'
        '[tenancy]\nenabled = true\nseed = "seed.toml"\n'
        '[billing]\nenabled = true\nplans = "plans.toml"\n'
        '[[cameras]]\nid = "street"\nsource = "push"\n'
    )
    db = tmp_path / "var" / "feedgate.db"
    serve = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)]

    gateway = await procs(serve)
    await wait_for(lambda: "feedgate listening" in gateway.text, 30, what="the gateway")
    url = f"rtsp://127.0.0.1:{rtsp}/street"
    publisher = await procs(publish_argv(url.replace("rtsp://", "rtsp://encoder:enc@")))
    # The gateway made its token key on start; a token from it, as `feedgate token issue`.
    key = SigningKey.load_or_create(tmp_path / "var" / "keys" / "token-signing.pem")
    token = TokenIssuer([key]).issue(
        tenant="police", subject="officer", roles=["viewer"], ttl=timedelta(minutes=10)
    )
    viewer = await procs(read_argv(f"{url}?token={token}", seconds=60, decode=False))
    try:
        await wait_for(lambda: db.exists() and len(_rows(db)) >= 3, 30, what="3 intervals")
    except AssertionError:
        raise AssertionError(f"{gateway.text[-3000:]}\n---\n{viewer.text[-2000:]}") from None
    killed_at = time.time()
    gateway.kill(signal.SIGKILL)
    await gateway.wait(10)
    viewer.kill()
    publisher.kill()

    before = _rows(db)
    (session,) = {r[1] for r in before}
    seqs = sorted(r[2] for r in before)
    assert seqs == list(range(len(seqs)))  # dense: no interval of the session is missing
    metered_s = sum(r[3] for r in before) / 1000
    first_start = min(r[4] for r in before)
    started = datetime.fromisoformat(first_start.replace("Z", "+00:00")).timestamp()
    lived = killed_at - started
    # Everything up to the last full interval before the kill is in the ledger.
    assert lived - metered_s <= INTERVAL + 0.5, (lived, metered_s)

    # Restart on the same data: the crashed session is not re-counted, new usage adds up.
    gateway = await procs(serve)
    await wait_for(lambda: "feedgate listening" in gateway.text, 30, what="the restart")
    await procs(publish_argv(url.replace("rtsp://", "rtsp://encoder:enc@")))
    viewer = await procs(read_argv(f"{url}?token={token}", seconds=3, decode=False))
    assert await viewer.wait(30) == 0, viewer.text
    await wait_for(
        lambda: (
            any(r[1] != session for r in _rows(db))
            and any(r[1] != session and r[2] >= 1 for r in _rows(db))
        ),
        20,
        what="the new session's usage",
    )
    gateway.kill(signal.SIGTERM)
    await gateway.wait(20)
    after = _rows(db)
    ids = [r[0] for r in after]
    assert len(ids) == len(set(ids))
    assert [r for r in after if r[1] == session] == before  # the old session is unchanged
