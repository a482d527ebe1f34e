"""What `imagesmith serve` becomes once it has parsed its options and migrated: the API (and its
embedded worker) with nothing of the command line loaded.

`serve` execs `python -m imagesmith.serve_process HOST PORT WORKER LOG_LEVEL` (same PID, so
signals and process managers see no difference). The serving process then never imports typer
or rich, nor the command-line client httpx imports with itself (rich and pygments): ~6 MB of a
process that serves for weeks (bench/RESULTS.md, 2026-12-06), nor the MinIO SDK's admin client
(pycryptodome, cffi, pycparser: ~3 MB). click stays: uvicorn's own `__init__` imports it."""

from __future__ import annotations

import sys
import types


def keep_unused_imports_out() -> None:
    """Two packages import, from their `__init__`, parts a serving process never runs; an
    empty module stands in for each (in sys.modules before the package is first imported):

    * httpx imports its command-line client (`httpx._main`: click, rich, pygments) whenever
      those are installed, and our CLI installs them (httpx's own fallback when they are
      missing is such a stand-in);
    * the MinIO SDK (the S3 store) imports its admin client, `minio.minioadmin` (users and
      policies of a MinIO server), and with it pycryptodome, cffi and pycparser (3.2 MB here).
      The S3 client we use never touches it."""

    def httpx_main() -> None:
        raise SystemExit("httpx's command-line client is not loaded in an imagesmith server")

    class MinioAdmin:
        def __init__(self, *_args: object, **_kwargs: object) -> None:
            raise RuntimeError("the MinIO admin client is not loaded in an imagesmith server")

    for package, name, attribute, value in (
        ("httpx", "httpx._main", "main", httpx_main),
        ("minio", "minio.minioadmin", "MinioAdmin", MinioAdmin),
    ):
        if package in sys.modules or name in sys.modules:
            continue  # already imported: too late, and harmless
        stand_in = types.ModuleType(name)
        setattr(stand_in, attribute, value)
        sys.modules[name] = stand_in


def argv(host: str, port: int, embedded_worker: bool, log_level: str) -> list[str]:
    """The command line `serve` execs."""
    worker = "worker" if embedded_worker else "no-worker"
    return [sys.executable, "-m", "imagesmith.serve_process", host, str(port), worker, log_level]


def serve(host: str, port: int, embedded_worker: bool, log_level: str) -> None:
    keep_unused_imports_out()
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
