"""The ``[keys]`` config section: the key and certificate files every node of a cluster shares
(:mod:`gateway.identity` loads the signing keys, :mod:`gateway.cluster.tls` the relay's TLS
files). Paths are relative to the config file. Kept apart from :mod:`gateway.config` (which
imports and re-exports it) so the section lives beside what reads it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

from gateway.configpaths import ConfigPath
from gateway.configtypes import STRICT, Seconds


@dataclass(frozen=True, config=STRICT)
class KeysConfig:
    # Signing keys every node shares (required on a shared database): token_dir holds token-
    # <YYYYMMDDTHHMMSSZ>.pem keys named for when each signs (tenants/tokens/keyring.py).
    token_dir: ConfigPath = ""
    # The first audit checkpoint key; rotated ones go beside it (tenants/audit/keys.py).
    audit_key: ConfigPath = ""  # "": <data_dir>/keys/audit-signing.pem
    evidence_key: ConfigPath = ""  # signs export manifests; "": <data_dir>/keys/evidence-...
    # Seals cameras' ONVIF passwords in the register (tenants/onvif.py); "": <data_dir>/keys/
    # secrets.key. Not in the database, so a copy of the database alone does not reveal them.
    secret_key: ConfigPath = ""
    # The inter-node relay's TLS (gateway/cluster/tls.py): a certificate and key every node
    # presents, both as server and as client, and the cluster CA that signed them, the only
    # one a node trusts on the relay. Required on a cluster unless cluster.loopback_only.
    cluster_cert: ConfigPath = ""
    cluster_key: ConfigPath = ""
    cluster_ca: ConfigPath = ""
    overlap: Annotated[Seconds, Field(ge=86400)] = 90000.0  # a replaced key verifies on
    reload_interval: Annotated[float, Field(ge=0.1, le=3600)] = 10.0  # token_dir re-read
    rotate_after: Annotated[float, Field(ge=0)] = 60.0  # a rotated key starts this much later
