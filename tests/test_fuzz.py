"""Schemathesis over the whole OpenAPI document of a real server, every dialect at once: each
operation gets generated requests (bounded examples, fixed seed) and every answer must be no
5xx and must match the response schema the route documents. The summary line — operations,
requests, failures — is shown at the end of the run.

The server runs without a worker (generated jobs just wait) and with short synchronous waits, so
a create that waits ends quickly; the documented `500` for a create that outlived its wait
(Stablecog's `TIMEOUT`, OpenAI's `timeout`) is checked for its shape instead."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.serverproc import Server, create_key, run_cli

CALLS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("fuzz"),
        models_dir,
        stablecog_wait_seconds=0.2,
        max_wait_seconds=0.5,
    ).start("--no-worker")
    yield srv
    srv.stop()
    operations = len([label for label in CALLS if label != "__failed__"])
    line = (
        f"schemathesis: {operations} operations, {sum(CALLS.values()) - CALLS['__failed__']} "
        f"requests, {CALLS['__failed__']} failed (not_a_server_error, "
        "response_schema_conformance)"
    )
    print(f"summary: {line}")  # shown at the end of the run (tests/conftest.py)


@pytest.fixture(scope="module")
def keys(fuzz_server: Server) -> dict[str, str]:
    project = create_key(fuzz_server.env, "fuzz", "app")
    result = run_cli(fuzz_server.env, "keys", "create", "--type", "master")
    return {"project": project, "master": result.stdout.strip().splitlines()[-1]}


def operations() -> list[Any]:
    """Every operation of the schema the server serves (built from the same app here, so the
    parametrisation is known when tests are collected)."""
    from imagesmith.app import create_app

    document = create_app(embedded_worker=False).openapi()
    loaded = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in loaded.get_all_operations()]


OPERATIONS = operations()


def is_timeout(response: Any) -> bool:
    """The one 5xx the synchronous dialects define: the job outlived the wait (this server has
    no worker, on purpose), was cancelled and refunded — Stablecog's `TIMEOUT`, OpenAI's
    `timeout` code."""
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error")
    return error == "TIMEOUT" or (isinstance(error, dict) and error.get("code") == "timeout")


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_operation_answers_5xx_or_off_schema(
    operation: Any, fuzz_server: Server, keys: dict[str, str]
) -> None:
    admin = operation.path.startswith("/api/admin")
    key = keys["master" if admin else "project"]
    headers = {"X-API-Key": key, "Authorization": f"Bearer {key}"}
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=12,
        derandomize=True,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        response = case.call(base_url=fuzz_server.url, headers=headers, timeout=30)
        CALLS[operation.label] += 1
        timed_out = response.status_code == 500 and is_timeout(response)
        checks = [response_schema_conformance]
        if not timed_out:
            checks.append(not_a_server_error)
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except BaseException:  # schemathesis raises an exception group
            CALLS["__failed__"] += 1
            raise

    check()
