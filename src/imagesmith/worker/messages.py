"""Typed messages between the supervisor and the model child (pickled over a pipe)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JobSpec:
    generation_id: str
    job_version: int
    model_id: str
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    scheduler: str | None
    seed: int
    num_outputs: int = 1
    init_image: bytes | None = None  # img2img: the encoded init image
    prompt_strength: float | None = None


@dataclass(frozen=True)
class ChildConfig:
    models_dir: str
    device: str
    allow_downloads: bool
    models: list[dict[str, Any]] = field(default_factory=list)  # ModelSpec dicts
    model_cache_gb: float = 12.0


# Supervisor → child


@dataclass(frozen=True)
class RunBatch:
    batch_id: str
    jobs: list[JobSpec]


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


@dataclass(frozen=True)
class Progress:
    batch_id: str
    step: int
    total: int


@dataclass(frozen=True)
class OutputImage:
    png: bytes
    width: int
    height: int


@dataclass(frozen=True)
class JobDone:
    generation_id: str
    job_version: int
    images: list[OutputImage]


@dataclass(frozen=True)
class JobFailed:
    generation_id: str
    job_version: int
    message: str


@dataclass(frozen=True)
class BatchDone:
    batch_id: str


@dataclass(frozen=True)
class ChildExited:
    """Not sent by the child: the supervisor's reader posts it when the pipe closes."""

    exitcode: int | None


ChildMessage = Ready | Progress | JobDone | JobFailed | BatchDone | ChildExited
