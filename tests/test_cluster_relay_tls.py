"""The inter-node relay over TLS (issue #15, clusterkeys scope 3): every node's relay listener
speaks RTSPS with the cluster certificate named in ``[keys]``, requires a client certificate the
cluster CA signed, and each edge checks the owner's certificate against that CA; Digest with the
cluster secret and the lease's fencing token still apply inside. A cluster without the files
refuses to start unless ``cluster.loopback_only`` (relay on loopback, plaintext, a warning).

Before: the relay was plaintext RTSP (Digest only): anyone on the nodes' network could read every
relayed camera off the wire, and there was no setting to encrypt it."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cluster_fixtures import Cluster, to_toml
from conftest import frames_of, read_argv, wait_for
from test_cluster_media import camera_gateway, camera_readers
from test_cluster_media_acceptance import cluster_settings, node_records

from gateway.config import ConfigError, load_config

DESCRIBE = (
    b"DESCRIBE rtsp://x/street?fence=1 RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
)


def _config(tmp_path: Path, cluster: dict[str, Any], keys: dict[str, str] | None = None) -> Path:
    path = tmp_path / "node.toml"
    data: dict[str, Any] = {"cluster": {"redis_url": "redis://127.0.0.1:1/0", "secret": "s"}}
    data["cluster"].update(cluster)
    if keys:
        data["keys"] = keys
    path.write_text(to_toml(data))
    return path


def test_a_cluster_without_relay_tls_refuses_unless_it_is_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, {}), env={})
    assert e.value.key == "keys.cluster_cert" and "TLS" in e.value.reason
    with pytest.raises(ConfigError) as e:
        load_config(
            _config(tmp_path, {}, {"cluster_cert": "c.pem", "cluster_key": "c.key"}), env={}
        )
    assert e.value.key == "keys.cluster_ca"
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, {"loopback_only": True, "relay_host": "10.0.0.5"}), env={})
    assert e.value.key == "cluster.loopback_only" and "10.0.0.5" in e.value.reason
    with pytest.raises(ConfigError) as e:
        load_config(
            _config(tmp_path, {"loopback_only": True, "advertise": "10.0.0.5:8555"}), env={}
        )
    assert e.value.key == "cluster.loopback_only"
    cfg = load_config(_config(tmp_path, {"loopback_only": True}), env={})
    assert cfg.cluster.loopback_only
    keys = {"cluster_cert": "k/c.pem", "cluster_key": "k/c.key", "cluster_ca": "k/ca.pem"}
    cfg = load_config(_config(tmp_path, {}, keys), env={})
    assert cfg.keys.cluster_ca == str(tmp_path / "k" / "ca.pem")  # relative to the file


def test_keys_init_makes_the_cluster_ca_and_certificate(tmp_path: Path) -> None:
    keys = {"cluster_cert": "k/c.pem", "cluster_key": "k/c.key", "cluster_ca": "k/ca.pem"}
    cfg = _config(tmp_path, {}, keys)
    run = [sys.executable, "-m", "gateway.cli", "keys", "init", "--config", str(cfg)]
    r = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    for name in ("c.pem", "c.key", "ca.pem", "ca.key"):
        assert (tmp_path / "k" / name).exists(), name
    assert (tmp_path / "k" / "c.key").stat().st_mode & 0o077 == 0
    assert "keep it off them" in r.stdout
    from gateway.cluster.tls import relay_tls

    tls = relay_tls(load_config(cfg, env={}))
    assert tls is not None and tls.name == "feedgate-cluster"
    again = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert "cluster TLS" not in again.stdout
    # A file that cannot be used is a config error naming the key and the file.
    (tmp_path / "k" / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as e:
        relay_tls(load_config(cfg, env={}))
    assert e.value.key == "keys.cluster_ca" and "ca.pem" in str(e.value)
    (tmp_path / "k" / "c.key").unlink()
    with pytest.raises(ConfigError) as e:
        relay_tls(load_config(cfg, env={}))
    assert e.value.key == "keys.cluster_key" and "c.key" in str(e.value)


async def _first_bytes(host: str, port: int, ctx: ssl.SSLContext | None) -> bytes:
    """What the relay listener says to a DESCRIBE from this client ("" when it hangs up)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host, port, ssl=ctx, server_hostname="feedgate-cluster" if ctx else None
        ),
        10,
    )
    try:
        writer.write(DESCRIBE)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), 10)
    except (ConnectionError, ssl.SSLError):
        return b""
    finally:
        writer.close()


async def test_relays_run_over_tls_and_a_client_without_the_cluster_ca_fails(
    cluster_factory, redis_server, procs
) -> None:
    async with camera_gateway(procs) as camera:
        cluster: Cluster = await cluster_factory(
            n=2,
            cameras=[{"id": "street", "source": camera.url("cam1")}],
            config=lambda i: {
                **cluster_settings(redis_server.url)(i),
                "billing": {"enabled": False},
            },
        )
        police = cluster.token("police", "officer")
        await wait_for(
            lambda: sum("street" in r["owned"] for r in node_records(cluster).values()) == 1,
            30,
            what="one owner of street",
        )
        # A viewer on each node: the camera sees one connection, so one node relays it from
        # the other, over the TLS listener below (it speaks nothing else).
        viewers = [
            await procs(read_argv(n.url(f"street?token={police}"), seconds=3))
            for n in cluster.nodes
        ]
        for v in viewers:
            assert await v.wait(60) == 0, v.text
            assert frames_of(v.text) >= 50, v.text
        assert camera_readers(camera) == 1
        records = node_records(cluster)
        assert sum("street" in r["relayed"] for r in records.values()) == 1

        keys = cluster.keys
        for rec in records.values():
            host, _, port_s = str(rec["relay"]).rpartition(":")
            port = int(port_s)
            # Plain RTSP gets no RTSP answer: the listener only does TLS.
            assert not (await _first_bytes(host, port, None)).startswith(b"RTSP/1.0")
            # A TLS client that trusts only the system's CAs fails to verify the node.
            system = ssl.create_default_context()
            with pytest.raises(ssl.SSLCertVerificationError):
                await _first_bytes(host, port, system)
            # Trusting the cluster CA but presenting no certificate: the node hangs up.
            no_cert = ssl.create_default_context(cafile=keys.cluster_ca)
            assert await _first_bytes(host, port, no_cert) == b""
            # A cluster certificate gets in, and Digest with the cluster secret is still asked.
            member = ssl.create_default_context(cafile=keys.cluster_ca)
            member.load_cert_chain(keys.cluster_cert, keys.cluster_key)
            answer = await _first_bytes(host, port, member)
            assert answer.startswith(b"RTSP/1.0 401"), answer
