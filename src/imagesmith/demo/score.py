"""Score a picture against its scene by pixel statistics: background colour (the border's
colour), foreground colour (the rest, by nearest palette colour), position (the foreground's
centroid), shape (how much of its bounding box the largest blob fills), size (that box's side
against the picture's shorter side) and count (blobs of the shape's colour at least half the
largest one's area). Works on any canvas: positions are shares of each side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from imagesmith.demo.shapes import PALETTE, POSITIONS, SIZES, Scene

NAMES = list(PALETTE)
COLORS = np.array([PALETTE[n] for n in NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    background: str
    color: str | None
    position: str | None
    shape: str | None
    size: str | None = None
    count: int = 0


def nearest(pixels: np.ndarray) -> np.ndarray:
    distances = ((pixels[:, None, :] - COLORS[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(distances.argmin(axis=1))


def blobs(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected regions of `mask`, largest first (a flood fill; the images are small)."""
    seen = np.zeros_like(mask, dtype=bool)
    regions: list[list[tuple[int, int]]] = []
    height, width = mask.shape
    for start_y, start_x in zip(*np.nonzero(mask), strict=True):
        if seen[start_y, start_x]:
            continue
        stack, region = [(int(start_y), int(start_x))], []
        seen[start_y, start_x] = True
        while stack:
            y, x = stack.pop()
            region.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        regions.append(region)
    masks = []
    for region in sorted(regions, key=len, reverse=True):
        blob = np.zeros_like(mask, dtype=bool)
        ys, xs = zip(*region, strict=True)
        blob[list(ys), list(xs)] = True
        masks.append(blob)
    return masks


def largest_blob(mask: np.ndarray) -> np.ndarray:
    found = blobs(mask)
    return found[0] if found else np.zeros_like(mask, dtype=bool)


# Between the small and the large shape's side, as a share of the picture's shorter side.
SIZE_SPLIT = (SIZES["small"] + SIZES["large"]) / 2


def read(image: Image.Image) -> Reading:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width, _ = pixels.shape
    labels = nearest(pixels.reshape(-1, 3)).reshape(height, width)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    background = int(np.bincount(border, minlength=len(NAMES)).argmax())
    mask = labels != background
    if mask.sum() < 0.01 * height * width:
        return Reading(NAMES[background], None, None, None)
    color = int(np.bincount(labels[mask], minlength=len(NAMES)).argmax())
    found = blobs(labels == color)
    blob = found[0]
    count = sum(1 for b in found if b.sum() >= 0.5 * blob.sum())
    ys, xs = np.nonzero(blob)
    cy, cx = ys.mean() / height, xs.mean() / width
    position = min(
        POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2
    )
    box_height, box_width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = blob.sum() / (box_height * box_width)
    shape = "square" if fill > 0.9 else "circle" if fill > 0.64 else "triangle"
    side = max(box_height, box_width) / min(height, width)
    size = "large" if side > SIZE_SPLIT else "small"
    return Reading(NAMES[background], NAMES[color], position, shape, size, count)


@dataclass
class Score:
    total: int = 0
    background: int = 0
    color: int = 0
    shape: int = 0
    position: int = 0
    position_total: int = 0  # scenes of one shape (position and size are theirs)
    size: int = 0
    two: int = 0
    two_total: int = 0  # "two …" scenes

    def add(self, scene: Scene, reading: Reading) -> None:
        self.total += 1
        self.background += reading.background == scene.background
        self.color += reading.color == scene.color
        self.shape += reading.shape == scene.shape
        if scene.count == 1:
            self.position_total += 1
            self.position += reading.position == scene.position
            self.size += reading.size == scene.size and reading.count == 1
        else:
            self.two_total += 1
            self.two += reading.count == 2

    def rates(self) -> dict[str, float]:
        return {
            "background": self.background / max(self.total, 1),
            "color": self.color / max(self.total, 1),
            "shape": self.shape / max(self.total, 1),
            "position": self.position / max(self.position_total, 1),
            "size": self.size / max(self.position_total, 1),
            "two": self.two / max(self.two_total, 1),
        }
