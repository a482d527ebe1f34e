"""Scheduler ids (Stablecog's spelling, used by every dialect) and their display names.
`engines/schedulers.py` maps them to diffusers classes inside the model child."""

from __future__ import annotations

SCHEDULER_NAMES = {
    "K_LMS": "LMS",
    "PNDM": "PNDM",
    "DDIM": "DDIM",
    "K_EULER": "Euler",
    "K_EULER_ANCESTRAL": "Euler Ancestral",
    "HEUN": "Heun",
    "DPM++_2M": "DPM++ 2M",
    "DPM++_2S": "DPM++ 2S",
    "DEIS": "DEIS",
    "UNI_PC": "UniPC",
    "DDPM": "DDPM",
}
SCHEDULER_IDS = tuple(SCHEDULER_NAMES)
# Samplers with a warm-up fail below these step counts (PNDM's PLMS needs 4; measured on every
# scheduler at 1-4 steps, txt2img and img2img).
MIN_STEPS = {"PNDM": 4}
# Turbo models are distilled for one trailing-timestep sampler.
TURBO_SCHEDULERS = ("K_EULER_ANCESTRAL", "K_EULER", "DDIM")
