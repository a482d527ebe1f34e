"""What `imagesmith serve` becomes once it has parsed its options and migrated: the API (and its
embedded worker) with nothing of the command line loaded.

`serve` execs `python -m imagesmith.serve_process HOST PORT WORKER LOG_LEVEL` (same PID, so
signals and process managers see no difference). The serving process then never imports typer
or rich, nor the command-line client httpx imports with itself (rich and pygments): ~6 MB of a
process that serves for weeks (bench/RESULTS.md, 2026-12-06). click stays: uvicorn's own
`__init__` imports it."""

from __future__ import annotations

import sys
import types


def keep_httpx_cli_out() -> None:
    """httpx's `__init__` imports its command-line client (`httpx._main`: click, rich, pygments)
    whenever those are installed, and our CLI installs them. A serving process never runs it:
    an empty `httpx._main` stands in for it (httpx's own fallback when they are missing)."""
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stub = types.ModuleType("httpx._main")

    def main() -> None:
        raise SystemExit("httpx's command-line client is not loaded in an imagesmith server")

    stub.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stub


def argv(host: str, port: int, embedded_worker: bool, log_level: str) -> list[str]:
    """The command line `serve` execs."""
    worker = "worker" if embedded_worker else "no-worker"
    return [sys.executable, "-m", "imagesmith.serve_process", host, str(port), worker, log_level]


def serve(host: str, port: int, embedded_worker: bool, log_level: str) -> None:
    keep_httpx_cli_out()
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from imagesmith import serving
    from imagesmith.app import create_app
    from imagesmith.config import Settings
    from imagesmith.logging import configure_logging

    settings = Settings()
    configure_logging(log_level, settings.log_format)
    uvicorn.run(
        create_app(settings, embedded_worker=embedded_worker),
        host=host,
        port=port,
        log_level=log_level,
        loop=serving.event_loop(settings),
        http=serving.http_parser(settings),
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
        timeout_keep_alive=settings.keep_alive_seconds,
        # JSON logs: uvicorn's loggers go through the root handler's formatter too.
        log_config=None if settings.log_format == "json" else LOGGING_CONFIG,
    )


if __name__ == "__main__":
    _host, _port, _worker, _level = sys.argv[1:5]
    serve(_host, int(_port), _worker == "worker", _level)
