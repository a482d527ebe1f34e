"""The event loop and HTTP parser a serving process (`serve`, `worker`) runs on: uvloop and
httptools where they are installed (uvicorn's own choice), else asyncio's loop and h11.

Neither is installed with the server: on the 2-core development machine, under 1000 long-polling
clients, they did not raise the worker's throughput and cost ~3 MB of API memory (two runs side
by side in bench/RESULTS.md, `bench_load.py --loops`). `pip install uvloop httptools` and
compare on your own hardware."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from imagesmith.config import Settings

T = TypeVar("T")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _required(module: str, setting: str) -> None:
    if not _installed(module):
        raise SystemExit(f"{setting}={module}, but {module} is not installed: pip install {module}")


def event_loop(settings: Settings) -> Literal["asyncio", "uvloop"]:
    if settings.event_loop == "uvloop":
        _required("uvloop", "IMAGESMITH_EVENT_LOOP")
    if settings.event_loop != "auto":
        return settings.event_loop
    return "uvloop" if sys.platform != "win32" and _installed("uvloop") else "asyncio"


def http_parser(settings: Settings) -> Literal["h11", "httptools"]:
    if settings.http_parser == "httptools":
        _required("httptools", "IMAGESMITH_HTTP_PARSER")
    if settings.http_parser != "auto":
        return settings.http_parser
    return "httptools" if _installed("httptools") else "h11"


def loop_name() -> str:
    """The running loop's kind, read from the loop itself: "uvloop" or "asyncio"."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def run(main: Callable[[], Coroutine[Any, Any, T]], settings: Settings) -> T:
    """`asyncio.run(main())` on the configured loop."""
    if event_loop(settings) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())


def settle_heap() -> None:
    """Call once a serving process has started (`unsettle_heap` when it stops). What start-up
    left behind is collected, and the rest (modules, routes, models, mappers: ~150k objects that
    live as long as the process) is frozen out of the collector's view (`gc.freeze`).
    Otherwise each full collection walks all of it while the event loop waits: 70-80 ms on
    the 2-core VM, the slowest GETs of a busy server (bench/RESULTS.md)."""
    gc.collect()
    gc.freeze()


def unsettle_heap() -> None:
    """When the process stops serving (an app started in-process may be started again, as
    tests do): what was frozen is the collector's again, and what died meanwhile is freed."""
    gc.unfreeze()
