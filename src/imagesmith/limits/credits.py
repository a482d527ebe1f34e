"""Credits: a per-project balance (None = unlimited) and the ledger that explains it.

One credit per output image. Every run of a generation (its create, and each regenerate or
in-place update: a new job version) is charged once when it is queued, and refunded at most once,
when it ends without delivering: it failed, was cancelled, was superseded by a newer run while
it still waited or ran, or its generation was deleted before it finished. A run that succeeded
stays paid. So, per project, charged - refunded = images delivered.

Every charge and refund in the server goes through `charge_run` and `refund_run` here."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.errors import ImagesmithError
from imagesmith.models import CreditEntry, CreditKind, Generation, Project


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

    async def charge_run(self, generation: Generation, locked: Project | None = None) -> int | None:
        """Pay for the generation's current run (it must be flushed: the entry names it);
        returns the balance left (None: unlimited). `locked`: the project's row, when this
        transaction read it under its lock (`Quotas.admit`): an unlimited one costs no query."""
        amount = generation.num_outputs
        remaining = await self._take(generation.project_id, amount, locked)
        self._record(generation, CreditKind.CHARGE, amount)
        generation.credits_charged = amount
        return remaining

    async def refund_run(self, generation: Generation) -> int:
        """Give back the current run's charge unless it was refunded already; returns what
        came back. Callers decide that the run did not deliver."""
        charged, refunded = await self._run_totals(generation.id, generation.job_version)
        amount = charged - refunded
        if amount > 0:
            await self._give(generation.project_id, amount)
            self._record(generation, CreditKind.REFUND, amount)
        generation.credits_charged = 0
        return max(amount, 0)

    async def refund_part(self, generation: Generation, amount: int) -> int:
        """Give back up to `amount` of the current run's charge (images it did not deliver: a
        provider that sent fewer than asked); returns what came back."""
        charged, refunded = await self._run_totals(generation.id, generation.job_version)
        amount = min(amount, charged - refunded)
        if amount > 0:
            await self._give(generation.project_id, amount)
            self._record(generation, CreditKind.REFUND, amount)
            generation.credits_charged = max((generation.credits_charged or 0) - amount, 0)
        return max(amount, 0)

    async def set_balance(self, project_id: str, balance: int | None) -> None:
        before = await self.balance(project_id)
        await self.session.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(credit_balance=balance)
            .execution_options(synchronize_session=False)
        )
        if before is not None and balance is not None and balance != before:
            self.session.add(
                CreditEntry(project_id=project_id, kind=CreditKind.ADJUST, amount=balance - before)
            )

    async def totals(self, project_id: str) -> dict[CreditKind, int]:
        """Sums per kind of entry: what the ledger says happened to the project's credits."""
        rows = await self.session.execute(
            select(CreditEntry.kind, func.sum(CreditEntry.amount))
            .where(CreditEntry.project_id == project_id)
            .group_by(CreditEntry.kind)
        )
        sums = {CreditKind(kind): int(total or 0) for kind, total in rows.all()}
        return {kind: sums.get(kind, 0) for kind in CreditKind}

    async def check_affordable(self, project_id: str, amount: int) -> None:
        """Refuse up front what `charge_run` would refuse (it stays the authority)."""
        balance = await self.balance(project_id)
        if balance is not None and balance < amount:
            raise InsufficientCredits(
                f"This request needs {amount} credit(s) and the project has {balance} left"
            )

    async def has_credit(self, project_id: str) -> bool:
        balance = await self.balance(project_id)
        return balance is None or balance > 0

    # Internals ----------------------------------------------------------------------------

    def _record(self, generation: Generation, kind: CreditKind, amount: int) -> None:
        self.session.add(
            CreditEntry(
                project_id=generation.project_id,
                generation_id=generation.id,
                run=generation.job_version,
                kind=kind,
                amount=amount,
            )
        )

    async def _run_totals(self, generation_id: str, run: int) -> tuple[int, int]:
        await self.session.flush()  # entries added in this transaction count
        rows = await self.session.execute(
            select(CreditEntry.kind, func.sum(CreditEntry.amount))
            .where(CreditEntry.generation_id == generation_id, CreditEntry.run == run)
            .group_by(CreditEntry.kind)
        )
        sums = {CreditKind(kind): int(total or 0) for kind, total in rows.all()}
        return sums.get(CreditKind.CHARGE, 0), sums.get(CreditKind.REFUND, 0)

    async def _take(self, project_id: str, amount: int, locked: Project | None) -> int | None:
        """Take `amount` credits atomically; returns the new balance (None when unlimited).
        `locked`: the project's row as this transaction read it under its lock."""
        if locked is not None and locked.credit_balance is None:
            return None  # unlimited: no statement
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
        await self.session.execute(
            update(Project)
            .where(Project.id == project_id, Project.credit_balance.is_not(None))
            .values(credit_balance=Project.credit_balance + amount)
            .execution_options(synchronize_session=False)
        )
