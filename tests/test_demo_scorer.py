"""The demo model's scorer, checked on ground-truth drawings (issue 6's first step)."""

from __future__ import annotations

import json
import random
from pathlib import Path

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


def test_training_program_writes_a_standard_diffusers_folder(tmp_path: Path) -> None:
    """A few seconds of training: the program runs end to end and its folder loads through
    the same from_pretrained(..., local_files_only=True) path as any model. (Quality is
    measured by the scorer on a full run, not here.)"""
    import torch
    from diffusers import StableDiffusionPipeline

    from imagesmith.demo.train import TrainConfig, train_demo

    out = train_demo(tmp_path / "demo", TrainConfig(minutes=0.05, batch=8), log=lambda _: None)
    config = json.loads((out / "train-config.json").read_text())
    assert config["side"] == 64 and config["minutes"] == 0.05
    pipe = StableDiffusionPipeline.from_pretrained(
        str(out), local_files_only=True, torch_dtype=torch.float32
    )
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a large red circle in the center on a blue background",
        width=64,
        height=64,
        num_inference_steps=2,
    ).images[0]
    assert image.size == (64, 64)
    weights = sum(f.stat().st_size for f in out.rglob("*.safetensors"))
    assert weights < 16 * 1024 * 1024  # shipped inside the package later: keep it small
