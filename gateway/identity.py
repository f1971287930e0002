"""The gateway's identity: which token signing keys and which audit checkpoint key a node loads.

Every node of a cluster (nodes sharing a PostgreSQL tenancy database) loads the same files,
named in the config's ``[keys]`` (:class:`gateway.config.KeysConfig`), and never makes keys of
its own: a missing or unusable file is an error naming the key and the file. A node alone may
leave ``[keys]`` empty; its keys are then made in ``<data_dir>/keys`` on first start
(``token-signing.pem``, ``audit-signing.pem``), as before rotation existed.

Token keys rotate by file layout (:mod:`tenants.tokens.keyring`), and so do audit checkpoint
keys (:mod:`tenants.audit.keys`, beside ``keys.audit_key``): each node re-reads both every
``keys.reload_interval`` seconds off the event loop and follows their schedules.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from gateway.config import Config, ConfigError
from tenants.audit import AuditLog
from tenants.audit.keys import AuditKeyRing, AuditKeys
from tenants.onvif import SecretBox
from tenants.tokens import SigningKey, TokenIssuer
from tenants.tokens.keyring import LEGACY_NAME, KeyRing, KeyRingError, KeySchedule

log = logging.getLogger(__name__)

__all__ = [
    "KeyName",
    "KeyReloader",
    "audit_ring",
    "key_path",
    "key_ring",
    "load_audit_keys",
    "load_key",
    "load_secret_box",
    "load_token_keys",
    "token_dir",
]


def token_dir(config: Config) -> Path:
    return Path(config.keys.token_dir or Path(config.data_dir) / "keys")


KeyName = Literal["audit_key", "evidence_key"]
_DEFAULT_FILES: dict[str, str] = {
    "audit_key": "audit-signing.pem",
    "evidence_key": "evidence-signing.pem",
}


def key_path(config: Config, which: KeyName) -> Path:
    """Where ``keys.audit_key`` or ``keys.evidence_key`` is (default: in <data_dir>/keys)."""
    return Path(
        getattr(config.keys, which) or Path(config.data_dir) / "keys" / _DEFAULT_FILES[which]
    )


def key_ring(config: Config) -> KeyRing:
    return KeyRing(token_dir(config), overlap=timedelta(seconds=config.keys.overlap))


def audit_ring(config: Config) -> AuditKeyRing:
    return AuditKeyRing(
        key_path(config, "audit_key"), overlap=timedelta(seconds=config.keys.overlap)
    )


def load_audit_keys(config: Config, now: datetime | None = None) -> AuditKeys:
    """The audit checkpoint keys now (the newest started signs; every one ever used verifies);
    ConfigError naming ``keys.audit_key`` and the file if none can sign. Blocking (file I/O)."""
    ring = audit_ring(config)
    path = key_path(config, "audit_key")
    try:
        if _may_create(config, config.keys.audit_key) and not ring.exists():
            SigningKey.load_or_create(path)
        return ring.load(now)
    except KeyRingError as exc:
        why = str(exc).removeprefix(f"{path}: ")
        raise ConfigError(str(path), "keys.audit_key", why) from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(str(path), "keys.audit_key", f"not a usable Ed25519 key: {exc}") from None


def _may_create(config: Config, configured: str) -> bool:
    # Only a node alone, on the default paths, makes its own keys.
    return not configured and not config.clustered


def load_token_keys(config: Config, now: datetime | None = None) -> KeySchedule:
    """The token keys' schedule now; ConfigError (naming ``keys.token_dir`` and the file) if
    they cannot be loaded. Blocking (file I/O)."""
    ring = key_ring(config)
    try:
        if _may_create(config, config.keys.token_dir) and not _has_keys(ring):
            SigningKey.load_or_create(ring.directory / LEGACY_NAME)
        return ring.load(now)
    except KeyRingError as exc:
        raise ConfigError(str(ring.directory), "keys.token_dir", str(exc)) from None


def _has_keys(ring: KeyRing) -> bool:
    try:
        return bool(ring.read())
    except KeyRingError:
        return False


def load_key(config: Config, which: KeyName) -> SigningKey:
    """The audit checkpoint key or the evidence key; ConfigError naming ``keys.<which>`` and
    the file if it cannot be loaded. Blocking (file I/O)."""
    path = key_path(config, which)
    try:
        if _may_create(config, getattr(config.keys, which)):
            return SigningKey.load_or_create(path)
        return SigningKey.load(path)
    except FileNotFoundError:
        why = "no such key file (create it with `feedgate keys init`)"
        raise ConfigError(str(path), f"keys.{which}", why) from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(str(path), f"keys.{which}", f"not a usable Ed25519 key: {exc}") from None


def load_secret_box(config: Config) -> SecretBox | None:
    """The key sealing cameras' ONVIF passwords (``keys.secret_key``; a node alone makes it in
    <data_dir>/keys/secrets.key). ConfigError naming the key and the file. None on a cluster
    that names no such key: the register then refuses to keep passwords. Blocking."""
    configured = config.keys.secret_key
    if not configured and config.clustered:
        return None
    path = Path(configured or Path(config.data_dir) / "keys" / "secrets.key")
    try:
        return SecretBox.load(path, create=_may_create(config, configured))
    except FileNotFoundError:
        why = "no such key file (every node needs the same one: copy it from the first)"
        raise ConfigError(str(path), "keys.secret_key", why) from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(str(path), "keys.secret_key", f"not a usable key: {exc}") from None


class KeyReloader:
    """Keeps an issuer's keys and the audit log's signer on their directories' schedules:
    re-read every ``interval`` seconds off the event loop; a directory that cannot be read is
    one warning, and the keys stay."""

    def __init__(
        self,
        config: Config,
        issuer: TokenIssuer,
        schedule: KeySchedule,
        *,
        audit: AuditLog | None = None,
        audit_keys: AuditKeys | None = None,
    ) -> None:
        self.ring = key_ring(config)
        self.issuer = issuer
        self.interval = config.keys.reload_interval
        self.kids = schedule.kids
        self.failures = 0
        self.audit = audit
        self.audit_ring = audit_ring(config)
        #: The audit keys as last read: the signer and every key published (the JWKS).
        self.audit_keys = audit_keys
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="key-reload")

    async def stop(self) -> None:
        from gateway.tasks import cancel_and_wait

        await cancel_and_wait(self._task)

    async def reload(self) -> bool:
        """Re-read now; True if the published keys or a signing key changed."""
        changed = await self._reload_audit()
        schedule = await asyncio.to_thread(self.ring.load, datetime.now(UTC))
        if schedule.kids == self.kids:
            return changed
        self.issuer.set_keys(schedule.signing_keys)
        log.info(
            "token keys: %s signs; published %s", schedule.current.kid, ", ".join(schedule.kids)
        )
        self.kids = schedule.kids
        return True

    async def _reload_audit(self) -> bool:
        if self.audit is None:
            return False
        keys = await asyncio.to_thread(self.audit_ring.load, datetime.now(UTC))
        old = self.audit_keys
        if old is not None and (keys.signer_kid, keys.kids) == (old.signer_kid, old.kids):
            self.audit_keys = keys  # retirement times may have moved on
            return False
        if keys.signer is not None and (old is None or keys.signer_kid != old.signer_kid):
            await asyncio.to_thread(self.audit.set_signer, keys.signer.private_key)
            log.info(
                "audit keys: %s signs checkpoints; %d trusted", keys.signer_kid, len(keys.kids)
            )
        self.audit_keys = keys
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.reload()
            except (KeyRingError, OSError) as exc:
                self.failures += 1
                if self.failures == 1:
                    log.warning("token keys: cannot re-read %s (keeping them): %s", self.ring, exc)
                continue
            if self.failures:
                log.info("token keys: %s readable again", self.ring.directory)
                self.failures = 0
