"""Remote engines behind the same queue: a real server whose registry names models at
Replicate, OpenAI, an OpenAI-compatible server and Gemini, all played by stand-ins on 127.0.0.1
(tests/providers.py) that speak each provider's protocol. Images land in our store; a 429
delays without failing; a cancel reaches Replicate; refusals fail with the provider's words;
remote jobs never wait behind local ones; keys never show."""

from __future__ import annotations

import io
import json
import subprocess
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imagesmith.engines.remote.sizes import nearest_ratio, nearest_size
from tests.pictures import png as small_png
from tests.providers import (
    COLOUR,
    GeminiHandler,
    OpenAIHandler,
    Provider,
    Replicate,
    ReplicateHandler,
    handler_for,
)
from tests.serverproc import Server, create_key, pip_install, run_cli, wait_terminal
from tests.stubs import local_server
from tests.test_devkit import SEED_INSTRUCTIONS, App, wait_completed

TOKENS = {
    "replicate": "r8_standin_token_0123",
    "openai": "sk-standin-0123",
    "gemini": "AIza-standin",
}
REPO = Path(__file__).resolve().parent.parent
VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, Any]]:
    replicate = Replicate(TOKENS["replicate"])
    openai, compatible, gemini = (
        Provider(TOKENS["openai"]),
        Provider("local-key"),
        Provider(TOKENS["gemini"]),
    )
    with (
        local_server(handler_for(ReplicateHandler, replicate)) as r_url,
        local_server(handler_for(OpenAIHandler, openai)) as o_url,
        local_server(handler_for(OpenAIHandler, compatible)) as c_url,
        local_server(handler_for(GeminiHandler, gemini)) as g_url,
    ):
        replicate.url, openai.url, compatible.url, gemini.url = r_url, o_url, c_url, g_url
        yield {"replicate": replicate, "openai": openai, "compatible": compatible, "gemini": gemini}


def models_toml(compatible_url: str) -> str:
    return f"""
[[models]]
id = "sdxl-replicate"
provider = "replicate"
source = "stability-ai/sdxl"

[[models]]
id = "sdxl-pinned"
provider = "replicate"
source = "stability-ai/sdxl:{VERSION}"

[[models]]
id = "painter"
provider = "replicate"
source = "community/painter"

[[models]]
id = "sdxl-impatient"
provider = "replicate"
source = "stability-ai/sdxl"
extra = {{ timeout_seconds = 1.5 }}

[[models]]
id = "gpt-image"
provider = "openai"
source = "gpt-image-1"

[[models]]
id = "house-model"
provider = "openai-compatible"
source = "house-sd"
base_url = "{compatible_url}/v1"

[[models]]
id = "nano-banana"
provider = "gemini"
source = "gemini-2.5-flash-image"

[[models]]
id = "imagen"
provider = "gemini"
source = "imagen-4.0-generate-001"
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, providers: dict[str, Any]
) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("remote")
    models_file = data / "models.toml"
    models_file.write_text(models_toml(providers["compatible"].url))
    srv = Server(
        data,
        models_dir,
        models_file=models_file,
        default_model="sdxl-replicate",
        allow_private_urls="true",  # the stand-ins' output files are on loopback
        replicate_api_token=TOKENS["replicate"],
        replicate_base_url=providers["replicate"].url,
        openai_api_key=TOKENS["openai"],
        openai_base_url=providers["openai"].url,
        openai_compatible_api_key="local-key",
        gemini_api_key=TOKENS["gemini"],
        gemini_base_url=providers["gemini"].url,
        remote_concurrency=3,
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return create_key(server.env, "remoteco", "site")


def generate(server: Server, key: str, **body: Any) -> dict[str, Any]:
    with server.client(key) as client:
        made = client.post(
            "/api/v1/generations", json={"prompt": "a lighthouse", "autoEnhance": False, **body}
        )
        assert made.status_code == 201, made.text
        return wait_terminal(client, made.json()["data"]["id"], timeout=60)


def stored_picture(url: str) -> Image.Image:
    response = httpx.get(url)
    assert response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(response.content)).convert("RGB")


def test_the_devkit_seed_request_runs_at_replicate_and_lands_in_our_store(
    server: Server, providers: dict[str, Any]
) -> None:
    replicate: Replicate = providers["replicate"]
    app = App(server, "devshop", "app")
    token = app.user("remote@example.com")["access_token"]
    made = app.generate(token, [("a.png", small_png(), "image/png")], SEED_INSTRUCTIONS)
    assert made.status_code == 200, made.text
    done = wait_completed(app, token, made.json()["id"])
    assert done["status"] == "completed", done
    with server.client(app.key) as client:
        record = client.get(f"/api/v1/generations/{done['id']}").json()["data"]
    picture = stored_picture(record["outputImage"]["storageUrl"])
    assert record["outputImage"]["storageUrl"].startswith(server.url + "/cdn/")
    assert picture.getpixel((5, 5)) == COLOUR and picture.size == (1024, 1024)
    provider = record["meta"]["provider"]
    assert provider["provider"] == "replicate" and provider["model"] == "stability-ai/sdxl"
    assert provider["predictionId"] in replicate.predictions
    ((headers, body),) = [
        call for call in replicate.calls("POST", r"^/v1/models/stability-ai/sdxl/predictions$")
        if call[1]["input"]["prompt"].startswith("Generate a futuristic cityscape")
    ]  # fmt: skip
    assert headers["authorization"] == f"Bearer {TOKENS['replicate']}"
    assert headers["prefer"].startswith("wait=")
    inputs = body["input"]
    assert inputs["image"].startswith("data:image/png;base64,")  # the example image: img2img
    assert 0 < inputs["prompt_strength"] <= 1
    assert {"width", "height", "num_outputs", "num_inference_steps", "seed"} <= set(inputs)


def test_a_throttled_create_is_retried_without_burning_crash_retries(
    server: Server, key: str, providers: dict[str, Any]
) -> None:
    replicate: Replicate = providers["replicate"]
    replicate.throttle = 2
    before = len(replicate.calls("POST", r"/v1/predictions$"))
    done = generate(server, key, model="sdxl-pinned", prompt="a throttled lighthouse")
    assert done["status"] == "success" and done["retryCount"] == 0, done
    creates = replicate.calls("POST", r"^/v1/predictions$")[before:]
    assert len(creates) == 3 and all(body["version"] == VERSION for _, body in creates)
    assert "remote.busy" in server.log() and "retry_in=1.0s" in server.log()


def test_a_community_model_runs_as_its_latest_version(
    server: Server, key: str, providers: dict[str, Any]
) -> None:
    done = generate(server, key, model="painter", prompt="a painted lighthouse")
    assert done["status"] == "success", done
    (_, body) = providers["replicate"].calls("POST", "^/v1/predictions$")[-1]
    assert body["version"] == "c0ffee" * 10 + "c0ff"


def test_a_failing_poll_is_repeated_and_never_re_creates(
    server: Server, key: str, providers: dict[str, Any]
) -> None:
    replicate: Replicate = providers["replicate"]
    replicate.seconds, replicate.poll_errors = 6.0, 2  # longer than the create's 5 s hold
    try:
        done = generate(server, key, model="sdxl-replicate", prompt="a polled lighthouse")
    finally:
        replicate.seconds = 0.3
    assert done["status"] == "success" and done["retryCount"] == 0, done
    made = [
        body for _, body in replicate.calls("POST", "/predictions$")
        if body["input"]["prompt"] == "a polled lighthouse"
    ]  # fmt: skip
    assert len(made) == 1 and replicate.poll_errors <= 0


def test_cancel_reaches_replicate(server: Server, key: str, providers: dict[str, Any]) -> None:
    replicate: Replicate = providers["replicate"]
    with server.client(key) as client:
        made = client.post(
            "/api/v1/generations",
            json={"prompt": "a slow lighthouse", "autoEnhance": False, "model": "sdxl-replicate"},
        ).json()["data"]
        deadline = time.monotonic() + 30
        while not any(
            p["input"]["prompt"] == "a slow lighthouse"
            for p in list(replicate.predictions.values())
        ):
            assert time.monotonic() < deadline, "the prediction was never created"
            time.sleep(0.05)
        (prediction,) = [
            p for p in list(replicate.predictions.values())
            if p["input"]["prompt"] == "a slow lighthouse"
        ]  # fmt: skip
        cancelled = client.post(f"/api/v1/generations/{made['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["data"]["status"] == "cancelled"
        deadline = time.monotonic() + 10
        while prediction["id"] not in replicate.cancelled:
            assert time.monotonic() < deadline, "the cancel never reached Replicate"
            time.sleep(0.05)
        assert prediction["status"] == "canceled"
        assert client.get(f"/api/v1/generations/{made['id']}").json()["data"]["status"] == (
            "cancelled"
        )


def test_refusals_fail_the_job_with_the_providers_words(server: Server, key: str) -> None:
    invalid = generate(server, key, model="sdxl-replicate", prompt="bad input please")
    assert invalid["status"] == "failed" and invalid["retryCount"] == 0
    assert "422" in invalid["errorMessage"] and "schema" in invalid["errorMessage"]
    crashed = generate(server, key, model="sdxl-replicate", prompt="fail me")
    assert crashed["status"] == "failed" and "CUDA out of memory" in crashed["errorMessage"]
    policy = generate(server, key, model="gpt-image", prompt="something forbidden")
    assert policy["status"] == "failed" and "safety system" in policy["errorMessage"]
    blocked = generate(server, key, model="nano-banana", prompt="blocked words")
    assert blocked["status"] == "failed" and "SAFETY" in blocked["errorMessage"]


def test_a_provider_past_the_deadline_fails_and_is_cancelled_there(
    server: Server, key: str, providers: dict[str, Any]
) -> None:
    replicate: Replicate = providers["replicate"]
    late = generate(server, key, model="sdxl-impatient", prompt="a slow sunrise")
    assert late["status"] == "failed" and "did not finish within 1.5 s" in late["errorMessage"]
    (prediction,) = [
        p for p in list(replicate.predictions.values()) if p["input"]["prompt"] == "a slow sunrise"
    ]
    assert prediction["id"] in replicate.cancelled  # no orphan left running up a bill


def test_openai_and_gemini_sizes_go_to_the_nearest_they_take(
    server: Server, key: str, providers: dict[str, Any]
) -> None:
    wide = generate(server, key, model="gpt-image", aspectRatio="16:9")
    assert wide["status"] == "success", wide
    assert wide["meta"]["provider"]["size"] == "1536x1024"
    assert stored_picture(wide["outputImage"]["storageUrl"]).size == (1536, 1024)
    (headers, body) = providers["openai"].calls("POST", "/v1/images/generations")[-1]
    assert headers["authorization"] == f"Bearer {TOKENS['openai']}"
    assert body["model"] == "gpt-image-1" and body["size"] == "1536x1024"
    assert "seed" in wide["meta"]["provider"]["ignored"]

    house = generate(server, key, model="house-model", width=512, height=512, seed=42)
    assert house["status"] == "success", house
    (headers, body) = providers["compatible"].calls("POST", "/v1/images/generations")[-1]
    assert headers["authorization"] == "Bearer local-key" and body["seed"] == 42
    assert body["size"] == "512x512"

    tall = generate(server, key, model="nano-banana", aspectRatio="9:16")
    assert tall["status"] == "success", tall
    (headers, body) = providers["gemini"].calls("POST", r":generateContent$")[-1]
    assert headers["x-goog-api-key"] == TOKENS["gemini"]
    assert body["generationConfig"]["imageConfig"]["aspectRatio"] == "9:16"
    assert stored_picture(tall["outputImage"]["storageUrl"]).size == (768, 1344)

    with server.client(key) as client:
        upload = client.post(
            "/api/v1/images/upload", files={"file": ("in.png", small_png(), "image/png")}
        ).json()["data"]
    edited = generate(server, key, model="gpt-image", initImage=upload["id"], promptStrength=0.6)
    assert edited["status"] == "success", edited
    (headers, body) = providers["openai"].calls("POST", "/v1/images/edits")[-1]
    assert headers["content-type"].startswith("multipart/form-data") and b"\x89PNG" in body
    redrawn = generate(server, key, model="nano-banana", initImage=upload["id"])
    assert redrawn["status"] == "success", redrawn
    (_, body) = providers["gemini"].calls("POST", r":generateContent$")[-1]
    assert body["contents"][0]["parts"][1]["inline_data"]["mime_type"] == "image/png"

    pair = generate(server, key, model="imagen", numOutputs=2, aspectRatio="21:9")
    assert pair["status"] == "success" and len(pair["outputImages"]) == 2, pair
    (_, body) = providers["gemini"].calls("POST", r":predict$")[-1]
    assert body["parameters"] == {"sampleCount": 2, "aspectRatio": "16:9"}  # Imagen has no 21:9


def test_remote_jobs_run_at_once_beside_local_ones_and_cost_credits(
    server: Server, providers: dict[str, Any]
) -> None:
    assert (
        run_cli(
            server.env, "credits", "set", "--org", "remoteco", "--project", "paid", "5"
        ).returncode
        == 0
    )
    key = create_key(server.env, "remoteco", "paid")
    with server.client(key) as client:
        local = client.post(  # the local model child is busy with this for a while
            "/api/v1/generations",
            json={"prompt": "busy", "model": "tiny-sd", "steps": 50, "width": 512, "height": 512},
        ).json()["data"]
        remote = [
            client.post(
                "/api/v1/generations",
                json={"prompt": f"quick {i}", "model": "sdxl-replicate", "autoEnhance": False},
            ).json()["data"]
            for i in range(3)
        ]
        ends = [wait_terminal(client, r["id"], timeout=60) for r in remote]
        assert all(end["status"] == "success" for end in ends)
        still = client.get(f"/api/v1/generations/{local['id']}").json()["data"]
        bearer = {"Authorization": f"Bearer {key}"}
        balance = httpx.get(f"{server.url}/v1/credits", headers=bearer).json()
        # Done with it: a minute of 512 px steps would hold the later tests' CPU and the stop.
        client.post(f"/api/v1/generations/{local['id']}/cancel")
    assert still["status"] in ("pending", "processing")  # they did not wait behind it
    assert providers["replicate"].running_max >= 2  # and ran side by side
    assert balance["total_remaining_credits"] == 1  # four images charged, remote or local


def test_a_provider_is_billed_for_what_it_sends_and_a_lost_output_is_not_run_again(
    server: Server, providers: dict[str, Any]
) -> None:
    """Fewer images than asked: the missing ones are refunded; more: only those asked for are
    kept; an output URL that cannot be fetched fails the job after a second try, without
    running the paid prediction again (it used to be released for a retry, up to 4 runs)."""
    assert (
        run_cli(
            server.env, "credits", "set", "--org", "remoteco", "--project", "billing", "10"
        ).returncode
        == 0
    )
    key = create_key(server.env, "remoteco", "billing")
    bearer = {"Authorization": f"Bearer {key}"}

    def balance() -> int:
        body = httpx.get(f"{server.url}/v1/credits", headers=bearer).json()
        return int(body["total_remaining_credits"])

    fewer = generate(server, key, prompt="fewer please", model="house-model", numOutputs=3)
    assert fewer["status"] == "success" and len(fewer["outputImages"]) == 2, fewer
    extra = generate(server, key, prompt="extra please", model="house-model", numOutputs=2)
    assert extra["status"] == "success" and len(extra["outputImages"]) == 2, extra
    assert balance() == 10 - 2 - 2
    creates = providers["compatible"].calls("POST", "/images/generations")
    lost = generate(server, key, prompt="lost output", model="house-model")
    assert lost["status"] == "failed" and "output" in lost["errorMessage"], lost
    assert len(providers["compatible"].calls("POST", "/images/generations")) == len(creates) + 1
    assert balance() == 6


def test_keys_never_show_in_logs_or_answers(server: Server, key: str) -> None:
    with server.client(key) as client:
        answers = [
            client.get("/api/info").text,
            httpx.get(f"{server.url}/v1/image/generation/models").text,
            json.dumps(client.get("/api/v1/generations?limit=100").json()),
        ]
    for secret in (*TOKENS.values(), "local-key"):
        assert secret not in server.log()
        assert not any(secret in answer for answer in answers)


def test_a_remote_only_install_has_no_torch_and_serves_remote_models(
    tmp_path: Path, models_dir: Path, providers: dict[str, Any]
) -> None:
    """`pip install "imagesmith[server]"` (no `diffusers` extra) into a fresh virtualenv: no
    torch, and its `imagesmith serve` runs a Replicate model end to end."""
    home = tmp_path / "venv"
    venv.create(home, with_pip=True)
    python = str(home / "bin" / "python")
    install = pip_install(python, f"{REPO}[server]", timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = "import importlib.util as u; print([m for m in ('torch', 'diffusers', 'transformers')"
    probe += " if u.find_spec(m)])"
    absent = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    assert absent.returncode == 0 and absent.stdout.strip() == "[]", absent.stderr
    models_file = tmp_path / "models.toml"
    models_file.write_text(models_toml(providers["compatible"].url))
    srv = Server(
        tmp_path / "data",
        models_dir,
        python=python,
        models_file=models_file,
        default_model="sdxl-replicate",
        allow_private_urls="true",
        replicate_api_token=TOKENS["replicate"],
        replicate_base_url=providers["replicate"].url,
    ).start(wait_child=False)
    try:
        srv.wait_for_log("worker.local_engine_missing", 60)
        made = subprocess.run(
            [python, "-m", "imagesmith", "keys", "create", "--org", "lite", "--project", "p"],
            env=srv.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        with srv.client(key) as client:
            done = client.post(
                "/api/v1/generations",
                json={"prompt": "a lighthouse at dusk", "autoEnhance": False},
                headers={"Prefer": "wait=60"},
            ).json()["data"]
        assert done["status"] == "success", done
        assert stored_picture(done["outputImage"]["storageUrl"]).getpixel((1, 1)) == COLOUR
    finally:
        srv.stop()


def test_sizes_map_to_the_nearest_supported() -> None:
    assert nearest_size(1344, 768, ("1024x1024", "1536x1024", "1024x1536")) == "1536x1024"
    assert nearest_size(512, 512, ("256x256", "512x512", "1024x1024")) == "512x512"
    assert nearest_ratio(1536, 640, ("1:1", "3:4", "4:3", "9:16", "16:9")) == "16:9"
    assert nearest_ratio(768, 1344, ("1:1", "9:16", "16:9")) == "9:16"
