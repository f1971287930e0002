"""TLS for the HTTP server (tokens in Authorization headers, finance pages) and the gRPC
control API (a partner's VMS or an administrator's CLI across a network).

Certificates are PEM files named in the config (``http.tls_cert`` / ``http.tls_key``,
``grpc.tls_cert`` / ``grpc.tls_key`` and optionally ``grpc.tls_client_ca``, which makes the
control API require client certificates signed by that CA: mutual TLS for a police control
room's system). The config loader calls :func:`check_files` so a missing or mismatched file is
a config error at start, naming the key, rather than a failure on the first connection.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

__all__ = ["TlsError", "check_files", "grpc_channel_credentials", "grpc_server_credentials"]


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used; says which and why. ``which`` is
    "tls_cert", "tls_key" or "tls_client_ca": the config key to blame."""

    def __init__(self, message: str, which: str = "tls_cert") -> None:
        super().__init__(message)
        self.which = which


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"{what} {path}: cannot read: {exc.strerror}") from None


def server_ssl_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """A server context, TLS 1.2 or later; with ``client_ca``, client certificates signed by
    it are required."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for path, which in ((cert, "tls_cert"), (key, "tls_key"), (client_ca, "tls_client_ca")):
        if path and not Path(path).is_file():
            raise TlsError(f"{path}: no such file", which)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"certificate {cert} / key {key}: {_reason(exc)}") from None
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"client CA {client_ca}: {_reason(exc)}", "tls_client_ca") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc)


def check_files(cert: str, key: str, client_ca: str = "") -> None:
    """Raise :class:`TlsError` unless the files load and the key matches the certificate."""
    server_ssl_context(cert, key, client_ca)


def grpc_server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    import grpc

    check_files(cert, key, client_ca)
    return grpc.ssl_server_credentials(
        [(_read(key, "key"), _read(cert, "certificate"))],
        root_certificates=_read(client_ca, "client CA") if client_ca else None,
        require_client_auth=bool(client_ca),
    )


def grpc_channel_credentials(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> grpc.ChannelCredentials:
    """Client side: trust ``ca`` (or the system's roots) and present ``cert``/``key`` if the
    server asks for a client certificate."""
    import grpc

    if bool(cert) != bool(key):
        raise TlsError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA") if ca else None,
        private_key=_read(key, "key") if key else None,
        certificate_chain=_read(cert, "certificate") if cert else None,
    )
