"""The model registry: built-in entries plus an operator's TOML file. Pure data, no torch."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imagesmith.catalog.schedulers import SCHEDULER_IDS, TURBO_SCHEDULERS

FAMILIES = ("tiny", "sd15", "sd2", "sdxl", "sd-turbo", "sdxl-turbo", "remote")
# Models that run somewhere else, behind the same queue (engines/remote/): what `provider` names.
PROVIDERS = ("replicate", "openai", "gemini", "openai-compatible")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    source: str  # hub repo id, local folder, or "builtin:<name>" for models we build ourselves
    description: str = ""
    default_steps: int = 30
    default_guidance: float = 7.5
    default_scheduler: str = "K_EULER"
    schedulers: tuple[str, ...] = SCHEDULER_IDS
    default_width: int = 512
    default_height: int = 512
    min_side: int = 256
    max_side: int = 1024
    # The largest short side the model draws well. A request above it is drawn at that short
    # side, in the same shape, and scaled up to the size asked for (a small model asked for a
    # large picture otherwise draws no scene at all). None: drawn at the size asked for.
    draw_short_side: int | None = None
    min_steps: int = 10
    max_steps: int = 50
    min_guidance: float = 1.0
    max_guidance: float = 20.0
    variant: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # A remote model: the provider that runs it (`source` is then its model name there, e.g.
    # "stability-ai/sdxl", "gpt-image-1", "imagen-4.0-generate-001"), and for
    # openai-compatible servers their base URL. None: local weights, run by diffusers.
    provider: str | None = None
    base_url: str | None = None

    def draw_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the model draws a (width, height) request at (see draw_short_side):
        multiples of 8, the request's shape as near as they allow."""
        short = self.draw_short_side
        if short is None or min(width, height) <= short:
            return width, height
        scale = short / min(width, height)
        return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)

    @property
    def is_remote(self) -> bool:
        return self.provider is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="demo",
        family="tiny",
        source="builtin:demo",
        description="Demo model shipped in the package, trained here from scratch on drawings "
        "of coloured shapes (circle, square, triangle; 8 colours; sizes, positions, 'two …'). "
        "Draws 64x64 pictures (and the other aspect ratios' sizes) of what such a prompt says; "
        "nothing else. Larger sizes are drawn 64 px on the short side and scaled up.",
        default_steps=8,
        default_guidance=2.0,
        default_scheduler="DDIM",
        default_width=64,
        default_height=64,
        min_side=64,
        max_side=256,
        draw_short_side=64,  # its training canvases (64x64 to 144x64)
        min_steps=1,
        max_steps=50,
    ),
    ModelSpec(
        id="tiny-sd",
        family="tiny",
        source="builtin:tiny-sd",
        description="Random-weight Stable Diffusion pipeline built locally on first use. "
        "Draws noise; for tests and offline plumbing checks.",
        default_steps=4,
        default_width=64,
        default_height=64,
        min_side=64,
        max_side=512,
        min_steps=1,
        max_steps=50,
    ),
    ModelSpec(
        id="sd-turbo",
        family="sd-turbo",
        source="stabilityai/sd-turbo",
        description="SD-Turbo: 512 px in 1-4 steps.",
        default_steps=1,
        default_guidance=1.0,
        default_scheduler="K_EULER_ANCESTRAL",
        schedulers=TURBO_SCHEDULERS,
        min_steps=1,
        max_steps=4,
        max_guidance=2.0,
        variant="fp16",
    ),
    ModelSpec(
        id="sdxl-turbo",
        family="sdxl-turbo",
        source="stabilityai/sdxl-turbo",
        description="SDXL-Turbo: 512 px in 1-4 steps.",
        default_steps=1,
        default_guidance=1.0,
        default_scheduler="K_EULER_ANCESTRAL",
        schedulers=TURBO_SCHEDULERS,
        min_steps=1,
        max_steps=4,
        max_guidance=2.0,
        variant="fp16",
    ),
    ModelSpec(
        id="sdxl",
        family="sdxl",
        source="stabilityai/stable-diffusion-xl-base-1.0",
        description="Stable Diffusion XL base 1.0 (1024 px).",
        default_steps=30,
        default_guidance=7.0,
        default_width=1024,
        default_height=1024,
        min_side=512,
        max_side=1536,
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


# What a remote entry starts from: providers take their own sizes and steps, so the bounds
# are wide and the size is mapped to what the provider accepts (engines/remote/sizes.py).
REMOTE_DEFAULTS: dict[str, Any] = {
    "family": "remote",
    "default_width": 1024,
    "default_height": 1024,
    "min_side": 64,
    "max_side": 2048,
    "default_steps": 30,
    "min_steps": 1,
    "max_steps": 500,
    "default_guidance": 7.5,
    "min_guidance": 0.0,
    "max_guidance": 50.0,
}


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
        spec = self._specs.get(model_id)
        if spec is None:
            known = ", ".join(sorted(self._specs))
            raise UnknownModel(f"Unknown model '{model_id}'; known models: {known}")
        return spec

    def all(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def local(self) -> list[ModelSpec]:
        return [spec for spec in self._specs.values() if not spec.is_remote]

    def remote(self) -> list[ModelSpec]:
        return [spec for spec in self._specs.values() if spec.is_remote]


def read_models_file(path: Path) -> list[ModelSpec]:
    """`[[models]]` tables with the ModelSpec fields; later entries override built-ins by id."""
    data = tomllib.loads(path.read_text())
    specs = []
    for entry in data.get("models", []):
        provider = entry.get("provider")
        if provider is not None:
            if provider not in PROVIDERS:
                raise ValueError(
                    f"{path}: model {entry.get('id')!r} has provider {provider!r}; "
                    f"use one of {', '.join(PROVIDERS)}"
                )
            if provider == "openai-compatible" and not entry.get("base_url"):
                raise ValueError(
                    f"{path}: model {entry.get('id')!r} is openai-compatible: give its base_url"
                )
            entry = {**REMOTE_DEFAULTS, **entry}
        if entry.get("family") not in FAMILIES:
            raise ValueError(
                f"{path}: model {entry.get('id')!r} has family {entry.get('family')!r}; "
                f"use one of {', '.join(FAMILIES)}"
            )
        unknown = set(entry.get("schedulers", ())) - set(SCHEDULER_IDS)
        if unknown:
            raise ValueError(f"{path}: model {entry['id']!r} names unknown schedulers {unknown}")
        if "schedulers" in entry:
            entry["schedulers"] = tuple(entry["schedulers"])
        specs.append(ModelSpec(**entry))
    return specs
