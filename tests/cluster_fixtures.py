"""Several real ``feedgate serve`` nodes as one cluster, for the cluster tests (issue #15).

``cluster_factory`` starts N (default 3) ``feedgate serve`` processes on free loopback ports, one
RTSP worker each, against one PostgreSQL cluster of the test's own (``private_postgres``, so a
test may kill -9 it) and one Redis server (``redis_server``). The nodes share the seed file and
the key files their ``[keys]`` name (:func:`cluster_keys`: token key directory, audit and
evidence keys), and each has its own ``node_id`` and ``data_dir``. They start in parallel.

    async def test_x(cluster_factory):
        cluster = await cluster_factory(n=3, cameras=[{"id": "street"}])
        token = cluster.token("police", "officer")
        node = cluster.nodes[1]
        node.url("street?token=...")           # rtsp://127.0.0.1:<port>/street?token=...
        await node.kill()                      # kill -9, reaped
        await node.start()                     # the same ports, data and node_id
        await cluster.kill_postgres()          # kill -9 of the postmaster and its backends
        await cluster.start_postgres()         # the same port and data
        await cluster.kill_redis(); await cluster.start_redis()

``config`` takes per-section overrides (``{"tenancy": {"recheck_interval": 0.1}}``), given to
every node, or per node as a callable of the node's index.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Proc, free_port, free_udp_pair, spawn, wait_for
from fixtures_db import PostgresServer, fresh_database
from fixtures_redis import RedisServer

from gateway.cluster.tls import make_cluster_pki
from gateway.config import KeysConfig
from tenants.tokens import SigningKey, TokenIssuer
from tenants.tokens.keyring import KeyRing

__all__ = ["CLUSTER_SEED", "Cluster", "Node", "cluster_factory", "cluster_keys", "to_toml"]

START_TIMEOUT = 60.0  # three nodes importing aiortc and PyAV at once on 2 loaded cores
# A port picked free can be taken before the node binds it (by another worker's connection, from
# the same ephemeral range): a node that never listened yet is given new ports and started again.
BIND_ATTEMPTS = 3

# Tenants for most cluster tests: the council runs the network and pushes "street" (its
# encoder has Digest credentials), the police watch it, a shop watches it under a cap of 2.
CLUSTER_SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[tenants]]
id = "police"
name = "Metropolitan Police"
kind = "police"
[[tenants]]
id = "shop"
name = "Shopping centre"
kind = "retail"

[[principals]]
id = "encoder"
tenant = "council"
name = "Encoder"
kind = "service"
roles = ["operator"]
digest_password = "enc"
[[principals]]
id = "council-admin"
tenant = "council"
name = "Council admin"
roles = ["admin", "operator", "auditor"]
[[principals]]
id = "officer"
tenant = "police"
name = "Officer"
roles = ["viewer"]
[[principals]]
id = "guard"
tenant = "shop"
name = "Guard"
roles = ["viewer"]

[[cameras]]
id = "street"
owner = "council"

[[grants]]
id = "police-street"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live", "playback"]
[[grants]]
id = "shop-street"
owner = "council"
grantee = "shop"
cameras = ["street"]
rights = ["live"]
max_concurrent_streams = 2
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def to_toml(data: Mapping[str, Any]) -> str:
    """Just enough TOML for a config: top-level keys, [sections] and [[arrays of tables]]."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, Sequence[Mapping[str, Any]]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif isinstance(value, list | tuple) and value and isinstance(value[0], Mapping):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines.append(f"\n[{key}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for key, items in arrays:
        for item in items:
            lines.append(f"\n[[{key}]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


@dataclass
class Node:
    """One ``feedgate serve`` process of the cluster; ports, data and node_id survive restarts."""

    cluster: Cluster
    index: int
    node_id: str
    dir: Path
    settings: dict[str, Any]
    # Free ports, distinct from every other port of the cluster (picked in __post_init__).
    rtsp_port: int = 0
    http_port: int = 0
    grpc_port: int = 0
    rtp_port: int = 0
    proc: Proc | None = None
    logs: list[str] = field(default_factory=list)  # output of earlier incarnations
    listened: bool = False  # once it has, its ports are its own for good (tests keep its URLs)

    def __post_init__(self) -> None:
        self._pick_ports()

    def _pick_ports(self) -> None:
        for name in ("rtsp_port", "http_port", "grpc_port"):
            setattr(self, name, self.cluster.free_port())
        self.rtp_port = free_udp_pair()

    @property
    def config_path(self) -> Path:
        return self.dir / "feedgate.toml"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def config(self) -> dict[str, Any]:
        c = self.cluster
        generated: dict[str, Any] = {
            "data_dir": "data",
            "node_id": self.node_id,
            "log_level": "INFO",
            "rtsp": {
                "host": "127.0.0.1",
                "port": self.rtsp_port,
                "rtp_port": self.rtp_port,
                "workers": 1,
                "report_interval": 0.5,
            },
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "grpc": {"host": "127.0.0.1", "port": self.grpc_port},
            "tenancy": {
                "enabled": True,
                "database": c.database_url,
                "seed": str(c.seed_path),
                "recheck_interval": 0.25,
            },
            "billing": {
                "enabled": True,
                "redis_url": c.redis.url,
                "ledger": c.database_url,
                "plans": str(c.plans_path),
                "consumers": 1,
            },
            "keys": {
                "token_dir": c.keys.token_dir,
                "audit_key": c.keys.audit_key,
                "evidence_key": c.keys.evidence_key,
                "cluster_cert": c.keys.cluster_cert,
                "cluster_key": c.keys.cluster_key,
                "cluster_ca": c.keys.cluster_ca,
                "reload_interval": 0.5,
            },
            "webrtc": {"udp_port_min": 0, "udp_port_max": 0, "host_addresses": ["127.0.0.1"]},
        }
        return _merge(generated, self.settings)

    def write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(to_toml(self.config()))

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_path)]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.proc.returncode is None

    @property
    def text(self) -> str:
        """This incarnation's output (stdout and stderr)."""
        return self.proc.text if self.proc is not None else ""

    @property
    def all_text(self) -> str:
        return "".join(self.logs) + self.text

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.rtsp_port}/{path}"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}/{path.lstrip('/')}"

    async def start(self, *, wait: bool = True) -> None:
        if self.running:
            return
        if self.proc is not None:
            self.logs.append(self.proc.text)
        self.write_config()
        self.proc = await spawn(self.argv)
        if wait:
            await self.ready()

    async def ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until this incarnation says it listens; fails early, with its output, if it exits
        (after new ports and another start, if it never listened and could not bind)."""
        for attempt in range(1, BIND_ATTEMPTS + 1):
            try:
                await self._listening(timeout)
            except AssertionError:
                assert self.proc is not None
                exited = self.proc.proc.returncode is not None
                unbound = "address already in use" in self.text.lower()
                if self.listened or not (exited and unbound) or attempt == BIND_ATTEMPTS:
                    raise
                self._pick_ports()
                await self.start(wait=False)
            else:
                self.listened = True
                return

    async def _listening(self, timeout: float) -> None:
        def up() -> bool:
            assert self.proc is not None
            if self.proc.proc.returncode is not None:
                raise AssertionError(
                    f"node {self.node_id} exited {self.proc.proc.returncode}:\n{self.text[-4000:]}"
                )
            return "feedgate listening" in self.text

        try:
            await wait_for(up, timeout, 0.1, what=f"node {self.node_id} to listen")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.text[-4000:]}") from None

    async def kill(self) -> None:
        """kill -9 (its whole process group), reaped."""
        if self.proc is not None and self.running:
            self.proc.kill(signal.SIGKILL)
            await self.proc.wait(10)

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit status."""
        if self.proc is None or not self.running:
            return None if self.proc is None else self.proc.proc.returncode
        self.proc.kill(signal.SIGTERM)
        try:
            return await self.proc.wait(timeout)
        except TimeoutError:
            self.proc.kill(signal.SIGKILL)
            return await self.proc.wait(10)

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def get(self, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.get(self.http(path), headers=headers, **kw)


@dataclass
class Cluster:
    root: Path
    postgres: PostgresServer
    database_url: str
    redis: RedisServer
    seed_path: Path
    plans_path: Path
    nodes: list[Node] = field(default_factory=list)
    _ports: set[int] = field(default_factory=set)

    def free_port(self) -> int:
        """A free TCP port no node of this cluster has been given (a port just closed may be
        handed out again at once: two of one node's listeners once got the same one)."""
        while True:
            port = free_port()
            if port not in self._ports:
                self._ports.add(port)
                return port

    @property
    def keys(self) -> KeysConfig:
        return cluster_keys(self.root / "keys")

    def issuer(self) -> TokenIssuer:
        """Our issuer as every node builds it, from the shared key directory's schedule."""
        ring = KeyRing(self.keys.token_dir)
        return TokenIssuer(ring.load().signing_keys)

    def token(
        self,
        tenant: str,
        subject: str,
        roles: Sequence[str] = ("viewer",),
        ttl: float = 600.0,
        **kw: Any,
    ) -> str:
        """A token signed with the cluster's key file, as any node would sign it."""
        return self.issuer().issue(
            tenant=tenant, subject=subject, roles=list(roles), ttl=timedelta(seconds=ttl), **kw
        )

    async def start(self) -> None:
        """Every stopped node, in parallel."""
        await asyncio.gather(*(n.start(wait=False) for n in self.nodes if not n.running))
        await asyncio.gather(*(n.ready() for n in self.nodes))

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes))

    async def kill_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.kill)

    async def start_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.start)

    async def kill_redis(self) -> None:
        await asyncio.to_thread(self.redis.kill)

    async def start_redis(self) -> None:
        await asyncio.to_thread(self.redis.start)


def cluster_keys(directory: Path) -> KeysConfig:
    """The [keys] of a cluster whose key files are in ``directory`` (made the first time, as
    `feedgate keys init` makes them): a token key directory, the audit and evidence keys, the
    relay's TLS certificate, key and cluster CA."""
    keys = KeysConfig(
        token_dir=str(directory / "tokens"),
        audit_key=str(directory / "audit-signing.pem"),
        evidence_key=str(directory / "evidence-signing.pem"),
        cluster_cert=str(directory / "cluster.pem"),
        cluster_key=str(directory / "cluster.key"),
        cluster_ca=str(directory / "cluster-ca.pem"),
    )
    ring = KeyRing(keys.token_dir)
    if not Path(keys.token_dir).exists():
        ring.add(datetime.now(UTC) - timedelta(seconds=1))
    SigningKey.load_or_create(Path(keys.audit_key))
    SigningKey.load_or_create(Path(keys.evidence_key))
    # The relays between nodes run over TLS, both ends verified by this CA.
    make_cluster_pki(
        Path(keys.cluster_ca), Path(keys.cluster_cert), Path(keys.cluster_key), "feedgate-cluster"
    )
    return keys


ClusterFactory = Callable[..., Awaitable[Cluster]]

DEFAULT_PLANS = '[plans.p]\nprices = []\nzero_rated = true\n[assignments]\npolice = "p"\n'


@pytest.fixture
async def cluster_factory(
    tmp_path: Path, private_postgres: PostgresServer, redis_server: RedisServer
) -> AsyncIterator[ClusterFactory]:
    """``await cluster_factory(n=3, seed=CLUSTER_SEED, cameras=[...], config={...})``: the
    nodes started and listening. Every node is stopped when the test ends."""
    made: list[Cluster] = []
    databases: list[Any] = []

    async def make(
        n: int = 3,
        *,
        seed: str = CLUSTER_SEED,
        plans: str = DEFAULT_PLANS,
        cameras: Sequence[Mapping[str, Any]] | Callable[[int], Sequence[Mapping[str, Any]]] = (
            {"id": "street", "source": "push"},
        ),
        config: Mapping[str, Any] | Callable[[int], Mapping[str, Any]] = {},  # noqa: B006
        start: bool = True,
    ) -> Cluster:
        root = tmp_path / f"cluster{len(made)}"
        root.mkdir()
        db = fresh_database(private_postgres, "cluster")
        databases.append(db)
        url = db.__enter__()
        (root / "seed.toml").write_text(seed)
        (root / "plans.toml").write_text(plans)
        cluster = Cluster(
            root, private_postgres, url, redis_server, root / "seed.toml", root / "plans.toml"
        )
        for i in range(n):
            settings = dict(config(i) if callable(config) else config)
            cams = cameras(i) if callable(cameras) else cameras
            settings["cameras"] = [dict(c) for c in cams]
            cluster.nodes.append(Node(cluster, i, f"node{i + 1}", root / f"node{i + 1}", settings))
        made.append(cluster)
        if start:
            await cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            if not private_postgres.running:
                await cluster.start_postgres()
            if not cluster.redis.running:
                await cluster.start_redis()
            await cluster.stop()
        for db in reversed(databases):
            db.__exit__(None, None, None)
