"""Aspect ratios → pixel sizes per model family (all multiples of 8; 64 for real models)."""

from __future__ import annotations

import math

ASPECT_RATIOS = ("1:1", "16:9", "9:16", "3:2", "21:9")

_SD15 = {
    "1:1": (512, 512),
    "16:9": (704, 384),
    "9:16": (384, 704),
    "3:2": (576, 384),
    "21:9": (768, 320),
}
_SD2 = {
    "1:1": (768, 768),
    "16:9": (1024, 576),
    "9:16": (576, 1024),
    "3:2": (960, 640),
    "21:9": (1152, 512),
}
_SDXL = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "3:2": (1216, 832),
    "21:9": (1536, 640),
}
_TINY = {"1:1": (64, 64), "16:9": (112, 64), "9:16": (64, 112), "3:2": (96, 64), "21:9": (144, 64)}

SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "tiny": _TINY,
    "sd15": _SD15,
    "sd2": _SD2,
    "sdxl": _SDXL,
    "sd-turbo": _SD15,
    "sdxl-turbo": _SD15,
    "remote": _SDXL,  # a provider's engine maps these to the sizes it accepts
}


def size_for(family: str, aspect_ratio: str) -> tuple[int, int]:
    """(width, height) for a family and ratio; callers validate the ratio first."""
    return SIZES[family][aspect_ratio]


def nearest_size(
    family: str, width: int, height: int, low: int, high: int
) -> tuple[int, int] | None:
    """The family's size whose shape is nearest a picture's (each ratio's size or its
    transpose, so a 2:3 portrait gets 3:2's size turned upright), among those with both sides
    within low..high; None when none is. For an output sized after an input image: the
    sizes a model was made for, and a handful of shapes rather than one per photo."""
    sizes = [*SIZES[family].values(), *((h, w) for w, h in SIZES[family].values())]
    fitting = [(w, h) for w, h in sizes if low <= min(w, h) and max(w, h) <= high]
    if not fitting or width < 1 or height < 1:
        return None
    shape = math.log(width / height)
    return min(fitting, key=lambda size: abs(math.log(size[0] / size[1]) - shape))
