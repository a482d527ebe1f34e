"""Credits: a per-project balance (None = unlimited). One credit per output image, taken when a
run is queued (create, regenerate, an in-place update) and given back when it fails or is
cancelled. Every charge and refund in the server goes through `charge_run` and `refund_run`."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.errors import ImagesmithError
from imagesmith.models import Generation, Project


class InsufficientCredits(ImagesmithError):
    status_code = 402
    code = "INSUFFICIENT_CREDITS"


class Credits:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def balance(self, project_id: str) -> int | None:
        result = await self.session.execute(
            select(Project.credit_balance).where(Project.id == project_id)
        )
        return result.scalar_one_or_none()

    async def charge_run(self, generation: Generation) -> int | None:
        """Pay for a new run of this generation; returns the balance left (None: unlimited)."""
        remaining = await self._take(generation.project_id, generation.num_outputs)
        generation.credits_charged = (generation.credits_charged or 0) + generation.num_outputs
        return remaining

    async def refund_run(self, generation: Generation) -> None:
        """No charge for work that did not happen: give back what the generation holds."""
        await self._give(generation.project_id, generation.credits_charged or 0)
        generation.credits_charged = 0

    async def has_credit(self, project_id: str) -> bool:
        balance = await self.balance(project_id)
        return balance is None or balance > 0

    async def _take(self, project_id: str, amount: int) -> int | None:
        """Take `amount` credits atomically; returns the new balance (None when unlimited)."""
        result = await self.session.execute(
            update(Project)
            .where(
                Project.id == project_id,
                Project.credit_balance.is_not(None),
                Project.credit_balance >= amount,
            )
            .values(credit_balance=Project.credit_balance - amount)
            .returning(Project.credit_balance)
            .execution_options(synchronize_session=False)
        )
        charged = result.scalar_one_or_none()
        if charged is not None:
            return int(charged)
        balance = await self.balance(project_id)
        if balance is None:
            return None
        raise InsufficientCredits(
            f"This request needs {amount} credit(s) and the project has {balance} left"
        )

    async def _give(self, project_id: str, amount: int) -> None:
        if amount <= 0:
            return
        await self.session.execute(
            update(Project)
            .where(Project.id == project_id, Project.credit_balance.is_not(None))
            .values(credit_balance=Project.credit_balance + amount)
            .execution_options(synchronize_session=False)
        )

    async def set_balance(self, project_id: str, balance: int | None) -> None:
        await self.session.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(credit_balance=balance)
            .execution_options(synchronize_session=False)
        )
