"""The native generations API against a real server, real SQLite, real store and the tiny model."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pictures import png_size
from tests.serverproc import Server, wait_terminal

WAIT = {"Prefer": "wait=60"}


def create(api: httpx.Client, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a red circle on a blue background")
    return api.post("/api/v1/generations", json=body, headers=headers or {})


def fetch(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=30)


def test_seed_example_request_round_trip(api: httpx.Client) -> None:
    """Seed 002's example: 201 at once with `pending`, then poll, then download a 16:9 PNG."""
    response = create(
        api,
        prompt="a red sports car on a mountain road",
        aspectRatio="16:9",
        autoEnhance=True,
        enhancementOptions={"template": "photorealistic"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert data["status"] == "pending"
    assert data["originalPrompt"] == "a red sports car on a mountain road"
    assert data["prompt"].startswith("A photorealistic photograph of a red sports car")
    assert data["aspectRatio"] == "16:9" and data["outputImageId"] is None
    assert uuid.UUID(data["flowId"])  # omitted flowId → a new flow id
    assert response.headers["Location"] == f"/api/v1/generations/{data['id']}"

    done = wait_terminal(api, data["id"])
    assert done["status"] == "success", done["errorMessage"]
    image = done["outputImage"]
    assert image["id"] == done["outputImageId"] and image["mimeType"] == "image/png"
    assert (image["width"], image["height"]) == (112, 64)
    assert done["processingTimeMs"] >= 0 and done["retryCount"] == 0
    assert done["progress"] == {"step": done["steps"], "total": done["steps"]}

    download = fetch(image["storageUrl"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert int(download.headers["content-length"]) == image["fileSize"] == len(download.content)
    assert png_size(download.content) == (112, 64)
    assert download.headers["etag"] == f'"{hashlib.sha256(download.content).hexdigest()}"'
    revalidated = fetch(image["storageUrl"], **{"If-None-Match": download.headers["etag"]})
    assert revalidated.status_code == 304 and revalidated.content == b""


@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("1:1", (64, 64)),
        ("16:9", (112, 64)),
        ("9:16", (64, 112)),
        ("3:2", (96, 64)),
        ("21:9", (144, 64)),
    ],
)
def test_prefer_wait_returns_finished_image_of_each_ratio(
    api: httpx.Client, ratio: str, size: tuple[int, int]
) -> None:
    response = create(api, WAIT, aspectRatio=ratio, autoEnhance=False)
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "wait=60"
    data = response.json()["data"]
    assert data["status"] == "success"
    assert data["prompt"] == data["originalPrompt"] == "a red circle on a blue background"
    assert png_size(fetch(data["outputImage"]["storageUrl"]).content) == size


def test_idempotency_key_returns_same_generation(api: httpx.Client) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = create(api, key, prompt="idempotent cat")
    second = create(api, key, prompt="idempotent cat")
    assert first.status_code == 201 and second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json()["data"]["id"] == second.json()["data"]["id"]
    other = create(api, key, prompt="a different dog")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_list_filters_and_pagination(api: httpx.Client) -> None:
    flow = str(uuid.uuid4())
    ids = [
        create(api, WAIT, flowId=flow, prompt=f"flow item {i}").json()["data"]["id"]
        for i in range(3)
    ]
    page = api.get("/api/v1/generations", params={"flowId": flow, "limit": 2}).json()
    assert page["success"] is True
    assert page["pagination"] == {"total": 3, "limit": 2, "offset": 0, "hasMore": True}
    assert [g["id"] for g in page["data"]] == ids[::-1][:2]  # newest first
    rest = api.get("/api/v1/generations", params={"flowId": flow, "limit": 2, "offset": 2}).json()
    assert rest["pagination"]["hasMore"] is False and [g["id"] for g in rest["data"]] == [ids[0]]
    failed = api.get("/api/v1/generations", params={"flowId": flow, "status": "failed"}).json()
    assert failed["pagination"]["total"] == 0
    null_flow = create(api, flowId=None).json()["data"]
    assert null_flow["flowId"] is None
    default = api.get("/api/v1/generations").json()["pagination"]
    assert default["limit"] == 20 and default["offset"] == 0


def test_put_prompt_regenerates_in_place(api: httpx.Client) -> None:
    first = create(api, WAIT, prompt="a green square").json()["data"]
    image = first["outputImage"]
    before = fetch(image["storageUrl"]).content
    updated = api.put(
        f"/api/v1/generations/{first['id']}",
        json={"prompt": "a yellow triangle", "aspectRatio": "9:16"},
        headers=WAIT,
    )
    assert updated.status_code == 200, updated.text
    after_data = updated.json()["data"]
    assert after_data["status"] == "success"
    assert after_data["originalPrompt"] == "a yellow triangle"
    assert after_data["outputImageId"] == image["id"]
    assert after_data["outputImage"]["storageUrl"] == image["storageUrl"]
    after = fetch(image["storageUrl"]).content
    assert after != before and png_size(after) == (64, 112)


def test_meta_and_flow_changes_touch_only_the_record(api: httpx.Client) -> None:
    first = create(api, WAIT).json()["data"]
    before = fetch(first["outputImage"]["storageUrl"]).content
    new_flow = str(uuid.uuid4())
    patched = api.patch(
        f"/api/v1/generations/{first['id']}",
        json={"meta": {"campaign": "spring"}, "flowId": new_flow},
    )
    data = patched.json()["data"]
    assert patched.status_code == 200
    assert data["status"] == "success" and data["meta"] == {"campaign": "spring"}
    assert data["flowId"] == new_flow and data["completedAt"] == first["completedAt"]
    assert fetch(first["outputImage"]["storageUrl"]).content == before
    detached = api.put(f"/api/v1/generations/{first['id']}", json={"flowId": None}).json()["data"]
    assert detached["flowId"] is None


def test_same_seed_same_bytes_and_regenerate_uses_new_seed(api: httpx.Client) -> None:
    a = create(api, WAIT, seed=1234, autoEnhance=False).json()["data"]
    b = create(api, WAIT, seed=1234, autoEnhance=False).json()["data"]
    c = create(api, WAIT, seed=4321, autoEnhance=False).json()["data"]
    bytes_a, bytes_b, bytes_c = (fetch(x["outputImage"]["storageUrl"]).content for x in (a, b, c))
    assert bytes_a == bytes_b != bytes_c
    # A pinned seed survives regenerate: same image again, same id and URL.
    again = api.post(f"/api/v1/generations/{a['id']}/regenerate", headers=WAIT).json()["data"]
    assert again["seed"] == 1234 and again["outputImageId"] == a["outputImageId"]
    assert fetch(again["outputImage"]["storageUrl"]).content == bytes_a
    # Without a pinned seed, regenerate (and the deprecated /retry) draws a new image.
    free = create(api, WAIT).json()["data"]
    free_bytes = fetch(free["outputImage"]["storageUrl"]).content
    retried = api.post(f"/api/v1/generations/{free['id']}/retry", headers=WAIT).json()["data"]
    assert retried["status"] == "success" and retried["seed"] != free["seed"]
    assert retried["outputImageId"] == free["outputImageId"]
    assert fetch(retried["outputImage"]["storageUrl"]).content != free_bytes


def test_delete_removes_record_and_file(api: httpx.Client, server: Server) -> None:
    data = create(api, WAIT).json()["data"]
    url = data["outputImage"]["storageUrl"]
    key = api.get(f"/api/v1/images/{data['outputImageId']}").json()["data"]["storageKey"]
    assert key.startswith(f"acme/web/img/{data['outputImageId']}.") and key in server.stored_keys()
    deleted = api.delete(f"/api/v1/generations/{data['id']}")
    assert deleted.status_code == 200 and deleted.json()["success"] is True
    assert api.get(f"/api/v1/generations/{data['id']}").status_code == 404
    assert fetch(url).status_code == 404
    assert key not in server.stored_keys()
    assert (
        api.delete(f"/api/v1/generations/{data['id']}").json()["error"]["code"]
        == "GENERATION_NOT_FOUND"
    )


def test_delete_keeps_an_image_with_a_project_alias(api: httpx.Client, server: Server) -> None:
    alias = f"@hero-{uuid.uuid4().hex[:8]}"
    data = create(api, WAIT, alias=alias).json()["data"]
    assert data["outputImage"]["alias"] == alias
    assert api.delete(f"/api/v1/generations/{data['id']}").status_code == 200
    by_alias = fetch(f"{server.url}/cdn/acme/web/img/{alias}")
    assert by_alias.status_code == 200 and by_alias.headers["x-image-id"] == data["outputImageId"]
    taken = create(api, alias=alias)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "ALIAS_CONFLICT"


def test_other_projects_see_nothing(server: Server, api: httpx.Client, key_b: str) -> None:
    mine = create(api, WAIT).json()["data"]
    with server.client(key_b) as other:
        for method, path in [
            ("GET", ""),
            ("PUT", ""),
            ("PATCH", ""),
            ("DELETE", ""),
            ("POST", "/regenerate"),
            ("POST", "/retry"),
        ]:
            response = other.request(
                method,
                f"/api/v1/generations/{mine['id']}{path}",
                json={"meta": {}} if method in ("PUT", "PATCH") else None,
            )
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "GENERATION_NOT_FOUND"
        listed = other.get("/api/v1/generations", params={"limit": 100}).json()["data"]
        assert mine["id"] not in {g["id"] for g in listed}
    # Another project's CDN path does not reach this image either.
    assert fetch(f"{server.url}/cdn/globex/app/img/{mine['outputImageId']}").status_code == 404
    assert api.get(f"/api/v1/generations/{mine['id']}").json()["data"]["status"] == "success"


BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "prompt is required"),
    ({"prompt": "   "}, "prompt must not be empty"),
    ({"prompt": "x" * 2001}, "limit is 2000"),
    ({"prompt": "x", "aspectRatio": "4:5"}, "aspectRatio '4:5' is not one of"),
    ({"prompt": "x", "enhancementOptions": {"template": "gothic"}}, "template 'gothic'"),
    ({"prompt": "x", "autoEnhance": "maybe"}, "autoEnhance"),
    ({"prompt": "x", "referenceImages": ["a", "b", "c", "d"]}, "referenceImages"),
    ({"prompt": "x", "alias": "hero"}, "must start with '@'"),
    ({"prompt": "x", "alias": "@last"}, "reserved"),
    ({"prompt": "x", "flowId": "not-a-uuid"}, "flowId must be a UUID"),
    ({"prompt": "x", "model": "dall-e-9"}, "Unknown model 'dall-e-9'"),
    ({"prompt": "x", "steps": 999}, "steps"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "meta": "not an object"}, "meta"),
    ({"prompt": "x", "aspect": "16:9"}, "Unknown field 'aspect'"),
    ([1, 2], "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_BODIES)
def test_bad_bodies_get_400_naming_the_problem(api: httpx.Client, body: Any, fragment: str) -> None:
    before = api.get("/api/v1/generations").json()["pagination"]["total"]
    response = api.post("/api/v1/generations", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["success"] is False and error["error"]["code"] == "VALIDATION_ERROR"
    assert fragment in error["error"]["message"]
    assert api.get("/api/v1/generations").json()["pagination"]["total"] == before


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"prompt": "x",', "Malformed JSON"),
        (b"", "JSON request body is required"),
        (b"not json", "Malformed JSON"),
    ],
)
def test_malformed_json_is_a_validation_error(api: httpx.Client, raw: bytes, fragment: str) -> None:
    response = api.post(
        "/api/v1/generations", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert fragment in response.json()["error"]["message"]


def test_bad_queries_and_updates(api: httpx.Client) -> None:
    for params, fragment in [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "done"}, "status"),
    ]:
        response = api.get("/api/v1/generations", params=params)
        assert response.status_code == 400 and fragment in response.json()["error"]["message"]
    data = create(api).json()["data"]
    bad = api.put(f"/api/v1/generations/{data['id']}", json={"aspectRatio": "5:4"})
    assert bad.status_code == 400 and "aspectRatio" in bad.json()["error"]["message"]
    assert api.get("/api/v1/generations/not-an-id").status_code == 404


def test_auth_errors(server: Server, api: httpx.Client) -> None:
    with server.client() as anonymous:
        missing = anonymous.get("/api/v1/generations")
        assert missing.status_code == 401
        assert missing.json()["error"] == {
            "code": "UNAUTHORIZED",
            "message": "Missing API key: send it in the X-API-Key header",
        }
    with server.client("ims_not-a-real-key") as wrong:
        assert wrong.post("/api/v1/generations", json={"prompt": "x"}).status_code == 401


def test_missing_model_fails_with_a_message_that_says_what_to_do(api: httpx.Client) -> None:
    queued = create(api, model="sdxl")
    assert queued.status_code == 201
    done = wait_terminal(api, queued.json()["data"]["id"])
    assert done["status"] == "failed"
    assert "imagesmith models pull sdxl" in done["errorMessage"]
    waited = create(api, WAIT, model="sd15")
    assert waited.status_code == 500
    error = waited.json()["error"]
    assert error["code"] == "GENERATION_FAILED" and "models pull sd15" in error["message"]
    assert error["data"]["status"] == "failed"
    assert api.get("/health").status_code == 200


def test_unknown_routes_answer_in_the_envelope(api: httpx.Client) -> None:
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404 and response.json()["success"] is False
    assert api.delete("/api/v1/generations").status_code == 405


def test_health_and_info(server: Server, key_a: str) -> None:
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "healthy" and "uptime" in health and "version" in health
    info = httpx.get(f"{server.url}/api/info").json()
    assert "16:9" in info["limits"]["aspectRatios"] and "auth" not in info
    keyed = httpx.get(f"{server.url}/api/info", headers={"X-API-Key": key_a}).json()
    assert keyed["auth"]["projectSlug"] == "web" and keyed["auth"]["keyType"] == "project"


def test_openapi_documents_errors_for_every_route(server: Server) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert httpx.get(f"{server.url}/docs").status_code == 200
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            devkit = path.startswith(("/api/v1/generation/", "/api/v1/auth/", "/api/v1/projects"))
            assert "422" not in codes or devkit, (method, path)  # devkit4ai answers FastAPI's 422
            if path.startswith("/api/v1") or path.startswith("/api/admin"):
                assert {"401", "403"} <= codes, (method, path, codes)
            if path.startswith("/cdn"):
                assert "404" in codes
    create_op = schema["paths"]["/api/v1/generations"]["post"]
    assert {"201", "400", "401"} <= set(create_op["responses"])


def test_api_process_never_loads_torch(server: Server) -> None:
    maps = Path(f"/proc/{server.pid}/maps").read_text()
    assert "libtorch" not in maps
    child_maps = Path(f"/proc/{server.model_child()}/maps").read_text()
    assert "libtorch" in child_maps  # the model child is where torch lives


def test_a_form_encoded_body_gets_told_to_send_json(api: httpx.Client) -> None:
    response = api.post(
        "/api/v1/generations",
        content=b'{"prompt": "x"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.json()["error"]["message"]


def test_inputs_found_by_fuzzing_get_400_not_500(api: httpx.Client, server: Server) -> None:
    """Found by schemathesis against a running server; each used to answer 500."""
    huge = api.get("/api/v1/generations", params={"offset": 10**32})
    assert huge.status_code == 400 and "offset" in huge.json()["error"]["message"]
    data = create(api).json()["data"]
    nulls = api.patch(
        f"/api/v1/generations/{data['id']}",
        json={"aspectRatio": None, "flowId": None, "meta": None, "prompt": None},
    )
    assert nulls.status_code == 400 and "cannot be null" in nulls.json()["error"]["message"]
    with httpx.Client(
        base_url=server.url,
        headers={"Authorization": api.headers["X-API-Key"].join(["Bearer ", ""])},
    ) as sc:
        seed = sc.post("/v1/image/generation/create", json={"prompt": "x", "seed": 2**70})
        widths = sc.get("/v1/image/generation/outputs", params={"widths": str(10**30)})
    assert seed.status_code == 400 and "seed" in seed.json()["error"]
    assert widths.status_code == 400
