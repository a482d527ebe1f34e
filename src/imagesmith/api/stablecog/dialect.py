"""The Stablecog dialect: `/v1/image/...` and `/v1/credits`, `Authorization: Bearer`, bare JSON."""

from __future__ import annotations

from imagesmith.api.dialect import Dialect
from imagesmith.api.stablecog import routes
from imagesmith.api.stablecog.errors import StablecogError, render_stablecog_error

STABLECOG = Dialect(
    name="stablecog",
    routers=(routes.router,),
    render_error=render_stablecog_error,
    error_schema=StablecogError,
    prefixes=("/v1/image", "/v1/credits"),
)
