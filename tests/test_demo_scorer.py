"""The demo model's scorer, checked on ground-truth drawings (issue 6's first step)."""

from __future__ import annotations

import random

from imagesmith.demo.score import Score, read
from imagesmith.demo.shapes import PALETTE, POSITIONS, SHAPES, Scene, draw, random_scene


def test_scorer_reads_ground_truth_drawings() -> None:
    rng = random.Random(7)
    score = Score()
    for _ in range(300):
        scene = random_scene(rng)
        score.add(scene, read(draw(scene)))
    rates = score.rates()
    assert rates["background"] == 1.0 and rates["color"] == 1.0
    assert rates["shape"] >= 0.97 and rates["position"] >= 0.97, rates


def test_every_combination_of_shape_and_position_is_read() -> None:
    colors = list(PALETTE)
    for i, shape in enumerate(SHAPES):
        for j, position in enumerate(POSITIONS):
            scene = Scene(shape, colors[i], colors[(i + j + 3) % len(colors)], "large", position)
            reading = read(draw(scene))
            assert (reading.shape, reading.position, reading.color) == (
                shape,
                position,
                scene.color,
            ), scene.caption


def test_a_blank_picture_reads_as_nothing_drawn() -> None:
    from PIL import Image

    reading = read(Image.new("RGB", (64, 64), PALETTE["blue"]))
    assert reading.background == "blue" and reading.shape is None


def test_captions() -> None:
    assert Scene("circle", "red", "blue", "small", "in the top left").caption == (
        "a small red circle in the top left on a blue background"
    )
    assert (
        Scene("square", "red", "white", count=2).caption == "two red squares on a white background"
    )
