"""Every dialect this server speaks. Adding one is a package under `api/` and a line here; the
first is the default for paths no dialect owns."""

from __future__ import annotations

from imagesmith.api.devkit.dialect import DEVKIT
from imagesmith.api.dialect import Dialect
from imagesmith.api.native.dialect import NATIVE
from imagesmith.api.openai.dialect import OPENAI
from imagesmith.api.stablecog.dialect import STABLECOG

DIALECTS: tuple[Dialect, ...] = (NATIVE, STABLECOG, DEVKIT, OPENAI)
