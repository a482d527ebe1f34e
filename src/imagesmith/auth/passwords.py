"""End-user passwords: Argon2id (argon2-cffi's defaults, RFC 9106's second recommendation)."""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

HASHER = PasswordHasher()
MIN_LENGTH = 8
MAX_LENGTH = 256  # hashing cost grows with length: bound it


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return HASHER.check_needs_rehash(stored)


@functools.cache
def unknown_user_hash() -> str:
    """What a login for an unknown address is checked against: the same work as a real one."""
    return HASHER.hash(secrets.token_urlsafe(16))
