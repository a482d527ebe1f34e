"""The model registry: built-in entries plus an operator's TOML file. Pure data, no torch."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("tiny", "sd15", "sd2", "sdxl", "sd-turbo", "sdxl-turbo")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    source: str  # hub repo id, local folder, or "builtin:<name>" for models we build ourselves
    description: str = ""
    default_steps: int = 30
    default_guidance: float = 7.5
    default_scheduler: str | None = None
    min_steps: int = 1
    max_steps: int = 50
    variant: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="tiny-sd",
        family="tiny",
        source="builtin:tiny-sd",
        description="Random-weight Stable Diffusion pipeline built locally on first use. "
        "Draws noise; for tests and offline plumbing checks.",
        default_steps=4,
        default_guidance=7.5,
    ),
    ModelSpec(
        id="sd-turbo",
        family="sd-turbo",
        source="stabilityai/sd-turbo",
        description="SD-Turbo: 512 px in 1-4 steps.",
        default_steps=1,
        default_guidance=1.0,
        max_steps=4,
        variant="fp16",
    ),
    ModelSpec(
        id="sdxl-turbo",
        family="sdxl-turbo",
        source="stabilityai/sdxl-turbo",
        description="SDXL-Turbo: 512 px in 1-4 steps.",
        default_steps=1,
        default_guidance=1.0,
        max_steps=4,
        variant="fp16",
    ),
    ModelSpec(
        id="sdxl",
        family="sdxl",
        source="stabilityai/stable-diffusion-xl-base-1.0",
        description="Stable Diffusion XL base 1.0 (1024 px).",
        default_steps=30,
        default_guidance=7.0,
        variant="fp16",
    ),
    ModelSpec(
        id="sd15",
        family="sd15",
        source="stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="Stable Diffusion 1.5 (512 px).",
        default_steps=30,
        default_guidance=7.5,
    ),
)


class UnknownModel(LookupError):
    pass


class ModelRegistry:
    def __init__(self, specs: list[ModelSpec]):
        self._specs = {spec.id: spec for spec in specs}

    @classmethod
    def load(cls, models_file: Path | None = None) -> ModelRegistry:
        specs = list(BUILTIN_MODELS)
        if models_file is not None:
            specs.extend(read_models_file(models_file))
        return cls(specs)

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            known = ", ".join(sorted(self._specs))
            raise UnknownModel(f"Unknown model '{model_id}'; known models: {known}") from None

    def all(self) -> list[ModelSpec]:
        return list(self._specs.values())


def read_models_file(path: Path) -> list[ModelSpec]:
    """`[[models]]` tables with the ModelSpec fields; later entries override built-ins by id."""
    data = tomllib.loads(path.read_text())
    specs = []
    for entry in data.get("models", []):
        if entry.get("family") not in FAMILIES:
            raise ValueError(
                f"{path}: model {entry.get('id')!r} has family {entry.get('family')!r}; "
                f"use one of {', '.join(FAMILIES)}"
            )
        specs.append(ModelSpec(**entry))
    return specs
