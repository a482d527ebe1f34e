"""Plans, monthly quotas and concurrency caps, counted for every dialect, exact under
concurrency. The server has no worker, so every job stays pending (in flight) on purpose."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.serverproc import Server, create_key, run_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("quotas"), models_dir).start("--no-worker")
    yield srv
    srv.stop()


def plan(server: Server, project: str, *args: str) -> str:
    result = run_cli(server.env, "plan", "set", "--org", "quota", "--project", project, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def create(server: Server, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/generations",
        headers={"X-API-Key": key},
        json={"prompt": "a red circle"},
        timeout=60,
    )


def test_twenty_creates_at_once_against_a_quota_of_five_admit_exactly_five(
    server: Server,
) -> None:
    key = create_key(server.env, "quota", "race")
    plan(server, "race", "free", "--monthly", "5", "--concurrent", "100")
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: create(server, key), range(20)))
    assert Counter(r.status_code for r in answers) == {201: 5, 429: 15}
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "QUOTA_EXCEEDED"
    reset = int(refused.headers["Retry-After"])
    assert 0 < reset <= 31 * 24 * 3600 and refused.headers["X-RateLimit-Reset"] == str(reset)
    assert refused.headers["X-RateLimit-Limit"] == "5"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    shown = run_cli(server.env, "plan", "show", "--org", "quota", "--project", "race").stdout
    assert "used in" in shown and ": 5;" in shown and "pending or processing now: 5" in shown


def test_the_free_plan_caps_concurrency_and_the_month(server: Server) -> None:
    key = create_key(server.env, "quota", "free")
    plan(server, "free", "free")
    assert create(server, key).status_code == 201
    second = create(server, key)  # the first is still pending: free allows one at a time
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "CONCURRENCY_LIMIT_EXCEEDED"
    assert second.headers["Retry-After"] == "5"
    plan(server, "free", "free", "--monthly", "3", "--concurrent", "10")
    assert [create(server, key).status_code for _ in range(3)] == [201, 201, 429]


def test_every_dialect_counts_against_one_quota_and_answers_in_its_shape(
    server: Server,
) -> None:
    key = create_key(server.env, "quota", "mixed")
    plan(server, "mixed", "starter", "--monthly", "1")
    assert create(server, key).status_code == 201
    stablecog = httpx.post(
        f"{server.url}/v1/image/generation/create",
        headers={"Authorization": f"Bearer {key}"},
        json={"prompt": "x"},
        timeout=60,
    )
    assert stablecog.status_code == 429 and stablecog.json()["error"] == "quota_exceeded"
    assert int(stablecog.headers["Retry-After"]) > 0


def test_plans_through_the_admin_api(server: Server) -> None:
    master = run_cli(server.env, "keys", "create", "--type", "master").stdout.splitlines()[-1]
    create_key(server.env, "quota", "admin")
    with httpx.Client(base_url=server.url, headers={"X-API-Key": master}) as admin:
        path = "/api/admin/projects/quota/admin/plan"
        put = admin.put(path, json={"plan": "premium", "monthlyQuota": 50})
        assert put.status_code == 200, put.text
        data = admin.get(path).json()["data"]
        assert (data["plan"], data["monthlyQuota"], data["concurrentLimit"]) == ("premium", 50, 10)
        assert admin.put(path, json={"plan": "gold"}).status_code == 400


def test_a_rerun_counts_against_the_month_and_the_concurrency_cap(server: Server) -> None:
    """A regenerate (or an edit's re-run) is new work: it counts like a create, so creating one
    job and regenerating it for ever is no way around a plan. A job that supersedes its own
    running attempt is not a second job in flight."""
    key = create_key(server.env, "quota", "rerun")
    plan(server, "rerun", "free", "--monthly", "3", "--concurrent", "1")
    first = create(server, key).json()["data"]["id"]
    with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=60) as api:
        again = api.post(f"/api/v1/generations/{first}/regenerate")
        assert again.status_code == 200, again.text  # supersedes itself: 1 in flight
        assert api.post(f"/api/v1/generations/{first}/cancel").status_code == 200
        second = create(server, key)
        assert second.status_code == 201, second.text  # the month: 3 of 3 used
        busy = api.post(f"/api/v1/generations/{first}/regenerate")
        assert busy.status_code == 429, busy.text
        assert busy.json()["error"]["code"] == "CONCURRENCY_LIMIT_EXCEEDED"
        api.post(f"/api/v1/generations/{second.json()['data']['id']}/cancel")
        spent = api.put(f"/api/v1/generations/{first}", json={"prompt": "a blue square"})
        assert spent.status_code == 429, spent.text
        assert spent.json()["error"]["code"] == "QUOTA_EXCEEDED"


def test_over_the_plan_an_init_image_url_is_not_fetched(server: Server) -> None:
    """The plan is checked before the fetch (outbound traffic, a decode, a stored image)."""
    from tests.pictures import png
    from tests.stubs import QuietHandler, local_server

    hits: list[str] = []

    class Picture(QuietHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_body(200, png(), "image/png")

    key = create_key(server.env, "quota", "fetcher")
    plan(server, "fetcher", "free", "--monthly", "100", "--concurrent", "1")
    assert create(server, key).status_code == 201  # stays pending: the cap is reached
    before = server.stored_keys()
    with local_server(Picture) as base:
        refused = httpx.post(
            f"{server.url}/api/v1/generations",
            headers={"X-API-Key": key},
            json={"prompt": "x", "initImage": f"{base}/a.png"},
            timeout=60,
        )
    assert refused.status_code == 429, refused.text
    assert hits == [] and server.stored_keys() == before
