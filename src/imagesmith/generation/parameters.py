"""Resolve a request's engine parameters against its model: defaults filled in, every bound
checked before any work is done, each error naming the field (in the caller's dialect), the
bound and the value."""

from __future__ import annotations

import secrets

from imagesmith.catalog.models import ModelSpec
from imagesmith.catalog.params import MAX_PIXEL_STEPS, MAX_PREVIEWS, EngineParams
from imagesmith.catalog.schedulers import MIN_STEPS, SCHEDULER_IDS
from imagesmith.errors import ValidationFailed
from imagesmith.generation.aspect import ASPECT_RATIOS, size_for
from imagesmith.generation.schemas import GenerationRequest

RANDOM_SEED_LIMIT = 2**32


class ParamError(ValidationFailed):
    """A bad parameter; `field` is the name the caller used, `kind` the core parameter
    (dialects with per-parameter error codes, like Stablecog's, map it)."""

    def __init__(self, field: str, message: str, kind: str | None = None):
        super().__init__(message)
        self.field = field
        self.kind = kind


def resolve_params(spec: ModelSpec, given: GenerationRequest) -> EngineParams:
    """The request's engine parameters with the model's defaults filled in and its bounds
    checked; a random seed unless the request pinned one."""
    names = given.field_names
    has_init_image = given.init_image is not None

    def name(core: str) -> str:
        return names.get(core, core)

    def bounded(core: str, value: float, low: float, high: float) -> None:
        if not low <= value <= high:
            raise ParamError(
                name(core),
                f"{name(core)} must be between {low:g} and {high:g} for model '{spec.id}' "
                f"(got {value:g})",
            )

    # Size: an aspect ratio from the model family's table, or explicit width and height.
    if given.width is None and given.height is None:
        ratio = given.aspect_ratio or "1:1"
        if ratio not in ASPECT_RATIOS:
            raise ParamError(
                name("aspect_ratio"),
                f"{name('aspect_ratio')} '{ratio}' is not one of: {', '.join(ASPECT_RATIOS)}",
            )
        if given.aspect_ratio is None:
            width, height = spec.default_width, spec.default_height
        else:
            width, height = size_for(spec.family, ratio)
    else:
        width = given.width if given.width is not None else spec.default_width
        height = given.height if given.height is not None else spec.default_height
        for core, value in (("width", width), ("height", height)):
            bounded(core, value, spec.min_side, spec.max_side)
            if value % 8:
                raise ParamError(name(core), f"{name(core)} must be a multiple of 8 (got {value})")

    steps = given.steps if given.steps is not None else spec.default_steps
    bounded("steps", steps, spec.min_steps, spec.max_steps)
    if width * height * steps > MAX_PIXEL_STEPS:
        raise ParamError(
            name("steps"),
            f"{name('width')} * {name('height')} * {name('steps')} must be at most "
            f"{MAX_PIXEL_STEPS} (1024*1024*30); got {width}*{height}*{steps} = "
            f"{width * height * steps}",
        )

    guidance = given.guidance_scale if given.guidance_scale is not None else spec.default_guidance
    bounded("guidance_scale", guidance, spec.min_guidance, spec.max_guidance)

    scheduler = given.scheduler or spec.default_scheduler
    if scheduler not in SCHEDULER_IDS:
        raise ParamError(
            name("scheduler"),
            f"{name('scheduler')} '{scheduler}' is not one of: {', '.join(SCHEDULER_IDS)}",
            kind="scheduler",
        )
    if scheduler not in spec.schedulers:
        raise ParamError(
            name("scheduler"),
            f"{name('scheduler')} '{scheduler}' does not work with model '{spec.id}'; use one "
            f"of: {', '.join(spec.schedulers)}",
            kind="scheduler",
        )

    if steps < MIN_STEPS.get(scheduler, 1):
        raise ParamError(
            name("steps"),
            f"{name('scheduler')} '{scheduler}' needs at least {MIN_STEPS[scheduler]} "
            f"{name('steps')} (got {steps})",
        )

    bounded("num_outputs", given.num_outputs, 1, given.max_outputs)
    bounded("previews", given.previews, 0, MAX_PREVIEWS)

    strength = given.prompt_strength
    if strength is not None and not has_init_image:
        raise ParamError(
            name("prompt_strength"),
            f"{name('prompt_strength')} only applies with {name('init_image')}",
        )
    if has_init_image:
        strength = 0.5 if strength is None else strength
        bounded("prompt_strength", strength, 0.0, 1.0)
        if int(steps * strength) < 1:
            need = 1 / steps
            raise ParamError(
                name("prompt_strength"),
                f"{name('prompt_strength')} {strength:g} with {name('steps')} {steps} leaves "
                f"int({steps} * {strength:g}) = 0 denoising steps; use {name('prompt_strength')} "
                f">= {need:.3g} or more {name('steps')}",
            )
    return EngineParams(
        model_id=spec.id,
        width=width,
        height=height,
        steps=steps,
        guidance_scale=guidance,
        scheduler=scheduler,
        seed=pick_seed(given.seed),
        num_outputs=given.num_outputs,
        prompt_strength=strength,
        previews=given.previews,
    )


def pick_seed(seed: int | None) -> int:
    return seed if seed is not None and seed >= 0 else secrets.randbelow(RANDOM_SEED_LIMIT)
