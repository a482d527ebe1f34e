"""Seed conformance: one row per checkable statement of the four seed pages, each run against a
real server. A row quotes the sentence it checks (`says`, whitespace as on the page) from its seed
file; where the products' own docs disagree it says which forms are accepted (`accepts`); a
deliberate deviation names its reason (`deviation`), and the README's "Deviations from the seed
pages" lists every one by its row id. The rows are data: adding a statement adds one function.

Seed files (in the workspace's shared/seeds, not in the repository): 000 devkit4ai Generation V2,
001 Banatie generations (advanced), 002 Banatie image generation, 003 Stablecog create."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.pictures import encoded, pixels, png
from tests.serverproc import Server, create_key
from tests.test_devkit import App

ROOT = Path(__file__).resolve().parents[1]
SEEDS = Path(os.environ.get("IMAGESMITH_SEEDS_DIR", ROOT.parent / "shared" / "seeds"))
SEED_FILES = {
    "000": "000_b8b46ba8709812fd.txt",
    "001": "001_fa99943793efe041.txt",
    "002": "002_b69de2b8ffa7539f.txt",
    "003": "003_7c64f837c53a18e6.txt",
}
WAIT = {"Prefer": "wait=60"}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# A Stablecog-shaped model: SD 1.5's family and bounds (256-1024 px, 10-50 steps, guidance 1-20),
# the seed's, on the local random-weight tiny-sd weights so that accepted requests really run.
MODELS_TOML = """
[[models]]
id = "sc-shape"
family = "sd15"
source = "{folder}"
default_steps = 10
default_width = 256
default_height = 256
default_guidance = 7.0
"""


@dataclass(frozen=True)
class Row:
    id: str
    seed: str
    says: str
    check: Callable[[World], None]
    accepts: str = ""
    deviation: str = ""


ROWS: list[Row] = []


def row(seed: str, says: str, *, accepts: str = "", deviation: str = "") -> Callable[..., Any]:
    def register(check: Callable[[World], None]) -> Callable[[World], None]:
        ROWS.append(Row(f"{seed}-{check.__name__}", seed, says, check, accepts, deviation))
        return check

    return register


@dataclass
class World:
    """The server and one client per dialect, keys by purpose (one project each)."""

    server: Server
    master: str
    models_dir: Path
    keys: dict[str, str] = field(default_factory=dict)
    devkit: App | None = None
    devkit_token: str = ""
    limited: Server | None = None

    def api_only(self) -> Server:
        """A second server as an operator runs it for Banatie's limit (100 requests an hour per
        key), API only: rows that need a job queued but never run use it too."""
        if self.limited is None:
            self.limited = Server(
                self.server.data_dir / "limited",
                self.models_dir,
                rate_limit="100/hour",
                models_file=self.server.data_dir / "models.toml",
            ).start("--no-worker")
        return self.limited

    def key(self, name: str) -> str:
        if name not in self.keys:
            created = httpx.post(
                f"{self.server.url}/api/admin/keys",
                headers={"X-API-Key": self.master},
                json={"type": "project", "organizationSlug": "seeds", "projectSlug": name},
            )
            assert created.status_code == 201, created.text
            self.keys[name] = created.json()["data"]["key"]
        return self.keys[name]

    def native(self, name: str = "native") -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"X-API-Key": self.key(name)}, timeout=90
        )

    def stablecog(self, name: str = "stablecog") -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.key(name)}"},
            timeout=120,
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.server.url}{path}", headers={"X-API-Key": self.master}, **kwargs
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[World]:
    data = tmp_path_factory.mktemp("seeds")
    models_file = data / "models.toml"
    models_file.write_text(MODELS_TOML.format(folder=models_dir / "tiny-sd"))
    # One torch thread: on a 2-core machine tiny-sd runs faster so, and the API keeps a core.
    srv = Server(data, models_dir, lease_seconds=5, models_file=models_file, torch_threads=1)
    srv.start()
    try:
        assert " threads=1" in srv.log()  # the setting reaches the model child
        master = httpx.post(f"{srv.url}/api/bootstrap/initial-key").json()["data"]["key"]
        app = App(srv, "seedkit", "shop")
        token = app.user("ada@example.com")["access_token"]
        world = World(srv, master, models_dir, devkit=app, devkit_token=token)
        yield world
        if world.limited is not None:
            world.limited.stop()
    finally:
        srv.stop()


# Shared steps ------------------------------------------------------------------------------------


def native_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


def create(api: httpx.Client, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    body.setdefault("prompt", "a red circle on a blue background")
    response = api.post("/api/v1/generations", json=body, headers=headers or {})
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def finished(api: httpx.Client, generation_id: str) -> dict[str, Any]:
    """Waits with `Prefer: wait`, as a client of ours would."""
    for _ in range(3):
        data = api.get(f"/api/v1/generations/{generation_id}", headers=WAIT).json()["data"]
        if data["status"] in ("success", "failed", "cancelled"):
            return dict(data)
    raise AssertionError(f"{generation_id} did not finish: {data}")


def done(api: httpx.Client, **body: Any) -> dict[str, Any]:
    result = finished(api, create(api, **body)["id"])
    assert result["status"] == "success", result
    return result


def raw_post(api: httpx.Client, body: str) -> httpx.Response:
    return api.post(
        "/api/v1/generations", content=body.encode(), headers={"Content-Type": "application/json"}
    )


def download(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, (url, response.status_code)
    return response


# Seed 002: Banatie, basic image generation --------------------------------------------------------


@row("002", "All endpoints require Project Key authentication via `X-API-Key` header.")
def keyless_requests_are_401(w: World) -> None:
    generation = create(w.native())["id"]
    with httpx.Client(base_url=w.server.url) as anonymous:
        for method, path in [
            ("POST", "/api/v1/generations"),
            ("GET", "/api/v1/generations"),
            ("GET", f"/api/v1/generations/{generation}"),
            ("DELETE", f"/api/v1/generations/{generation}"),
        ]:
            refused = anonymous.request(method, path, json={"prompt": "x"})
            native_error(refused, 401, "UNAUTHORIZED")
            wrong = anonymous.request(
                method, path, json={"prompt": "x"}, headers={"X-API-Key": "bnt_not-a-key"}
            )
            native_error(wrong, 401, "UNAUTHORIZED")


@row("002", "| `prompt` | string | Yes | - | Text description of the image to generate |")
def prompt_is_required(w: World) -> None:
    api = w.native()
    native_error(api.post("/api/v1/generations", json={}), 400, "VALIDATION_ERROR")
    native_error(api.post("/api/v1/generations", json={"prompt": 12}), 400, "VALIDATION_ERROR")
    native_error(api.post("/api/v1/generations", json={"prompt": ""}), 400, "VALIDATION_ERROR")


@row("002", '| `aspectRatio` | string | No | `"1:1"` | Image aspect ratio |')
def aspect_ratio_defaults_to_square(w: World) -> None:
    result = done(w.native(), autoEnhance=False)
    assert result["aspectRatio"] == "1:1"
    assert result["outputImage"]["width"] == result["outputImage"]["height"]


@row("002", "| `autoEnhance` | boolean | No | `true` | Enable AI prompt enhancement |")
def auto_enhance_defaults_to_true(w: World) -> None:
    data = create(w.native(), prompt="a lighthouse")
    assert data["autoEnhance"] is True
    assert data["originalPrompt"] == "a lighthouse" and data["prompt"] != "a lighthouse"


@row(
    "002",
    '| `enhancementOptions.template` | string | No | `"general"` | Enhancement template |',
)
def template_defaults_to_general(w: World) -> None:
    api = w.native()
    default = create(api, prompt="a lighthouse")
    general = create(api, prompt="a lighthouse", enhancementOptions={"template": "general"})
    assert default["enhancementOptions"] == {"template": "general"}
    assert default["prompt"] == general["prompt"]


@row("002", "| `meta` | object | No | `{}` | Custom metadata |")
def meta_defaults_to_empty_object(w: World) -> None:
    api = w.native()
    assert create(api)["meta"] == {}
    kept = create(api, meta={"campaign": "spring", "n": 3})["id"]
    assert api.get(f"/api/v1/generations/{kept}").json()["data"]["meta"] == {
        "campaign": "spring",
        "n": 3,
    }
    native_error(
        api.post("/api/v1/generations", json={"prompt": "x", "meta": [1]}), 400, "VALIDATION_ERROR"
    )


SEED_002_EXAMPLE = """{
  "prompt": "a red sports car on a mountain road",
  "aspectRatio": "16:9",
  "autoEnhance": true,
  "enhancementOptions": {
    "template": "photorealistic"
  }
}"""


@row(
    "002",
    '**Example Request:** ```json { "prompt": "a red sports car on a mountain road", '
    '"aspectRatio": "16:9", "autoEnhance": true, "enhancementOptions": { "template": '
    '"photorealistic" } } ``` **Response:** `201 Created`',
)
def example_request_byte_for_byte(w: World) -> None:
    response = raw_post(w.native(), SEED_002_EXAMPLE)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    documented = {
        "id",
        "projectId",
        "prompt",
        "originalPrompt",
        "autoEnhance",
        "aspectRatio",
        "status",
        "outputImageId",
        "processingTimeMs",
        "createdAt",
        "updatedAt",
    }
    assert documented <= set(data), documented - set(data)
    assert uuid.UUID(data["id"]) and uuid.UUID(data["projectId"])
    assert data["originalPrompt"] == "a red sports car on a mountain road"
    assert data["prompt"] != data["originalPrompt"] and "sports car" in data["prompt"]
    assert (data["autoEnhance"], data["aspectRatio"], data["status"]) == (True, "16:9", "pending")
    assert data["outputImageId"] is None and data["processingTimeMs"] is None
    assert ISO_MS.match(data["createdAt"]) and ISO_MS.match(data["updatedAt"]), data["createdAt"]


@row(
    "002",
    "| Aspect Ratio | Use Case | |--------------|----------| | `1:1` | Square images, "
    "social media posts, profile pictures | | `16:9` | Landscape, hero banners, video "
    "thumbnails | | `9:16` | Portrait, mobile screens, stories | | `3:2` | Photography "
    "standard, print | | `21:9` | Ultra-wide banners, cinematic |",
    deviation="pixel sizes per model family",
)
def the_five_aspect_ratios(w: World) -> None:
    api = w.native()
    for ratio in ("1:1", "16:9", "9:16", "3:2", "21:9"):
        image = done(api, prompt="a hill", aspectRatio=ratio, autoEnhance=False)["outputImage"]
        wide, high = (int(n) for n in ratio.split(":"))
        assert abs(image["width"] / image["height"] - wide / high) / (wide / high) < 0.1, image
    native_error(
        api.post("/api/v1/generations", json={"prompt": "x", "aspectRatio": "5:4"}),
        400,
        "VALIDATION_ERROR",
    )


@row(
    "002",
    "Your original prompt is preserved in `originalPrompt` - AI enhances it with style "
    "details, lighting, composition - The enhanced version is stored in `prompt` and used for "
    "generation",
)
def enhancement_keeps_the_original(w: World) -> None:
    data = done(w.native(), prompt="a castle on a hill")
    assert data["originalPrompt"] == "a castle on a hill"
    assert len(data["prompt"]) > len(data["originalPrompt"]) and "castle" in data["prompt"]
    assert data["enhancedBy"]


SEED_002_NO_ENHANCE = '{ "prompt": "a cat sitting on a windowsill", "autoEnhance": false }'


@row(
    "002",
    "When `autoEnhance: false`: - Both `prompt` and `originalPrompt` contain your "
    "original text - No AI enhancement is applied",
)
def no_enhancement_example_byte_for_byte(w: World) -> None:
    response = raw_post(w.native(), SEED_002_NO_ENHANCE)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["prompt"] == data["originalPrompt"] == "a cat sitting on a windowsill"
    assert data["autoEnhance"] is False


# The seed's list, written out here (not imported from the enhancer: the row checks the code).
TEMPLATES = (
    "general",
    "photorealistic",
    "illustration",
    "minimalist",
    "sticker",
    "product",
    "comic",
)


@row("002", "Use `enhancementOptions.template` to guide the enhancement style:")
def the_seven_templates(w: World) -> None:
    api = w.native()
    prompts = set()
    for template in TEMPLATES:
        data = create(api, prompt="a fox", enhancementOptions={"template": template})
        assert data["enhancementOptions"] == {"template": template}
        prompts.add(data["prompt"])
    assert len(prompts) == len(TEMPLATES)
    refused = api.post(
        "/api/v1/generations", json={"prompt": "x", "enhancementOptions": {"template": "baroque"}}
    )
    native_error(refused, 400, "VALIDATION_ERROR")


SEED_002_CAT = (
    '{ "prompt": "a cat", "autoEnhance": true, "enhancementOptions": { "template": '
    '"photorealistic" } }'
)


@row(
    "002",
    '### Example: With Enhancement ```json // Request { "prompt": "a cat", "autoEnhance": '
    'true, "enhancementOptions": { "template": "photorealistic" } }',
)
def enhancement_example_byte_for_byte(w: World) -> None:
    response = raw_post(w.native(), SEED_002_CAT)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["originalPrompt"] == "a cat" and data["autoEnhance"] is True
    assert "cat" in data["prompt"] and "photo" in data["prompt"].lower()


@row(
    "002",
    "| `pending` | Generation created, waiting to start | | `processing` | AI is "
    "generating the image | | `success` | Image generated successfully |",
)
def status_goes_pending_processing_success(w: World) -> None:
    api = w.native()
    data = create(api, steps=50, autoEnhance=False)
    assert data["status"] == "pending"
    seen = []
    with api.stream("GET", f"/api/v1/generations/{data['id']}/events") as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:])["status"])
                if seen[-1] == "success":
                    break
    assert "processing" in seen and seen[-1] == "success", seen
    assert seen == sorted(seen, key=["pending", "processing", "success"].index)


@row("002", "| `failed` | Generation failed (see `errorMessage`) |")
def failed_says_why(w: World) -> None:
    result = finished(w.native(), create(w.native(), model="sd15")["id"])
    assert result["status"] == "failed" and "sd15" in result["errorMessage"]


@row("002", 'When `status: "success"`, the `outputImageId` field contains the generated image ID.')
def output_image_id_names_the_image(w: World) -> None:
    api = w.native()
    result = done(api)
    image = api.get(f"/api/v1/images/{result['outputImageId']}")
    assert image.status_code == 200 and image.json()["data"]["id"] == result["outputImageId"]
    assert image.json()["data"]["source"] == "generated"


@row("002", "**Example:** ``` GET /api/v1/generations?status=success&limit=10 ```")
def list_example_byte_for_byte(w: World) -> None:
    api = w.native("lister")
    for _ in range(2):
        done(api)
    body = api.get("/api/v1/generations?status=success&limit=10").json()
    assert body["success"] is True and body["data"]
    assert all(item["status"] == "success" for item in body["data"])
    page = body["pagination"]
    assert (page["limit"], page["offset"]) == (10, 0)
    assert page["total"] >= 2 and page["hasMore"] is (page["total"] > 10)
    listed = {
        "id",
        "prompt",
        "originalPrompt",
        "autoEnhance",
        "aspectRatio",
        "status",
        "outputImageId",
        "processingTimeMs",
        "createdAt",
    }
    assert listed <= set(body["data"][0])


@row(
    "002",
    "| `limit` | number | `20` | Results per page (max: 100) | | `offset` | number | `0` | "
    "Pagination offset |",
)
def list_limit_and_offset(w: World) -> None:
    api = w.native("lister")
    done(api)
    page = api.get("/api/v1/generations").json()["pagination"]
    assert (page["limit"], page["offset"]) == (20, 0)
    assert api.get("/api/v1/generations?limit=100").status_code == 200
    native_error(api.get("/api/v1/generations?limit=101"), 400, "VALIDATION_ERROR")
    native_error(api.get("/api/v1/generations?limit=0"), 400, "VALIDATION_ERROR")
    native_error(api.get("/api/v1/generations?offset=-1"), 400, "VALIDATION_ERROR")
    _, second = api.get("/api/v1/generations?limit=2").json()["data"]
    assert api.get("/api/v1/generations?limit=1&offset=1").json()["data"][0]["id"] == second["id"]


@row(
    "002",
    "| `status` | string | - | Filter by status: `pending`, `processing`, `success`, `failed` |",
)
def list_status_filter(w: World) -> None:
    api = w.native()
    finished(api, create(api, model="sd15")["id"])
    for status in ("pending", "processing", "success", "failed"):
        body = api.get("/api/v1/generations", params={"status": status, "limit": 100}).json()
        assert all(item["status"] == status for item in body["data"]), status
    assert api.get("/api/v1/generations?status=failed").json()["pagination"]["total"] >= 1
    native_error(api.get("/api/v1/generations?status=done"), 400, "VALIDATION_ERROR")


@row(
    "002",
    "| `includeDeleted` | boolean | `false` | Include soft-deleted records |",
    deviation="generations are hard-deleted",
)
def include_deleted_is_accepted(w: World) -> None:
    api = w.native("lister")
    gone = done(api)["id"]
    assert api.delete(f"/api/v1/generations/{gone}").status_code == 200
    for value in ("true", "false"):
        listed = api.get("/api/v1/generations", params={"includeDeleted": value, "limit": 100})
        assert listed.status_code == 200
        assert gone not in {item["id"] for item in listed.json()["data"]}
    native_error(api.get("/api/v1/generations?includeDeleted=maybe"), 400, "VALIDATION_ERROR")


@row(
    "002",
    "## Get Generation ``` GET /api/v1/generations/:id ``` Get a single generation with "
    "full details.",
)
def get_has_full_details(w: World) -> None:
    api = w.native()
    data = done(api, meta={"k": "v"})
    full = {
        "id",
        "projectId",
        "prompt",
        "originalPrompt",
        "autoEnhance",
        "aspectRatio",
        "status",
        "outputImageId",
        "outputImage",
        "processingTimeMs",
        "retryCount",
        "errorMessage",
        "meta",
        "createdAt",
        "updatedAt",
    }
    assert full <= set(data), full - set(data)
    assert isinstance(data["processingTimeMs"], int) and data["retryCount"] == 0
    assert data["errorMessage"] is None and data["meta"] == {"k": "v"}
    assert data["updatedAt"] >= data["createdAt"]


@row(
    "002",
    "| `id` | string | Image UUID | | `storageUrl` | string | Direct URL to image file | | "
    "`mimeType` | string | Image MIME type | | `width` | number | Image width in pixels | | "
    "`height` | number | Image height in pixels | | `fileSize` | number | File size in bytes |",
)
def output_image_fields_describe_the_file(w: World) -> None:
    image = done(w.native())["outputImage"]
    assert uuid.UUID(image["id"])
    file = download(image["storageUrl"])
    assert file.headers["content-type"] == image["mimeType"] == "image/png"
    assert len(file.content) == image["fileSize"]
    assert pixels(file.content).size == (image["width"], image["height"])


@row("002", "| 404 | `GENERATION_NOT_FOUND` | Generation does not exist |")
def unknown_and_foreign_generations_are_404(w: World) -> None:
    mine = create(w.native())["id"]
    with w.native("stranger") as other:
        native_error(other.get(f"/api/v1/generations/{mine}"), 404, "GENERATION_NOT_FOUND")
        native_error(other.delete(f"/api/v1/generations/{mine}"), 404, "GENERATION_NOT_FOUND")
        native_error(other.get(f"/api/v1/generations/{uuid.uuid4()}"), 404, "GENERATION_NOT_FOUND")
        native_error(other.get("/api/v1/generations/not-a-uuid"), 404, "GENERATION_NOT_FOUND")


@row(
    "002",
    '**Response:** `200 OK` ```json { "success": true, "message": "Generation deleted" } '
    "``` **Behavior:** - Generation record is hard deleted - Output image is hard deleted",
)
def delete_removes_record_and_image(w: World) -> None:
    api = w.native()
    data = done(api)
    response = api.delete(f"/api/v1/generations/{data['id']}")
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["message"] == "Generation deleted"
    native_error(api.get(f"/api/v1/generations/{data['id']}"), 404, "GENERATION_NOT_FOUND")
    assert api.get(f"/api/v1/images/{data['outputImageId']}").status_code == 404
    assert httpx.get(data["outputImage"]["storageUrl"]).status_code == 404


@row("002", "(unless it has a project alias)")
def delete_keeps_an_aliased_image(w: World) -> None:
    api = w.native()
    data = done(api, alias="@keeper")
    assert api.delete(f"/api/v1/generations/{data['id']}").status_code == 200
    kept = api.get("/api/v1/images/@keeper")
    assert kept.status_code == 200 and kept.json()["data"]["id"] == data["outputImageId"]
    assert download(data["outputImage"]["storageUrl"]).content


@row("002", "| 400 | `VALIDATION_ERROR` | Invalid parameters |")
def invalid_parameters_are_validation_errors(w: World) -> None:
    api = w.native()
    for body in (
        {"prompt": "x", "aspectRatio": 5},
        {"prompt": "x", "autoEnhance": "yes"},
        {"prompt": "x", "enhancementOptions": "general"},
    ):
        native_error(api.post("/api/v1/generations", json=body), 400, "VALIDATION_ERROR")
    native_error(raw_post(api, '{"prompt": '), 400, "VALIDATION_ERROR")


@row("002", "| 500 | `GENERATION_FAILED` | AI generation failed |")
def a_failed_generation_waited_for_is_500(w: World) -> None:
    response = w.native().post(
        "/api/v1/generations", json={"prompt": "x", "model": "sd15"}, headers=WAIT
    )
    error = native_error(response, 500, "GENERATION_FAILED")
    assert "sd15" in error["message"]


@row(
    "002",
    "**100 requests per hour** per API key - Rate limit headers included in response: - "
    "`X-RateLimit-Limit`: Maximum requests - `X-RateLimit-Remaining`: Remaining requests - "
    "`X-RateLimit-Reset`: Seconds until reset",
    deviation="rate limit off by default",
)
def one_hundred_an_hour_per_key(w: World) -> None:
    limited = w.api_only()
    budget, neighbour = (create_key(limited.env, "seeds", name) for name in ("a", "b"))
    with limited.client(budget) as api:
        seen = [api.get("/api/v1/generations?limit=1") for _ in range(100)]
        assert all(r.status_code == 200 for r in seen)
        remaining = [int(r.headers["X-RateLimit-Remaining"]) for r in seen]
        assert remaining == list(range(99, -1, -1))
        assert {r.headers["X-RateLimit-Limit"] for r in seen} == {"100"}
        assert all(0 < int(r.headers["X-RateLimit-Reset"]) <= 3600 for r in seen)
        refused = api.get("/api/v1/generations?limit=1")
        native_error(refused, 429, "RATE_LIMIT_EXCEEDED")
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
        assert 0 < int(refused.headers["X-RateLimit-Reset"]) <= 3600
    with limited.client(neighbour) as other:  # per key: another key is unaffected
        assert other.get("/api/v1/generations?limit=1").status_code == 200


# Seed 001: Banatie, generations (advanced) --------------------------------------------------------


@row("001", "aspectRatio, string, No, '1:1, 16:9, 9:16, 3:2, 21:9 (default: 1:1)'")
def aspect_ratio_list_and_default_agree(w: World) -> None:
    aspect_ratio_defaults_to_square(w)
    api = w.native()
    for ratio in ("1:1", "16:9", "9:16", "3:2", "21:9"):
        assert create(api, aspectRatio=ratio)["aspectRatio"] == ratio


@row("001", "referenceImages, string[], No, 'Array of image IDs or @aliases to use as references'")
def reference_images_by_id_and_alias(w: World) -> None:
    api = w.native()
    first = upload(api, alias="@style-ref")
    second = upload(api)
    data = create(api, referenceImages=["@style-ref", second["id"]])
    assert [r["id"] for r in data["referenceImages"]] == [first["id"], second["id"]]
    missing = api.post("/api/v1/generations", json={"prompt": "x", "referenceImages": ["@nope"]})
    native_error(missing, 404, "IMAGE_NOT_FOUND")


def upload(api: httpx.Client, **fields: str) -> dict[str, Any]:
    response = api.post(
        "/api/v1/images/upload", files={"file": ("r.png", png(), "image/png")}, data=fields
    )
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


@row("001", "flowId, string, No, 'Associate with existing flow'")
def flow_id_joins_a_flow(w: World) -> None:
    api = w.native()
    flow = create(api)["flowId"]
    joined = create(api, flowId=flow)
    assert joined["flowId"] == flow
    assert api.get(f"/api/v1/flows/{flow}").json()["data"]["generationCount"] == 2


@row("001", "alias, string, No, 'Project-scoped alias (@custom-name)'")
def alias_names_the_output(w: World) -> None:
    api = w.native()
    data = done(api, alias="@custom-name")
    image = api.get("/api/v1/images/@custom-name").json()["data"]
    assert image["id"] == data["outputImageId"] and image["alias"] == "@custom-name"


@row("001", "autoEnhance, boolean, No, 'Enable prompt enhancement (default: true)'")
def auto_enhance_default_agrees(w: World) -> None:
    auto_enhance_defaults_to_true(w)


@row("001", "meta, object, No, 'Custom metadata'")
def meta_is_kept(w: World) -> None:
    meta_defaults_to_empty_object(w)


@row("001", "flowId, 'string', 'Filter by flow ID'")
def list_filters_by_flow(w: World) -> None:
    api = w.native()
    flow = create(api)["flowId"]
    create(api, flowId=flow)
    create(api)
    listed = api.get("/api/v1/generations", params={"flowId": flow}).json()
    assert listed["pagination"]["total"] == 2
    assert {item["flowId"] for item in listed["data"]} == {flow}


@row(
    "001",
    "limit, 'number', 'Results per page (default: 20, max: 100)'], [offset, 'number', "
    "'Number of results to skip']",
)
def list_paging_agrees(w: World) -> None:
    list_limit_and_offset(w)


@row(
    "001",
    "Update generation parameters. Changing prompt or aspectRatio triggers automatic regeneration.",
    accepts="PUT (the docs) and PATCH (the brief)",
)
def update_prompt_regenerates_in_place(w: World) -> None:
    api = w.native()
    before = done(api, prompt="a blue square", autoEnhance=False, seed=1)
    old = download(before["outputImage"]["storageUrl"]).content
    for method, prompt in (("PUT", "a green square"), ("PATCH", "a pink square")):
        updated = api.request(
            method, f"/api/v1/generations/{before['id']}", json={"prompt": prompt}
        )
        assert updated.status_code == 200, updated.text
        assert updated.json()["data"]["status"] in ("pending", "processing")
        after = finished(api, before["id"])
        assert after["status"] == "success" and after["prompt"] == prompt
        assert after["outputImageId"] == before["outputImageId"]
        assert after["outputImage"]["storageUrl"] == before["outputImage"]["storageUrl"]
    assert download(before["outputImage"]["storageUrl"]).content != old


@row("001", "The image ID and URL remain the same — only the content changes.")
def update_aspect_ratio_keeps_id_and_url(w: World) -> None:
    api = w.native()
    before = done(api, autoEnhance=False)
    updated = api.put(f"/api/v1/generations/{before['id']}", json={"aspectRatio": "16:9"})
    assert updated.status_code == 200
    after = finished(api, before["id"])
    assert after["outputImageId"] == before["outputImageId"]
    assert after["outputImage"]["storageUrl"] == before["outputImage"]["storageUrl"]
    size = pixels(download(after["outputImage"]["storageUrl"]).content).size
    assert size[0] > size[1] and after["aspectRatio"] == "16:9"


@row(
    "001",
    "flowId, 'string | null', 'Change flow association'], [meta, 'object', "
    "'Update custom metadata']",
)
def update_flow_and_meta_touch_only_the_record(w: World) -> None:
    api = w.native()
    before = done(api)
    other_flow = create(api)["flowId"]
    moved = api.put(
        f"/api/v1/generations/{before['id']}", json={"flowId": other_flow, "meta": {"v": 2}}
    ).json()["data"]
    assert moved["flowId"] == other_flow and moved["meta"] == {"v": 2}
    assert moved["status"] == "success" and moved["updatedAt"] >= before["updatedAt"]
    detached = api.put(f"/api/v1/generations/{before['id']}", json={"flowId": None})
    assert detached.json()["data"]["flowId"] is None


@row(
    "001",
    "Create a new image using the exact same parameters. Useful for getting a different "
    "result or recovering from failures.",
)
def regenerate_same_parameters(w: World) -> None:
    api = w.native()
    before = done(api, autoEnhance=False, aspectRatio="3:2")
    old = download(before["outputImage"]["storageUrl"]).content
    again = api.post(f"/api/v1/generations/{before['id']}/regenerate")
    assert again.status_code in (200, 201, 202), again.text
    after = finished(api, before["id"])
    assert (after["prompt"], after["aspectRatio"]) == (before["prompt"], "3:2")
    assert after["outputImageId"] == before["outputImageId"]
    assert download(after["outputImage"]["storageUrl"]).content != old  # a new seed
    failed = finished(api, create(api, model="sd15")["id"])
    assert failed["status"] == "failed"
    retried = api.post(f"/api/v1/generations/{failed['id']}/regenerate")
    assert retried.status_code in (200, 201, 202)
    assert retried.json()["data"]["status"] in ("pending", "processing")


@row("001", "Delete a generation and its output image. Images with project aliases are preserved.")
def delete_agrees(w: World) -> None:
    delete_removes_record_and_image(w)
    delete_keeps_an_aliased_image_again(w)


def delete_keeps_an_aliased_image_again(w: World) -> None:
    api = w.native()
    data = done(api, alias="@keeper-two")
    assert api.delete(f"/api/v1/generations/{data['id']}").status_code == 200
    assert api.get("/api/v1/images/@keeper-two").json()["data"]["id"] == data["outputImageId"]


@row("001", "Retrieve a single generation by ID.")
def get_by_id(w: World) -> None:
    api = w.native()
    data = create(api)
    got = api.get(f"/api/v1/generations/{data['id']}").json()["data"]
    assert got["id"] == data["id"] and got["projectId"] == data["projectId"]


# Seed 003: Stablecog, create generation -----------------------------------------------------------


def sc_create(sc: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a lighthouse at dusk")
    return sc.post("/v1/image/generation/create", json=body)


def sc_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert "success" not in body and isinstance(body["error"], str), body
    if code is not None:
        assert body["error"] == code, body
    return f"{body['error']} {body.get('description', '')}"


@row("003", "You just send a prompt and the system will use the defaults for the rest.")
def simplest_request(w: World) -> None:
    with w.stablecog() as sc:
        response = sc.post(
            "/v1/image/generation/create",
            content=b'{"prompt": "a lighthouse at dusk"}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) >= {"outputs", "remaining_credits", "settings"}
        assert body["outputs"] and download(body["outputs"][0]["url"]).content


@row(
    "003",
    "Send your API key as the value of this header in the following form: "
    "Authorization: Bearer <YOUR_STABLECOG_API_KEY>.",
)
def bearer_key_required(w: World) -> None:
    with httpx.Client(base_url=w.server.url, timeout=30) as anonymous:
        sc_error(anonymous.post("/v1/image/generation/create", json={"prompt": "x"}), 401)
        wrong = anonymous.post(
            "/v1/image/generation/create",
            json={"prompt": "x"},
            headers={"Authorization": "Bearer sc-nope"},
        )
        sc_error(wrong, 401)


@row("003", "prompt required string Tell the model what image to generate.")
def sc_prompt_required(w: World) -> None:
    with w.stablecog() as sc:
        sc_error(sc.post("/v1/image/generation/create", json={}), 400)
        sc_error(
            sc.post(
                "/v1/image/generation/create",
                content=b"{",
                headers={"Content-Type": "application/json"},
            ),
            400,
            "json_parse_error",
        )


@row(
    "003",
    "model_id (enum) TGenerationModelID The model that will be used for generating the image.",
)
def model_id_is_an_enum(w: World) -> None:
    with w.stablecog() as sc:
        models = sc.get("/v1/image/generation/models").json()
        ids = {m["id"] for m in models["models"]}
        assert {"sc-shape", "tiny-sd", "demo"} <= ids
        sc_error(sc_create(sc, model_id="not-a-model"), 400, "invalid_model_id")
        chosen = sc_create(sc, model_id="sc-shape", width=256, height=256, inference_steps=10)
        assert chosen.status_code == 200 and chosen.json()["settings"]["model_id"] == "sc-shape"


@row(
    "003",
    "width min256 max1024 | int The width of the image. The value should be a multiple of 8",
    deviation="size bounds per model family",
)
def width_bounds(w: World) -> None:
    with w.stablecog() as sc:
        for width in (248, 1032, 260):
            sc_error(sc_create(sc, model_id="sc-shape", width=width, height=256), 400)
        ok = sc_create(sc, model_id="sc-shape", width=256, height=264, inference_steps=10)
        assert ok.status_code == 200, ok.text
        image = pixels(download(ok.json()["outputs"][0]["url"]).content)
        assert image.size == (256, 264)


@row(
    "003",
    "height min256 max1024 | int The height of the image. The value should be a multiple of 8",
    deviation="size bounds per model family",
)
def height_bounds(w: World) -> None:
    with w.stablecog() as sc:
        for height in (248, 1032, 260):
            sc_error(sc_create(sc, model_id="sc-shape", width=256, height=height), 400)


@row(
    "003",
    "width * height * inference steps <= 1024 * 1024 * 30.",
    accepts="the page also says `inference steps * width * height < 50 * 640 * 640`; Stablecog's "
    "code enforces `<= 1024 * 1024 * 30`, so that is the rule",
)
def pixel_step_budget(w: World) -> None:
    # On the API-only server: the request at the budget is queued (no worker runs it), then
    # cancelled through the native API, so the suite never pays for a 1024 x 1024 x 30 run.
    limited = w.api_only()
    key = create_key(limited.env, "seeds", "budget-sc")
    with httpx.Client(
        base_url=limited.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as sc:
        over = sc_create(sc, model_id="sc-shape", width=1024, height=1024, inference_steps=31)
        assert "1024" in sc_error(over, 400)
        # Exactly at the budget (and above 50 * 640 * 640): accepted.
        answer: list[httpx.Response] = []
        request = threading.Thread(
            target=lambda: answer.append(
                sc_create(sc, model_id="sc-shape", width=1024, height=1024, inference_steps=30)
            )
        )
        request.start()
        with limited.client(key) as api:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                listed = api.get("/api/v1/generations?limit=1").json()["data"]
                if listed and listed[0]["width"] == 1024:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError("the 1024 x 1024 x 30 request was not queued")
            assert api.post(f"/api/v1/generations/{listed[0]['id']}/cancel").status_code == 200
        request.join(60)
        assert answer and answer[0].status_code != 400, answer


@row(
    "003",
    "negative_prompt string Tell the model what to avoid or exclude when generating the image.",
)
def negative_prompt_is_used(w: World) -> None:
    with w.stablecog() as sc:
        plain = sc_create(sc, seed=5).json()
        negative = sc_create(sc, seed=5, negative_prompt="blurry").json()
        assert negative["settings"]["negative_prompt"] == "blurry"
        a = download(plain["outputs"][0]["url"]).content
        b = download(negative["outputs"][0]["url"]).content
        assert a != b


@row("003", "num_outputs min1 max4 | int The number of images to generate.")
def num_outputs_bounds(w: World) -> None:
    with w.stablecog() as sc:
        for n in (0, 5):
            sc_error(sc_create(sc, num_outputs=n), 400)
        four = sc_create(sc, num_outputs=4).json()
        assert len(four["outputs"]) == 4 and len({o["url"] for o in four["outputs"]}) == 4


@row("003", "guidance_scale min1 max20 | float")
def guidance_bounds(w: World) -> None:
    with w.stablecog() as sc:
        for scale in (0.9, 20.5):
            sc_error(sc_create(sc, model_id="sc-shape", guidance_scale=scale), 400)
        ok = sc_create(sc, model_id="sc-shape", guidance_scale=20, inference_steps=10)
        assert ok.status_code == 200 and ok.json()["settings"]["guidance_scale"] == 20


@row("003", "inference_steps min10 max50 | int", deviation="step bounds per model family")
def steps_bounds(w: World) -> None:
    with w.stablecog() as sc:
        for steps in (9, 51):
            sc_error(
                sc_create(sc, model_id="sc-shape", width=256, height=256, inference_steps=steps),
                400,
            )
        ok = sc_create(sc, model_id="sc-shape", inference_steps=10)
        assert ok.status_code == 200 and ok.json()["settings"]["inference_steps"] == 10
        tiny = sc_create(sc, model_id="tiny-sd", inference_steps=2)  # the deviation
        assert tiny.status_code == 200


@row(
    "003",
    "scheduler_id (enum) TGenerationSchedulerID Schedulers define the entire denoising "
    "process during diffusion.",
)
def scheduler_is_an_enum(w: World) -> None:
    with w.stablecog() as sc:
        models = sc.get("/v1/image/generation/models").json()["models"]
        schedulers = next(m for m in models if m["id"] == "tiny-sd")["available_schedulers"]
        names = [s["name"] if isinstance(s, dict) else s for s in schedulers]
        sc_error(sc_create(sc, scheduler_id="NOT_A_SCHEDULER"), 400, "invalid_scheduler_id")
        chosen = schedulers[0]["id"] if isinstance(schedulers[0], dict) else schedulers[0]
        ok = sc_create(sc, scheduler_id=chosen)
        assert ok.status_code == 200, (names, ok.text)


@row(
    "003",
    "seed int To get repeatable results. Same seed combined with same settings will "
    "generate the same image.",
)
def same_seed_same_image(w: World) -> None:
    with w.stablecog() as sc:
        a, b = (sc_create(sc, seed=1234).json() for _ in range(2))
        assert a["settings"]["seed"] == b["settings"]["seed"] == 1234
        first = download(a["outputs"][0]["url"]).content
        assert first == download(b["outputs"][0]["url"]).content
        other = sc_create(sc, seed=1235).json()
        assert download(other["outputs"][0]["url"]).content != first


@row("003", "init_image_url string An image URL to base the generation on.")
def init_image_url_is_img2img(w: World) -> None:
    # On `demo` (a trained VAE: a random-weight one does not give colours back): at a low
    # prompt_strength the picture keeps its init image's colour.
    with w.stablecog() as sc:
        means = []
        for color in ((230, 20, 20), (20, 20, 230)):
            picture = encoded("PNG", (64, 64), color)
            uploaded = sc.post("/v1/image/upload", files={"file": ("i.png", picture, "image/png")})
            assert uploaded.status_code == 200, uploaded.text
            reference = uploaded.json()["object"]
            assert reference.startswith("s3://")
            body = sc_create(
                sc,
                model_id="demo",
                init_image_url=reference,
                prompt_strength=0.1,
                inference_steps=10,
            )
            assert body.status_code == 200, body.text
            out = pixels(download(body.json()["outputs"][0]["url"]).content)
            means.append(np.asarray(out, dtype=float).mean(axis=(0, 1)))
        (red_r, _, red_b), (blue_r, _, blue_b) = means
        assert red_r > red_b + 60 and blue_b > blue_r + 60, means


@row("003", "prompt_strength min0 max1 | float")
def prompt_strength_bounds(w: World) -> None:
    with w.stablecog() as sc:
        red = encoded("PNG", (64, 64), (230, 20, 20))
        reference = sc.post(
            "/v1/image/upload", files={"file": ("red.png", red, "image/png")}
        ).json()["object"]
        for strength in (-0.1, 1.5):
            sc_error(sc_create(sc, init_image_url=reference, prompt_strength=strength), 400)


@row("003", "outputs array of TOutput Generated images.")
def outputs_are_images(w: World) -> None:
    with w.stablecog() as sc:
        body = sc_create(sc, num_outputs=2).json()
        for output in body["outputs"]:
            assert output["id"] and pixels(download(output["url"]).content).size == (
                body["settings"]["width"],
                body["settings"]["height"],
            )


@row(
    "003",
    "remaining_credits float Your remaining credits after this request.",
    deviation="remaining_credits is null while unlimited",
)
def remaining_credits_after_the_request(w: World) -> None:
    with w.stablecog("metered") as sc:
        set_credits = w.admin(
            "PUT", "/api/admin/projects/seeds/metered/credits", json={"balance": 10}
        )
        assert set_credits.status_code == 200, set_credits.text
        body = sc_create(sc, num_outputs=2).json()
        assert body["remaining_credits"] == 8
        assert isinstance(body["remaining_credits"], int | float)
    with w.stablecog("unmetered") as sc:
        assert sc_create(sc).json()["remaining_credits"] is None  # the deviation


@row(
    "003",
    "settings (object) TGenerationSettings Settings for the generation. Useful if you are "
    "using the defaults and want to know what they are.",
)
def settings_report_the_defaults(w: World) -> None:
    with w.stablecog() as sc:
        settings = sc_create(sc).json()["settings"]
        defaults = sc.get("/v1/image/generation/defaults").json()
        for name in (
            "model_id",
            "scheduler_id",
            "width",
            "height",
            "inference_steps",
            "guidance_scale",
        ):
            assert settings[name] == defaults[name], name
        assert isinstance(settings["seed"], int) and settings["num_outputs"] == 1


# Seed 000: devkit4ai, Create Generation V2 --------------------------------------------------------

EXAMPLE_INSTRUCTIONS = '{"prompt": "Generate a futuristic cityscape with neon lights"}'


def jpeg_bytes(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    return encoded("JPEG", (64, 64), color)


def dk_generate(
    w: World,
    files: list[tuple[str, bytes, str]] | None = None,
    instructions: str = EXAMPLE_INSTRUCTIONS,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    app = w.devkit
    assert app is not None
    files = [("a.jpg", jpeg_bytes(), "image/jpeg")] if files is None else files
    return httpx.post(
        f"{w.server.url}/api/v1/generation/generate-v2",
        headers=app.headers(token if token is not None else w.devkit_token, **(headers or {})),
        files=[("files", f) for f in files],
        data={"instructions": instructions},
        timeout=60,
    )


def dk_status(w: World, generation_id: str) -> dict[str, Any]:
    app = w.devkit
    assert app is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        data = app.get(
            f"/api/v1/generation/generations-v2/{generation_id}/status", w.devkit_token
        ).json()
        if data["status"] in ("completed", "failed"):
            return dict(data)
        time.sleep(0.5)
    raise AssertionError(f"{generation_id} did not finish")


def detail(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"detail", "retry_after"} and body["detail"], body
    return body["detail"]


@row("000", "Requires valid JWT token withend_user role and project-scoped headers.")
def end_user_jwt_required(w: World) -> None:
    assert detail(dk_generate(w, token=""), 401) == "Could not validate credentials"
    assert detail(dk_generate(w, token="not.a.jwt"), 401) == "Could not validate credentials"


@row(
    "000",
    "Must be set to end_userDeveloper key associated with the project Project UUID for "
    "project-scoped access Project API key for authentication",
)
def project_headers_must_agree(w: World) -> None:
    detail(dk_generate(w, headers={"X-User-Role": "developer"}), 403)
    detail(dk_generate(w, headers={"X-Developer-Key": "ak_" + "x" * 32}), 403)
    detail(dk_generate(w, headers={"X-Project-ID": str(uuid.uuid4())}), 403)
    wrong_key = dk_generate(w, headers={"X-API-Key": "ak_" + "y" * 32})
    assert wrong_key.status_code in (401, 403), wrong_key.text


@row("000", "multipart/form-data for file uploadsRequest Body (Multipart Form Data)")
def body_must_be_multipart(w: World) -> None:
    app = w.devkit
    assert app is not None
    as_json = app.post(
        "/api/v1/generation/generate-v2",
        w.devkit_token,
        json={"instructions": EXAMPLE_INSTRUCTIONS},
    )
    assert "multipart" in str(detail(as_json, 422))


@row("000", "Array of 1-5 example images to guide generation.")
def one_to_five_images(w: World) -> None:
    detail(dk_generate(w, files=[]), 422)
    six = [(f"{i}.jpg", jpeg_bytes(), "image/jpeg") for i in range(6)]
    detail(dk_generate(w, files=six), 422)
    five = dk_generate(w, files=six[:5])
    assert five.status_code == 200, five.text
    assert len(dk_status(w, five.json()["id"])["example_images"]) == 5


@row("000", "Supported formats: JPEG, PNG, WebP.")
def jpeg_png_webp(w: World) -> None:
    files = [
        ("a.jpg", jpeg_bytes(), "image/jpeg"),
        ("b.png", png(), "image/png"),
        ("c.webp", encoded("WEBP"), "image/webp"),
    ]
    accepted = dk_generate(w, files=files)
    assert accepted.status_code == 200, accepted.text


@row("000", "Maximum 10MB per image.")
def ten_megabytes_per_image(w: World) -> None:
    big = jpeg_bytes() + b"\0" * (10 * 1024 * 1024)
    detail(dk_generate(w, files=[("big.jpg", big, "image/jpeg")]), 413)


@row(
    "000",
    "JSON-encoded string containing generation instructions. Must be between 1-1000 "
    "characters when serialized.",
)
def instructions_length(w: World) -> None:
    detail(dk_generate(w, instructions=""), 422)
    detail(dk_generate(w, instructions="   "), 422)  # nothing to draw
    too_long = json.dumps({"prompt": "x" * 990})
    assert len(too_long) > 1000
    detail(dk_generate(w, instructions=too_long), 422)
    at_limit = json.dumps({"prompt": "x" * (1000 - len(json.dumps({"prompt": ""})))})
    assert len(at_limit) == 1000
    assert dk_generate(w, instructions=at_limit).status_code == 200


@row(
    "000",
    'Example: {"prompt": "Generate a futuristic cityscape with neon lights"}Response '
    "Unique UUID identifier for the generation request Initial status: always pending for new "
    "requestsConfirmation message: “Generation request submitted successfully”",
)
def example_instructions_byte_for_byte(w: World) -> None:
    response = dk_generate(w)
    assert response.status_code == 200, response.text
    body = response.json()
    assert uuid.UUID(body["id"]) and body["status"] == "pending"
    assert body["message"] == "Generation request submitted successfully"
    assert dk_status(w, body["id"])["instructions"] == EXAMPLE_INSTRUCTIONS


@row(
    "000",
    "- pending - Request queued for processing - processing - AI model actively generating "
    "image - completed - Generation successful, image available - failed - Generation failed "
    "due to error",
)
def status_lifecycle(w: World) -> None:
    app = w.devkit
    assert app is not None
    created = dk_generate(w, instructions=json.dumps({"prompt": "a tower", "steps": 50}))
    gid = created.json()["id"]
    seen = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = app.get(f"/api/v1/generation/generations-v2/{gid}/status", w.devkit_token).json()[
            "status"
        ]
        seen.add(status)
        if status in ("completed", "failed"):
            break
        time.sleep(0.05)
    assert status == "completed" and seen <= {"pending", "processing", "completed"}, seen
    result = dk_status(w, gid)
    assert download(result["generated_image_url"]).content.startswith(b"\x89PNG")
    failed = dk_generate(w, instructions=json.dumps({"prompt": "a tower", "model": "sd15"}))
    broken = dk_status(w, failed.json()["id"])
    assert broken["status"] == "failed" and broken["error"]


@row("000", "Unsupported: GIF, TIFF, BMP, SVG")
def gif_tiff_bmp_svg_refused(w: World) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'
    for name, data, mime in [
        ("a.gif", encoded("GIF"), "image/gif"),
        ("a.tiff", encoded("TIFF"), "image/tiff"),
        ("a.bmp", encoded("BMP"), "image/bmp"),
        ("a.svg", svg, "image/svg+xml"),
        ("lying.jpg", encoded("GIF"), "image/jpeg"),
    ]:
        detail(dk_generate(w, files=[(name, data, mime)]), 422)


@row("000", "Total request size: 50MB (5 images × 10MB each)")  # noqa: RUF001
def fifty_megabytes_in_all(w: World) -> None:
    # Five images just under 10 MB each (49.9 MB in all) are accepted; the body cap is 51 MiB.
    near = jpeg_bytes() + b"\0" * (10 * 1000 * 1000 - 2000)
    files = [(f"{i}.jpg", near, "image/jpeg") for i in range(5)]
    accepted = dk_generate(w, files=files)
    assert accepted.status_code == 200, accepted.text
    over = [(f"{i}.jpg", near, "image/jpeg") for i in range(6)]
    assert dk_generate(w, files=over).status_code in (413, 422)


@row(
    "000",
    "Must be valid JSON",
    accepts="JSON with a `prompt` (the docs) and plain text (the "
    "starter kit sends plain text up to 1000 characters); text that starts with `{` must be JSON",
)
def instructions_must_be_json(w: World) -> None:
    detail(dk_generate(w, instructions='{"prompt": '), 422)
    plain = dk_generate(w, instructions="a watercolor fox")
    assert plain.status_code == 200, plain.text


@row("000", "Must contain at least a promptkey")
def instructions_need_a_prompt(w: World) -> None:
    detail(dk_generate(w, instructions='{"style": "noir"}'), 422)
    detail(dk_generate(w, instructions='{"prompt": ""}'), 422)
    detail(dk_generate(w, instructions='["prompt"]'), 422)


@row("000", "Other keys are optional and passed to AI model")
def other_keys_pass_through(w: World) -> None:
    text = json.dumps({"prompt": "a fox", "style": "noir", "negative_prompt": "blur", "seed": 7})
    created = dk_generate(w, instructions=text)
    assert created.status_code == 200
    result = dk_status(w, created.json()["id"])
    assert result["status"] == "completed" and json.loads(result["instructions"])["style"] == "noir"
    native = w.devkit
    assert native is not None
    with httpx.Client(base_url=w.server.url, headers={"X-API-Key": native.key}) as api:
        record = api.get(f"/api/v1/generations/{created.json()['id']}").json()["data"]
        assert record["seed"] == 7 and record["negativePrompt"] == "blur"


@row(
    "000",
    "Missing Example Images (422) Too Many Images (422) File Too Large (413) Invalid File "
    "Format (422) Invalid Instructions (422) Instructions Too Long (422) Unauthorized (401) "
    "Insufficient Permissions (403)",
)
def documented_error_statuses(w: World) -> None:
    statuses = [
        dk_generate(w, files=[]).status_code,
        dk_generate(w, files=[("a.jpg", jpeg_bytes(), "image/jpeg")] * 6).status_code,
        dk_generate(
            w, files=[("a.jpg", jpeg_bytes() + b"\0" * 10_500_000, "image/jpeg")]
        ).status_code,
        dk_generate(w, files=[("a.gif", encoded("GIF"), "image/gif")]).status_code,
        dk_generate(w, instructions="{nope").status_code,
        dk_generate(w, instructions="x" * 1001).status_code,
        dk_generate(w, token="").status_code,
        dk_generate(w, headers={"X-User-Role": "platform_operator"}).status_code,
    ]
    assert statuses == [422, 422, 413, 422, 422, 422, 401, 403]


@row("000", "Rate Limit Exceeded (429)")
def rate_limit_exceeded_is_429(w: World) -> None:
    app = App(w.server, "seedkit", "tiny-tier")
    token = app.user("bo@example.com")["access_token"]
    assert (
        w.admin(
            "PUT",
            "/api/admin/projects/seedkit/tiny-tier/plan",
            json={"plan": "free", "monthlyQuota": 1},
        ).status_code
        == 200
    )
    first = app.generate(token, [("a.jpg", jpeg_bytes(), "image/jpeg")], EXAMPLE_INSTRUCTIONS)
    assert first.status_code == 200, first.text
    refused = app.generate(token, [("a.jpg", jpeg_bytes(), "image/jpeg")], EXAMPLE_INSTRUCTIONS)
    assert refused.status_code == 429 and refused.json()["retry_after"] > 0
    assert int(refused.headers["Retry-After"]) > 0 and refused.json()["detail"]


@row(
    "000",
    "| Free Starter | 100 | 1 | | Cloud Starter | 1,000 | 3 | | Cloud Premium | Unlimited | 10 |",
)
def the_three_tiers(w: World) -> None:
    app = App(w.server, "seedkit", "tiers")
    tiers = {"free": (100, 1), "starter": (1000, 3), "premium": (None, 10)}
    path = "/api/admin/projects/seedkit/tiers/plan"
    for plan, (monthly, concurrent) in tiers.items():
        data = w.admin("PUT", path, json={"plan": plan}).json()["data"]
        assert (data["monthlyQuota"], data["concurrentLimit"]) == (monthly, concurrent), data
    # The free tier's one-at-a-time, for real: while the worker is busy with another project's
    # long job, the first request waits in the queue and a second one is refused.
    token = app.user("cy@example.com")["access_token"]
    w.admin("PUT", path, json={"plan": "free"})
    with w.native("blocker") as api:
        blocker = create(api, model="sc-shape", steps=50, autoEnhance=False)["id"]
        files = [("a.jpg", jpeg_bytes(), "image/jpeg")]
        try:
            first = app.generate(token, files, EXAMPLE_INSTRUCTIONS)
            assert first.status_code == 200, first.text
            second = app.generate(token, files, EXAMPLE_INSTRUCTIONS)
            assert second.status_code == 429, second.text
            assert "at once" in second.json()["detail"]
        finally:
            api.post(f"/api/v1/generations/{blocker}/cancel")


@row(
    "000",
    "Bearer authentication header of the form Bearer <token>, where <token> is your auth token.",
)
def bearer_form(w: World) -> None:
    app = w.devkit
    assert app is not None
    path = "/api/v1/generation/generations-v2"
    assert app.get(path, w.devkit_token).status_code == 200
    lower = app.get(path, headers={"Authorization": f"bearer {w.devkit_token}"})
    assert lower.status_code == 200
    bare = app.get(path, headers={"Authorization": w.devkit_token})
    assert detail(bare, 401) == "Could not validate credentials"


# The table's tests (after every row is registered) ------------------------------------------


@pytest.mark.parametrize("entry", ROWS, ids=[r.id for r in ROWS])
def test_seed_statement(world: World, entry: Row) -> None:
    entry.check(world)


def normalized(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.skipif(not SEEDS.is_dir(), reason=f"seed pages not at {SEEDS}")
def test_every_row_quotes_its_seed_page() -> None:
    pages = {seed: normalized((SEEDS / name).read_text()) for seed, name in SEED_FILES.items()}
    missing = [r.id for r in ROWS if normalized(r.says) not in pages[r.seed]]
    assert not missing, f"rows whose `says` is not a sentence of their seed page: {missing}"


def test_every_deviation_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Deviations from the seed pages", 1)[1].split("\n## ", 1)[0]
    deviations = [r.id for r in ROWS if r.deviation]
    assert deviations and [d for d in deviations if f"`{d}`" not in section] == []
    listed = set(re.findall(r"`(\d{3}-[a-z0-9_]+)`", section))
    assert listed <= {r.id for r in ROWS}, listed - {r.id for r in ROWS}


def test_the_table_covers_each_seed_page() -> None:
    counts = {seed: sum(r.seed == seed for r in ROWS) for seed in SEED_FILES}
    print(
        f"\nseed conformance: {len(ROWS)} rows {counts}, "
        f"{sum(bool(r.deviation) for r in ROWS)} deviations, "
        f"{sum(bool(r.accepts) for r in ROWS)} rows accept both of two documented forms"
    )
    assert all(count >= 10 for count in counts.values()), counts
