"""The in-process notifier: a watcher keeps the wake-ups that land between its waits (while it
reads the database), from its own event loop and from the embedded worker's thread."""

from __future__ import annotations

import asyncio
import threading

from imagesmith.db.notify import Notifier


async def test_a_change_while_the_watcher_reads_is_not_lost() -> None:
    notifier = Notifier()
    with notifier.watch("g1") as changes:
        # The watcher is reading the row; the worker finishes the job now.
        notifier.wake_changed("g1")
        notifier.wake_changed("g2")  # someone else's generation
        assert await changes.wait(0)  # seen without waiting at all
        assert not await changes.wait(0.01)  # consumed: no change since
    assert notifier.watched() == []


async def test_a_wake_up_from_the_worker_thread_reaches_the_watcher() -> None:
    notifier = Notifier()
    with notifier.watch("g1") as changes:
        assert notifier.watched() == ["g1"]

        def worker() -> None:  # the embedded worker: its own thread and loop
            async def finish() -> None:
                notifier.sibling(None).generation_changed("g1")

            asyncio.run(finish())

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert await changes.wait(30)
