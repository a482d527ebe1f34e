"""The in-process notifier: a watcher keeps the wake-ups that land between its waits (while it
reads the database), from its own event loop and from the embedded worker's thread; a running
job's steps wake only the watchers that follow its progress."""

from __future__ import annotations

import asyncio
import threading
import time

from imagesmith.db.notify import CHANGED_CHANNEL, Notifier


async def test_a_change_while_the_watcher_reads_is_not_lost() -> None:
    notifier = Notifier()
    with notifier.watch("g1", progress=False) as changes:
        # The watcher is reading the row; the worker finishes the job now.
        notifier.wake_changed("g1")
        notifier.wake_changed("g2")  # someone else's generation
        assert await changes.wait(0)  # seen without waiting at all
        assert not await changes.wait(0.01)  # consumed: no change since
    assert notifier.watched() == []


async def test_a_wake_up_from_the_worker_thread_reaches_the_watcher() -> None:
    notifier = Notifier()
    with notifier.watch("g1", progress=False) as changes:
        assert notifier.watched() == ["g1"]

        def worker() -> None:  # the embedded worker: its own thread and loop
            async def finish() -> None:
                notifier.sibling(None).generation_changed("g1")

            asyncio.run(finish())

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert await changes.wait(30)


async def test_a_step_wakes_only_the_watchers_that_follow_progress() -> None:
    notifier = Notifier()
    with (
        notifier.watch("g1", progress=False) as ends,
        notifier.watch("g1", progress=True) as steps,
    ):
        notifier.generation_progressed("g1")
        assert await steps.wait(0) and not await ends.wait(0)
        notifier.generation_changed("g1")
        assert await steps.wait(0) and await ends.wait(0)
        # Other processes' NOTIFY payloads: "<id> progress" for a step, "<id>" for the rest.
        notifier.wake_from_payload("g1 progress")
        assert await steps.wait(0) and not await ends.wait(0)
        notifier.wake_from_payload("g1")
        assert await steps.wait(0) and await ends.wait(0)


async def test_the_notify_payloads_say_which_kind_of_change() -> None:
    sent: list[tuple[str, str]] = []

    async def publish(channel: str, payload: str) -> None:
        sent.append((channel, payload))

    notifier = Notifier(publish)
    notifier.generation_progressed("g1")
    notifier.generation_changed("g1")
    await notifier.drain()
    assert sent == [(CHANGED_CHANNEL, "g1 progress"), (CHANGED_CHANNEL, "g1")]


def test_changes_are_remembered_for_reads_that_began_before_them() -> None:
    """`changed_since`: whether a read begun at `since` may miss a change that could end the
    job. Steps do not count; a change forgotten to make room counts as one for everybody."""
    from imagesmith.db import notify

    notifier = Notifier()
    before = time.monotonic()
    notifier.generation_progressed("g1")
    assert not notifier.changed_since("g1", before)
    notifier.generation_changed("g1")
    assert notifier.changed_since("g1", before)
    assert not notifier.changed_since("g1", time.monotonic())  # a read begun after it
    assert not notifier.changed_since("g2", before)
    for i in range(notify.REMEMBERED_CHANGES):
        notifier.wake_changed(f"other-{i}")
    assert notifier.changed_since("g2", before)  # g1's change was forgotten: unsure


def test_nothing_heard_proves_nothing_while_other_processes_cannot_be_heard() -> None:
    """While the LISTEN connection is down (or on SQLite with workers in other processes),
    another process's change would go unheard: every read counts as unsure, and once hearing
    again, so does every read begun before."""
    notifier = Notifier()
    before = time.monotonic()
    notifier.set_hearing(False)
    assert notifier.changed_since("g1", before)
    notifier.set_hearing(True)
    assert notifier.changed_since("g1", before)
    assert not notifier.changed_since("g1", time.monotonic())
