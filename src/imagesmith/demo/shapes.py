"""Draw the synthetic data set in code: shapes, colours, backgrounds, sizes, positions, counts,
each picture with the caption that describes it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 210, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.28, "large": 0.5}  # side of the shape as a share of the image side
POSITIONS = {
    "in the center": (0.5, 0.5),
    "in the top left": (0.28, 0.28),
    "in the top right": (0.72, 0.28),
    "in the bottom left": (0.28, 0.72),
    "in the bottom right": (0.72, 0.72),
}


# The picture sizes trained (width, height): the 1:1 default and the native API's other aspect
# ratios for this family (`generation/aspect.py`), so a 16:9 request draws one scene, not a
# stretched one. The shape's size is a share of the shorter side; positions are shares of each.
CANVASES: tuple[tuple[int, int], ...] = ((64, 64), (112, 64), (64, 112), (96, 64), (144, 64))


def article(word: str) -> str:
    """The article a person writes before `word`: "an orange", "a red"."""
    return "an" if word[:1] in "aeiou" else "a"


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    background: str
    size: str = "large"
    position: str = "in the center"
    count: int = 1

    @property
    def caption(self) -> str:
        on = f"on {article(self.background)} {self.background} background"
        if self.count == 2:
            return f"two {self.color} {self.shape}s {on}"
        return f"a {self.size} {self.color} {self.shape} {self.position} {on}"


def random_scene(rng: random.Random) -> Scene:
    color, background = rng.sample(list(PALETTE), 2)
    count = 2 if rng.random() < 0.15 else 1
    return Scene(
        shape=rng.choice(SHAPES),
        color=color,
        background=background,
        size=rng.choice(list(SIZES)) if count == 1 else "small",
        position=rng.choice(list(POSITIONS)) if count == 1 else "in the center",
        count=count,
    )


def draw(scene: Scene, side: int = 64, height: int | None = None) -> Image.Image:
    """The scene on a `side` x `height` canvas (square when `height` is left out)."""
    width, height = side, height or side
    image = Image.new("RGB", (width, height), PALETTE[scene.background])
    pen = ImageDraw.Draw(image)
    extent = SIZES[scene.size] * min(width, height)
    if scene.count == 2:
        centers = [(0.28 * width, 0.5 * height), (0.72 * width, 0.5 * height)]
    else:
        cx, cy = POSITIONS[scene.position]
        centers = [(cx * width, cy * height)]
    for x, y in centers:
        half = extent / 2
        box = (x - half, y - half, x + half, y + half)
        fill = PALETTE[scene.color]
        if scene.shape == "circle":
            pen.ellipse(box, fill=fill)
        elif scene.shape == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(x, y - half), (x + half, y + half), (x - half, y + half)], fill=fill)
    return image


# A caption may leave out a value that is the default: "a red circle on a blue background" is a
# large red circle in the center.
DEFAULT_SIZE = "large"
DEFAULT_POSITION = "in the center"


def caption_variants(scene: Scene) -> list[str]:
    """Every caption that describes `scene`: the full one, shorter ones without defaults, and a
    corner said as such ("in the top left corner")."""
    if scene.count == 2:
        return [scene.caption]
    on = f"on {article(scene.background)} {scene.background} background"
    sizes = [f"{scene.size} "] + ([""] if scene.size == DEFAULT_SIZE else [])
    positions = [f" {scene.position}"]
    if scene.position == DEFAULT_POSITION:
        positions.append("")
    else:
        positions.append(f" {scene.position} corner")
    variants = []
    for size in sizes:
        for position in positions:
            described = f"{size}{scene.color} {scene.shape}"
            variants.append(f"{article(described)} {described}{position} {on}")
    return variants


def all_scenes() -> list[Scene]:
    """The whole (finite) data set: every shape, colour pair, size, position, and the pairs."""
    scenes = []
    for shape in SHAPES:
        for color in PALETTE:
            for background in PALETTE:
                if color == background:
                    continue
                for size in SIZES:
                    for position in POSITIONS:
                        scenes.append(Scene(shape, color, background, size, position))
                scenes.append(Scene(shape, color, background, "small", DEFAULT_POSITION, 2))
    return scenes


def held_out_triples(count: int, seed: int) -> list[tuple[str, str, str]]:
    """(shape, colour, background) combinations kept out of training, the same for every shape
    count: the model is scored on captions whose combination it never saw."""
    rng = random.Random(seed)
    triples = [
        (shape, color, background)
        for shape in SHAPES
        for color in PALETTE
        for background in PALETTE
        if color != background
    ]
    per_shape = count // len(SHAPES)
    chosen: list[tuple[str, str, str]] = []
    for shape in SHAPES:
        chosen += rng.sample([t for t in triples if t[0] == shape], per_shape)
    return chosen
