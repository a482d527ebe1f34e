"""Stablecog's scheduler ids → diffusers scheduler classes (resolved in the child only)."""

from __future__ import annotations

from typing import Any

SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "K_LMS": ("LMSDiscreteScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
    "DDIM": ("DDIMScheduler", {"clip_sample": False}),
    "K_EULER": ("EulerDiscreteScheduler", {}),
    "K_EULER_ANCESTRAL": ("EulerAncestralDiscreteScheduler", {}),
    "HEUN": ("HeunDiscreteScheduler", {}),
    "DPM++_2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "DPM++_2S": ("DPMSolverSinglestepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
    "UNI_PC": ("UniPCMultistepScheduler", {}),
    "DDPM": ("DDPMScheduler", {}),
}


def fresh_scheduler(base: Any, scheduler_id: str | None) -> Any:
    """A new scheduler, for one runner (diffusers_engine.py): diffusers schedulers keep per-call
    state and are not thread-safe."""
    if scheduler_id is None:
        return base.__class__.from_config(base.config)
    import diffusers

    class_name, overrides = SCHEDULERS[scheduler_id]
    return getattr(diffusers, class_name).from_config(base.config, **overrides)
