"""Gauges and logs an operator scrapes and ships: `/metrics` in Prometheus format (parsed with
prometheus-client's own parser), who may read it, and JSON log lines with the ids bound."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serverproc import Server, create_key, wait_terminal

TOKEN = "scrape-me-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("metrics"), models_dir, metrics_token=TOKEN, log_format="json"
    ).start()
    yield srv
    srv.stop()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_jobs_requests_and_the_queue(server: Server) -> None:
    key = create_key(server.env, "gauge", "site")
    with server.client(key) as client:
        ids = [
            client.post("/api/v1/generations", json={"prompt": f"p{i}", "steps": 3}).json()["data"][
                "id"
            ]
            for i in range(2)
        ]
        for generation_id in ids:
            assert wait_terminal(client, generation_id)["status"] == "success"
        assert client.get("/api/v1/generations/nope").status_code == 404
        cancelled = client.post(
            "/api/v1/generations", json={"prompt": "never mind", "steps": 50, "width": 512}
        ).json()["data"]["id"]
        client.post(f"/api/v1/generations/{cancelled}/cancel")
        scraped = httpx.get(f"{server.url}/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    found = samples(scraped.text)
    assert value(found, "imagesmith_jobs_total", model="tiny-sd", outcome="success") == 2
    assert value(found, "imagesmith_jobs_total", model="tiny-sd", outcome="cancelled") == 1
    assert value(found, "imagesmith_job_duration_seconds_count", model="tiny-sd") == 2
    assert value(found, "imagesmith_queue_wait_seconds_count", model="tiny-sd") >= 2
    assert value(found, "imagesmith_denoise_steps_total", model="tiny-sd") >= 6
    assert value(found, "imagesmith_denoise_steps_per_second", model="tiny-sd") > 0
    # Route templates, never raw ids.
    get_route = {"method": "GET", "route": "/api/v1/generations/{generation_id}"}
    assert value(found, "imagesmith_http_requests_total", **get_route, status="200") >= 2
    assert value(found, "imagesmith_http_requests_total", **get_route, status="404") == 1
    latency = "imagesmith_http_request_duration_seconds_count"
    assert value(found, latency, **get_route, status="404") == 1
    assert not any(generation_id in scraped.text for generation_id in ids)
    assert value(found, "imagesmith_queue_jobs", status="pending", model="tiny-sd") == 0
    assert value(found, "imagesmith_workers_live") == 1
    assert any(name == "imagesmith_worker_last_heartbeat_timestamp_seconds" for name, _ in found)
    assert value(found, "imagesmith_webhook_deliveries_pending") == 0


def test_only_loopback_or_the_token_may_read_metrics(server: Server) -> None:
    proxied = {"X-Forwarded-For": "203.0.113.9"}  # a reverse proxy on this host, not trusted
    refused = httpx.get(f"{server.url}/metrics", headers=proxied)
    assert refused.status_code == 403 and "IMAGESMITH_METRICS_TOKEN" in refused.text
    wrong = httpx.get(f"{server.url}/metrics", headers={**proxied, "Authorization": "Bearer x"})
    assert wrong.status_code == 403
    accented = {**proxied, "Authorization": "Bearer \u00e9t\u00e9".encode("latin-1")}  # was a 500
    assert httpx.get(f"{server.url}/metrics", headers=accented).status_code == 403
    allowed = httpx.get(
        f"{server.url}/metrics", headers={**proxied, "Authorization": f"Bearer {TOKEN}"}
    )
    assert allowed.status_code == 200 and "imagesmith_http_requests_total" in allowed.text


def test_json_logs_bind_the_ids(server: Server) -> None:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    claimed = [line for line in lines if line["event"] == "generation.claimed"]
    assert claimed and {"generation_id", "worker_id", "ts", "level"} <= set(claimed[0])
    assert any(line["logger"].startswith("uvicorn") for line in lines)
