"""One spawned model child, with a reader thread that turns its pipe into an asyncio queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from imagesmith.engines.base import EngineConfig
from imagesmith.worker.child import child_main
from imagesmith.worker.messages import ChildExited, ChildMessage, Ready, Shutdown

log = logging.getLogger(__name__)


class ChildStartFailed(RuntimeError):
    pass


class ModelProcess:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.messages: asyncio.Queue[ChildMessage] = asyncio.Queue()
        self.device: str | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self, timeout: float = 180.0) -> Ready:
        # spawn, not fork: the child must not inherit the server's event loop, sockets or threads.
        context = multiprocessing.get_context("spawn")
        parent_conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=child_main, args=(child_conn, self.config), name="imagesmith-model", daemon=True
        )
        self.process.start()
        child_conn.close()  # so the parent sees EOF the moment the child dies
        self.conn = parent_conn
        self.messages = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._read, args=(loop, parent_conn, self.process, self.messages), daemon=True
        ).start()
        try:
            first = await asyncio.wait_for(self.messages.get(), timeout)
        except TimeoutError:
            self.kill()
            raise ChildStartFailed(f"model process did not start within {timeout:.0f} s") from None
        if not isinstance(first, Ready):
            raise ChildStartFailed(f"model process exited while starting: {first}")
        self.device = first.device
        log.info("child.ready pid=%s device=%s threads=%d", first.pid, first.device, first.threads)
        return first

    @staticmethod
    def _read(
        loop: asyncio.AbstractEventLoop,
        conn: Connection,
        process: BaseProcess,
        queue: asyncio.Queue[ChildMessage],
    ) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                process.join(timeout=5)
                message = ChildExited(process.exitcode)
                loop.call_soon_threadsafe(queue.put_nowait, message)
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:  # the loop closed under us: the server is shutting down
                return

    def send(self, message: object) -> None:
        assert self.conn is not None, "child not started"
        self.conn.send(message)

    async def next_message(self, timeout: float) -> ChildMessage | None:
        try:
            return await asyncio.wait_for(self.messages.get(), timeout)
        except TimeoutError:
            return None

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()

    async def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self.send(Shutdown())
            await asyncio.to_thread(self.process.join, timeout)
        self.kill()
        if self.conn is not None:
            self.conn.close()
        self.process = None
