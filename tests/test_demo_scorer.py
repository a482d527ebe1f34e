"""The demo model's scorer, checked on ground-truth drawings (issue 6's first step)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from imagesmith.demo.score import Score, read
from imagesmith.demo.shapes import (
    CANVASES,
    PALETTE,
    POSITIONS,
    SHAPES,
    Scene,
    caption_variants,
    draw,
    random_scene,
)

pytestmark = pytest.mark.stack_independent  # CI runs it on the embedded stack only


@pytest.mark.parametrize("canvas", CANVASES)
def test_scorer_reads_ground_truth_drawings(canvas: tuple[int, int]) -> None:
    rng = random.Random(7)
    score = Score()
    for _ in range(200):
        scene = random_scene(rng)
        score.add(scene, read(draw(scene, *canvas)))
    rates = score.rates()
    assert rates["background"] == 1.0 and rates["color"] == 1.0, rates
    assert rates["size"] == 1.0 and rates["two"] == 1.0, rates
    assert rates["shape"] >= 0.97 and rates["position"] >= 0.97, rates


def test_wrong_pictures_score_as_wrong() -> None:
    """The scorer is not lenient: a drawing of another scene fails exactly what differs."""
    asked = Scene("circle", "red", "blue", "small", "in the top left")
    drawn = Scene("circle", "red", "blue", "large", "in the bottom right")
    score = Score()
    score.add(asked, read(draw(drawn)))
    score.add(Scene("square", "red", "blue", count=2), read(draw(Scene("square", "red", "blue"))))
    assert score.rates() == {
        "background": 1.0,
        "color": 1.0,
        "shape": 1.0,
        "position": 0.0,
        "size": 0.0,
        "two": 0.0,
    }


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


def test_captions_use_the_article_a_person_writes() -> None:
    assert Scene("circle", "red", "blue", "small", "in the top left").caption == (
        "a small red circle in the top left on a blue background"
    )
    assert Scene("circle", "purple", "orange", "large").caption == (
        "a large purple circle in the center on an orange background"
    )
    assert (
        Scene("square", "red", "white", count=2).caption == "two red squares on a white background"
    )
    assert "an orange circle on a purple background" in caption_variants(
        Scene("circle", "orange", "purple")
    )


def test_training_program_writes_a_standard_diffusers_folder(tmp_path: Path) -> None:
    """A few seconds of training: the program runs end to end and its folder loads through
    the same from_pretrained(..., local_files_only=True) path as any model. (Quality is
    measured by the scorer on a full run, not here.)"""
    import torch
    from diffusers import StableDiffusionPipeline

    from imagesmith.demo.train import TrainConfig, train_demo

    config = TrainConfig(minutes=0.05, batch=8, limit_scenes=64)
    out = train_demo(tmp_path / "demo", config, log=lambda _: None)
    record = json.loads((out / "train-config.json").read_text())
    assert record["side"] == 64 and record["minutes"] == 0.05
    assert len(record["held_out_triples"]) == 12 and record["unet_steps"] >= 1
    assert record["canvases"] == [list(canvas) for canvas in CANVASES]
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
    assert weights < 15 * 1024 * 1024


def test_held_out_combinations_never_reach_training() -> None:
    from imagesmith.demo.shapes import all_scenes
    from imagesmith.demo.train import TrainConfig, training_scenes

    config = TrainConfig()
    train, held = training_scenes(config)
    held_triples = {(s.shape, s.color, s.background) for s in held}
    assert len(held_triples) == 12 and len(held) == 12 * 11  # 2 sizes x 5 positions + "two"
    assert not held_triples & {(s.shape, s.color, s.background) for s in train}
    assert len(train) + len(held) == len(all_scenes()) == 3 * 8 * 7 * 11
    # Every shape is held out equally often; the choice is the same on every run.
    assert sorted(t[0] for t in held_triples) == sorted(SHAPES * 4)
    assert training_scenes(config)[1] == held


def test_short_captions_mean_the_default_size_and_position() -> None:
    from imagesmith.demo.shapes import caption_variants

    assert caption_variants(Scene("circle", "red", "blue")) == [
        "a large red circle in the center on a blue background",
        "a large red circle on a blue background",
        "a red circle in the center on a blue background",
        "a red circle on a blue background",
    ]
    small_corner = Scene("square", "red", "white", "small", "in the top left")
    assert caption_variants(small_corner) == [
        small_corner.caption,
        "a small red square in the top left corner on a white background",
    ]


def test_template_words_are_whole_tokens() -> None:
    """The built-in enhancer's words are single tokens the model learnt to ignore, so an
    enhanced prompt does not push the shape's words past the tokenizer's length."""
    from imagesmith.demo.train import vocabulary

    words = vocabulary()
    for word in ("photorealistic", "composition", "lighting", "sticker", "circle", "an", "corner"):
        assert word in words


def test_every_vocabulary_word_is_one_token(tmp_path: Path) -> None:
    """Through the real CLIPTokenizer: a merge written for an earlier word ("m a") once split
    later ones ("small" came out as `s ma l l`, "large" as `l ar g e`)."""
    from imagesmith.demo.train import vocabulary
    from imagesmith.engines.tiny import COMMON_WORDS, byte_tokenizer, write_tokenizer

    for name, words in (("demo", vocabulary()), ("tiny", COMMON_WORDS)):
        write_tokenizer(tmp_path / name, words=words)
        tokenizer = byte_tokenizer(tmp_path / name, max_length=48)
        split = {w: tokenizer.tokenize(w) for w in words if len(tokenizer.tokenize(w)) != 1}
        assert not split, split
    demo = byte_tokenizer(tmp_path / "demo", max_length=48)
    caption = "a small red square in the top left corner on an orange background"
    assert demo.tokenize(caption) == [f"{w}</w>" for w in caption.split()]


def test_the_vae_loss_weighs_the_shape_and_its_edge() -> None:
    import numpy as np
    import torch

    from imagesmith.demo.train import shape_masks

    scene = Scene("square", "red", "blue", "small", "in the top left")
    pixels = np.asarray(draw(scene), dtype=np.float32) / 127.5 - 1
    mask = shape_masks(torch.from_numpy(pixels).permute(2, 0, 1)[None])[0, 0].numpy()
    drawn = (np.asarray(draw(scene)) != PALETTE["blue"]).any(axis=2)
    assert mask[drawn].all()  # every pixel of the shape
    ys, xs = np.nonzero(drawn)
    assert mask[ys.min() - 2, xs.min() - 2] and not mask[ys.min() - 3, xs.min()]  # 2 px around
    assert not mask[-1, -1] and mask.mean() < 0.15  # the far background weighs 1
