"""Wake-ups: a generation changed, new work is queued, or webhook deliveries are due.

In one process these are asyncio events. On PostgreSQL every process also publishes them with
NOTIFY and a listener turns other processes' notifications into local wake-ups, so an API can
answer `Prefer: wait` the moment a remote worker finishes, and idle remote workers start at once.
Waiters re-read the database only when woken, and a job's steps (its claim, a step, a preview)
wake only those that follow its progress (event streams), not those waiting for its end (`Prefer:
wait`, the synchronous dialects). What a wake-up could miss (another process's
worker on SQLite, a NOTIFY lost while the listener reconnects) one sweep per process catches
every `recheck_seconds` (generation/watch.py): a thousand idle waiters cost one query."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

JOBS_CHANNEL = "imagesmith_jobs"
CHANGED_CHANNEL = "imagesmith_generation"
PROGRESS = "progress"  # CHANGED_CHANNEL's payload: "<id>", or "<id> progress" for a step

Publisher = Callable[[str, str], Coroutine[Any, Any, None]]


# How many generations' last ending-or-change times a process remembers (`changed_since`).
REMEMBERED_CHANGES = 4096

Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]
Watcher = tuple[asyncio.AbstractEventLoop, asyncio.Event, bool]  # and: follows progress


class _Signal:
    """A level-triggered wake-up: a set that nobody waited for is kept for the next waiter."""

    def __init__(self) -> None:
        self.waiters: set[Waiter] = set()
        self.pending = False
        self.raised = 0  # how many times so far


class _Waiters:
    """Who waits for what, shared by the notifiers of one process's threads (the API's event
    loop and the embedded worker's): a wake-up from either loop reaches a waiter on the other."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed: dict[str, set[Watcher]] = defaultdict(set)
        # When each generation last had a change that may end it (time.monotonic), the newest
        # REMEMBERED_CHANGES of them, and the newest time forgotten to make room.
        self.changed_at: OrderedDict[str, float] = OrderedDict()
        self.forgotten = float("-inf")
        # False while other processes' changes cannot reach this one (its LISTEN connection is
        # down, or SQLite with workers elsewhere): nothing heard then proves nothing changed.
        self.hearing = True
        self.work = _Signal()
        # Webhook deliveries written in this process (each process that writes them sends
        # them; other processes' leftovers are found by the sender's poll).
        self.webhooks = _Signal()


def _set(waiter: Waiter) -> None:
    loop, event = waiter
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        event.set()
    else:
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits there
            loop.call_soon_threadsafe(event.set)


class Watch:
    """One watcher's wake-ups for one generation (`Notifier.watch`)."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    async def wait(self, timeout: float) -> bool:
        """True as soon as the generation may have changed since the last `wait` (or since
        the watch began), False after `timeout` seconds without a change."""
        if not self._event.is_set():
            # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own, and a
            # thousand long-polling clients each held one.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._event.wait()
        changed = self._event.is_set()
        self._event.clear()
        return changed

    def wake(self) -> None:
        """Wake this watcher's `wait` now, as a change would (from its own event loop)."""
        self._event.set()


class Notifier:
    def __init__(
        self,
        publish: Publisher | None = None,
        recheck_seconds: float = 5.0,
        *,
        waiters: _Waiters | None = None,
    ) -> None:
        self.recheck_seconds = recheck_seconds
        self._waiters = waiters or _Waiters()
        self._publish = publish
        self._pending: set[asyncio.Task[None]] = set()

    def sibling(self, publish: Publisher | None) -> Notifier:
        """A notifier for another thread's event loop of this process: the same waiters, its
        own publisher (a database connection belongs to the loop that opened it)."""
        return Notifier(publish, self.recheck_seconds, waiters=self._waiters)

    def _broadcast(self, channel: str, payload: str) -> None:
        if self._publish is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._publish(channel, payload))
        except RuntimeError:
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # Local wake-ups (also what the listener calls for other processes' notifications).

    def wake_changed(self, generation_id: str, *, progress: bool = False) -> None:
        """Wake the generation's watchers; with `progress` (the change is a running job's step,
        not an ending) only those that follow its progress."""
        with self._waiters.lock:
            waiting = [
                (loop, event)
                for loop, event, follows in self._waiters.changed.get(generation_id, ())
                if follows or not progress
            ]
            if not progress:
                remembered = self._waiters.changed_at
                remembered[generation_id] = time.monotonic()
                remembered.move_to_end(generation_id)
                if len(remembered) > REMEMBERED_CHANGES:
                    _, at = remembered.popitem(last=False)
                    self._waiters.forgotten = max(self._waiters.forgotten, at)
        for waiter in waiting:
            _set(waiter)

    def wake_from_payload(self, payload: str) -> None:
        """Another process's `generation_changed` or `generation_progressed` (its NOTIFY)."""
        generation_id, _, kind = payload.partition(" ")
        self.wake_changed(generation_id, progress=kind == PROGRESS)

    def wake_work(self) -> None:
        self._raise(self._waiters.work)

    def _raise(self, signal: _Signal) -> None:
        with self._waiters.lock:
            signal.pending = True
            signal.raised += 1
            waiting = list(signal.waiters)
        for waiter in waiting:
            _set(waiter)

    # Announcements: wake this process and tell the others.

    def generation_changed(self, generation_id: str) -> None:
        """It may have ended (or been cancelled, deleted, re-queued, edited): every watcher."""
        self.wake_changed(generation_id)
        self._broadcast(CHANGED_CHANNEL, generation_id)

    def generation_progressed(self, generation_id: str) -> None:
        """A running job moved on without ending (claimed, a step, a preview stored): only the
        watchers that follow its progress. A thousand clients waiting for their images each
        used to re-read their job's status at its claim and at each progress write."""
        self.wake_changed(generation_id, progress=True)
        self._broadcast(CHANGED_CHANNEL, f"{generation_id} {PROGRESS}")

    def work_queued(self) -> None:
        self.wake_work()
        self._broadcast(JOBS_CHANNEL, "")

    def webhooks_queued(self) -> None:
        self._raise(self._waiters.webhooks)

    def changed_since(self, generation_id: str, since: float) -> bool:
        """Whether a change that may end the generation was heard of since `since` (a
        time.monotonic() taken before a read of it): False means that read still holds, for a
        watcher registered now. Unsure (forgotten to make room) counts as changed."""
        with self._waiters.lock:
            if not self._waiters.hearing:
                return True
            at = self._waiters.changed_at.get(generation_id)
            return (at is not None and at >= since) or self._waiters.forgotten >= since

    def work_heard(self) -> int | None:
        """How many times work was announced to this process so far; None while other
        processes' announcements may not reach it. While this stays the same, no job was queued
        that this process was told of (`JobQueue.claim` skips a look that found nothing)."""
        with self._waiters.lock:
            return self._waiters.work.raised if self._waiters.hearing else None

    def set_hearing(self, hearing: bool) -> None:
        """Whether other processes' changes reach this one now (`changed_since`). Hearing again
        after a gap, what a read began before now may have missed, unheard."""
        with self._waiters.lock:
            if hearing and not self._waiters.hearing:
                self._waiters.forgotten = time.monotonic()
            self._waiters.hearing = hearing

    def watched(self) -> list[str]:
        """The generations someone in this process is waiting on."""
        with self._waiters.lock:
            return list(self._waiters.changed)

    @contextlib.contextmanager
    def watch(self, generation_id: str, *, progress: bool) -> Iterator[Watch]:
        """Watch a generation for as long as the block runs: its every change with `progress`
        (an event stream), else only those that may end it. Register before the first read:
        a change that lands while the watcher reads the database is kept for its next `wait`
        (a waiter registered per wait lost it, and slept until the sweep)."""
        waiter = (asyncio.get_running_loop(), asyncio.Event(), progress)
        with self._waiters.lock:
            self._waiters.changed[generation_id].add(waiter)
        try:
            yield Watch(waiter[1])
        finally:
            with self._waiters.lock:
                waiting = self._waiters.changed.get(generation_id)
                if waiting is not None:
                    waiting.discard(waiter)
                    if not waiting:
                        del self._waiters.changed[generation_id]

    async def wait_for_work(self, timeout: float) -> None:
        """Return when work may have been queued (also if it was before this call), or after
        `timeout` seconds."""
        await self._wait(self._waiters.work, timeout)

    async def wait_for_webhooks(self, timeout: float) -> None:
        """Return when deliveries may have been written (also before this call), or after
        `timeout` seconds."""
        await self._wait(self._waiters.webhooks, timeout)

    async def _wait(self, signal: _Signal, timeout: float) -> None:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._waiters.lock:
            if signal.pending:
                signal.pending = False
                return
            signal.waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter[1].wait()
        finally:
            with self._waiters.lock:
                signal.waiters.discard(waiter)
                signal.pending = False

    async def drain(self) -> None:
        """Let announcements already made reach the database before shutdown."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=2)
