"""TLS on the inter-node relay (RTSPS between nodes): who may connect, and to whom.

Every node presents one cluster certificate (``keys.cluster_cert`` / ``keys.cluster_key``),
as the relay listener's server certificate and as the edge's client certificate, and trusts
only the cluster CA (``keys.cluster_ca``) on the relay, in both directions: the listener
requires a client certificate the CA signed (mutual TLS), and the edge checks that the owner's
certificate is the CA's and names ``cluster.tls_name`` (the cluster's name, since the CA is
the cluster's own and nodes are reached by address). Digest with the cluster secret and the
lease's fencing token still apply inside the encrypted connection (gateway/cluster/relay.py).

A cluster without these files refuses to start (the config names ``keys.cluster_cert``),
unless ``cluster.loopback_only`` says every node runs on this machine: the relay must then be
bound to a loopback address, and runs in plaintext with a warning at start.

:func:`make_cluster_pki` is what ``feedgate keys init`` makes when the files are named but
missing: a CA (its key beside it; keep that off the nodes) and one certificate it signed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.tls import TlsError

if TYPE_CHECKING:
    from gateway.config import Config

log = logging.getLogger(__name__)

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "RelayTls",
    "make_cluster_pki",
    "problems",
    "relay_tls",
    "warn_plaintext",
]

HANDSHAKE_TIMEOUT = 5.0
_KEYS = ("cluster_cert", "cluster_key", "cluster_ca")


@dataclass(frozen=True)
class RelayTls:
    server: ssl.SSLContext  # the relay listener: cluster certificate, client certs required
    client: ssl.SSLContext  # an edge: the cluster CA only, our certificate as the client's
    name: str  # the name the owner's certificate must carry


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def problems(cfg: Config) -> list[tuple[str, str]]:
    """(key, reason) for the relay's TLS settings, checked when the config loads."""
    cc, keys = cfg.cluster, cfg.keys
    if not cc.enabled:
        return []
    named = [k for k in _KEYS if getattr(keys, k)]
    if named and len(named) < len(_KEYS):
        missing = next(k for k in _KEYS if not getattr(keys, k))
        return [(f"keys.{missing}", f"the relay's TLS needs all of keys.{', keys.'.join(_KEYS)}")]
    if named:
        return []
    if not cc.loopback_only:
        why = (
            "a cluster's relays run over TLS: name keys.cluster_cert, keys.cluster_key and "
            "keys.cluster_ca (`feedgate keys init` makes them), or set cluster.loopback_only = "
            "true when every node is on this machine"
        )
        return [("keys.cluster_cert", why)]
    if not _is_loopback(cc.relay_host):
        why = f"relay_host {cc.relay_host!r} is not a loopback address (plaintext relays)"
        return [("cluster.loopback_only", why)]
    if cc.advertise and not _is_loopback(cc.advertise.rpartition(":")[0]):
        why = f"advertise {cc.advertise!r} is not a loopback address (plaintext relays)"
        return [("cluster.loopback_only", why)]
    return []


def relay_tls(cfg: Config) -> RelayTls | None:
    """The relay's contexts (None: loopback_only, plaintext). ConfigError naming the key and
    the file when one cannot be used. Blocking (reads the files)."""
    from gateway.config import ConfigError

    keys = cfg.keys
    if not keys.cluster_cert:
        return None
    try:
        server = _context(
            ssl.Purpose.CLIENT_AUTH, keys.cluster_cert, keys.cluster_key, keys.cluster_ca
        )
        client = _context(
            ssl.Purpose.SERVER_AUTH, keys.cluster_cert, keys.cluster_key, keys.cluster_ca
        )
    except TlsError as exc:
        path = {"tls_cert": keys.cluster_cert, "tls_key": keys.cluster_key}.get(
            exc.which, keys.cluster_ca
        )
        which = {"tls_cert": "cluster_cert", "tls_key": "cluster_key"}.get(exc.which, "cluster_ca")
        raise ConfigError(path, f"keys.{which}", str(exc)) from None
    server.verify_mode = ssl.CERT_REQUIRED
    client.check_hostname = True
    client.verify_mode = ssl.CERT_REQUIRED
    return RelayTls(server, client, cfg.cluster.tls_name)


def _context(purpose: ssl.Purpose, cert: str, key: str, ca: str) -> ssl.SSLContext:
    # Only the cluster CA: never the system's, so a certificate from a public CA for the
    # cluster's name is not a node.
    ctx = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for path, which in ((cert, "tls_cert"), (key, "tls_key"), (ca, "tls_client_ca")):
        if not Path(path).is_file():
            raise TlsError(f"{path}: no such file", which)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"certificate {cert} / key {key}: {_reason(exc)}") from None
    try:
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cluster CA {ca}: {_reason(exc)}", "tls_client_ca") from None
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc)


def warn_plaintext(cfg: Config) -> None:
    log.warning(
        "cluster: the inter-node relay on %s:%s is NOT encrypted (cluster.loopback_only): "
        "every node must be on this machine; name keys.cluster_cert, keys.cluster_key and "
        "keys.cluster_ca for anything else",
        cfg.cluster.relay_host,
        cfg.cluster.relay_port,
    )


def make_cluster_pki(ca: Path, cert: Path, key: Path, name: str) -> list[Path]:
    """A cluster CA (``ca``, its key at ``ca.with_suffix('.key')``) and one certificate it
    signed for ``name`` (``cert``, ``key``), for server and client use. Only the files that
    are missing are made; a certificate is signed only by a CA made or found here. The paths
    written."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    made: list[Path] = []
    ca_key_path = ca.with_suffix(".key")
    now = datetime.now(UTC) - timedelta(minutes=5)
    if not ca.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_pair(ca_key_path, ca_key, ca, ca_cert)
        made += [ca, ca_key_path]
    if cert.exists() and key.exists():
        return made
    ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
    try:
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise TlsError(f"{ca_key_path}: the CA's key is needed to sign a certificate") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{ca_key_path}: not the EC key of a CA made by `feedgate keys init`")
    node_key = ec.generate_private_key(ec.SECP256R1())
    node_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(node_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(loaded, hashes.SHA256())
    )
    _write_pair(key, node_key, cert, node_cert)
    return [*made, cert, key]


def _write_pair(key_path: Path, key: Any, cert_path: Path, cert: Any) -> None:
    """A private key (PKCS#8, 0600) and its certificate, as PEM."""
    from cryptography.hazmat.primitives import serialization

    pem = serialization.Encoding.PEM
    pkcs8, none = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    _write(key_path, key.private_bytes(pem, pkcs8, none), private=True)
    _write(cert_path, cert.public_bytes(pem))


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
