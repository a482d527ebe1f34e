"""The seam itself: a throwaway fifth dialect is one package-like object and one list entry;
its errors come out in its own shape on its own routes — chosen by the matched route, not the
path — while the other dialects are untouched. In-process: no route here needs the runtime."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from imagesmith.api.dialect import Dialect, error_responses
from imagesmith.api.dialects import DIALECTS
from imagesmith.app import create_app
from imagesmith.errors import ImagesmithError, ValidationFailed


class TeapotError(BaseModel):
    teapot: str
    status: int


def render_teapot(exc: ImagesmithError) -> JSONResponse:
    return JSONResponse({"teapot": exc.message, "status": exc.status_code}, exc.status_code)


router = APIRouter()


class Brew(BaseModel):
    cups: int


# Under Stablecog's "/v1/image" segment? No: "/v1/imagery" is another segment, so it is ours.
@router.post("/v1/imagery/brew", responses=error_responses(400))
async def brew(body: Brew) -> dict[str, int]:
    """Brew, or refuse in teapot."""
    if body.cups > 4:
        raise ValidationFailed(f"{body.cups} cups do not fit")
    return {"cups": body.cups}


@router.get("/v1/imagery/crash")
async def crash() -> None:
    """A bug: the 500 must still come in teapot."""
    raise RuntimeError("boom")


TEAPOT = Dialect(
    name="teapot",
    routers=(router,),
    render_error=render_teapot,
    error_schema=TeapotError,
    prefixes=("/v1/imagery",),
)


def call(method: str, path: str, **kwargs: object) -> httpx.Response:
    app = create_app(embedded_worker=False, dialects=(*DIALECTS, TEAPOT))

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_a_fifth_dialect_renders_its_own_errors_on_its_own_routes() -> None:
    refused = call("POST", "/v1/imagery/brew", json={"cups": 9})
    assert refused.status_code == 400 and refused.json() == {
        "teapot": "9 cups do not fit",
        "status": 400,
    }
    invalid = call("POST", "/v1/imagery/brew", json={"cups": "many"})
    assert invalid.status_code == 400 and set(invalid.json()) == {"teapot", "status"}
    crashed = call("GET", "/v1/imagery/crash")
    assert crashed.status_code == 500 and set(crashed.json()) == {"teapot", "status"}
    wrong_method = call("GET", "/v1/imagery/brew")
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"teapot", "status"}
    unmatched = call("GET", "/v1/imagery/nothing-here")
    assert unmatched.status_code == 404 and set(unmatched.json()) == {"teapot", "status"}


def test_the_other_dialects_are_untouched() -> None:
    openai = call("GET", "/v1/images/nothing-here")
    assert openai.status_code == 404 and openai.json()["error"]["code"] == "not_found"
    stablecog = call("GET", "/v1/image/nothing-here")
    assert stablecog.status_code == 404 and stablecog.json()["error"] == "Not Found"
    native = call("GET", "/api/v1/nothing-here")
    assert native.status_code == 404 and native.json()["success"] is False
    elsewhere = call("GET", "/nowhere")
    assert elsewhere.json()["error"]["code"] == "NOT_FOUND"  # the first dialect is the default


def test_its_openapi_operations_document_its_error_schema() -> None:
    schema = call("GET", "/openapi.json").json()
    responses = schema["paths"]["/v1/imagery/brew"]["post"]["responses"]
    assert "422" not in responses
    assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/TeapotError"
    )
    sc = schema["paths"]["/v1/image/generation/create"]["post"]["responses"]["400"]
    assert sc["content"]["application/json"]["schema"]["$ref"].endswith("/StablecogError")
