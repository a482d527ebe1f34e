"""Per-key request rate limits on the `limits` library: in memory for one API process, in Redis
when several API replicas must share exact counters."""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from imagesmith.config import Settings
from imagesmith.errors import ImagesmithError


class RateLimited(ImagesmithError):
    status_code = 429
    code = "RATE_LIMIT_EXCEEDED"


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_at: float

    def headers(self) -> dict[str, str]:
        """X-RateLimit-Reset is the number of seconds until the window resets (seed 002's
        definition), not a timestamp: a client that sleeps for it wakes on time."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(max(0, math.ceil(self.reset_at - time.time()))),
        }


class RateLimiter:
    def __init__(self, settings: Settings):
        self.item: RateLimitItem | None = None
        if settings.rate_limit:
            try:
                self.item = parse(settings.rate_limit)
            except ValueError as exc:
                raise ValueError(
                    f"IMAGESMITH_RATE_LIMIT={settings.rate_limit!r} is not a rate like '100/hour'"
                ) from exc
        storage: Storage
        if settings.redis_url:
            storage = RedisStorage("async+" + settings.redis_url, implementation="redispy")
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)

    async def hit(self, scope: str) -> RateState | None:
        """Count one request for `scope` (an API key id); raise when the limit is used up."""
        if self.item is None:
            return None
        return await self.hit_item(self.item, "key", scope, what="this API key")

    async def check_item(self, item: RateLimitItem, *identifiers: str, what: str) -> None:
        """Raise RateLimited when `item` is used up for `identifiers`, counting nothing."""
        if not await self.strategy.test(item, *identifiers):
            stats = await self.strategy.get_window_stats(item, *identifiers)
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            raise RateLimited(
                f"Rate limit of {item.amount} per {item.get_expiry()} s for {what} exceeded; "
                f"retry in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )

    async def hit_item(self, item: RateLimitItem, *identifiers: str, what: str) -> RateState:
        """Count one event against `item` for `identifiers`; raise RateLimited past it."""
        allowed = await self.strategy.hit(item, *identifiers)
        stats = await self.strategy.get_window_stats(item, *identifiers)
        state = RateState(item.amount, max(stats.remaining, 0), stats.reset_time)
        if not allowed:
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            raise RateLimited(
                f"Rate limit of {item.amount} per {item.get_expiry()} s for {what} exceeded; "
                f"retry in {retry_after} s",
                headers={**state.headers(), "Retry-After": str(retry_after)},
            )
        return state


def ip_bucket(address: str) -> str:
    """What a per-IP limit counts: the address, or for IPv6 its /64 (one subscriber's network;
    a client can change the lower 64 bits at will)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
