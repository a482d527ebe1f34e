"""End users' JWTs (PyJWT, HS256): a short access token and a rotating refresh token, both
naming the user and the project they belong to. Signed with IMAGESMITH_JWT_SECRET, which every
API replica shares; older secrets listed in IMAGESMITH_JWT_PREVIOUS_SECRETS still verify."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt

from imagesmith.config import Settings
from imagesmith.db.base import utcnow

ALGORITHM = "HS256"
ISSUER = "imagesmith"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    project_id: str
    kind: str  # "access" or "refresh"
    token_id: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenCodec:
    secret: str
    previous: tuple[str, ...]
    access_ttl: timedelta
    refresh_ttl: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenCodec:
        secret = settings.jwt_secret or local_secret(settings.data_dir)
        previous = tuple(s.strip() for s in settings.jwt_previous_secrets.split(",") if s.strip())
        return cls(
            secret,
            previous,
            timedelta(minutes=settings.access_token_minutes),
            timedelta(days=settings.refresh_token_days),
        )

    def issue(self, user_id: str, project_id: str, kind: str) -> tuple[str, TokenClaims]:
        now = utcnow()
        ttl = self.access_ttl if kind == "access" else self.refresh_ttl
        claims = TokenClaims(user_id, project_id, kind, str(uuid.uuid4()), now + ttl)
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "sub": user_id,
            "pid": project_id,
            "typ": kind,
            "role": "end_user",
            "jti": claims.token_id,
            "iat": now,
            "exp": claims.expires_at,
        }
        return jwt.encode(payload, self.secret, algorithm=ALGORITHM), claims

    def read(self, token: str, kind: str) -> TokenClaims:
        for secret in (self.secret, *self.previous):
            try:
                payload = jwt.decode(
                    token,
                    secret,
                    algorithms=[ALGORITHM],
                    issuer=ISSUER,
                    options={"require": ["exp", "sub", "pid", "typ", "jti"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise InvalidToken(str(exc)) from None
            if payload["typ"] != kind:
                raise InvalidToken(f"not an {kind} token")
            return TokenClaims(
                str(payload["sub"]),
                str(payload["pid"]),
                kind,
                str(payload["jti"]),
                datetime.fromtimestamp(int(payload["exp"]), tz=utcnow().tzinfo),
            )
        raise InvalidToken("signature does not match")


@lru_cache(maxsize=4)
def local_secret(data_dir: Path) -> str:
    """One server's default secret, created on first use and kept private in the data dir."""
    path = Path(data_dir) / "jwt-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # another process of this server made it
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    for _ in range(50):  # the other process may still be writing it
        secret = path.read_text().strip()
        if secret:
            return secret
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty; delete it or set IMAGESMITH_JWT_SECRET")
