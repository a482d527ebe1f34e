"""Plans, monthly quotas and concurrency caps: one limits module for every dialect.

A project's plan sets how many generations it may create per calendar month (UTC) and how many
may be pending or processing at once; an operator may override either, and may cap each end user
per month. Creates from every dialect count (native, Stablecog, devkit4ai, live URL misses).

`admit` runs inside the transaction that commits the new generation, after locking the project
row, so the checks are exact under concurrency: on PostgreSQL the row lock serializes one
project's creates across every API replica; SQLite serializes write transactions already."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.db.base import utcnow
from imagesmith.errors import ValidationFailed
from imagesmith.limits.rate import RateLimited
from imagesmith.models import Generation, GenerationStatus, Project, UsageCounter

# What every create reads, built once (building a statement costs more CPU than executing it).
PROJECT = select(Project).where(Project.id == bindparam("project_id"))
PROJECT_LOCKED = PROJECT.with_for_update(key_share=True)
COUNTER = select(UsageCounter).where(
    UsageCounter.project_id == bindparam("project_id"),
    UsageCounter.end_user_id == bindparam("end_user_id"),
    UsageCounter.month == bindparam("month"),
)

CONCURRENCY_RETRY_SECONDS = 5


@dataclass(frozen=True)
class Plan:
    monthly: int | None  # generations per calendar month; None: unlimited
    concurrent: int | None  # pending + processing at once; None: unlimited


# The seed's tiers (devkit4ai: Free Starter, Cloud Starter, Cloud Premium) and "no limits".
PLANS: dict[str, Plan] = {
    "free": Plan(monthly=100, concurrent=1),
    "starter": Plan(monthly=1000, concurrent=3),
    "premium": Plan(monthly=None, concurrent=10),
    "unlimited": Plan(monthly=None, concurrent=None),
}
DEFAULT_PLAN = "unlimited"  # a self-hosted server's own projects are not metered until asked


class QuotaExceeded(RateLimited):
    code = "QUOTA_EXCEEDED"


class ConcurrencyLimited(RateLimited):
    code = "CONCURRENCY_LIMIT_EXCEEDED"


@dataclass(frozen=True)
class Limits:
    plan: str
    monthly: int | None
    concurrent: int | None
    end_user_monthly: int | None

    @classmethod
    def of(cls, project: Project) -> Limits:
        plan = PLANS.get(project.plan or DEFAULT_PLAN, PLANS[DEFAULT_PLAN])
        return cls(
            plan=project.plan or DEFAULT_PLAN,
            monthly=project.monthly_quota if project.monthly_quota is not None else plan.monthly,
            concurrent=(
                project.concurrent_limit
                if project.concurrent_limit is not None
                else plan.concurrent
            ),
            end_user_monthly=project.end_user_monthly_quota,
        )


@dataclass(frozen=True)
class Usage:
    limits: Limits
    month: str
    used: int
    in_flight: int


def month_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


def seconds_to_next_month(moment: datetime) -> int:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    reset = datetime(year, month, 1, tzinfo=UTC)
    return max(1, math.ceil((reset - moment).total_seconds()))


class Quotas:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def check(self, project_id: str, end_user_id: str | None = None) -> None:
        """Raise (429) if one more generation would be refused now; counts nothing."""
        await self.admit(project_id, end_user_id, count=False)

    async def admit(
        self,
        project_id: str,
        end_user_id: str | None = None,
        *,
        count: bool = True,
        rerun: str | None = None,
    ) -> Project:
        """Count one new generation against the project's limits, or raise (429); returns the
        project's row (locked when `count`). The lock is PostgreSQL's FOR NO KEY UPDATE: creates
        of one project still take turns, but an insert that only references the project (the
        worker storing an image, a foreign key's KEY SHARE) does not wait behind them; with FOR
        UPDATE a burst of 1000 creates kept the worker's results waiting on the project row.
        `rerun`: the generation a regenerate or an edit runs again (it is no extra job in
        flight when it supersedes its own running attempt)."""
        now = utcnow()
        query = PROJECT_LOCKED if count else PROJECT
        project = (await self.session.execute(query, {"project_id": project_id})).scalar_one()
        limits = Limits.of(project)
        if limits.concurrent is not None:
            in_flight = await self._in_flight(project_id, besides=rerun)
            if in_flight >= limits.concurrent:
                raise ConcurrencyLimited(
                    f"This project may have {limits.concurrent} generation(s) pending or "
                    f"processing at once (plan '{limits.plan}'); retry when one finishes",
                    headers={"Retry-After": str(CONCURRENCY_RETRY_SECONDS)},
                )
        month = month_of(now)
        await self._count(project_id, "", month, limits.monthly, now, "This project", count)
        if end_user_id is not None:
            await self._count(
                project_id, end_user_id, month, limits.end_user_monthly, now, "This end user", count
            )
        return project

    def set_plan(
        self,
        project: Project,
        plan: str,
        monthly: int | None = None,
        concurrent: int | None = None,
        end_user_monthly: int | None = None,
    ) -> Limits:
        """Put the project on `plan`; a limit given here overrides the plan's, None keeps it."""
        if plan not in PLANS:
            raise ValidationFailed(f"Unknown plan '{plan}'; use one of: {', '.join(PLANS)}")
        for name, value in (
            ("monthly", monthly),
            ("concurrent", concurrent),
            ("end-user monthly", end_user_monthly),
        ):
            if value is not None and value < 0:
                raise ValidationFailed(f"The {name} limit must be 0 or more (got {value})")
        project.plan = plan
        project.monthly_quota = monthly
        project.concurrent_limit = concurrent
        project.end_user_monthly_quota = end_user_monthly
        return Limits.of(project)

    def set_anonymous(self, project: Project, enabled: bool, daily: int | None) -> str:
        """devkit4ai's anonymous generation: on or off, and how many per client IP per day."""
        if daily is not None and daily < 1:
            raise ValidationFailed(f"The daily limit must be 1 or more (got {daily})")
        project.anonymous_enabled = enabled
        if daily is not None:
            project.anonymous_daily_limit = daily
        per_ip = f"on, {project.anonymous_daily_limit} per IP per day"
        return f"anonymous generation {per_ip if enabled else 'off'}"

    async def usage(self, project: Project) -> Usage:
        month = month_of(utcnow())
        counter = await self._counter(project.id, "", month)
        in_flight = await self._in_flight(project.id)
        return Usage(Limits.of(project), month, counter.count if counter else 0, in_flight)

    async def _count(
        self,
        project_id: str,
        end_user_id: str,
        month: str,
        limit: int | None,
        now: datetime,
        who: str,
        count: bool,
    ) -> None:
        counter = await self._counter(project_id, end_user_id, month)
        used = counter.count if counter is not None else 0
        if limit is not None and used >= limit:
            reset = seconds_to_next_month(now)
            raise QuotaExceeded(
                f"{who} used its {limit} generations for {month}; the quota resets in {reset} s",
                headers={
                    "Retry-After": str(reset),
                    "X-RateLimit-Limit": str(limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset),
                },
            )
        if not count:
            return
        if counter is None:
            self.session.add(
                UsageCounter(project_id=project_id, end_user_id=end_user_id, month=month, count=1)
            )
        else:
            counter.count = used + 1
        await self.session.flush()

    async def _counter(self, project_id: str, end_user_id: str, month: str) -> UsageCounter | None:
        where = {"project_id": project_id, "end_user_id": end_user_id, "month": month}
        return (await self.session.execute(COUNTER, where)).scalar_one_or_none()

    async def _in_flight(self, project_id: str, besides: str | None = None) -> int:
        conditions = [
            Generation.project_id == project_id,
            Generation.status.in_([GenerationStatus.PENDING, GenerationStatus.PROCESSING]),
        ]
        if besides is not None:
            conditions.append(Generation.id != besides)
        return int(
            (
                await self.session.execute(select(func.count(Generation.id)).where(*conditions))
            ).scalar_one()
        )
