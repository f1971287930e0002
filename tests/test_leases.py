"""A tenant's concurrent-stream cap holds across every process and node on the store, and a
crashed process's streams stop counting: at once when it restarts, after the lease lifetime if
it stays down (issue #9 finding 4)."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import Proc, free_port, free_udp_pair, publish_argv, wait_for
from rtsp_probe import Probe

from tenants.db import Database
from tenants.leases import LeaseStore, StreamCaps
from tenants.policy import Decision
from tenants.tokens import SigningKey, TokenIssuer


def test_cap_is_shared_and_leases_come_back(db_url: str) -> None:
    a = LeaseStore(Database.open(db_url), holder="gateway-a")
    b = LeaseStore(Database.open(db_url), holder="gateway-b")
    first = a.acquire("shop:g1", 2)
    second = b.acquire("shop:g1", 2)
    assert first and second
    assert a.acquire("shop:g1", 2) is None  # the other node's stream counts too
    assert b.acquire("shop:g1", 2) is None
    assert a.acquire("police:g2", 2) is not None  # caps are per tenant and grant
    b.release(second)
    assert a.acquire("shop:g1", 2) is not None


def test_a_dead_holders_leases_expire_and_renewal_keeps_live_ones(db_url: str) -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    live = LeaseStore(Database.open(db_url), holder="live", ttl=30)
    dead = LeaseStore(Database.open(db_url), holder="dead", ttl=30)
    assert live.acquire("t:g", 2, now) and dead.acquire("t:g", 2, now)
    later = now + timedelta(seconds=20)
    live.renew(later)  # the live gateway renews; the dead one cannot
    after = now + timedelta(seconds=40)
    assert live.count("t:g", after) == 1
    assert live.acquire("t:g", 2, after) is not None  # the dead holder's slot came back
    assert live.acquire("t:g", 2, after) is None


def test_a_restarted_holder_voids_its_earlier_incarnations_leases_only(db_url: str) -> None:
    old = LeaseStore(Database.open(db_url), holder="node-a/w0")
    other = LeaseStore(Database.open(db_url), holder="node-b/w0")
    anonymous = LeaseStore(Database.open(db_url))
    assert old.acquire("t:g", 4) and old.acquire("t:g", 4) and other.acquire("t:g", 4)
    assert anonymous.acquire("t:g", 4)
    assert old.acquire("t:g", 4) is None  # the cap is full
    # node-a is killed and starts again: its two streams are void, nobody else's are.
    new = LeaseStore(Database.open(db_url), holder="node-a/w0")
    assert new.voided == 2
    assert new.count("t:g") == 2
    assert new.acquire("t:g", 4) and new.acquire("t:g", 4)
    assert new.acquire("t:g", 4) is None
    # A store opened without a holder (a control-plane tool) voids nothing.
    assert LeaseStore(Database.open(db_url)).voided == 0
    assert new.count("t:g") == 4


def test_a_voided_incarnation_renews_nothing(db_url: str) -> None:
    """Two live processes given one holder name: the later one voids the earlier one's rows,
    and the earlier one learns it at its next renewal (it renews none of them)."""
    first = StreamCaps(LeaseStore(Database.open(db_url), holder="twin/w0"))
    assert first.acquire(_capped(3))
    assert first.renew() == (1, 1)
    LeaseStore(Database.open(db_url), holder="twin/w0")
    assert first.renew() == (0, 1)


def _capped(cap: int) -> Decision:
    return Decision(allow=True, status=200, reason="", tenant="t", grant_id="g", max_concurrent=cap)


def _take(db_url: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = LeaseStore(Database.open(db_url))
    out.put(sum(1 for _ in range(n) if store.acquire("busy:g", 10)))


def test_processes_racing_for_the_cap_never_exceed_it(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_take, args=(db_url, 8, out)) for _ in range(4)]
    for p in procs:
        p.start()
    got = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert got == 10
    assert LeaseStore(Database.open(db_url)).count("busy:g") == 10


SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
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
id = "guard"
tenant = "shop"
name = "Guard"
roles = ["viewer"]
[[cameras]]
id = "street"
owner = "council"
[[grants]]
id = "shop-street"
owner = "council"
grantee = "shop"
cameras = ["street"]
rights = ["live"]
max_concurrent_streams = 2
"""


async def test_after_kill_9_a_restarted_gateway_lets_capped_viewers_back_within_2_s(
    tmp_path: Path, procs
) -> None:
    """A partner capped at 2 streams watches both; `feedgate serve` is killed with SIGKILL
    and started again on the same data. Its dead streams no longer count: the partner's two
    viewers are back in within 2 s of the restart, not after the 15 s lease lifetime."""
    rtsp, http = free_port(), free_port()
    (tmp_path / "seed.toml").write_text(SEED)
    cfg = tmp_path / "feedgate.toml"
    cfg.write_text(
        'data_dir = "var"\n'
        f'[rtsp]\nhost = "127.0.0.1"\nport = {rtsp}\nrtp_port = {free_udp_pair()}\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n[grpc]\nport = 0\n'
        '[tenancy]\nenabled = true\nseed = "seed.toml"\n'
        '[[cameras]]\nid = "street"\nsource = "push"\n'
    )
    serve = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)]
    key = tmp_path / "var" / "keys" / "token-signing.pem"
    path = "street?token={}"

    async def start() -> Proc:
        gateway = await procs(serve)
        await wait_for(lambda: "feedgate listening" in gateway.text, 30, what="the gateway")
        await procs(publish_argv(f"rtsp://encoder:enc@127.0.0.1:{rtsp}/street"))
        return gateway

    async def viewer(token: str) -> tuple[Probe, int]:
        probe = await Probe.connect("127.0.0.1", rtsp)
        return probe, await probe.play(path.format(token))

    gateway = await start()
    token = TokenIssuer([SigningKey.load_or_create(key)]).issue(
        tenant="shop", subject="guard", roles=["viewer"], ttl=timedelta(minutes=10)
    )
    viewers = []
    deadline = time.monotonic() + 30
    while len(viewers) < 2:  # until the publisher is up
        probe, status = await viewer(token)
        if status == 200:
            viewers.append(probe)
        else:
            await probe.close()
            assert time.monotonic() < deadline, f"no stream to watch: {status}"
            await asyncio.sleep(0.2)
    third, status = await viewer(token)
    assert status == 453  # the cap is full
    gateway.kill(signal.SIGKILL)  # while both stream
    await gateway.wait(10)
    for probe in (*viewers, third):
        await probe.close()
    gateway = await start()
    restarted = time.monotonic()
    # Until the publisher is back the camera has no source (404/503): caps are not asked yet.
    statuses: list[int] = []
    back: list[Probe] = []
    camera_up: float | None = None
    while len(back) < 2 and time.monotonic() - restarted < 30:
        probe, status = await viewer(token)
        statuses.append(status)
        if status not in (404, 503) and camera_up is None:
            camera_up = time.monotonic()
        if status == 200:
            back.append(probe)
        else:
            await probe.close()
            await asyncio.sleep(0.05)
    for probe in back:
        await probe.close()
    assert 453 not in statuses, f"locked out by the dead process's leases: {statuses}"
    assert len(back) == 2 and camera_up is not None, statuses
    took, after_camera = time.monotonic() - restarted, time.monotonic() - camera_up
    print(
        f"\ncapped viewers back {after_camera:.2f} s after their camera, {took:.2f} s after start"
    )
    assert after_camera < 2.0 and took < 10, (after_camera, took)
    assert "dropped 2 stream lease(s) of its previous run" in gateway.text
