"""Sign-in passwords for the console, kept as scrypt hashes (RFC 7914, ``hashlib.scrypt``).

A stored hash names its own parameters, ``scrypt$<log2 N>$<r>$<p>$<salt>$<key>`` (salt and
key in unpadded base64url), so the cost can be raised later without invalidating what is
stored.

Checking a password costs the same whether or not the principal has one
(:func:`verify` against :data:`NO_PASSWORD`), so the time taken does not say which names
exist. Pure functions, blocking (tens of milliseconds of CPU and 32 MiB each): call them off
the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "MAX_LENGTH",
    "MIN_LENGTH",
    "NO_PASSWORD",
    "PasswordError",
    "check_password",
    "hash_password",
    "verify",
]

MIN_LENGTH = 12  # NIST SP 800-63B: length, not composition rules
MAX_LENGTH = 256
# N = 2^15, r = 8, p = 1: 32 MiB and about 0.1 s on this kind of machine (OWASP's floor is
# N = 2^17 for a dedicated login server; a gateway shares its cores with the media).
LOG2_N, R, P = 15, 8, 1
_KEY_BYTES = 32
_SALT_BYTES = 16
_MAX_LOG2_N = 20  # a stored hash may ask for at most 1 GiB: never let one take the host down


class PasswordError(ValueError):
    """A password that cannot be set (too short, too long, control characters)."""


@dataclass(frozen=True)
class _Params:
    log2_n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r + 1024 * 1024,
        dklen=_KEY_BYTES,
    )


def check_password(password: str) -> None:
    """Raise PasswordError unless ``password`` may be set."""
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"at most {MAX_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise PasswordError("no control characters")


def hash_password(password: str) -> str:
    """The stored form of a new password (checked with :func:`check_password` first)."""
    check_password(password)
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _derive(password, salt, LOG2_N, R, P)
    return f"scrypt${LOG2_N}${R}${P}${_b64(salt)}${_b64(key)}"


def _parse(stored: str) -> _Params | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error):
        return None
    if not (10 <= log2_n <= _MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 4):
        return None
    if len(salt) < 8 or len(key) != _KEY_BYTES:
        return None
    return _Params(log2_n, r, p, salt, key)


# What an unknown principal, or one without a password, is checked against: the same work.
NO_PASSWORD = f"scrypt${LOG2_N}${R}${P}${_b64(bytes(_SALT_BYTES))}${_b64(bytes(_KEY_BYTES))}"


def verify(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (None: checked against nothing, and False)."""
    params = _parse(stored if stored is not None else NO_PASSWORD)
    if params is None:
        params = _parse(NO_PASSWORD)
        assert params is not None
        stored = None
    too_long = len(password) > MAX_LENGTH  # never set: the same work, then no
    key = _derive(password[:MAX_LENGTH], params.salt, params.log2_n, params.r, params.p)
    same = hmac.compare_digest(key, params.key)
    return same and not too_long and stored is not None and stored != NO_PASSWORD
