"""JSON bodies that carry images as base64 strings (OpenAI's `b64_json`), written without the
standard library's two slow passes over the picture.

`base64.b64encode` runs ~600 MB/s here and `json.dumps` then scans the result for characters
to escape: a 1024 px PNG (~3 MB) cost the event loop ~19 ms (4.9 to encode, 14.3 to render a
JSONResponse), several times what the rest of its request costs (bench/RESULTS.md, thirteenth
session). pybase64 encodes with SIMD (~0.1 ms for the same picture), and base64's alphabet
holds no character JSON escapes, so its output goes into the body as it is; only the small
fields around it pass through `json.dumps`."""

from __future__ import annotations

import json
from typing import Any

import pybase64
from starlette.responses import Response


class Base64:
    """Bytes to be written as a base64 JSON string."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


def _scalar(value: Any) -> str:
    # As Starlette's JSONResponse renders: UTF-8, compact, no NaN.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """`value` as compact JSON (dicts, lists, JSON scalars and `Base64`), UTF-8."""
    parts: list[bytes] = []
    text: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, Base64):
            text.append('"')
            parts.append("".join(text).encode())
            parts.append(pybase64.b64encode(item.data))
            text.clear()
            text.append('"')
        elif isinstance(item, dict):
            text.append("{")
            for index, (key, member) in enumerate(item.items()):
                text.append(("," if index else "") + _scalar(str(key)) + ":")
                walk(member)
            text.append("}")
        elif isinstance(item, (list, tuple)):
            text.append("[")
            for index, member in enumerate(item):
                if index:
                    text.append(",")
                walk(member)
            text.append("]")
        else:
            text.append(_scalar(item))

    walk(value)
    parts.append("".join(text).encode())
    return b"".join(parts)


class Base64JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
