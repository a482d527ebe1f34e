"""What a provider accepts, and the nearest of it to what was asked for."""

from __future__ import annotations

from math import log


def ratio_of(width: int, height: int) -> float:
    return width / height


def nearest_ratio(width: int, height: int, choices: tuple[str, ...]) -> str:
    """The choice ('16:9', …) closest in log-aspect to width:height."""
    wanted = log(ratio_of(width, height))

    def distance(choice: str) -> float:
        a, b = (int(part) for part in choice.split(":"))
        return abs(log(a / b) - wanted)

    return min(choices, key=distance)


def nearest_size(width: int, height: int, choices: tuple[str, ...]) -> str:
    """The 'WxH' choice closest in aspect, then in area, to width x height."""
    wanted_ratio, wanted_area = log(ratio_of(width, height)), log(width * height)

    def distance(choice: str) -> tuple[float, float]:
        w, h = (int(part) for part in choice.split("x"))
        return (round(abs(log(w / h) - wanted_ratio), 3), abs(log(w * h) - wanted_area))

    return min(choices, key=distance)


def multiple_of(value: int, step: int = 8) -> int:
    return max(step, round(value / step) * step)
