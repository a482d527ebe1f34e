"""Key material: random secrets, their hashes and visible prefixes."""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "ims_"
VISIBLE_CHARS = 12
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\Z")


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def visible_prefix(secret: str) -> str:
    return secret[:VISIBLE_CHARS]


def is_valid_slug(slug: str) -> bool:
    return bool(SLUG_RE.match(slug))
