"""The event loop and HTTP parser a serving process (`serve`, `worker`) runs on.

uvloop and httptools are C: under a thousand long-polling clients the API process is CPU-bound
on one core, and every millisecond it spends in the loop or the parser is taken from the model
child on a small machine (bench/RESULTS.md has the side-by-side figures)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from imagesmith.config import Settings

T = TypeVar("T")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def event_loop(settings: Settings) -> Literal["asyncio", "uvloop"]:
    if settings.event_loop != "auto":
        return settings.event_loop
    return "uvloop" if sys.platform != "win32" and _installed("uvloop") else "asyncio"


def http_parser(settings: Settings) -> Literal["h11", "httptools"]:
    if settings.http_parser != "auto":
        return settings.http_parser
    return "httptools" if _installed("httptools") else "h11"


def run(main: Callable[[], Coroutine[Any, Any, T]], settings: Settings) -> T:
    """`asyncio.run(main())` on the configured loop."""
    if event_loop(settings) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())
