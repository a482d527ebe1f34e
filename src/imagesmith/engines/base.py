"""The engine protocol the model child drives. Implementations import torch; this file does not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from imagesmith.worker.messages import JobSpec


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    width: int
    height: int


class ModelUnavailable(RuntimeError):
    """The model's weights are not on this machine and may not be fetched: fail, never hang."""


class GenerationEngine(Protocol):
    def generate(
        self,
        jobs: list[JobSpec],
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        """Run jobs that share a batch key in one call; per job its `num_outputs` images."""
        ...
