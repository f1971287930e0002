"""One identity for the cluster (issue #15.1): every node loads the same token signing keys and
audit checkpoint key from the files ``[keys]`` names, never keys of its own; token keys rotate
by file layout with several kids published and an overlap.

Before: each node made its own keys in its data_dir, so a token issued by node A got
``401 unknown_kid`` on node B, and the shared audit log's checkpoints were signed by several
keys ("bad signature")."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cluster_fixtures import Cluster, Node, cluster_keys, to_toml
from conftest import publish_argv, wait_for
from rtsp_probe import Probe
from whep_client import WhepClient, gather_on_loopback

from gateway.config import ConfigError, load_config
from tenants.tokens import SigningKey, TokenError, TokenIssuer, TokenVerifier
from tenants.tokens.keyring import KeyRing, KeyRingError, RingKey, schedule

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def ring_key(starts: datetime) -> RingKey:
    return RingKey(SigningKey.generate(), starts, Path(f"token-{starts:%Y%m%dT%H%M%SZ}.pem"))


# ------------------------------------------------------------------ the schedule, by the clock


def test_the_newest_started_key_signs_and_a_later_one_is_published_ahead() -> None:
    a, b, c = ring_key(T0), ring_key(T0 + DAY), ring_key(T0 + 2 * DAY)
    s = schedule([c, a, b], T0 + DAY + timedelta(minutes=1), overlap=DAY)
    assert s.current is b
    assert s.upcoming == (c,)  # published before it signs: every node knows it first
    assert [k for k, _ in s.retiring] == [a]
    assert s.retiring[0][1] == b.starts + DAY  # a verifies for the overlap after b started
    assert s.kids == (b.kid, c.kid, a.kid)  # TokenIssuer: the first signs
    assert [e.state for e in s.entries()] == ["retiring", "current", "next"]


def test_a_replaced_key_expires_after_the_overlap() -> None:
    a, b = ring_key(T0), ring_key(T0 + timedelta(hours=1))
    during = schedule([a, b], T0 + timedelta(hours=1) + DAY - timedelta(seconds=1), overlap=DAY)
    assert a.kid in during.kids
    after = schedule([a, b], T0 + timedelta(hours=1) + DAY, overlap=DAY)
    assert after.kids == (b.kid,) and after.expired == (a,)


def test_a_directory_whose_only_key_is_still_to_come_signs_with_it() -> None:
    a = ring_key(T0 + DAY)
    assert schedule([a], T0, overlap=DAY).current is a


def test_tokens_of_a_retiring_key_verify_and_of_an_expired_key_do_not(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path, overlap=DAY)
    old = ring.add(T0 - timedelta(hours=2))
    new = ring.add(T0 - timedelta(hours=1))
    issuer = TokenIssuer([old.key])
    token = issuer.issue(tenant="police", subject="officer", now=T0 - timedelta(minutes=90))
    issuer.set_keys(ring.load(T0).signing_keys)
    verifier = TokenVerifier(issuer)
    assert issuer.keys[0].kid == new.kid
    assert verifier.verify(token, now=T0 - timedelta(minutes=80)).subject == "officer"
    issuer.set_keys(ring.load(T0 + DAY).signing_keys)  # old retired a day after new started
    with pytest.raises(TokenError) as e:
        verifier.verify(token, now=T0 - timedelta(minutes=80))
    assert e.value.reason == "unknown_kid"


def test_a_key_file_that_is_not_an_ed25519_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "token-20261201T120000Z.pem").write_text("not a key")
    with pytest.raises(KeyRingError, match=r"token-20261201T120000Z\.pem"):
        KeyRing(tmp_path).read()


def test_rotate_and_prune_on_the_files(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "tokens", overlap=DAY)
    first = ring.add(T0)
    second = ring.rotate(T0 + timedelta(hours=1), start_in=timedelta(seconds=60))
    assert second.starts == T0 + timedelta(hours=1, seconds=60)
    assert (second.path.stat().st_mode & 0o777) == 0o600
    assert ring.load(T0 + timedelta(hours=1)).current.kid == first.kid  # not yet
    assert ring.prune(T0 + timedelta(hours=2)) == []
    assert ring.prune(second.starts + DAY) == [first.path] and not first.path.exists()


# ------------------------------------------------------------------ config and the CLI


def _clustered_toml(tmp_path: Path, keys: dict[str, str] | None = None) -> Path:
    path = tmp_path / "node.toml"
    data: dict[str, object] = {
        "tenancy": {"enabled": True, "database": "postgresql://u@127.0.0.1:1/feedgate"}
    }
    if keys is not None:
        data["keys"] = keys
    path.write_text(to_toml(data))
    return path


def test_a_clustered_config_without_shared_keys_is_an_error_naming_the_key(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_clustered_toml(tmp_path), env={})
    assert e.value.key == "keys.token_dir" and "shared" in e.value.reason
    with pytest.raises(ConfigError) as e:
        load_config(_clustered_toml(tmp_path, {"token_dir": "k/tokens"}), env={})
    assert e.value.key == "keys.audit_key"
    cfg = load_config(
        _clustered_toml(
            tmp_path, {"token_dir": "k/t", "audit_key": "k/a.pem", "evidence_key": "k/e.pem"}
        ),
        env={},
    )
    assert cfg.keys.token_dir == str(tmp_path / "k" / "t")  # relative to the config file


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_to_make_keys_of_its_own_when_clustered(tmp_path: Path) -> None:
    cfg = _clustered_toml(
        tmp_path, {"token_dir": "k/t", "audit_key": "k/a.pem", "evidence_key": "k/e.pem"}
    )
    r = _cli("serve", "--config", str(cfg))
    assert r.returncode == 2
    assert "keys.token_dir" in r.stderr and str(tmp_path / "k" / "t") in r.stderr
    assert not (tmp_path / "k").exists()  # nothing generated

    r = _cli("keys", "init", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k" / "a.pem").exists() and (tmp_path / "k" / "e.pem").exists()
    (tmp_path / "k" / "a.pem").unlink()
    r = _cli("serve", "--config", str(cfg))
    assert r.returncode == 2 and "keys.audit_key" in r.stderr and "a.pem" in r.stderr


def test_keys_cli_rotates_lists_and_prunes(tmp_path: Path) -> None:
    cfg = _clustered_toml(
        tmp_path, {"token_dir": "k/t", "audit_key": "k/a.pem", "evidence_key": "k/e.pem"}
    )
    assert _cli("keys", "init", "--config", str(cfg)).returncode == 0
    r = _cli("keys", "rotate", "--config", str(cfg), "--start-in", "3600")
    assert r.returncode == 0, r.stderr
    listing = _cli("keys", "list", "--config", str(cfg)).stdout.splitlines()
    tokens = [line for line in listing if not line.startswith("audit ")]
    assert [line.split()[2] for line in tokens] == ["current", "next"]
    assert _cli("keys", "prune", "--config", str(cfg)).stdout.strip() == "no expired keys"


# ------------------------------------------------------------------ three real nodes


def tee_publish_argv(urls: list[str]) -> list[str]:
    """One ffmpeg encoding once and publishing the same stream to every node."""
    argv = publish_argv(urls[0])
    i = argv.index("libx264") + 1
    argv = [*argv[:i], "-profile:v", "baseline", *argv[i:]]
    out = argv.index("-f", argv.index("libx264"))
    outputs = "|".join(f"[f=rtsp:rtsp_transport=tcp]{u}" for u in urls)
    return [*argv[:out], "-map", "0:v", "-f", "tee", outputs]


def encoder_url(node: Node) -> str:
    return f"rtsp://encoder:enc@127.0.0.1:{node.rtsp_port}/street"


async def _plays_rtsp(node: Node, token: str) -> int:
    probe = await Probe.connect("127.0.0.1", node.rtsp_port)
    try:
        status = await probe.play(f"street?token={token}")
        if status == 200:
            await wait_for(lambda: probe.media_bytes > 0, 15, what=f"media from {node.node_id}")
        return status
    finally:
        await probe.close()


async def _plays_whep(node: Node, token: str) -> int:
    client = WhepClient(node.http("whep/street"), token=token)
    async with aiohttp.ClientSession() as http:
        try:
            status = await client.connect(http)
            if status == 201:
                await wait_for(
                    lambda: client.received.frames >= 5, 20, what=f"WHEP from {node.node_id}"
                )
            return status
        finally:
            await client.close()


async def _published(cluster: Cluster, token: str) -> None:
    """Until every node has the camera (a PLAY gets 200)."""
    for node in cluster.nodes:
        for _ in range(100):
            if await _plays_rtsp(node, token) == 200:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"street never played on {node.node_id}:\n{node.text[-3000:]}")


async def _issue(node: Node, admin: str, subject: str, tenant: str) -> str:
    async with aiohttp.ClientSession() as http:
        body = {"tenant": tenant, "subject": subject, "roles": ["viewer"], "ttl_seconds": 600}
        headers = {"Authorization": f"Bearer {admin}"}
        async with http.post(node.http("v1/tokens"), json=body, headers=headers) as r:
            assert r.status == 201, await r.text()
            return str((await r.json())["token"])


async def test_a_token_issued_by_any_node_plays_on_every_node(cluster_factory, procs) -> None:
    gather_on_loopback()
    cluster = await cluster_factory()
    await procs(
        tee_publish_argv(
            [n.url("street").replace("//", "//encoder:enc@", 1) for n in cluster.nodes]
        )
    )
    admin = cluster.token("council", "council-admin", roles=["admin"])
    await _published(cluster, admin)
    jwks = [(await n.get(".well-known/jwks.json")).json() for n in cluster.nodes]
    assert jwks[0] == jwks[1] == jwks[2]  # one identity

    for issuing in cluster.nodes:
        token = await _issue(issuing, admin, "officer", "police")
        for node in cluster.nodes:
            assert await _plays_rtsp(node, token) == 200, (issuing.node_id, node.node_id)
            assert (await node.get("v1/sessions", token)).status_code != 401
        # HTTP: a WHEP viewer of another node plays with the same token.
        other = cluster.nodes[(issuing.index + 1) % 3]
        assert await _plays_whep(other, token) == 201, (issuing.node_id, other.node_id)

    # Issue #15.5: the usage stream's consumers are named for the nodes, not their one host.
    r = cluster.redis.client()
    await wait_for(
        lambda: len(r.xinfo_consumers("feedgate:usage", "ledger")) == 3, 20, what="3 consumers"
    )
    names = {c["name"].decode() for c in r.xinfo_consumers("feedgate:usage", "ledger")}
    r.close()
    assert names == {"node1-w0", "node2-w0", "node3-w0"}


async def test_a_rotated_key_is_published_on_every_node_and_old_tokens_keep_playing(
    cluster_factory, procs
) -> None:
    cluster = await cluster_factory()
    await procs(
        tee_publish_argv(
            [n.url("street").replace("//", "//encoder:enc@", 1) for n in cluster.nodes]
        )
    )
    admin = cluster.token("council", "council-admin", roles=["admin"])
    await _published(cluster, admin)
    before = await _issue(cluster.nodes[0], admin, "officer", "police")

    r = await asyncio.to_thread(
        _cli, "keys", "rotate", "--config", str(cluster.nodes[0].config_path), "--start-in", "2"
    )
    assert r.returncode == 0, r.stderr
    new_kid = r.stdout.split()[0]

    async def kids(node: Node) -> list[str]:
        return [k["kid"] for k in (await node.get(".well-known/jwks.json")).json()["keys"]]

    for node in cluster.nodes:  # published ahead of signing (reload_interval 0.5 s)
        for _ in range(100):
            if new_kid in await kids(node):
                break
            await asyncio.sleep(0.1)
        assert new_kid in await kids(node), node.node_id
    for _ in range(100):  # once its time comes, every node signs with it
        after = await _issue(cluster.nodes[2], admin, "officer", "police")
        if _kid(after) == new_kid:
            break
        await asyncio.sleep(0.1)
    assert _kid(after) == new_kid and _kid(before) != new_kid
    for node in cluster.nodes:
        assert await _plays_rtsp(node, before) == 200, node.node_id  # the overlap
        assert await _plays_rtsp(node, after) == 200, node.node_id


def _kid(token: str) -> str:
    import jwt

    return str(jwt.get_unverified_header(token)["kid"])


def test_cluster_keys_are_what_keys_init_makes(tmp_path: Path) -> None:
    keys = cluster_keys(tmp_path / "keys")
    assert KeyRing(keys.token_dir).load().current.path.name.startswith("token-")
    assert SigningKey.load(Path(keys.audit_key)).kid != SigningKey.load(Path(keys.evidence_key)).kid
    with pytest.raises(FileNotFoundError):
        SigningKey.load(tmp_path / "missing.pem")


def test_usage_consumers_are_named_for_the_node_not_the_host(tmp_path: Path) -> None:
    """Two nodes on one host: before, both consumers were '<host>-w0' (one consumer in Redis's
    eyes, each acking and claiming the other's entries)."""
    from dataclasses import replace

    from gateway.config import BillingConfig, Config, TenancyConfig
    from gateway.metering import Metering
    from tenants.db import Database

    names = []
    for node in ("north", "south"):
        config = replace(
            Config(),
            node_id=node,
            data_dir=str(tmp_path / node),
            tenancy=TenancyConfig(enabled=True),
            billing=BillingConfig(enabled=True, redis_url="redis://127.0.0.1:1/0", consumers=2),
        )
        db = Database.open(f"sqlite://{tmp_path / node}.db")
        try:
            names += [c.consumer for c in Metering(config, db).consumers]
        finally:
            db.close()
    assert names == ["north-w0", "north-w0-c1", "south-w0", "south-w0-c1"]
