"""The ``[cluster]`` config section: several ``feedgate serve`` nodes as one gateway.

Kept apart from :mod:`gateway.config` (which imports it) so the cluster's knobs live with the
code that reads them."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass

from gateway.configpaths import ConfigPath


def _redis_url(value: str) -> str:
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be redis://..., rediss://... or unix://...")
    return value


def _host_port(value: str) -> str:
    if not value:
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} must be host:port")
    return value


def _prefix(value: str) -> str:
    if not value or any(c.isspace() or c in "{}" for c in value):
        raise ValueError("must be a non-empty key prefix without spaces or braces")
    return value


Interval = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ClusterConfig:
    """Off unless ``redis_url`` is set. Every node of one cluster names the same Redis, the
    same ``secret`` and the same cameras; each has its own ``node_id`` (top level)."""

    # The Redis that holds nodes, camera ownership, sessions and kicks ("" = one node).
    redis_url: Annotated[str, AfterValidator(_redis_url)] = ""
    # Keys and channels start with this, so several clusters can share one Redis.
    prefix: Annotated[str, AfterValidator(_prefix)] = "feedgate"
    # The internal RTSP listener other nodes relay cameras from (Digest with ``secret``).
    # Bind it to the nodes' private network; port 0 picks a free port (tests).
    relay_host: str = "127.0.0.1"
    relay_port: Annotated[int, Field(ge=0, le=65535)] = 8555
    # How other nodes reach this one's relay listener ("" = relay_host and the bound port).
    advertise: Annotated[str, AfterValidator(_host_port)] = ""
    # Relays run over TLS with the [keys] cluster_cert/cluster_key/cluster_ca (both ends
    # verified by the cluster CA; the server name each node checks is tls_name). Without
    # them a node refuses to start, unless loopback_only: every node on one machine, the
    # relay bound to loopback, plaintext with a warning (gateway/cluster/tls.py).
    tls_name: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$")] = (
        "feedgate-cluster"
    )
    loopback_only: bool = False
    # The credential nodes relay each other's cameras with (Digest: it never crosses the
    # wire). Same on every node; set it here, from FEEDGATE_CLUSTER__SECRET, or in a file.
    secret: str = field(default="", repr=False)
    secret_file: ConfigPath = ""
    # A camera's owner renews its lease every third of this; when the owner dies another
    # node takes the camera within it.
    lease_ttl: Annotated[float, Field(ge=1.0, le=600, allow_inf_nan=False)] = 6.0
    # Each node refreshes its heartbeat this often; one silent for heartbeat_ttl is gone
    # (its sessions drop out of the registry, its cap slots are freed).
    heartbeat_interval: Interval = 1.0
    heartbeat_ttl: Interval = 3.0
    # An edge relay with no viewers left stops after this long.
    relay_linger: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 5.0
    # Every Redis command gives up after this (a dead Redis never stalls the media plane).
    redis_timeout: Interval = 1.0

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url)

    def problems(self) -> list[tuple[str, str]]:
        """(key, reason) for each rule that spans fields, checked when the config loads."""
        if not self.enabled:
            return []
        out = []
        if not self.secret and not self.secret_file:
            out.append(("cluster.secret", "a cluster needs a shared secret (or secret_file)"))
        if self.heartbeat_ttl <= self.heartbeat_interval:
            out.append(("cluster.heartbeat_ttl", "must exceed cluster.heartbeat_interval"))
        return out

    def secret_value(self) -> str:
        """The relay credential: ``secret``, else the first line of ``secret_file``."""
        if self.secret:
            return self.secret
        with open(self.secret_file, encoding="utf-8") as f:
            value = f.readline().strip()
        if not value:
            raise ValueError(f"{self.secret_file}: empty cluster secret")
        return value
