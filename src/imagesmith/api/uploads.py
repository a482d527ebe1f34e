"""Multipart upload bodies, shared by every dialect: parsed with a size limit enforced while the
body streams in (not after), and described for OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from imagesmith.api.dialect import PayloadTooLarge
from imagesmith.errors import ValidationFailed

MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and small text fields


async def limited_form(
    request: Request, max_bytes: int, *, max_files: int, max_fields: int = 20
) -> FormData:
    """Parse multipart/form-data, refusing the body as soon as it passes `max_bytes`."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ValidationFailed(
            f"Send multipart/form-data (got Content-Type '{content_type or 'none'}')"
        )
    limit = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and len(declared) < 19 and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {max_bytes} bytes")

    async def counted() -> AsyncGenerator[bytes, None]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise PayloadTooLarge(f"Request body is over the {max_bytes}-byte limit")
            yield chunk

    # Text fields are UTF-8 whatever charset the client names: Starlette would decode them with
    # it, and "unicode_escape" or "utf-7" turn bytes into lone surrogates no answer can encode.
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    headers = Headers(
        raw=[(k, v) for k, v in request.headers.raw if k != b"content-type"]
        + [(b"content-type", b'multipart/form-data; boundary="' + boundary + b'"')]
    )
    parser = MultiPartParser(headers, counted(), max_files=max_files, max_fields=max_fields)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise ValidationFailed(f"Malformed multipart body: {exc.message}") from None


async def read_file(form: FormData, field: str, max_bytes: int) -> bytes:
    value = form.get(field)
    if not isinstance(value, UploadFile):
        raise ValidationFailed(f"Multipart field '{field}' with a file is required")
    data = await value.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"File '{field}' is over the {max_bytes}-byte limit")
    return data


def multipart_body(
    file_field: str = "file",
    *,
    many: bool = False,
    required: tuple[str, ...] = (),
    **fields: dict[str, Any],
) -> dict[str, Any]:
    """`openapi_extra=` for a route that reads a multipart file field (`many`: an array of
    files) plus these text fields."""
    binary = {"type": "string", "format": "binary"}
    properties = {file_field: {"type": "array", "items": binary} if many else binary, **fields}
    schema = {"type": "object", "required": [file_field, *required], "properties": properties}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}}}
