"""The package graph points one way: api → services → repositories/models → db, with the model
catalogue as plain data underneath, engines beside the core, and torch only in the model child.

Read from the source (every import statement, function-level ones included), so an import that
runs against the intended direction fails here before it can grow into a cycle."""

from __future__ import annotations

import ast
import graphlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import imagesmith

ROOT = Path(imagesmith.__file__).parent
CORE = {
    "auth", "generation", "image", "flow", "live", "limits", "models", "db", "storage", "webhooks",
}  # fmt: skip
INFRA = {"config", "errors", "logging", "runtime", "catalog", "metrics"}
HEAVY = ("torch", "diffusers", "transformers", "accelerate")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def unit(module: str) -> str:
    """The node a module belongs to: its top-level package (migrations stand apart: Alembic's
    env.py loads the ORM tables to compare against)."""
    parts = module.split(".")
    if parts[1:3] == ["db", "migrations"]:
        return "db.migrations"
    return parts[1] if len(parts) > 1 else "imagesmith"


MODULES = {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def edges(modules: dict[str, set[str]] = MODULES) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imported in modules.items():
        for target in imported:
            if target in modules and unit(target) != unit(module):
                graph[unit(module)].add(unit(target))
    return graph


def offenders(
    source: str, banned: list[str] | tuple[str, ...], modules: dict[str, set[str]] = MODULES
) -> list[str]:
    """`module -> import` for modules under `source` importing anything under `banned`."""
    found = []
    for module, imported in modules.items():
        if module == source or module.startswith(source + "."):
            found += [
                f"{module} -> {name}"
                for name in sorted(imported)
                if any(name == b or name.startswith(b + ".") for b in banned)
            ]
    return found


def test_the_package_graph_has_no_cycle() -> None:
    graph = edges()
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError
    assert "api" in order and "generation" in order


def test_the_api_reaches_the_core_only_through_services() -> None:
    banned = ["imagesmith.engines", "imagesmith.worker", "imagesmith.db", "sqlalchemy"]
    repositories = [m for m in MODULES if m.endswith(".repository") or m.endswith(".workers")]
    assert offenders("imagesmith.api", banned + repositories) == []


def test_the_core_never_imports_engines_workers_or_dialects() -> None:
    banned = ["imagesmith.engines", "imagesmith.worker", "imagesmith.api", "imagesmith.app"]
    for package in sorted(CORE | INFRA):
        assert offenders(f"imagesmith.{package}", [*banned, "imagesmith.cli"]) == []


def engine_offenders(modules: dict[str, set[str]]) -> list[str]:
    others = {unit(m) for m in modules} - {"engines", "catalog"}
    return offenders("imagesmith.engines", [f"imagesmith.{u}" for u in others], modules)


def test_engines_depend_on_the_catalogue_alone() -> None:
    assert engine_offenders(MODULES) == []


def test_the_catalogue_is_plain_data() -> None:
    others = {unit(m) for m in MODULES} - {"catalog"}
    assert offenders("imagesmith.catalog", [f"imagesmith.{u}" for u in others]) == []
    assert offenders("imagesmith.catalog", ["sqlalchemy", "fastapi", *HEAVY]) == []


def test_repositories_and_tables_do_not_call_services() -> None:
    services = [m for m in MODULES if m.endswith(".service") or m.endswith(".jobs")]
    for module in MODULES:
        if module.endswith(".repository") or module.startswith("imagesmith.models"):
            assert offenders(module, services) == []


def test_no_dialect_imports_another() -> None:
    dialects = {m.split(".")[2] for m in MODULES if m.count(".") >= 3 and ".api." in m}
    assert {"native", "stablecog"} <= dialects
    for dialect in dialects:
        others = [f"imagesmith.api.{d}" for d in dialects - {dialect}]
        assert offenders(f"imagesmith.api.{dialect}", others) == []


def test_only_the_model_child_engines_and_the_offline_trainer_import_torch() -> None:
    allowed = ("imagesmith.engines", "imagesmith.demo", "imagesmith.worker.child")
    heavy = [
        f"{module} -> {name}"
        for module, imported in MODULES.items()
        if not module.startswith(allowed)
        for name in imported
        if name.split(".")[0] in HEAVY
    ]
    assert heavy == []


def test_this_check_sees_a_backwards_import(tmp_path: Path) -> None:
    """The rules fail on the import the issue names, planted in a copy of an engine module."""
    planted = tmp_path / "base.py"
    planted.write_text((ROOT / "engines" / "base.py").read_text() + "\nimport imagesmith.worker\n")
    modules = {**MODULES, "imagesmith.engines.base": imports_of(planted)}
    assert engine_offenders(modules) == ["imagesmith.engines.base -> imagesmith.worker"]
    try:
        list(graphlib.TopologicalSorter(edges(modules)).static_order())
    except graphlib.CycleError:
        pass
    else:
        raise AssertionError("engines -> worker -> engines was not seen as a cycle")


def test_the_sdk_imports_nothing_of_the_server() -> None:
    """`imagesmith.client` installs without the server: it imports only itself, httpx, httpx-sse,
    pydantic, typer and rich (and the standard library)."""
    allowed_third_party = {"httpx", "httpx_sse", "pydantic", "typer", "rich"}
    found = []
    for module, imported in MODULES.items():
        if not module.startswith("imagesmith.client"):
            continue
        for name in imported:
            top = name.split(".")[0]
            if top == "imagesmith":
                if not name.startswith("imagesmith.client"):
                    found.append(f"{module} -> {name}")
            elif top not in allowed_third_party and top not in sys.stdlib_module_names:
                found.append(f"{module} -> {name}")
    assert found == []
    # The command's own module reaches the server only inside the commands that run it.
    top_level = {
        node.module
        for node in ast.parse((ROOT / "cli.py").read_text()).body
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert {m for m in top_level if m.startswith("imagesmith.")} <= {
        "imagesmith.client.cli",
        "imagesmith.logging",
    }


SERVING_IMPORTS = """
import json, sys
from imagesmith import serve_process
serve_process.keep_unused_imports_out()
import httpx, uvicorn
from imagesmith.app import create_app
from imagesmith.runtime import Runtime
from imagesmith.storage.s3 import S3Store
from imagesmith.webhooks.sender import WebhookSender
create_app()
unused = ("typer", "rich", "pygments", "PIL", "Crypto", "cffi", "pycparser")
print(json.dumps(sorted(m for m in unused if m in sys.modules)))
"""


def test_a_serving_process_loads_nothing_of_the_command_line(
    tmp_path: Path, models_dir: Path
) -> None:
    """`serve` parses its options with typer, then execs into `imagesmith.serve_process` (the
    same PID): the API holds no typer or rich, nor the pygments httpx's own command-line client
    would bring (~6 MB of RSS, bench/RESULTS.md), nor the MinIO SDK's admin client with
    pycryptodome, cffi and pycparser (~3 MB); click it does hold, uvicorn's `__init__` imports
    it. Pillow loads with the first image a process checks, not before (~2 MB)."""
    from tests.serverproc import Server

    srv = Server(tmp_path, models_dir).start("--no-worker", wait_child=False)
    try:
        cmdline = Path(f"/proc/{srv.pid}/cmdline").read_bytes().split(b"\0")
        assert b"imagesmith.serve_process" in cmdline, cmdline
        assert srv.client().get("/health").status_code == 200
    finally:
        srv.stop()
    loaded = subprocess.run(
        [sys.executable, "-c", SERVING_IMPORTS], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(loaded) == []


FROZEN_AFTER_START = """
import asyncio, gc
from imagesmith.app import create_app
app = create_app(embedded_worker=False)
async def main() -> tuple[int, int]:
    async with app.router.lifespan_context(app):
        serving = gc.get_freeze_count()
    return serving, gc.get_freeze_count()
print(*asyncio.run(main()))
"""


def test_a_started_api_keeps_its_start_up_objects_out_of_the_collectors_full_passes(
    tmp_path: Path,
) -> None:
    """Once started, a serving process freezes what start-up built (`serving.settle_heap`):
    without it, a full collection walked all of it while the event loop waited, 70-80 ms on the
    dev VM, the slowest GETs of a busy server (bench/RESULTS.md). Stopped, it unfreezes them:
    an app may be started again in the same process (tests do)."""
    import os

    env = {**os.environ, "IMAGESMITH_DATA_DIR": str(tmp_path)}
    frozen = subprocess.run(
        [sys.executable, "-c", FROZEN_AFTER_START],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    serving, stopped = (int(count) for count in frozen.split())
    assert serving > 50_000 and stopped == 0  # an app started again in-process starts afresh
