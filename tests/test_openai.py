"""The OpenAI Images dialect, driven by the official `openai` SDK (sync and async) against a real
server: generations as URLs and base64 in three formats, edits, variations, models, OpenAI's
error classes, and a client that gives up is cancelled and refunded."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from tests.pictures import png
from tests.serverproc import Server, create_key, run_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("openai"), models_dir, lease_seconds=5).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return create_key(server.env, "oai", "app")


@pytest.fixture()
def client(server: Server, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0) as sdk:
        yield sdk


def picture(data: str | bytes) -> Image.Image:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def test_generate_base64_and_urls_in_every_format(client: openai.OpenAI) -> None:
    result = client.images.generate(
        prompt="a red circle", model="tiny-sd", n=2, size="64x96", response_format="b64_json"
    )
    assert len(result.data or []) == 2 and result.size == "64x96"
    first, second = (picture(d.b64_json or "") for d in result.data or [])
    assert first.format == "PNG" and first.size == (64, 96) and first.tobytes() != second.tobytes()
    as_url = client.images.generate(prompt="a red circle", model="tiny-sd", response_format="url")
    url = (as_url.data or [])[0].url or ""
    assert picture(httpx.get(url).content).format == "PNG"
    for fmt, name in (("jpeg", "JPEG"), ("webp", "WEBP")):
        other = client.images.generate(
            prompt="a red circle",
            model="tiny-sd",
            output_format=fmt,
            output_compression=50,
            response_format="b64_json",
        )
        assert picture((other.data or [])[0].b64_json or "").format == name
    # OpenAI's own names run on the configured default model and answer base64, like GPT image.
    gpt = client.images.generate(prompt="a red circle", model="gpt-image-1")
    assert (gpt.data or [])[0].b64_json and (gpt.data or [])[0].revised_prompt == "a red circle"


def test_edits_variations_and_models(client: openai.OpenAI) -> None:
    # With no size (OpenAI's "auto") the output takes the input's shape, at the size the
    # model's family draws it: 3:2 is 96x64 for tiny-sd, a 2:3 portrait 64x96.
    edited = client.images.edit(
        image=("in.png", png((96, 64), (0, 200, 0)), "image/png"),
        prompt="a blue square",
        model="tiny-sd",
        response_format="b64_json",
    )
    assert picture((edited.data or [])[0].b64_json or "").size == (96, 64)
    varied = client.images.create_variation(
        image=("in.png", png((400, 600), (0, 200, 0)), "image/png"), model="tiny-sd", n=2
    )
    assert len(varied.data or []) == 2 and (varied.data or [])[0].url
    assert picture(httpx.get((varied.data or [])[0].url or "").content).size == (64, 96)
    sized = client.images.edit(
        image=("in.png", png((96, 64), (0, 200, 0)), "image/png"),
        prompt="a blue square",
        model="tiny-sd",
        size="64x64",  # as asked
        response_format="b64_json",
    )
    assert picture((sized.data or [])[0].b64_json or "").size == (64, 64)
    with pytest.raises(openai.BadRequestError, match="mask"):
        client.images.edit(
            image=("in.png", png(), "image/png"),
            mask=("m.png", png(), "image/png"),
            prompt="x",
        )
    # The form's fields keep the JSON route's bounds: refused, not cut short or ignored.
    with pytest.raises(openai.BadRequestError, match="at most 2000"):
        client.images.edit(image=("in.png", png(), "image/png"), prompt="x" * 2001)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.images.edit(
            image=("in.png", png(), "image/png"),
            prompt="x",
            response_format="b64",  # type: ignore[arg-type]
        )
    assert "tiny-sd" in {model.id for model in client.models.list()}
    assert client.models.retrieve("tiny-sd").owned_by == "imagesmith"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_base64_bodies_are_the_json_the_standard_library_writes() -> None:
    """b64_json bodies are written by hand around the encoded bytes (api/b64json.py): they must
    parse to what json.dumps + base64 would have said, whatever the text around them holds."""
    import json

    from imagesmith.api.b64json import Base64, dumps

    blobs = [b"", b"\x00\xff" * 7, bytes(range(256)) * 3]
    value = {
        "created": 1,
        "data": [
            {"b64_json": Base64(blob), "revised_prompt": 'é "q"\n\\ \u2028 🎨'} for blob in blobs
        ],
        "usage": {"n": [1, 2.5, None, True, False], "empty": {}, "none": []},
    }
    expected = {
        **value,
        "data": [
            {"b64_json": base64.b64encode(blob).decode(), "revised_prompt": 'é "q"\n\\ \u2028 🎨'}
            for blob in blobs
        ],
    }
    assert json.loads(dumps(value)) == expected
    assert json.loads(dumps([Base64(b"ab"), "x"])) == ["YWI=", "x"]


def test_auto_size_is_the_family_size_nearest_the_inputs_shape() -> None:
    from imagesmith.generation.aspect import nearest_size

    assert nearest_size("sdxl", 4032, 3024, 512, 1536) == (1216, 832)  # a 4:3 phone photo
    assert nearest_size("sdxl", 3024, 4032, 512, 1536) == (832, 1216)  # the same, upright
    assert nearest_size("sd15", 1000, 1000, 256, 1024) == (512, 512)
    assert nearest_size("sdxl", 4000, 1000, 512, 1024) == (1024, 1024)  # the rest are wider
    assert nearest_size("sdxl", 4000, 1000, 2048, 4096) is None


def test_imagesmith_extensions_pass_seed_steps_and_negative_prompt(
    server: Server, key: str, client: openai.OpenAI
) -> None:
    """What an imagesmith calling another imagesmith (an openai-compatible model) passes on;
    the openai SDK sends them with extra_body."""
    made = client.images.generate(
        prompt="a fox",
        model="tiny-sd",
        size="64x64",
        extra_body={"seed": 5, "steps": 3, "negative_prompt": "no fog"},
    )
    assert made.data and made.data[0].url  # tiny-sd answers URLs by default
    with server.client(key) as native:
        record = native.get("/api/v1/generations?limit=1").json()["data"][0]
    assert (record["seed"], record["steps"], record["negativePrompt"]) == (5, 3, "no fog")
    with pytest.raises(openai.BadRequestError, match="seed"):
        client.images.edit(
            image=("in.png", png(), "image/png"),
            prompt="x",
            model="tiny-sd",
            extra_body={"seed": "\u00b2"},  # a digit to str.isdigit(), not to int(): was a 500
        )


def test_errors_come_as_the_sdks_own_classes(server: Server, client: openai.OpenAI) -> None:
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="ims_wrong", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError):
        wrong.images.generate(prompt="x")
    with pytest.raises(openai.BadRequestError) as size:
        client.images.generate(prompt="x", model="tiny-sd", size="100x100")
    assert "multiple of 8" in str(size.value)
    with pytest.raises(openai.BadRequestError):
        client.images.generate(prompt="x", n=11)
    with pytest.raises(openai.BadRequestError, match="partial_images"):
        client.images.generate(prompt="x", model="tiny-sd", stream=True, partial_images=4)
    key = create_key(server.env, "oai", "broke")
    assert (
        run_cli(server.env, "credits", "set", "--org", "oai", "--project", "broke", "0").returncode
        == 0
    )
    broke = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    with broke, pytest.raises(openai.RateLimitError, match="credit"):
        broke.images.generate(prompt="x", model="tiny-sd")


def distance(a: Image.Image, b: Image.Image) -> float:
    pixels = zip(a.convert("RGB").getdata(), b.convert("RGB").getdata(), strict=True)
    total = sum(abs(x - y) for p, q in pixels for x, y in zip(p, q, strict=True))
    return total / a.width / a.height


def test_stream_partial_images_are_real_previews(client: openai.OpenAI) -> None:
    """Previews decoded mid-run are pictures on their way to the result: each one different,
    each close to the final image (the scheduler's estimate of the clean latents), the last at
    least as close as the first."""
    stream = client.images.generate(
        prompt="a red circle on a blue background",
        model="demo",
        size="64x64",
        stream=True,
        partial_images=3,
    )
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert [getattr(e, "partial_image_index", None) for e in events[:3]] == [0, 1, 2]
    final = picture(events[-1].b64_json)
    previews = [picture(event.b64_json) for event in events[:3]]
    assert all(p.size == final.size == (64, 64) and p.format == "PNG" for p in previews)
    assert len({p.tobytes() for p in [*previews, final]}) == 4
    unrelated = distance(final, Image.new("RGB", (64, 64), (128, 128, 128)))
    gaps = [distance(p, final) for p in previews]
    assert max(gaps) < unrelated / 2 and gaps[2] <= gaps[0], (gaps, unrelated)
    reds = sum(1 for r, _g, b in final.convert("RGB").getdata() if r > b + 60)
    assert reds > 64 * 64 // 20  # a red circle (the demo model draws what it is told)
    # Fewer steps than previews asked for: as many as there are steps before the last.
    short = client.images.generate(
        prompt="a red circle", model="tiny-sd", stream=True, partial_images=3, output_format="jpeg"
    )
    events = list(short)
    assert [e.type for e in events].count("image_generation.partial_image") == 3  # 4 steps
    assert all(picture(e.b64_json).format == "JPEG" for e in events)
    assert events[-1].type == "image_generation.completed" and events[-1].output_format == "jpeg"
    edits = client.images.edit(
        image=("in.png", png((64, 64), (0, 200, 0)), "image/png"),
        prompt="a blue square",
        model="tiny-sd",
        stream=True,
        partial_images=1,
    )
    kinds = [e.type for e in edits]
    assert kinds == ["image_edit.partial_image", "image_edit.completed"]


def test_a_stream_whose_reader_leaves_is_cancelled(server: Server) -> None:
    key = create_key(server.env, "oai", "leaver")
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0) as sdk:
        stream = sdk.images.generate(
            prompt="slow", model="tiny-sd", size="512x512", n=4, stream=True, partial_images=2
        )
        stream.close()
    headers = {"X-API-Key": key}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = httpx.get(f"{server.url}/api/v1/generations", headers=headers).json()["data"]
        if rows and rows[0]["status"] in ("cancelled", "success"):
            break
        time.sleep(0.2)
    assert rows[0]["status"] == "cancelled"


def test_the_async_client_and_the_native_listing(server: Server, key: str) -> None:
    async def go() -> str:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key) as sdk:
            result = await sdk.images.generate(prompt="an async circle", model="tiny-sd")
            stream = await sdk.images.generate(
                prompt="an async stream", model="tiny-sd", stream=True, partial_images=1
            )
            kinds = [event.type async for event in stream]
            assert kinds == ["image_generation.partial_image", "image_generation.completed"]
            return (result.data or [])[0].url or ""

    url = asyncio.run(go())
    assert url.startswith(server.url)
    listed = httpx.get(
        f"{server.url}/api/v1/generations", headers={"X-API-Key": key}, params={"limit": 100}
    ).json()["data"]
    assert any(g["originalPrompt"] == "an async circle" for g in listed)


def test_a_client_that_gives_up_is_cancelled_and_refunded(server: Server) -> None:
    key = create_key(server.env, "oai", "impatient")
    args = ("credits", "set", "--org", "oai", "--project", "impatient", "5")
    assert run_cli(server.env, *args).returncode == 0
    with (
        openai.OpenAI(
            base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=1.0
        ) as impatient,
        pytest.raises(openai.APITimeoutError),
    ):
        impatient.images.generate(prompt="slow", model="tiny-sd", size="512x512", n=4)
    headers = {"X-API-Key": key}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = httpx.get(f"{server.url}/api/v1/generations", headers=headers).json()["data"]
        if rows and rows[0]["status"] == "cancelled":
            break
        time.sleep(0.2)
    assert rows[0]["status"] == "cancelled"
    credits = httpx.get(f"{server.url}/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert credits.json()["total_remaining_credits"] == 5
    left = 'route="/v1/images/generations",status="499"'  # the answer to nobody, not a 500
    while left not in (metrics := httpx.get(f"{server.url}/metrics").text):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.2)
