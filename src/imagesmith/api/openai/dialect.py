"""The OpenAI Images dialect: `/v1/images/...`, `/v1/models`, Bearer keys, OpenAI's errors."""

from __future__ import annotations

from imagesmith.api.dialect import Dialect
from imagesmith.api.openai import routes
from imagesmith.api.openai.errors import OpenAIError, render_openai_error

OPENAI = Dialect(
    name="openai",
    routers=(routes.router,),
    render_error=render_openai_error,
    error_schema=OpenAIError,
    prefixes=("/v1/images", "/v1/models"),
)
