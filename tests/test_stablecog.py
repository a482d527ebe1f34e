"""The Stablecog dialect and the engine parameters behind it, against a real server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.pictures import pixels, png
from tests.serverproc import Server, create_key, run_cli
from tests.stubs import QuietHandler, local_server


@pytest.fixture(scope="module")
def sc_key(server: Server) -> str:
    return create_key(server.env, "cog", "app")


@pytest.fixture()
def sc(server: Server, sc_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {sc_key}"}, timeout=120
    ) as client:
        yield client


def largest_difference(a: Image.Image, b: Image.Image) -> int:
    """The largest per-channel difference between two same-size pictures, in levels of 255."""
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def create(sc: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a lighthouse at dusk")
    return sc.post("/v1/image/generation/create", json=body)


def test_prompt_only_uses_defaults_and_reports_them(sc: httpx.Client) -> None:
    response = create(sc)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["outputs"]) == 1 and body["remaining_credits"] is None
    settings = body["settings"]
    defaults = sc.get("/v1/image/generation/defaults").json()
    for name in ("model_id", "scheduler_id", "width", "height", "inference_steps"):
        assert settings[name] == defaults[name]
    assert isinstance(settings["seed"], int) and settings["num_outputs"] == 1
    output = body["outputs"][0]
    assert output["url"] == output["image_url"]
    image = pixels(httpx.get(output["url"]).content)
    assert image.size == (settings["width"], settings["height"])


def test_several_outputs_and_seeds(sc: httpx.Client) -> None:
    many = create(sc, num_outputs=3, seed=77, width=64, height=96).json()
    urls = [o["url"] for o in many["outputs"]]
    assert len(urls) == 3 and len({o["id"] for o in many["outputs"]}) == 3
    images = [httpx.get(u).content for u in urls]
    assert len(set(images)) == 3 and pixels(images[0]).size == (64, 96)
    # The same request again gives the same bytes (same machine, same batch composition).
    again = create(sc, num_outputs=3, seed=77, width=64, height=96).json()
    assert [httpx.get(o["url"]).content for o in again["outputs"]] == images
    # Output i is seeded seed+i, so output 0 is what the seed gives alone: to within the rounding
    # by which one pipeline call for three images may differ from a call for one (DESIGN §9).
    alone = create(sc, num_outputs=1, seed=77, width=64, height=96).json()
    alone_77 = pixels(httpx.get(alone["outputs"][0]["url"]).content)
    other = create(sc, num_outputs=1, seed=78, width=64, height=96).json()
    alone_78 = pixels(httpx.get(other["outputs"][0]["url"]).content)
    assert largest_difference(alone_77, pixels(images[0])) <= 2
    assert largest_difference(alone_78, pixels(images[1])) <= 2
    assert largest_difference(alone_77, pixels(images[1])) > 2  # the seeds really differ
    assert many["settings"]["seed"] == 77


def test_negative_prompt_guidance_and_scheduler_change_the_image(sc: httpx.Client) -> None:
    base = {"seed": 5, "width": 64, "height": 64, "inference_steps": 6}
    plain = httpx.get(create(sc, **base).json()["outputs"][0]["url"]).content
    variants = [
        create(sc, **base, negative_prompt="blurry"),
        create(sc, **base, guidance_scale=2),
        create(sc, **base, scheduler_id="DPM++_2M"),
        create(sc, **base, scheduler_id="PNDM"),
    ]
    for response in variants:
        assert response.status_code == 200, response.text
        assert httpx.get(response.json()["outputs"][0]["url"]).content != plain
    assert variants[2].json()["settings"]["scheduler_id"] == "DPM++_2M"


BAD: list[tuple[dict[str, Any], str, list[str]]] = [
    ({"width": 1000}, "width must be between 64 and 512", ["1000"]),
    ({"height": 100}, "height must be a multiple of 8", ["100"]),
    ({"num_outputs": 5}, "num_outputs must be between 1 and 4", ["5"]),
    ({"guidance_scale": 25}, "guidance_scale must be between 1 and 20", ["25"]),
    ({"inference_steps": 60}, "inference_steps must be between 1 and 50", ["60"]),
    ({"prompt_strength": 0.5}, "prompt_strength only applies with init_image_url", []),
    (
        {"model_id": "sd15", "width": 1024, "height": 1024, "inference_steps": 31},
        "width * height * inference_steps must be at most 31457280",
        ["32505856"],
    ),
    ({"prompt": ""}, "prompt", []),
]


@pytest.mark.parametrize(("body", "fragment", "values"), BAD)
def test_bad_values_name_field_bound_and_value(
    sc: httpx.Client, body: dict[str, Any], fragment: str, values: list[str]
) -> None:
    response = create(sc, **body)
    assert response.status_code == 400, response.text
    error = response.json()
    text = error["error"] + " " + error.get("description", "")
    assert fragment in text
    for value in values:
        assert value in text


def test_stablecog_error_codes(sc: httpx.Client, server: Server) -> None:
    assert create(sc, model_id="nope").json()["error"] == "invalid_model_id"
    unknown = create(sc, scheduler_id="FOO").json()
    assert unknown["error"] == "invalid_scheduler_id" and "K_EULER" in unknown["description"]
    turbo = create(sc, model_id="sd-turbo", scheduler_id="PNDM").json()
    assert turbo["error"] == "invalid_scheduler_id"
    malformed = sc.post(
        "/v1/image/generation/create",
        content=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400 and malformed.json()["error"] == "json_parse_error"
    anonymous = httpx.post(f"{server.url}/v1/image/generation/create", json={"prompt": "x"})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "Unauthorized"


def test_models_and_defaults(sc: httpx.Client) -> None:
    models = sc.get("/v1/image/generation/models").json()["models"]
    by_id = {m["id"]: m for m in models}
    assert by_id["tiny-sd"]["is_default"] is True
    assert {s["id"] for s in by_id["sdxl"]["available_schedulers"]} >= {"K_EULER", "DPM++_2M"}
    assert by_id["sdxl"]["default_width"] == 1024
    # Stablecog clients send UUIDs from this list: those work too.
    response = create(sc, model_id=by_id["tiny-sd"]["uuid"])
    assert response.status_code == 200 and response.json()["settings"]["model_id"] == "tiny-sd"


def test_img2img_from_an_upload(sc: httpx.Client, server: Server, key_b: str) -> None:
    upload = sc.post("/v1/image/upload", files={"file": ("red.png", png(), "image/png")})
    assert upload.status_code == 200, upload.text
    ref = upload.json()["object"]
    assert ref.startswith("s3://") and ref.endswith(".png")
    low = create(sc, init_image_url=ref, prompt_strength=0.25, inference_steps=8, seed=3)
    assert low.status_code == 200, low.text
    settings = low.json()["settings"]
    assert settings["init_image_url"] == ref and settings["prompt_strength"] == 0.25
    high = create(sc, init_image_url=ref, prompt_strength=1.0, inference_steps=8, seed=3)
    low_image = httpx.get(low.json()["outputs"][0]["url"]).content
    assert low_image != httpx.get(high.json()["outputs"][0]["url"]).content
    zero = create(sc, init_image_url=ref, prompt_strength=0.05, inference_steps=10)
    assert zero.status_code == 400
    assert "int(10 * 0.05) = 0" in zero.json()["description"]
    # Another project cannot use this upload.
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key_b}"}) as other:
        stolen = other.post(
            "/v1/image/generation/create", json={"prompt": "x", "init_image_url": ref}
        )
    assert stolen.status_code == 401 and stolen.json()["error"] == "init_image_not_owned"
    missing = create(sc, init_image_url=f"s3://{ref[5:37]}/{uuid.uuid4()}.png")
    assert missing.json()["error"] == "init_image_not_found"


@pytest.mark.parametrize(
    ("name", "data", "status", "error"),
    [
        ("anim.gif", b"GIF89a" + b"\x00" * 100, 400, "invalid_content_type"),
        ("cut.png", png()[:60], 400, "invalid_file"),
        (
            "big.png",
            b"\x89PNG\r\n\x1a\n" + b"\x00" * (10 * 1024 * 1024 + 10),
            413,
            "file_too_large",
        ),
    ],
)
def test_upload_refuses_bad_files(
    sc: httpx.Client, name: str, data: bytes, status: int, error: str
) -> None:
    response = sc.post("/v1/image/upload", files={"file": (name, data, "image/png")})
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


class OneImage(QuietHandler):
    def do_GET(self) -> None:
        self.send_body(200, png((32, 32), (10, 200, 10)), "image/png")


def test_http_init_images_on_private_addresses_are_refused(sc: httpx.Client) -> None:
    with local_server(OneImage) as base:
        url = f"{base}/red.png"
        response = create(sc, init_image_url=url, prompt_strength=0.5, inference_steps=4)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_image_url"
        assert "public address" in response.json()["description"]
        ftp = create(sc, init_image_url="ftp://example.com/a.png", inference_steps=4)
        assert ftp.json()["error"] == "invalid_image_url"


def test_credits_are_charged_per_output_and_refunded_on_failure(server: Server) -> None:
    key = create_key(server.env, "cog", "paid")
    assert (
        run_cli(server.env, "credits", "set", "--org", "cog", "--project", "paid", "3").returncode
        == 0
    )
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as paid:
        first = create(paid, num_outputs=2)
        assert first.status_code == 200 and first.json()["remaining_credits"] == 1
        refused = create(paid, num_outputs=2)
        assert refused.status_code == 400 and refused.json()["error"] == "insufficient_credits"
        failed = create(paid, model_id="sdxl")  # no weights here: the job fails
        assert failed.status_code == 500 and "models pull sdxl" in failed.json()["error"]
        balance = paid.get("/v1/credits").json()
        assert balance["total_remaining_credits"] == 1  # the failed job's credit came back
        assert balance["credits"][0]["remaining_amount"] == 1


def test_outputs_cursor_pagination_and_filters(server: Server) -> None:
    key = create_key(server.env, "cog", "gallery")
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as sc:
        create(sc, num_outputs=3, width=64, height=64)
        create(sc, num_outputs=2, width=96, height=64)
        page = sc.get("/v1/image/generation/outputs", params={"per_page": 2}).json()
        assert page["total"] == 5 and len(page["outputs"]) == 2 and page["next"]
        seen = [o["id"] for o in page["outputs"]]
        while page["next"]:
            page = sc.get(
                "/v1/image/generation/outputs", params={"per_page": 2, "cursor": page["next"]}
            ).json()
            seen += [o["id"] for o in page["outputs"]]
        assert len(seen) == len(set(seen)) == 5
        wide = sc.get("/v1/image/generation/outputs", params={"widths": "96"}).json()
        assert wide["total"] == 2
        assert all(o["generation"]["width"] == 96 for o in wide["outputs"])
        first = wide["outputs"][0]
        assert first["generation"]["prompt"]["text"] == "a lighthouse at dusk"
        assert first["generation"]["status"] == "succeeded"
        bad = sc.get("/v1/image/generation/outputs", params={"cursor": "yesterday"})
        assert bad.status_code == 400
        # Moments that leave the calendar in UTC were a 500 (OverflowError).
        for params in (
            {"start_dt": "0001-01-01T00:00:00+01:00"},
            {"end_dt": "9999-12-31T23:30:00-01:00"},
            {"cursor": "9999-12-31T23:30:00-01:00|x"},
        ):
            odd = sc.get("/v1/image/generation/outputs", params=params)
            assert odd.status_code == 400 and "range" in odd.json()["error"], (params, odd.text)


def test_a_client_that_hangs_up_ends_its_wait_and_its_job_runs_on(
    server: Server, sc_key: str
) -> None:
    """Native `Prefer: wait` and Stablecog's synchronous create: a client that hangs up ends its
    wait at once, counted as 499 (not as a failure), and its job is not cancelled: it can read
    it later. (An OpenAI client's job is: tests/test_openai.py.)"""
    slow = {"width": 512, "height": 512}
    bearer = {"Authorization": f"Bearer {sc_key}"}
    leavers = [
        ("/api/v1/generations", {"X-API-Key": sc_key, "Prefer": "wait=60"}, {"steps": 50}),
        ("/v1/image/generation/create", bearer, {"inference_steps": 50}),
    ]
    with httpx.Client(base_url=server.url, headers={"X-API-Key": sc_key}) as api:
        try:
            for path, headers, steps in leavers:
                with pytest.raises(httpx.ReadTimeout):
                    httpx.post(
                        f"{server.url}{path}",
                        json={"prompt": f"a slow leaver at {path}", **slow, **steps},
                        headers=headers,
                        timeout=1,
                    )
            # A regenerate reads no body, and one over BodyLimit's cap must not blind its wait.
            [first] = leavers_of(api)[-1:]
            regenerate = f"/api/v1/generations/{first['id']}/regenerate"
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{server.url}{regenerate}",
                    content=b"x" * (300 * 1024),
                    headers={"X-API-Key": sc_key, "Prefer": "wait=60"},
                    timeout=1,
                )
            leavers.append((regenerate.replace(first["id"], "{generation_id}"), {}, {}))
            counted = [f'route="{path}",status="499"' for path, _, _ in leavers]
            deadline = time.monotonic() + 20  # both waits would have lasted a minute
            while time.monotonic() < deadline:
                metrics = httpx.get(f"{server.url}/metrics").text
                if all(label in metrics for label in counted):
                    break
                time.sleep(0.2)
            assert all(label in metrics for label in counted), [
                line for line in metrics.splitlines() if "http_requests_total{" in line
            ]
            left = leavers_of(api)
            assert len(left) == 2 and all(g["status"] != "cancelled" for g in left), left
        finally:
            for g in leavers_of(api):  # done with them: a minute of 512 px steps each
                api.post(f"/api/v1/generations/{g['id']}/cancel")


def leavers_of(api: httpx.Client) -> list[dict[str, Any]]:
    return [g for g in api.get("/api/v1/generations").json()["data"] if "leaver" in g["prompt"]]
