"""Which cameras the PTZ service steers, and how it signs in to each: the camera register's
ONVIF settings (:mod:`tenants.onvif`), else the config's ``onvif`` keys.

The register is read again whenever the tenancy's version moves (a control write on this node
reloads the policy at once; another node's write is seen at the next policy refresh), so a
changed address or password applies at the next command, without a restart. A camera whose
endpoint changed gets a new ONVIF connection (:meth:`gateway.ptz.service.PtzService.sync`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.config import PtzConfig
from gateway.ptz.client import OnvifEndpoint
from gateway.ptz.settings import PtzCamera, arbiter_settings
from tenants.model import DomainError
from tenants.onvif import OnvifRegister

log = logging.getLogger(__name__)

__all__ = ["PtzCameras"]


class PtzCameras:
    """The configured cameras overlaid with the register's, cached by tenancy version."""

    def __init__(
        self,
        configured: Mapping[str, PtzCamera],
        config: PtzConfig,
        register: OnvifRegister | None = None,
        version: Callable[[], int] | None = None,
        blocking: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.configured = dict(configured)
        self.config = config
        self.register = register
        self._version = version
        self._blocking = blocking
        self._seen: int | None = None
        self.current: dict[str, PtzCamera] = dict(configured)

    async def refresh(self) -> bool:
        """Re-read the register if the tenancy changed since; True if anything was read."""
        if self.register is None or self._version is None or self._blocking is None:
            return False
        version = self._version()
        if version == self._seen:
            return False
        current: dict[str, PtzCamera] = await self._blocking(self._read)
        self.current = current
        self._seen = version
        return True

    def _read(self) -> dict[str, PtzCamera]:
        assert self.register is not None
        out = dict(self.configured)
        for camera_id in self.register.camera_ids():
            try:
                creds = self.register.credentials(camera_id)
            except DomainError as exc:  # a password sealed under another key
                log.warning("camera %s: ONVIF settings unusable: %s", camera_id, exc)
                out.pop(camera_id, None)
                continue
            if creds is None:
                continue
            s = creds.settings
            try:
                endpoint = OnvifEndpoint.parse(s.url, s.username, creds.password, s.profile)
            except ValueError as exc:
                log.warning("camera %s: ONVIF address unusable: %s", camera_id, exc)
                continue
            configured = self.configured.get(camera_id)
            arbiter = configured.arbiter if configured else arbiter_settings(self.config, None)
            out[camera_id] = PtzCamera(camera_id, endpoint, arbiter)
        return out
