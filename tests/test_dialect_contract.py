"""What every dialect promises, checked the same way for each against one real server: its own
error shape for a missing key, a bad key, invalid and malformed bodies, an unknown model and an
unknown route under its prefix; its own error schema in the OpenAPI document; and a create that
ends in an image URL serving a PNG. Adding a dialect adds one entry to CONTRACTS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.serverproc import Server, create_key


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


def native_images(response: httpx.Response) -> list[str]:
    data = response.json()["data"]
    assert data["status"] == "success", data
    return [image["storageUrl"] for image in data["outputImages"]]


def stablecog_images(response: httpx.Response) -> list[str]:
    return [output["image_url"] for output in response.json()["outputs"]]


@dataclass(frozen=True)
class Contract:
    name: str
    key_headers: Callable[[str], dict[str, str]]
    create_path: str
    model_field: str
    error_of: Callable[[httpx.Response], str]  # asserts the shape, returns its text
    images_of: Callable[[httpx.Response], list[str]]
    error_schema: str  # the component every error response of its routes documents
    prefix: str  # a path prefix it owns
    wait_headers: dict[str, str]


CONTRACTS = [
    Contract(
        name="native",
        key_headers=lambda key: {"X-API-Key": key},
        create_path="/api/v1/generations",
        model_field="model",
        error_of=native_error,
        images_of=native_images,
        error_schema="ErrorEnvelope",
        prefix="/api/v1",
        wait_headers={"Prefer": "wait=60"},
    ),
    Contract(
        name="stablecog",
        key_headers=lambda key: {"Authorization": f"Bearer {key}"},
        create_path="/v1/image/generation/create",
        model_field="model_id",
        error_of=stablecog_error,
        images_of=stablecog_images,
        error_schema="StablecogError",
        prefix="/v1/image",
        wait_headers={},
    ),
]


@pytest.fixture(scope="module")
def contract_key(server: Server) -> str:
    return create_key(server.env, "contract", "all")


@pytest.fixture(params=CONTRACTS, ids=[c.name for c in CONTRACTS])
def dialect(request: pytest.FixtureRequest) -> Contract:
    contract: Contract = request.param
    return contract


def post(server: Server, contract: Contract, headers: dict[str, str], **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{contract.create_path}", headers=headers, timeout=120, **kw)


def test_a_missing_or_wrong_key_is_401_in_the_dialects_shape(
    server: Server, dialect: Contract
) -> None:
    body = {"prompt": "a red circle on a blue background"}
    missing = post(server, dialect, {}, json=body)
    assert missing.status_code == 401
    assert "key" in dialect.error_of(missing).lower()
    wrong = post(server, dialect, dialect.key_headers("ims_not-a-key"), json=body)
    assert wrong.status_code == 401
    assert "Invalid API key" in dialect.error_of(wrong)


def test_bad_bodies_are_400_in_the_dialects_shape(
    server: Server, dialect: Contract, contract_key: str
) -> None:
    headers = dialect.key_headers(contract_key)
    invalid = post(server, dialect, headers, json={"prompt": 12})
    assert invalid.status_code == 400
    assert "prompt" in dialect.error_of(invalid)
    malformed = post(
        server,
        dialect,
        {**headers, "Content-Type": "application/json"},
        content=b'{"prompt": "unterminated',
    )
    assert malformed.status_code == 400
    dialect.error_of(malformed)


def test_an_unknown_model_is_named_in_the_dialects_shape(
    server: Server, dialect: Contract, contract_key: str
) -> None:
    body = {"prompt": "a red circle", dialect.model_field: "no-such-model"}
    response = post(server, dialect, dialect.key_headers(contract_key), json=body)
    assert response.status_code == 400
    text = dialect.error_of(response)
    assert "no-such-model" in text or "invalid_model_id" in text


def test_an_unknown_route_under_the_dialects_prefix_is_404_in_its_shape(
    server: Server, dialect: Contract, contract_key: str
) -> None:
    headers = dialect.key_headers(contract_key)
    response = httpx.get(f"{server.url}{dialect.prefix}/no-such-route", headers=headers)
    assert response.status_code == 404
    dialect.error_of(response)


def test_every_error_response_documents_the_dialects_schema(
    server: Server, dialect: Contract
) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert dialect.error_schema in schema["components"]["schemas"]
    documented = 0
    for path, operations in schema["paths"].items():
        if not path.startswith(dialect.prefix):
            continue
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/" + dialect.error_schema), (path, status, ref)
                    documented += 1
            assert "422" not in operation["responses"], path
    assert documented > 0


def test_a_create_ends_in_an_image_url_that_serves_a_png(
    server: Server, dialect: Contract, contract_key: str
) -> None:
    headers = {**dialect.key_headers(contract_key), **dialect.wait_headers}
    body = {"prompt": "a red circle on a blue background"}
    response = post(server, dialect, headers, json=body)
    assert response.status_code in (200, 201), response.text
    urls = dialect.images_of(response)
    assert urls
    image = httpx.get(urls[0], timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
