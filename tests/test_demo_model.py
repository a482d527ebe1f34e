"""The shipped demo model, where the picture's meaning matters: a real server with its default
model draws what the prompt says; seeds, guidance, img2img and batches change what they should.
Pictures are read with the same pixel-statistics scorer that scores the model."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from imagesmith.catalog.models import ModelRegistry
from imagesmith.catalog.params import EngineParams
from imagesmith.demo.score import read
from imagesmith.demo.shapes import Scene, draw
from imagesmith.engines.base import EngineConfig, EngineJob
from tests.serverproc import Server, create_key

pytestmark = pytest.mark.stack_independent  # CI runs it on the embedded stack only


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    # The model a fresh install uses when nothing is configured.
    srv = Server(tmp_path_factory.mktemp("demo"), models_dir, default_model="demo").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def demo(demo_server: Server) -> Iterator[httpx.Client]:
    key = create_key(demo_server.env, "shapes", "demo")
    with httpx.Client(
        base_url=demo_server.url,
        # The native API reads X-API-Key, the Stablecog one the Bearer token.
        headers={"X-API-Key": key, "Authorization": f"Bearer {key}"},
        timeout=120,
    ) as client:
        yield client


def picture(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content)).convert("RGB")


def stablecog(client: httpx.Client, **body: Any) -> list[Image.Image]:
    response = client.post("/v1/image/generation/create", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["settings"]["model_id"] == "demo"
    return [picture(client, output["image_url"]) for output in response.json()["outputs"]]


def distance(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255."""
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def test_readme_prompt_comes_back_red_on_blue(demo: httpx.Client) -> None:
    # The README's example, through the native API with its default prompt enhancement.
    response = demo.post(
        "/api/v1/generations",
        json={"prompt": "a red circle on a blue background", "seed": 1},
        headers={"Prefer": "wait=120"},
    )
    assert response.status_code in (200, 201), response.text
    data = response.json()["data"]
    assert (data["status"], data["model"]) == ("success", "demo"), data
    image = picture(demo, data["outputImage"]["storageUrl"])
    assert image.size == (64, 64)
    reading = read(image)
    assert (reading.color, reading.background) == ("red", "blue"), reading


@pytest.mark.parametrize(
    "prompt",
    [
        "a yellow square on a black background",
        "a white triangle on a green background",
        # The article a person writes, and the one the first demo's captions used.
        "an orange circle on a purple background",
        "a orange circle on a purple background",
        "a purple circle on an orange background",
    ],
)
def test_a_prompts_colours_appear(demo: httpx.Client, prompt: str) -> None:
    words = prompt.split()
    color, background = words[1], words[-2]
    [image] = stablecog(demo, prompt=prompt, seed=7)
    reading = read(image)
    assert (reading.color, reading.background) == (color, background), (prompt, reading)


@pytest.mark.parametrize("corner", ["top left", "top right", "bottom left", "bottom right"])
def test_a_position_word_moves_the_shape_to_that_corner(demo: httpx.Client, corner: str) -> None:
    prompt = f"a small green square in the {corner} on a white background"
    [image] = stablecog(demo, prompt=prompt, seed=11)
    reading = read(image)
    assert (reading.position, reading.color, reading.background) == (
        f"in the {corner}",
        "green",
        "white",
    ), (prompt, reading)


@pytest.mark.parametrize(("aspect", "size"), [("16:9", (112, 64)), ("9:16", (64, 112))])
def test_other_aspect_ratios_draw_one_scene(
    demo: httpx.Client, aspect: str, size: tuple[int, int]
) -> None:
    """The native API's aspect ratios: one shape where it was asked for, not a stretched or
    tiled picture."""
    response = demo.post(
        "/api/v1/generations",
        json={
            "prompt": "a red circle in the bottom right on a blue background",
            "aspectRatio": aspect,
            "seed": 2,
            "autoEnhance": False,
        },
        headers={"Prefer": "wait=120"},
    )
    assert response.status_code in (200, 201), response.text
    image = picture(demo, response.json()["data"]["outputImage"]["storageUrl"])
    assert image.size == size
    reading = read(image)
    assert (reading.color, reading.background, reading.position, reading.count) == (
        "red",
        "blue",
        "in the bottom right",
        1,
    ), reading


@pytest.mark.parametrize(("size", "drawn"), [("256x256", (64, 64)), ("256x112", (144, 64))])
def test_a_size_above_what_the_model_draws_is_drawn_at_its_size_and_scaled_up(
    demo: httpx.Client, size: str, drawn: tuple[int, int]
) -> None:
    """256x256 is the smallest size OpenAI clients know. The demo, trained on 64 px canvases,
    drew a blank background at 256 px; now it draws at its own short side, in the request's
    shape, and scales up: the picture has the size asked for and the scene the prompt says."""
    import base64

    from imagesmith.catalog.models import ModelRegistry

    assert ModelRegistry.load().get("demo").draw_size(*map(int, size.split("x"))) == drawn
    response = demo.post(
        "/v1/images/generations",
        json={
            "prompt": "a red circle on a blue background",
            "size": size,
            "seed": 7,
            "response_format": "b64_json",
        },
    )
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == tuple(map(int, size.split("x")))
    reading = read(image)
    assert (reading.color, reading.background, reading.count) == ("red", "blue", 1), reading


def test_same_seed_same_picture_other_seed_another(demo: httpx.Client) -> None:
    prompt = "a small green square in the top left on a white background"
    first = stablecog(demo, prompt=prompt, seed=11)[0]
    again = stablecog(demo, prompt=prompt, seed=11)[0]
    other = stablecog(demo, prompt=prompt, seed=12)[0]
    assert distance(first, again) == 0
    # Another seed, another picture: since the third edition it differs only at the edges (0.7
    # of 255 on average), because the prompt says everything there is to draw.
    assert distance(first, other) > 0
    # Both seeds still draw the prompt's colours.
    for image in (first, other):
        assert (read(image).color, read(image).background) == ("green", "white")


def test_guidance_1_and_7_differ(demo: httpx.Client) -> None:
    prompt = "a large blue triangle in the center on a yellow background"
    weak = stablecog(demo, prompt=prompt, seed=3, guidance_scale=1)[0]
    strong = stablecog(demo, prompt=prompt, seed=3, guidance_scale=7)[0]
    assert distance(weak, strong) > 2.0
    assert (read(strong).color, read(strong).background) == ("blue", "yellow")


def test_img2img_low_strength_stays_close_to_its_init(demo: httpx.Client) -> None:
    init = draw(Scene("square", "green", "white", "large", "in the center"))
    buffer = io.BytesIO()
    init.save(buffer, format="PNG")
    upload = demo.post(
        "/v1/image/upload", files={"file": ("init.png", buffer.getvalue(), "image/png")}
    )
    assert upload.status_code == 200, upload.text
    url = upload.json()["object"]
    # Low strength with the picture's own description: the init comes back (through the VAE).
    near = stablecog(
        demo,
        prompt="a green square on a white background",
        seed=5,
        init_image_url=url,
        prompt_strength=0.2,
    )[0]
    # High strength with another prompt: the prompt wins.
    far = stablecog(
        demo,
        prompt="a red circle on a blue background",
        seed=5,
        init_image_url=url,
        prompt_strength=0.95,
    )[0]
    assert distance(near, init) < 15, distance(near, init)
    assert distance(far, init) > 4 * distance(near, init)
    assert (read(near).color, read(near).background, read(near).shape) == (
        "green",
        "white",
        "square",
    )
    assert (read(far).color, read(far).background) == ("red", "blue")


def test_a_batch_gives_each_job_its_own_prompts_colours(models_dir: Path) -> None:
    """One pipeline call for three jobs (the worker's batching), read job by job."""
    from imagesmith.engines.diffusers_engine import DiffusersEngine

    spec = ModelRegistry.load().get("demo")
    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [spec.to_dict()]))
    scenes = [
        Scene("circle", "red", "blue"),
        Scene("square", "yellow", "black"),
        Scene("triangle", "white", "purple"),
    ]
    jobs = [
        EngineJob(
            f"g{i}",
            scene.caption,
            None,
            EngineParams(
                "demo",
                64,
                64,
                spec.default_steps,
                spec.default_guidance,
                spec.default_scheduler,
                seed=100 + i,
            ),
        )
        for i, scene in enumerate(scenes)
    ]
    results = engine.generate(jobs, lambda *_: None, lambda: False)
    assert len(results) == 3
    for scene, [output] in zip(scenes, results, strict=True):
        reading = read(output.convert("RGB"))  # the engine returns images; the child encodes
        assert (reading.color, reading.background) == (scene.color, scene.background), scene


def test_shipped_weights_are_small_fp16_and_load_the_standard_way() -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from imagesmith.engines.tiny import DEMO_FOLDER

    files = list(DEMO_FOLDER.rglob("*.safetensors"))
    assert {f.parent.name for f in files} == {"unet", "vae", "text_encoder"}
    assert sum(f.stat().st_size for f in DEMO_FOLDER.rglob("*") if f.is_file()) < 15 * 2**20
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), "pt") as weights:
            dtypes = {weights.get_slice(k).get_dtype() for k in weights.keys()}  # noqa: SIM118
        assert dtypes == {"F16"}, (f, dtypes)
    pipe = StableDiffusionPipeline.from_pretrained(
        str(DEMO_FOLDER), local_files_only=True, torch_dtype=torch.float32
    )
    assert pipe.unet.config.sample_size * 4 == 64


def test_the_default_model_is_the_demo() -> None:
    from imagesmith.config import Settings

    assert Settings.model_fields["default_model"].default == "demo"
    assert ModelRegistry.load().get("demo").source == "builtin:demo"


def test_held_out_prompts_meet_the_quality_bar() -> None:
    """The scorer on the (shape, colour, background) combinations the model never saw."""
    from imagesmith.demo.evaluate import evaluate, held_out_scenes, load_pipeline
    from imagesmith.engines.tiny import DEMO_FOLDER

    spec = ModelRegistry.load().get("demo")
    scenes = held_out_scenes(DEMO_FOLDER)
    rates = evaluate(
        load_pipeline(DEMO_FOLDER),
        scenes,
        guidance=spec.default_guidance,
        steps=spec.default_steps,
        scheduler=spec.default_scheduler,
    ).rates
    # Recorded in bench/demo-model.md with this seed: background 100 %, shape colour 100 %,
    # shape 95.5 %, position 100 %, size 100 %, "two …" 100 % (issue 18's bars: 98, 97, 90,
    # 80). The floors leave room for another CPU's float rounding to flip a picture or two.
    assert rates["background"] >= 0.98 and rates["color"] >= 0.97, rates
    assert rates["position"] >= 0.95 and rates["size"] >= 0.95 and rates["two"] >= 0.9, rates
    assert rates["shape"] >= 0.9, rates


def test_the_vae_gives_back_the_held_out_drawings() -> None:
    """The model's ceiling: the true drawings through the VAE alone. The second edition's VAE
    rounded small squares and filled small triangles in (63 % of the shapes came back), and its
    pictures could score no better (61 %)."""
    from imagesmith.demo.evaluate import held_out_scenes, load_pipeline, round_trip
    from imagesmith.engines.tiny import DEMO_FOLDER

    pipe = load_pipeline(DEMO_FOLDER)
    scenes = held_out_scenes(DEMO_FOLDER)
    for width, height in ((64, 64), (112, 64)):
        rates = round_trip(pipe, scenes, width, height).rates
        assert rates["shape"] >= 0.9 and rates["color"] >= 0.97, (width, height, rates)
        assert rates["background"] == 1 and rates["position"] == 1, (width, height, rates)
