"""Typed messages between the supervisor and the model child (pickled over a pipe)."""

from __future__ import annotations

from dataclasses import dataclass, field

from imagesmith.engines.base import EngineJob, GeneratedImage

# Supervisor → child


@dataclass(frozen=True)
class RunBatch:
    batch_id: str
    jobs: list[EngineJob]


@dataclass(frozen=True)
class CancelBatch:
    """Stop the running batch at its next step (every job in it was cancelled)."""

    batch_id: str


@dataclass(frozen=True)
class Shutdown:
    pass


# Child → supervisor


@dataclass(frozen=True)
class Ready:
    pid: int
    device: str
    threads: int = 0  # torch's intra-op threads in the child


@dataclass(frozen=True)
class Progress:
    batch_id: str
    step: int
    total: int


@dataclass(frozen=True)
class Preview:
    """A partial image of a job's first output, decoded mid-run."""

    job_id: str
    index: int
    image: GeneratedImage


@dataclass(frozen=True)
class JobDone:
    job_id: str
    images: list[GeneratedImage]


@dataclass(frozen=True)
class JobFailed:
    job_id: str
    message: str


@dataclass(frozen=True)
class BatchDone:
    batch_id: str
    # Milliseconds: queued (received → started), prepare, pipeline, encode.
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildExited:
    """Not sent by the child: the supervisor's reader posts it when the pipe closes."""

    exitcode: int | None


ChildMessage = Ready | Progress | Preview | JobDone | JobFailed | BatchDone | ChildExited
