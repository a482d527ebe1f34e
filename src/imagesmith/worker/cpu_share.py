"""How many of its cores the model child should give torch on a CPU, batch by batch.

On a machine where the API, the supervisor and the model share a few cores, one fixed number is
wrong half of the time: with every core for torch, a busy API preempts its threads and each
preempted thread stalls the others at every operator's barrier (the load benchmark with 1000
clients fell to 0.74 of one client's throughput); with one core fewer, a quiet API leaves a core
idle (16 clients long-polling a 256 px model drew 2.48 img/s on one thread and 3.64 on two,
bench/RESULTS.md). So the child looks, before each batch, at how much of its cores the rest of
the machine used over the last second, and leaves that much to it.

More threads are not always faster even on an idle machine: a small model at a small size
spends its time in operators too small to split (tiny-sd at 64 px: 9.5 jobs/s on one thread, 5.9
on two). While the machine is quiet, `ThreadTuner` therefore times each batch shape with every
core and with half of them, and keeps the faster."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from pathlib import Path

from imagesmith.engines.base import EngineJob

PROC_STAT = Path("/proc/stat")
SAMPLE_SECONDS = 0.25
WINDOW_SAMPLES = 5  # the last second
QUIET = 0.5  # cores' worth of the others' use under which the cores are all ours
RETRY_EVERY = 32  # a shape's losing thread count is timed again after this many quiet batches


def quota_cores(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Whole cores a cgroup CPU quota allows (a container started with `--cpus 2` on a 64-core
    host sees all 64 in its affinity), or None without a quota. cgroup v2, then v1."""
    try:
        quota, _, period = (root / "cpu.max").read_text().partition(" ")
        if quota.strip() == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None


def threads_for(cores: int, others: float | None) -> int:
    """Torch's threads on `cores` cores when the rest of the machine used `others` cores' worth
    of them lately: a core left for each (rounded) core of the others' use; every core when
    they used under half of one. Unknown (no sample yet, no /proc): one core fewer."""
    if others is None:
        return max(1, cores - 1)
    return max(1, min(cores, cores - math.ceil(others - QUIET)))


def _busy_seconds(cpus: frozenset[int], text: str, tick: int) -> float:
    """Non-idle time of the given CPUs since boot, from /proc/stat's per-CPU lines (user, nice,
    system, idle, iowait, irq, softirq, steal: everything but idle and iowait)."""
    busy = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            fields = [int(value) for value in rest.split()[:8]]
            busy += sum(fields) - fields[3] - fields[4]
    return busy / tick


class CpuShare:
    """Samples, on a daemon thread, the CPU time the other processes spent on this process's
    cores (their busy time from /proc/stat minus this process's own CPU time). Threads of this
    process that run beside the model (the PNG encoders) count as the others: torch cannot use
    a core they keep busy; `beside` gives their CPU seconds so far."""

    def __init__(self, cpus: frozenset[int]) -> None:
        self.cpus = cpus
        self.beside: Callable[[], float] = lambda: 0.0
        self._tick = os.sysconf("SC_CLK_TCK")
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=WINDOW_SAMPLES)
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    @classmethod
    def start(cls) -> CpuShare | None:
        """A running sampler for this process's cores, or None where /proc/stat is missing
        (not Linux) or a CPU quota is smaller than them (then /proc/stat's counts are the
        host's, not ours)."""
        try:
            cpus = frozenset(os.sched_getaffinity(0))
            quota = quota_cores()
            if quota is not None and quota < len(cpus):
                return None
            share = cls(cpus)
            share.sample()
        except (AttributeError, OSError, ValueError):
            return None
        threading.Thread(target=share._run, daemon=True, name="cpu-share").start()
        return share

    def sample(self) -> None:
        busy = _busy_seconds(self.cpus, PROC_STAT.read_text(), self._tick)
        own = time.process_time() - self.beside()
        with self._lock:
            self._samples.append((time.monotonic(), busy, own))

    def stop(self) -> None:
        """End the sampling thread (the model child's runs for the process's life)."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(SAMPLE_SECONDS):
            try:
                self.sample()
            except (OSError, ValueError):
                return

    def others(self) -> float | None:
        """Cores' worth of the others' use over the window; None before two samples."""
        with self._lock:
            if len(self._samples) < 2:
                return None
            (t0, busy0, own0), (t1, busy1, own1) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))


class ThreadTuner:
    """Per batch shape (model, size, steps, images), the faster of every core and half of them,
    learnt from the pipeline's own time per image while the machine is quiet. Each candidate is
    timed first; afterwards the faster one runs, and the slower one again every RETRY_EVERY
    quiet batches of that shape (machines and neighbours change). While others use the cores,
    `threads_for` decides alone: times measured under contention would compare noise."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self._seconds: dict[tuple[Hashable, int], float] = {}  # per image, smoothed
        self._runs: dict[Hashable, int] = {}

    def candidates(self) -> list[int]:
        return sorted({self.cores, max(1, self.cores // 2)}, reverse=True)

    def choose(self, shape: Hashable, others: float | None) -> int:
        if others is None or others >= QUIET:
            return threads_for(self.cores, others)
        timed = {n: self._seconds.get((shape, n)) for n in self.candidates()}
        for threads, seconds in timed.items():
            if seconds is None:
                return threads  # not timed yet: time it
        best = min(timed, key=lambda n: timed[n] or 0.0)
        runs = self._runs.get(shape, 0)
        if runs and runs % RETRY_EVERY == 0:
            return next(n for n in timed if n != best)
        return best

    def record(self, shape: Hashable, threads: int, others: float | None, seconds: float) -> None:
        """A batch of `shape` ran on `threads` threads in `seconds` per image; `others` is what
        `choose` was given."""
        if others is None or others >= QUIET:
            return
        self._runs[shape] = self._runs.get(shape, 0) + 1
        old = self._seconds.get((shape, threads))
        self._seconds[(shape, threads)] = seconds if old is None else 0.7 * old + 0.3 * seconds


def batch_shape(jobs: list[EngineJob]) -> tuple[str, int, int, int, int]:
    """What a batch's time per image depends on (jobs in a batch agree on all but the count)."""
    params = jobs[0].params
    images = sum(job.params.num_outputs for job in jobs)
    return (params.model_id, params.width, params.height, params.steps, images)


class AdaptiveThreads:
    """The model child's side: sets torch's threads before a batch, learns from its time."""

    def __init__(
        self, share: CpuShare, get: Callable[[], int], set_threads: Callable[[int], None]
    ) -> None:
        self.share, self._get, self._set = share, get, set_threads
        self.tuner = ThreadTuner(len(share.cpus))
        self._last: tuple[tuple[str, int, int, int, int], int, float | None] | None = None

    def before(self, jobs: list[EngineJob]) -> dict[str, float]:
        """Sets the threads for this batch; returns them for the batch's log line."""
        others = self.share.others()
        shape = batch_shape(jobs)
        threads = self.tuner.choose(shape, others)
        if threads != self._get():
            self._set(threads)
        self._last = (shape, threads, others)
        return {"threads": threads, "others_cores": -1.0 if others is None else others}

    def after(self, pipeline_ms: float | None) -> None:
        """The batch `before` prepared ran to the end in `pipeline_ms`."""
        if self._last is not None and pipeline_ms is not None:
            shape, threads, others = self._last
            images = shape[-1]
            self.tuner.record(shape, threads, others, pipeline_ms / 1000 / images)
        self._last = None
