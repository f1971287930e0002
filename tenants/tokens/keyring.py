"""Token signing keys in a directory every node shares, and their rotation by file layout.

Each key is one Ed25519 PKCS#8 PEM file, ``token-<YYYYMMDDTHHMMSSZ>.pem``, named for the UTC time
it starts signing (``token-signing.pem``, a single node's key from before rotation, started at
the epoch). At any moment the :func:`schedule` of the keys is:

* **current**: the newest key whose time has come. It signs every new token.
* **next**: keys whose time has not come. They are published in the JWKS and verify already,
  so every node (each re-reads the directory every few seconds) and every partner's cache
  knows a key before any token carries it: start a new key later than the slowest reload.
* **retiring**: a key a newer one replaced. It stays published and verifying for ``overlap``
  after its successor started, so the tokens it signed (24 h at most) keep working.
* **expired**: retired longer than ``overlap``. Neither published nor verifying;
  :meth:`KeyRing.prune` deletes the file.

Reading and writing files is blocking: call :class:`KeyRing` off the event loop.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from tenants.tokens.claims import MAX_LIFETIME
from tenants.tokens.keys import SigningKey, write_private_key

__all__ = ["DEFAULT_OVERLAP", "KeyRing", "KeyRingError", "KeySchedule", "RingKey", "schedule"]

LEGACY_NAME: Final = "token-signing.pem"
_TIME_FORMAT: Final = "%Y%m%dT%H%M%SZ"
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Tokens live at most 24 h; an hour more covers clock skew and the slowest reload.
DEFAULT_OVERLAP: Final = MAX_LIFETIME + timedelta(hours=1)
MAX_KEYS: Final = 64

State = Literal["current", "next", "retiring", "expired"]


class KeyRingError(Exception):
    """The key directory cannot be used; the message names the directory or the file."""


@dataclass(frozen=True)
class RingKey:
    key: SigningKey
    starts: datetime  # when it starts signing (UTC)
    path: Path

    @property
    def kid(self) -> str:
        return self.key.kid


@dataclass(frozen=True)
class Scheduled:
    ring_key: RingKey
    state: State
    until: datetime | None  # retiring: when it expires; next: when it starts


@dataclass(frozen=True)
class KeySchedule:
    """Which key signs and which are published, at one moment."""

    current: RingKey
    upcoming: tuple[RingKey, ...]  # next, soonest first
    retiring: tuple[tuple[RingKey, datetime], ...]  # newest first, with when each expires
    expired: tuple[RingKey, ...]

    @property
    def signing_keys(self) -> list[SigningKey]:
        """For :class:`~tenants.tokens.TokenIssuer`: the current key first (it signs), then
        every other published key (they verify)."""
        rest = [k.key for k in self.upcoming] + [k.key for k, _ in self.retiring]
        return [self.current.key, *rest]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(k.kid for k in self.signing_keys)

    def entries(self) -> list[Scheduled]:
        """Every key with its state, in start order (for ``feedgate keys list``)."""
        out = [Scheduled(k, "expired", None) for k in self.expired]
        out += [Scheduled(k, "retiring", until) for k, until in reversed(self.retiring)]
        out.append(Scheduled(self.current, "current", None))
        out += [Scheduled(k, "next", k.starts) for k in self.upcoming]
        return out


def schedule(keys: Sequence[RingKey], now: datetime, overlap: timedelta) -> KeySchedule:
    """The schedule of ``keys`` at ``now`` (pure). If every key is still to come, the earliest
    signs: a directory whose first key was written with a future time still works."""
    if not keys:
        raise KeyRingError("no signing keys")
    ordered = sorted(keys, key=lambda k: (k.starts, k.kid))
    started = [k for k in ordered if k.starts <= now]
    current = started[-1] if started else ordered[0]
    upcoming = tuple(k for k in ordered if k.starts > now and k is not current)
    retiring: list[tuple[RingKey, datetime]] = []
    expired: list[RingKey] = []
    # Each earlier key retires when the key after it starts.
    before = [k for k in ordered if k.starts <= current.starts and k is not current]
    for i, k in enumerate(before):
        successor = before[i + 1] if i + 1 < len(before) else current
        until = successor.starts + overlap
        if until > now:
            retiring.append((k, until))
        else:
            expired.append(k)
    retiring.reverse()
    return KeySchedule(current, upcoming, tuple(retiring), tuple(expired))


def key_name(starts: datetime, prefix: str = "token", suffix: str = "pem") -> str:
    return f"{prefix}-{starts.astimezone(UTC).strftime(_TIME_FORMAT)}.{suffix}"


def parse_key_name(name: str, prefix: str, suffix: str = "pem") -> datetime | None:
    """When a key file named ``<prefix>-<YYYYMMDDTHHMMSSZ>.<suffix>`` starts; None for any other
    name."""
    m = re.fullmatch(rf"{re.escape(prefix)}-(\d{{8}}T\d{{6}}Z)\.{re.escape(suffix)}", name)
    if m is None:
        return None
    return datetime.strptime(m.group(1), _TIME_FORMAT).replace(tzinfo=UTC)


class KeyRing:
    """A directory of signing keys (see the module docstring). ``prefix`` names the kind of key
    (``token``; the audit checkpoint keys are ``audit``, :mod:`tenants.audit.keys`) and
    ``legacy`` the one file from before rotation, which started at the epoch."""

    def __init__(
        self,
        directory: Path | str,
        *,
        overlap: timedelta = DEFAULT_OVERLAP,
        prefix: str = "token",
        legacy: str = LEGACY_NAME,
    ) -> None:
        if overlap < timedelta(0):
            raise ValueError("overlap must not be negative")
        self.directory = Path(directory)
        self.overlap = overlap
        self.prefix = prefix
        self.legacy = legacy

    def read(self) -> list[RingKey]:
        """Every key file in the directory; a file that is not an Ed25519 key is an error that
        names it (a key half-written by another tool must not be skipped silently)."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            raise KeyRingError(f"{self.directory}: no such key directory") from None
        except OSError as exc:
            raise KeyRingError(f"{self.directory}: {exc.strerror or exc}") from None
        keys: list[RingKey] = []
        for name in names:
            if name == self.legacy:
                starts = EPOCH
            elif (parsed := parse_key_name(name, self.prefix)) is not None:
                starts = parsed
            else:
                continue
            path = self.directory / name
            try:
                key = SigningKey.load(path)
            except (OSError, ValueError, TypeError) as exc:
                raise KeyRingError(f"{path}: not a usable Ed25519 key ({exc})") from None
            keys.append(RingKey(key, starts, path))
        if len(keys) > MAX_KEYS:
            raise KeyRingError(f"{self.directory}: {len(keys)} keys (at most {MAX_KEYS}): prune")
        if len({k.kid for k in keys}) != len(keys):
            raise KeyRingError(f"{self.directory}: the same key is in two files")
        return keys

    def load(self, now: datetime | None = None) -> KeySchedule:
        keys = self.read()
        if not keys:
            raise KeyRingError(
                f"{self.directory}: no {self.prefix} signing key "
                f"({self.prefix}-<YYYYMMDDTHHMMSSZ>.pem); create one with `feedgate keys rotate`"
            )
        return schedule(keys, now or datetime.now(UTC), self.overlap)

    def add(self, starts: datetime, key: SigningKey | None = None) -> RingKey:
        """Write a new key that starts signing at ``starts``: file 0600, created atomically (a
        temporary file linked into place), never replacing an existing file."""
        if starts.tzinfo is None:
            raise ValueError("starts must be timezone-aware")
        starts = starts.astimezone(UTC).replace(microsecond=0)
        key = key or SigningKey.generate()
        self.directory.mkdir(parents=True, mode=0o700, exist_ok=True)
        path = self.directory / key_name(starts, self.prefix)
        write_private_key(path, key)
        return RingKey(key, starts, path)

    def rotate(self, now: datetime | None = None, *, start_in: timedelta) -> RingKey:
        """A new key starting ``start_in`` from now (after the newest key already scheduled)."""
        now = now or datetime.now(UTC)
        starts = now + start_in
        existing = self.read()
        if existing:
            latest = max(k.starts for k in existing)
            if starts <= latest:
                starts = latest + timedelta(seconds=1)
        return self.add(starts)

    def prune(self, now: datetime | None = None) -> list[Path]:
        """Delete the expired keys' files; their names."""
        removed = []
        for k in self.load(now).expired:
            with contextlib.suppress(FileNotFoundError):
                k.path.unlink()
            removed.append(k.path)
        return removed
