"""Native response shapes (camelCase, as in the seed pages) and the renderers that fill them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from imagesmith.generation.record import (
    GenerationOut,
    OutputImage,
    ProgressOut,
    ReferenceOut,
    render_generation,
    render_image,
)

__all__ = [
    "MAX_OFFSET",
    "DeletedEnvelope",
    "GenerationEnvelope",
    "GenerationListEnvelope",
    "GenerationOut",
    "OutputImage",
    "Pagination",
    "ProgressOut",
    "ReferenceOut",
    "paginated",
    "render_generation",
    "render_image",
]


class GenerationEnvelope(BaseModel):
    success: bool = True
    data: GenerationOut


class Pagination(BaseModel):
    total: int
    limit: int
    offset: int
    hasMore: bool


class GenerationListEnvelope(BaseModel):
    success: bool = True
    data: list[GenerationOut]
    pagination: Pagination


class DeletedEnvelope(BaseModel):
    success: bool = True
    message: str
    data: dict[str, str]


# Offsets past this are refused up front (a database integer cannot hold an arbitrary number).
MAX_OFFSET = 1_000_000_000


def paginated(data: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    """The native list envelope: `{success, data, pagination {total, limit, offset, hasMore}}`."""
    return {
        "success": True,
        "data": data,
        "pagination": {
            "total": total,
            "limit": limit,
            "offset": offset,
            "hasMore": offset + len(data) < total,
        },
    }
