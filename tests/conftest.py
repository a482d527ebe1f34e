"""Shared fixtures: one tiny-model folder per session, one real server per module. And the
turns that let a test marked `alone` run with nothing beside it when pytest-xdist runs modules
side by side (scripts/test)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serverproc import Server, create_key

# The run's lock files, named by the controller before its workers start (they inherit it).
TURNS = "IMAGESMITH_TEST_TURNS"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        base = Path(tempfile.gettempdir()) / f"imagesmith-tests-{uuid.uuid4().hex}"
        os.environ.setdefault(TURNS, str(base))


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        for suffix in (".gate", ".lock"):
            Path(os.environ[TURNS] + suffix).unlink(missing_ok=True)


@contextlib.contextmanager
def turn(alone: bool) -> Iterator[None]:
    """Every test holds the run's lock shared; an `alone` test holds it exclusively, so it starts
    once the tests running on the other workers end, and none starts until it ends. The gate
    keeps a waiting `alone` test from starving: while it waits there, no new test takes a turn."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # not under xdist: one test at a time anyway
        yield
        return
    base = os.environ[TURNS]
    with open(f"{base}.gate", "a") as gate, open(f"{base}.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    # Around setup, call and teardown: a module's server starts and stops inside a turn too.
    with turn(alone=item.get_closest_marker("alone") is not None):
        return (yield)


SUMMARY = "summary: "
summaries: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A line a test or fixture prints as `summary: …` (the fuzz run's counts) is shown at the
    end of the run: printed output reaches the reports, where xdist workers' terminals do not."""
    for _section, text in report.sections:
        summaries.extend(
            line.removeprefix(SUMMARY) for line in text.splitlines() if line.startswith(SUMMARY)
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in summaries:
        terminalreporter.write_line(line)


# The longest modules first (seconds on one process, 2026-12-07: 109, 91, 70, 50, 45, 44, 42):
# xdist hands modules out in this order, so the run does not end on one worker with a long
# module left while the others idle.
LONGEST_FIRST = (
    "test_remote.py",
    "test_crash_recovery.py",
    "test_abuse.py",
    "test_seed_conformance.py",
    "test_webhooks.py",
    "test_scale_out.py",
    "test_sdk.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's tests keep their order


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The first model child builds tiny-sd here; later servers reuse it.
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("server"), models_dir, lease_seconds=5).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key_a(server: Server) -> str:
    return create_key(server.env, "acme", "web")


@pytest.fixture(scope="module")
def key_b(server: Server) -> str:
    return create_key(server.env, "globex", "app")


@pytest.fixture()
def api(server: Server, key_a: str) -> Iterator[httpx.Client]:
    with server.client(key_a) as client:
        yield client
