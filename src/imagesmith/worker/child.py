"""The model child: a spawned process that owns torch, the pipelines and the device.

A crash, OOM or hang here kills only this process; the supervisor restarts it.

Its main thread only denoises. A finished batch's images are PNG-encoded on the outbox's
threads while the next batch runs, and every message leaves through the outbox in the order it
was posted, so the supervisor sees what it always saw: a batch's progress, its results, then its
BatchDone, then the next batch's."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from imagesmith.engines.base import (
    EngineConfig,
    EngineJob,
    GeneratedImage,
    ModelUnavailable,
    out_of_memory,
)
from imagesmith.worker.cpu_share import AdaptiveThreads, CpuShare, quota_cores
from imagesmith.worker.messages import (
    BatchDone,
    CancelBatch,
    ChildMessage,
    JobDone,
    JobFailed,
    Preview,
    Progress,
    Ready,
    RunBatch,
    Shutdown,
)

if TYPE_CHECKING:
    from PIL.Image import Image

# Batches whose images may wait to be encoded: a model that draws faster than its images encode
# is held back at the next batch instead of filling memory with pictures. (The supervisor queues
# one batch ahead and sees a batch's last step only after the results before it, so a falling-
# behind encoder already slows its claims; this bounds a child that is given more.)
ENCODE_BACKLOG_BATCHES = 2


def _quiet_libraries() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")


if TYPE_CHECKING:
    from imagesmith.engines.diffusers_engine import DiffusersEngine


def available_cores() -> int:
    """The cores this process may run on: a container's cpuset or CPU quota, not the host's
    count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(cores, quota_cores() or cores)


def encode_png(image: Image, level: int = 1) -> GeneratedImage:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=level)
    return GeneratedImage(buffer.getvalue(), image.width, image.height)


def encode_threads(device: str, cores: int) -> int:
    """Threads that PNG-encode beside the denoising. Pillow lets go of the GIL while it
    compresses, so they run truly in parallel: on a GPU, where a turbo model can draw a 1024 px
    image faster than one thread encodes it (~100 ms here), up to four; on a CPU one, since the
    cores already run torch and the API."""
    if device == "cpu":
        return 1
    return max(1, min(4, cores - 1))


Encoded = tuple[list[GeneratedImage] | Exception, float]
"""A job's PNGs (or why they could not be made) and the milliseconds encoding took."""


class Outbox:
    """The child's one way out to the supervisor, in order. A message posted after a job's
    images leaves after their JobDone, which waits for its PNGs: they are encoded on the pool's
    threads, not on the thread that denoises."""

    def __init__(self, conn: Connection, threads: int, level: int, gone: threading.Event) -> None:
        self._conn = conn
        self._level = level
        self._clocks: list[int] = []  # the encode threads' CPU clocks (cpu_seconds)
        self._pool = ThreadPoolExecutor(
            threads, thread_name_prefix="png", initializer=self._register_clock
        )
        # (what to send, whether it ends a batch); None: close.
        self._queue: queue.Queue[tuple[Callable[[], ChildMessage | None], bool] | None]
        self._queue = queue.Queue()
        self._backlog = threading.Semaphore(ENCODE_BACKLOG_BATCHES)
        self.gone = gone  # the supervisor is gone: nothing more is sent, and the child stops
        self._sender = threading.Thread(target=self._send_in_order, daemon=True, name="outbox")
        self._sender.start()

    def post(self, message: ChildMessage) -> None:
        self._queue.put((lambda: message, False))

    def post_images(self, job_id: str, images: list[Image]) -> Future[Encoded]:
        """The job's JobDone (JobFailed if its images would not encode), once encoded."""
        encoded = self._pool.submit(self._encode, images)

        def done() -> ChildMessage:
            pngs, _ms = encoded.result()
            if isinstance(pngs, Exception):
                return JobFailed(job_id, _describe(pngs))
            return JobDone(job_id, pngs)

        self._queue.put((done, False))
        return encoded

    def post_preview(self, job_id: str, index: int, image: Image) -> None:
        encoded = self._pool.submit(self._encode, [image])

        def done() -> ChildMessage | None:
            pngs, _ms = encoded.result()
            return None if isinstance(pngs, Exception) else Preview(job_id, index, pngs[0])

        self._queue.put((done, False))

    def start_batch(self) -> None:
        """Wait while ENCODE_BACKLOG_BATCHES earlier batches are still being encoded."""
        self._backlog.acquire()

    def end_batch(
        self, batch_id: str, timings: dict[str, float], encoding: list[Future[Encoded]]
    ) -> None:
        """The batch's BatchDone, after its results; `encode_ms` is its images' encoding time
        (spent beside the next batch's denoising, not before it)."""

        def done() -> ChildMessage:
            if not encoding:
                return BatchDone(batch_id, timings)
            encode_ms = sum(future.result()[1] for future in encoding)
            return BatchDone(batch_id, {**timings, "encode_ms": encode_ms})

        self._queue.put((done, True))

    def close(self, timeout: float = 60.0) -> None:
        """Send what is still queued, then stop."""
        self._queue.put(None)
        self._sender.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def cpu_seconds(self) -> float:
        """CPU time the encode threads have spent so far, read from their own clocks (so an
        encode under way counts as it runs). A CpuShare counts it as the others' use: a core
        busy encoding is not one torch can have."""
        total = 0.0
        for clock in list(self._clocks):
            with contextlib.suppress(OSError):  # a thread that has ended
                total += time.clock_gettime(clock)
        return total

    def _register_clock(self) -> None:
        if hasattr(time, "pthread_getcpuclockid"):  # Linux; CpuShare runs only there
            self._clocks.append(time.pthread_getcpuclockid(threading.get_ident()))

    def _encode(self, images: list[Image]) -> Encoded:
        started = time.perf_counter()
        try:
            pngs: list[GeneratedImage] | Exception = [
                encode_png(image, self._level) for image in images
            ]
        except Exception as exc:
            logging.exception("encode.failed")
            pngs = exc
        return pngs, (time.perf_counter() - started) * 1000

    def _send_in_order(self) -> None:
        while (item := self._queue.get()) is not None:
            make, ends_batch = item
            try:
                message = make()
                if message is not None and not self.gone.is_set():
                    self._conn.send(message)
            except (OSError, EOFError):  # BrokenPipe, ConnectionReset: the supervisor died
                self.gone.set()  # keep draining, so a batch waiting for room never hangs
            except Exception:
                # A bug here would leave the supervisor waiting for a batch that never ends:
                # exit, and it restarts the child and hands the batch's jobs back.
                logging.exception("outbox.failed: the model process exits")
                os._exit(70)
            finally:
                if ends_batch:
                    self._backlog.release()


class Pending:
    """The batches sent to this child and not yet ended: when each arrived, and which the
    supervisor cancelled. A cancel that comes after its batch ended (the two cross in the pipe)
    is dropped, instead of staying in the set for the life of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the reader thread and the main thread
        self._arrived: dict[str, float] = {}
        self._cancelled: set[str] = set()

    def arrived(self, batch_id: str) -> None:
        with self._lock:
            self._arrived[batch_id] = time.perf_counter()

    def cancel(self, batch_id: str) -> None:
        with self._lock:
            if batch_id in self._arrived:
                self._cancelled.add(batch_id)

    def is_cancelled(self, batch_id: str) -> bool:
        return batch_id in self._cancelled

    def waited_ms(self, batch_id: str) -> float:
        """Milliseconds since the batch arrived (how long it was queued, when it starts)."""
        arrived = self._arrived.get(batch_id, time.perf_counter())
        return (time.perf_counter() - arrived) * 1000

    def ended(self, batch_id: str) -> None:
        with self._lock:
            self._arrived.pop(batch_id, None)
            self._cancelled.discard(batch_id)


def child_main(conn: Connection, config: EngineConfig) -> None:
    # Set before huggingface_hub is imported: without downloads allowed, never touch the network.
    os.environ["HF_HUB_OFFLINE"] = "0" if config.allow_downloads else "1"
    _quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s child %(message)s")

    import diffusers
    import torch

    from imagesmith.engines.diffusers_engine import DiffusersEngine, pick_threads

    diffusers.utils.logging.disable_progress_bar()

    engine = DiffusersEngine(config)  # loads nothing yet: the thread count comes first
    per_batch = config.adaptive_threads and config.threads is None and engine.device == "cpu"
    share = CpuShare.start() if per_batch else None
    threads = pick_threads(config.threads, engine.device, available_cores())
    if threads is not None:
        torch.set_num_threads(threads)  # with a CpuShare, until the first batch
    serve(conn, engine, share)  # returns when the supervisor stops it or is gone


def serve(conn: Connection, engine: DiffusersEngine, share: CpuShare | None = None) -> None:
    """Run batches one at a time. A reader thread keeps listening while a batch runs, so a
    CancelBatch can stop it at its next step; the outbox encodes a batch's images while the next
    one runs. With a CpuShare (CPU, threads not set), torch's threads are chosen before each
    batch from what the rest of the machine used lately."""
    import torch

    adaptive = (
        AdaptiveThreads(share, torch.get_num_threads, torch.set_num_threads) if share else None
    )
    batches: queue.Queue[RunBatch | None] = queue.Queue()
    pending = Pending()
    gone = threading.Event()  # the supervisor died: stop at the next step, run nothing more

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                gone.set()
                batches.put(None)
                return
            if isinstance(message, CancelBatch):
                pending.cancel(message.batch_id)
            elif isinstance(message, Shutdown):
                batches.put(None)
                return
            elif isinstance(message, RunBatch):
                pending.arrived(message.batch_id)
                batches.put(message)

    threading.Thread(target=read, daemon=True, name="pipe-reader").start()
    outbox = Outbox(
        conn,
        encode_threads(engine.device, available_cores()),
        engine.config.png_compress_level,
        gone,
    )
    if share is not None:
        share.beside = outbox.cpu_seconds
    outbox.post(Ready(pid=os.getpid(), device=engine.device, threads=torch.get_num_threads()))
    try:
        ended = time.perf_counter()
        while (batch := batches.get()) is not None and not gone.is_set():
            outbox.start_batch()
            run_batch(batch, engine, outbox, pending, adaptive, ended)
            ended = time.perf_counter()
    finally:
        outbox.close()


def run_batch(
    batch: RunBatch,
    engine: DiffusersEngine,
    outbox: Outbox,
    pending: Pending,
    adaptive: AdaptiveThreads | None,
    last_ended: float | None = None,
) -> None:
    """Denoise one batch and post its results; its images are encoded after this returns.
    Its timings say how long it was queued here (`queued_ms`) and how long the model had
    nothing to run before it arrived, since the last batch ended (`idle_ms`; under a full
    queue, time lost to a claim that came late)."""
    queued_ms = pending.waited_ms(batch.batch_id)
    idle_ms = 0.0
    if last_ended is not None:
        idle_ms = max(0.0, (time.perf_counter() - last_ended) * 1000 - queued_ms)
    engine.last_timings = {}
    picked = adaptive.before(batch.jobs) if adaptive is not None else {}
    encoding: list[Future[Encoded]] = []

    def on_step(step: int, total: int) -> None:
        outbox.post(Progress(batch.batch_id, step, total))

    def should_stop() -> bool:
        return pending.is_cancelled(batch.batch_id) or outbox.gone.is_set()

    def run(jobs: list[EngineJob]) -> None:
        results = engine.generate(jobs, on_step, should_stop, outbox.post_preview)
        if not should_stop():
            for job, images in zip(jobs, results, strict=True):
                encoding.append(outbox.post_images(job.job_id, images))

    one_at_a_time = False
    try:
        run(batch.jobs)
        if adaptive is not None and not should_stop():
            adaptive.after(engine.last_timings.get("pipeline_ms"))
    except ModelUnavailable as exc:
        for job in batch.jobs:
            outbox.post(JobFailed(job.job_id, str(exc)))
    except Exception as exc:  # a failed generation is data: report it, keep serving
        # The batch did not fit on the device: each job may fit alone. They run after this
        # handler, once the error's traceback (and with it the failed call's frames: its
        # latents, embeddings, activations) has let go of the device memory they hold.
        one_at_a_time = out_of_memory(exc) and len(batch.jobs) > 1
        if not one_at_a_time:
            logging.exception("batch.failed batch_id=%s", batch.batch_id)
            for job in batch.jobs:
                outbox.post(JobFailed(job.job_id, _describe(exc)))
    if one_at_a_time:
        logging.warning(
            "batch.out_of_memory batch_id=%s jobs=%d: running them one at a time",
            batch.batch_id,
            len(batch.jobs),
        )
        engine.release_cached_memory()
        for job in batch.jobs:
            if should_stop():  # the batch was cancelled meanwhile
                break
            try:
                run([job])
            except Exception as alone:
                outbox.post(JobFailed(job.job_id, _describe(alone)))
    pending.ended(batch.batch_id)
    timings = {"idle_ms": idle_ms, "queued_ms": queued_ms, **engine.last_timings, **picked}
    outbox.end_batch(batch.batch_id, timings, encoding)


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
    if out_of_memory(exc):
        return (
            "The device ran out of memory for this job; try a smaller size, fewer outputs or "
            f"fewer steps ({text})"
        )
    return f"Generation failed: {type(exc).__name__}: {text}"
