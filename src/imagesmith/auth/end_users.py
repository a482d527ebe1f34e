"""End users of a developer's app: register, log in, refresh (rotating), and the access check.

An end user belongs to one project; their tokens name that project, and a token is honoured
only together with that project's headers. Refresh tokens are single-use: each refresh retires
the one presented and issues a new pair; presenting a retired one again is taken as theft and
retires every refresh token the user holds."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

from limits import parse
from sqlalchemy.exc import IntegrityError

from imagesmith.auth.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    hash_password,
    needs_rehash,
    unknown_user_hash,
    verify_password,
)
from imagesmith.auth.repository import EndUserRepository
from imagesmith.auth.tokens import InvalidToken, TokenCodec
from imagesmith.db.base import storable_text, utcnow
from imagesmith.errors import Conflict, Unauthorized, ValidationFailed
from imagesmith.limits.rate import RateLimited
from imagesmith.models import EndUser, RefreshToken
from imagesmith.runtime import Runtime

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}\Z")
BAD_CREDENTIALS = "Could not validate credentials"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    token_type: str = "bearer"


def normal_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL_RE.match(email) or "\x00" in email:
        raise ValidationFailed(f"'{email[:100]}' is not an email address", code="INVALID_EMAIL")
    return email


class EndUserService:
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.codec = TokenCodec.from_settings(runtime.settings)

    async def register(
        self, project_id: str, email: str, password: str, full_name: str | None
    ) -> tuple[EndUser, TokenPair]:
        email = normal_email(email)
        storable_text(full_name, "full_name")
        if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
            raise ValidationFailed(
                f"password must be {MIN_LENGTH} to {MAX_LENGTH} characters (got {len(password)})"
            )
        user = EndUser(
            project_id=project_id,
            email=email,
            # Argon2id is tens of milliseconds of CPU: on a thread, not on the event loop.
            password_hash=await asyncio.to_thread(hash_password, password),
            full_name=full_name,
            is_active=True,
        )
        try:
            async with self.rt.db.transaction() as session:
                repo = EndUserRepository(session)
                if await repo.by_email(project_id, email) is not None:
                    raise Conflict(f"'{email}' is already registered", code="EMAIL_TAKEN")
                await repo.add(user)
                pair = await self._issue(repo, user)
        except IntegrityError:  # two registrations of one address raced
            raise Conflict(f"'{email}' is already registered", code="EMAIL_TAKEN") from None
        return user, pair

    async def login(self, project_id: str, email: str, password: str) -> TokenPair:
        """Tokens for a right password. The hash is checked on a thread and outside any
        transaction (Argon2id holds a core for tens of milliseconds; inside a write it held
        SQLite's lock); an unknown address costs the same check, so timing does not tell which
        addresses are registered; failures per account are limited (`login_failures_limit`)."""
        email = email.strip().lower()
        failures = parse(self.rt.settings.login_failures_limit)
        account = ("login-failures", project_id, email)
        what = "failed logins of this account"
        await self.rt.rate_limiter.check_item(failures, *account, what=what)
        async with self.rt.db.read() as session:
            user = await EndUserRepository(session).by_email(project_id, email)
        stored = user.password_hash if user is not None else None
        right = await asyncio.to_thread(
            lambda: verify_password(stored or unknown_user_hash(), password)
        )
        if not right or user is None:
            with contextlib.suppress(RateLimited):  # this failure is the last one allowed
                await self.rt.rate_limiter.hit_item(failures, *account, what=what)
            raise Unauthorized("Incorrect email or password")
        if not user.is_active:
            raise Unauthorized("This account is disabled")
        rehashed = (
            await asyncio.to_thread(hash_password, password)
            if needs_rehash(user.password_hash)
            else None
        )
        async with self.rt.db.transaction() as session:
            repo = EndUserRepository(session)
            current = await repo.get(project_id, user.id)
            if current is None or not current.is_active:
                raise Unauthorized("Incorrect email or password")
            if rehashed is not None:
                current.password_hash = rehashed
            current.last_login_at = utcnow()
            return await self._issue(repo, current)

    async def refresh(self, project_id: str, token: str) -> TokenPair:
        try:
            claims = self.codec.read(token, "refresh")
        except InvalidToken:
            raise Unauthorized(BAD_CREDENTIALS) from None
        if claims.project_id != project_id:
            raise Unauthorized(BAD_CREDENTIALS)
        now = utcnow()
        async with self.rt.db.transaction() as session:
            repo = EndUserRepository(session)
            stored = await repo.refresh_token(claims.token_id)
            user = await repo.get(project_id, claims.user_id)
            if stored is None or user is None or not user.is_active:
                raise Unauthorized(BAD_CREDENTIALS)
            if stored.used_at is not None:
                await repo.retire_refresh_tokens(user.id, now)
                reuse = True
            else:
                stored.used_at = now
                reuse = False
                pair = await self._issue(repo, user)
        if reuse:  # after commit: the retirement stands even though the request fails
            raise Unauthorized(
                "This refresh token was already used; every session of this user was signed "
                "out, log in again"
            )
        return pair

    async def authenticate(self, project_id: str, token: str | None) -> EndUser:
        """The end user an access token names, in this project, still active."""
        if not token:
            raise Unauthorized(BAD_CREDENTIALS)
        try:
            claims = self.codec.read(token, "access")
        except InvalidToken:
            raise Unauthorized(BAD_CREDENTIALS) from None
        if claims.project_id != project_id:
            raise Unauthorized(BAD_CREDENTIALS)
        async with self.rt.db.read() as session:
            user = await EndUserRepository(session).get(project_id, claims.user_id)
        if user is None or not user.is_active:
            raise Unauthorized(BAD_CREDENTIALS)
        return user

    async def get(self, project_id: str, user_id: str) -> EndUser:
        async with self.rt.db.read() as session:
            user = await EndUserRepository(session).get(project_id, user_id)
        if user is None:
            raise Unauthorized(BAD_CREDENTIALS)
        return user

    async def page(
        self,
        project_id: str,
        limit: int,
        offset: int,
        search: str | None = None,
        is_active: bool | None = None,
    ) -> tuple[list[EndUser], int]:
        async with self.rt.db.read() as session:
            return await EndUserRepository(session).page(
                project_id, limit, offset, search, is_active
            )

    async def _issue(self, repo: EndUserRepository, user: EndUser) -> TokenPair:
        access, _ = self.codec.issue(user.id, user.project_id, "access")
        refresh, claims = self.codec.issue(user.id, user.project_id, "refresh")
        await repo.add(
            RefreshToken(
                id=claims.token_id,
                end_user_id=user.id,
                expires_at=claims.expires_at,
                created_at=utcnow(),
            )
        )
        return TokenPair(access, refresh)
