"""The deployment file runs what it advertises: deploy/compose.yaml is valid against the
Compose Specification's JSON schema (tests/data/compose-spec.json, the copy docker-compose
1.29.2 ships as compose/config/compose_spec.json), only the load balancer publishes a port, so
`--scale api=N` can start N replicas, and the balancer's nginx config sends everything to them
with what long polls, SSE and the largest upload need."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.stack_independent  # CI runs it on the embedded stack only

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_file_matches_the_compose_specification() -> None:
    jsonschema.validate(compose(), json.loads(SCHEMA.read_text()))


def test_only_the_balancer_publishes_a_port_so_the_api_scales() -> None:
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"lb"}
    assert services["lb"]["ports"] == ["8000:8000"]
    assert services["api"]["expose"] == ["8000"]
    assert "--no-worker" in services["api"]["command"]
    mounted = services["lb"]["volumes"][0].split(":")[0]
    assert (DEPLOY / mounted).resolve() == (DEPLOY / "nginx.conf").resolve()
    # Workers send webhooks and every replica signs end users' tokens: both need the shared env.
    env = compose()["x-imagesmith-env"]
    assert env["IMAGESMITH_PUBLIC_URL"] == "http://localhost:8000"
    assert "IMAGESMITH_JWT_SECRET" in services["api"]["environment"]


def test_the_balancer_passes_long_polls_streams_and_uploads() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"set \$api http://api:8000;\s*proxy_pass \$api;", conf)  # re-resolved
    assert "resolver 127.0.0.11" in conf
    assert "proxy_buffering off;" in conf  # server-sent events
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1))  # type: ignore[union-attr]
    assert timeout > 300  # Prefer: wait is capped at 300 s
    size = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1))  # type: ignore[union-attr]
    assert size * 2**20 > 51 * 2**20  # the devkit4ai multipart limit
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in conf
