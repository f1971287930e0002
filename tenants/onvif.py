"""Cameras' ONVIF settings in the register: the device address, the user feedgate signs in as,
and that user's password, which is write-only.

The gateway signs each PTZ command with a WS-Security UsernameToken digest,
``Base64(SHA1(nonce + created + password))``, so it needs the plain password: a hash would not
do. The password is therefore stored sealed (Fernet: AES-128-CBC with an HMAC-SHA256 tag) under
a key kept *outside* the database, ``keys.secret_key`` (default ``<data_dir>/keys/secrets.key``),
so a copy of the database or its backups alone does not reveal it. Whoever can read both the key
file and the database can: protect the key file as the signing keys are protected.

Nothing here returns the password except :meth:`OnvifRegister.credentials`, which the PTZ
service calls to sign; :class:`OnvifSettings` (what APIs show) only says whether one is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken

from tenants.db import Database
from tenants.model import DomainError

__all__ = [
    "MAX_ONVIF_PASSWORD",
    "OnvifCredentials",
    "OnvifRegister",
    "OnvifSettings",
    "SecretBox",
    "check_onvif_url",
]

MAX_ONVIF_PASSWORD = 256
_MAX_FIELD = 200

MIGRATIONS: list[str] = [
    # 1: one row per camera with ONVIF settings; the password sealed by SecretBox.
    """
    CREATE TABLE camera_onvif (
        camera_id TEXT PRIMARY KEY REFERENCES cameras (id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        username TEXT NOT NULL,
        profile TEXT NOT NULL,
        password_sealed TEXT
    )
    """,
]


class SecretBox:
    """Seals and opens short secrets with a key from a file (made on first use if allowed)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def load(cls, path: Path, *, create: bool) -> SecretBox:
        """The key in ``path``; with ``create``, a new one written (mode 0600) if absent.
        FileNotFoundError or ValueError when there is no usable key. Blocking (file I/O)."""
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise DomainError(
                "a stored ONVIF password cannot be opened with keys.secret_key "
                "(another key sealed it): set the password again"
            ) from None


def check_onvif_url(url: str) -> str:
    """``http://host[:port][/path]``; credentials belong in the username and password."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise DomainError("onvif_url: expected http://host:port")
    if parts.username or parts.password:
        raise DomainError("onvif_url: put the credentials in onvif_username and the password")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise DomainError("onvif_url: not a valid port") from None
    return url


@dataclass(frozen=True)
class OnvifSettings:
    """A camera's ONVIF settings as anyone may see them: never the password."""

    camera_id: str
    url: str
    username: str
    profile: str = ""
    password_set: bool = False


@dataclass(frozen=True)
class OnvifCredentials:
    """What the PTZ service signs in with (repr and logs never show the password)."""

    settings: OnvifSettings
    password: str = field(default="", repr=False)


class OnvifRegister:
    """The ``camera_onvif`` table. Writes bump the tenancy's version, so processes that cache
    by it (the PTZ service) read the change at their next decision."""

    def __init__(self, db: Database, box: SecretBox | None) -> None:
        self._db = db
        self._box = box
        db.migrate("camera_onvif", MIGRATIONS)

    def put(
        self,
        camera_id: str,
        url: str,
        username: str,
        profile: str = "",
        *,
        password: str | None = None,
        clear_password: bool = False,
    ) -> tuple[OnvifSettings | None, OnvifSettings]:
        """Set a camera's settings; ``password`` None keeps the stored one (unless
        ``clear_password``). Returns the settings before (None: none) and after. Joins the
        caller's transaction."""
        check_onvif_url(url)
        for name, value in (("onvif_username", username), ("onvif_profile", profile)):
            if len(value) > _MAX_FIELD or any(ord(ch) < 32 for ch in value):
                raise DomainError(f"{name}: at most {_MAX_FIELD} printable characters")
        if password is not None and not 0 < len(password) <= MAX_ONVIF_PASSWORD:
            raise DomainError(f"password: 1..{MAX_ONVIF_PASSWORD} characters")
        with self._db.transaction():
            before = self.get(camera_id)
            if password is not None:
                sealed: str | None = self._sealer().seal(password)
            elif clear_password:
                sealed = None
            else:
                row = self._db.query_one(
                    "SELECT password_sealed FROM camera_onvif WHERE camera_id = ?", (camera_id,)
                )
                sealed = row[0] if row is not None else None
            self._db.execute("UPDATE tenancy_version SET version = version + 1 WHERE id = 1")
            self._db.execute(
                "INSERT INTO camera_onvif (camera_id, url, username, profile, password_sealed)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (camera_id) DO UPDATE SET"
                " url = excluded.url, username = excluded.username,"
                " profile = excluded.profile, password_sealed = excluded.password_sealed",
                (camera_id, url, username, profile, sealed),
            )
        return before, OnvifSettings(camera_id, url, username, profile, sealed is not None)

    def get(self, camera_id: str) -> OnvifSettings | None:
        row = self._db.query_one(
            "SELECT url, username, profile, password_sealed IS NOT NULL FROM camera_onvif"
            " WHERE camera_id = ?",
            (camera_id,),
        )
        if row is None:
            return None
        return OnvifSettings(camera_id, str(row[0]), str(row[1]), str(row[2]), bool(row[3]))

    def camera_ids(self) -> list[str]:
        return [str(r[0]) for r in self._db.query("SELECT camera_id FROM camera_onvif ORDER BY 1")]

    def credentials(self, camera_id: str) -> OnvifCredentials | None:
        """The settings and the opened password, for signing. Blocking."""
        row = self._db.query_one(
            "SELECT url, username, profile, password_sealed FROM camera_onvif WHERE camera_id = ?",
            (camera_id,),
        )
        if row is None:
            return None
        settings = OnvifSettings(
            camera_id, str(row[0]), str(row[1]), str(row[2]), row[3] is not None
        )
        opened = self._sealer().open(row[3]) if row[3] is not None else ""
        return OnvifCredentials(settings, opened)

    def _sealer(self) -> SecretBox:
        if self._box is None:
            raise DomainError(
                "password: this gateway has no keys.secret_key to seal ONVIF passwords with"
            )
        return self._box

    def delete(self, camera_id: str) -> OnvifSettings | None:
        """Forget a camera's settings; the settings there were (None: nothing to forget)."""
        with self._db.transaction():
            before = self.get(camera_id)
            if before is not None:
                self._db.execute("UPDATE tenancy_version SET version = version + 1 WHERE id = 1")
                self._db.execute("DELETE FROM camera_onvif WHERE camera_id = ?", (camera_id,))
        return before
