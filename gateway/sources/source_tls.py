"""TLS to a camera pulled over ``rtsps://``: the camera's certificate is verified, by default
against the system's CAs and the URL's host name, as a browser would.

Per camera (``[[cameras]]``): ``tls_ca`` names a PEM file or bundle to trust instead (a
council's own CA; relative to the config file), ``tls_server_name`` the name the certificate
must carry when the camera is addressed by IP, and ``tls_verify = false`` accepts any
certificate (a self-signed camera): still encrypted, but open to a man in the middle, so it is
logged as a warning once per camera and shown in /healthz/detail. An ``rtsps://`` source never
falls back to plaintext (:class:`gateway.sources.rtsp_client.RtspClient` refuses to).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

__all__ = ["CameraTls", "client_context", "problems", "pull_tls"]

# RFC 7826 section 19.2 and MediaMTX: rtsps:// without a port means 322.
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322}


class CameraTls(Protocol):
    """The fields of a camera's config this module reads (gateway.config.CameraConfig)."""

    @property
    def id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def sub_source(self) -> str | None: ...
    @property
    def tls_ca(self) -> str: ...
    @property
    def tls_server_name(self) -> str: ...
    @property
    def tls_verify(self) -> bool: ...


def is_rtsps(url: str | None) -> bool:
    return url is not None and url[:8].lower() == "rtsps://"


def client_context(ca: str = "", *, verify: bool = True) -> ssl.SSLContext:
    """A client context, TLS 1.2 or later: the system's CAs, or only ``ca``'s; with
    ``verify=False`` any certificate and any name (still encrypted)."""
    try:
        ctx = ssl.create_default_context(cafile=ca or None)
    except FileNotFoundError:
        raise ValueError(f"{ca}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ValueError(f"{ca}: not a PEM CA bundle ({str(reason).lower()})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def pull_tls(cam: CameraTls, url: str) -> tuple[ssl.SSLContext | None, str | None]:
    """The context and the certificate name to pull ``url`` of ``cam`` with; (None, None) for
    a plain rtsp:// URL."""
    if not is_rtsps(url):
        return None, None
    ctx = client_context(cam.tls_ca, verify=cam.tls_verify)
    return ctx, cam.tls_server_name or None


def warn_unverified(cameras: Iterable[CameraTls]) -> None:
    """Once per camera (at start): its rtsps:// certificate is not checked."""
    for cam in cameras:
        if not cam.tls_verify and (is_rtsps(cam.source) or is_rtsps(cam.sub_source)):
            log.warning(
                "camera %s: tls_verify = false: its certificate is not checked, so the "
                "encrypted pull can be intercepted (give it tls_ca instead)",
                cam.id,
            )


def problems(cameras: Iterable[CameraTls]) -> Iterator[tuple[str, str]]:
    """(config key, reason) for each unusable camera TLS option."""
    for i, cam in enumerate(cameras):
        key = f"cameras[{i}]"
        tls = is_rtsps(cam.source) or is_rtsps(cam.sub_source)
        for name, set_ in (
            ("tls_ca", bool(cam.tls_ca)),
            ("tls_server_name", bool(cam.tls_server_name)),
            ("tls_verify", not cam.tls_verify),
        ):
            if set_ and not tls:
                yield f"{key}.{name}", "applies only to an rtsps:// source (this one is plain)"
        if cam.tls_ca and not cam.tls_verify:
            yield f"{key}.tls_verify", "false would ignore tls_ca: give one or the other"
        if cam.tls_ca and tls:
            if not Path(cam.tls_ca).is_file():
                yield f"{key}.tls_ca", f"{cam.tls_ca}: no such file"
                continue
            try:
                client_context(cam.tls_ca)
            except ValueError as exc:
                yield f"{key}.tls_ca", str(exc)
        name = cam.tls_server_name
        if name and (len(name) > 253 or not all(c.isalnum() or c in ".-" for c in name)):
            yield f"{key}.tls_server_name", f"{name!r} is not a host name"
