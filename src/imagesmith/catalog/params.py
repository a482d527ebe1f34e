"""The one parameter object: what a generation asks the engine for, resolved against a model.
It travels unchanged from the request (after defaults and bounds) to the row and to the child."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

MAX_OUTPUTS = 4
MAX_PREVIEWS = 3  # OpenAI's partial_images: 0-3
MAX_SEED = 2**63 - 1
# Outer bounds every request schema enforces before any arithmetic (a 300-digit integer used to
# overflow float formatting into a 500); each model's own, tighter bounds are checked after.
SIDE_BOUND = 65_536
COUNT_BOUND = 10_000
# Stablecog's cost formula: width * height * steps may not exceed this.
MAX_PIXEL_STEPS = 1024 * 1024 * 30


@dataclass(frozen=True)
class EngineParams:
    model_id: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    scheduler: str | None  # None: the pipeline's own (rows older than schedulers)
    seed: int
    num_outputs: int = 1
    prompt_strength: float | None = None  # set only for img2img
    # Partial images (previews decoded from the latents at evenly spaced steps) of output 0,
    # for clients that stream (OpenAI's partial_images). Not in the batch key: a job that wants
    # previews runs in the same pipeline call as one that does not.
    previews: int = 0

    # Jobs that agree on these run in one pipeline call; each keeps its own seed and outputs.
    BATCH_KEY: ClassVar[tuple[str, ...]] = (
        "model_id",
        "width",
        "height",
        "steps",
        "guidance_scale",
        "scheduler",
        "prompt_strength",
    )

    @property
    def is_img2img(self) -> bool:
        return self.prompt_strength is not None

    @property
    def denoising_steps(self) -> int:
        """img2img runs int(steps * strength) of its steps."""
        if self.prompt_strength is None:
            return self.steps
        return int(self.steps * self.prompt_strength)

    def preview_steps(self) -> list[int]:
        """After which denoising steps a preview is taken: evenly spaced, before the last."""
        total = self.denoising_steps
        picked = {(k + 1) * total // (self.previews + 1) for k in range(self.previews)}
        return sorted(step for step in picked if 1 <= step < total)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, source: Any) -> EngineParams:
        """Read the fields off anything that has them (a generation row)."""
        return cls(**{name: getattr(source, name) for name in cls.names()})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
