"""What every dialect promises, checked the same way for each against one real server: its own
error shape for a missing key, a bad key, invalid and malformed bodies, an unknown model and an
unknown route under its prefix; its own error schema in the OpenAPI document; and a create that
ends in an image URL serving a PNG. Adding a dialect adds one entry to CONTRACTS."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.pictures import png
from tests.serverproc import Server, create_key, run_cli


def native_error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"success", "error"} and body["success"] is False, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    return f"{body['error']['code']} {body['error']['message']}"


def stablecog_error(response: httpx.Response) -> str:
    body = response.json()
    assert "success" not in body and isinstance(body["error"], str), body
    assert isinstance(body.get("description", ""), str)
    return f"{body['error']} {body.get('description', '')}"


def openai_error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["type"], str)
    return f"{body['error']['code']} {body['error']['message']}"


def openai_images(server: Server, headers: dict[str, str], response: httpx.Response) -> list[str]:
    return [item["url"] for item in response.json()["data"]]


def devkit_error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) <= {"detail", "retry_after"}, body
    detail = body["detail"]
    assert isinstance(detail, str) or all({"loc", "msg", "type"} <= set(d) for d in detail)
    return str(detail)


Send = Callable[[Server, dict[str, str], dict[str, Any] | bytes], httpx.Response]


def json_send(path: str, wait: dict[str, str]) -> Send:
    def send(
        server: Server, headers: dict[str, str], body: dict[str, Any] | bytes
    ) -> httpx.Response:
        url = f"{server.url}{path}"
        if isinstance(body, bytes):
            headers = {**headers, "Content-Type": "application/json"}
            return httpx.post(url, headers=headers, content=body, timeout=120)
        return httpx.post(url, headers={**headers, **wait}, json=body, timeout=120)

    return send


def devkit_send(
    server: Server, headers: dict[str, str], body: dict[str, Any] | bytes
) -> httpx.Response:
    """Generation V2 is multipart: the body's fields become the instructions JSON."""
    text = body.decode() if isinstance(body, bytes) else json.dumps(body)
    return httpx.post(
        f"{server.url}/api/v1/generation/generate-v2",
        headers=headers,
        files=[("files", ("example.png", png(), "image/png"))],
        data={"instructions": text},
        timeout=120,
    )


def native_images(server: Server, headers: dict[str, str], response: httpx.Response) -> list[str]:
    data = response.json()["data"]
    assert data["status"] == "success", data
    return [image["storageUrl"] for image in data["outputImages"]]


def stablecog_images(
    server: Server, headers: dict[str, str], response: httpx.Response
) -> list[str]:
    return [output["image_url"] for output in response.json()["outputs"]]


def devkit_images(server: Server, headers: dict[str, str], response: httpx.Response) -> list[str]:
    path = f"/api/v1/generation/generations-v2/{response.json()['id']}/status"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        data = httpx.get(f"{server.url}{path}", headers=headers).json()
        if data["status"] in ("completed", "failed"):
            assert data["status"] == "completed", data
            return [data["generated_image_url"]]
        time.sleep(0.2)
    raise AssertionError("the generation did not finish")


def devkit_headers(server: Server, key: str) -> dict[str, str]:
    """A registered end user's full set: token, role, developer key, project id, project key."""
    developer = (
        run_cli(
            server.env,
            "keys",
            "create",
            "--org",
            "contract",
            "--project",
            "all",
            "--type",
            "developer",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    project_id = httpx.get(f"{server.url}/api/info", headers={"X-API-Key": key}).json()["project"][
        "id"
    ]
    headers = {
        "X-API-Key": key,
        "X-Project-ID": project_id,
        "X-Developer-Key": developer,
        "X-User-Role": "end_user",
    }
    email = f"contract-{time.monotonic_ns()}@example.com"
    body = {"email": email, "password": "contract-pw"}
    token = httpx.post(f"{server.url}/api/v1/auth/register", headers=headers, json=body)
    return {**headers, "Authorization": f"Bearer {token.json()['access_token']}"}


@dataclass(frozen=True)
class Contract:
    name: str
    key_headers: Callable[[Server, str], dict[str, str]]
    send: Send
    model_field: str
    invalid_status: int
    error_of: Callable[[httpx.Response], str]  # asserts the shape, returns its text
    images_of: Callable[[Server, dict[str, str], httpx.Response], list[str]]
    error_schema: str  # the component every error response of its routes documents
    prefix: str  # a path prefix it owns


CONTRACTS = [
    Contract(
        name="native",
        key_headers=lambda _server, key: {"X-API-Key": key},
        send=json_send("/api/v1/generations", {"Prefer": "wait=60"}),
        model_field="model",
        invalid_status=400,
        error_of=native_error,
        images_of=native_images,
        error_schema="ErrorEnvelope",
        prefix="/api/v1/generations",
    ),
    Contract(
        name="stablecog",
        key_headers=lambda _server, key: {"Authorization": f"Bearer {key}"},
        send=json_send("/v1/image/generation/create", {}),
        model_field="model_id",
        invalid_status=400,
        error_of=stablecog_error,
        images_of=stablecog_images,
        error_schema="StablecogError",
        prefix="/v1/image",
    ),
    Contract(
        name="devkit4ai",
        key_headers=devkit_headers,
        send=devkit_send,
        model_field="model",
        invalid_status=422,
        error_of=devkit_error,
        images_of=devkit_images,
        error_schema="DevkitError",
        prefix="/api/v1/generation",
    ),
    Contract(
        name="openai",
        key_headers=lambda _server, key: {"Authorization": f"Bearer {key}"},
        send=json_send("/v1/images/generations", {}),
        model_field="model",
        invalid_status=400,
        error_of=openai_error,
        images_of=openai_images,
        error_schema="OpenAIError",
        prefix="/v1/images",
    ),
]


@pytest.fixture(scope="module")
def contract_key(server: Server) -> str:
    return create_key(server.env, "contract", "all")


@pytest.fixture(params=CONTRACTS, ids=[c.name for c in CONTRACTS])
def dialect(request: pytest.FixtureRequest) -> Contract:
    contract: Contract = request.param
    return contract


def headers_for(server: Server, dialect: Contract, key: str) -> dict[str, str]:
    return dialect.key_headers(server, key)


def test_a_missing_or_wrong_key_is_401_in_the_dialects_shape(
    server: Server, dialect: Contract, contract_key: str
) -> None:
    body = {"prompt": "a red circle on a blue background"}
    good = headers_for(server, dialect, contract_key)
    without = {k: v for k, v in good.items() if k not in ("X-API-Key", "Authorization")}
    missing = dialect.send(server, without, body)
    assert missing.status_code == 401
    assert "key" in dialect.error_of(missing).lower() or "credentials" in dialect.error_of(missing)
    wrong = (
        {**good, **dialect.key_headers(server, "ims_not-a-key")}
        if dialect.name != "devkit4ai"
        else {**good, "X-API-Key": "ims_not-a-key"}
    )
    refused = dialect.send(server, wrong, body)
    assert refused.status_code == 401
    assert "Invalid API key" in dialect.error_of(refused)


def test_bad_bodies_are_refused_in_the_dialects_shape(
    server: Server, dialect: Contract, contract_key: str
) -> None:
    headers = headers_for(server, dialect, contract_key)
    invalid = dialect.send(server, headers, {"prompt": 12})
    assert invalid.status_code == dialect.invalid_status
    assert "prompt" in dialect.error_of(invalid)
    malformed = dialect.send(server, headers, b'{"prompt": "unterminated')
    assert malformed.status_code == dialect.invalid_status
    dialect.error_of(malformed)


def test_an_unknown_model_is_named_in_the_dialects_shape(
    server: Server, dialect: Contract, contract_key: str
) -> None:
    body = {"prompt": "a red circle", dialect.model_field: "no-such-model"}
    response = dialect.send(server, headers_for(server, dialect, contract_key), body)
    assert response.status_code == dialect.invalid_status
    text = dialect.error_of(response)
    assert "no-such-model" in text or "invalid_model_id" in text


def test_an_unknown_route_under_the_dialects_prefix_is_404_in_its_shape(
    server: Server, dialect: Contract, contract_key: str
) -> None:
    headers = headers_for(server, dialect, contract_key)
    response = httpx.get(f"{server.url}{dialect.prefix}/no-such-route/deeper", headers=headers)
    assert response.status_code == 404
    dialect.error_of(response)


def test_every_error_response_documents_the_dialects_schema(
    server: Server, dialect: Contract
) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert dialect.error_schema in schema["components"]["schemas"]
    documented = 0
    for path, operations in schema["paths"].items():
        if path != dialect.prefix and not path.startswith(dialect.prefix + "/"):
            continue
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/" + dialect.error_schema), (path, status, ref)
                    documented += 1
            if dialect.invalid_status != 422:
                assert "422" not in operation["responses"], path
    assert documented > 0


def test_a_create_ends_in_an_image_url_that_serves_a_png(
    server: Server, dialect: Contract, contract_key: str
) -> None:
    headers = headers_for(server, dialect, contract_key)
    response = dialect.send(server, headers, {"prompt": "a red circle on a blue background"})
    assert response.status_code in (200, 201), response.text
    urls = dialect.images_of(server, headers, response)
    assert urls
    image = httpx.get(urls[0], timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
