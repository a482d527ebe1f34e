"""Keys: the CLI contract, admin routes for master keys, bootstrap, revocation and expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.serverproc import Server, create_key, run_cli


@pytest.fixture(scope="module")
def api_only(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    """An API without a worker on a fresh database (no keys yet)."""
    srv = Server(tmp_path_factory.mktemp("api-only"), models_dir).start("--no-worker")
    yield srv
    srv.stop()


def test_bootstrap_once_then_admin_flow(api_only: Server) -> None:
    with api_only.client() as anonymous:
        first = anonymous.post("/api/bootstrap/initial-key")
        assert first.status_code == 201, first.text
        master = first.json()["data"]
        assert master["type"] == "master" and master["key"].startswith(master["keyPrefix"])
        again = anonymous.post("/api/bootstrap/initial-key")
        assert again.status_code == 403 and again.json()["error"]["code"] == "FORBIDDEN"

    with api_only.client(master["key"]) as admin:
        # A master key with no project cannot generate: it says what to do instead.
        refused = admin.post("/api/v1/generations", json={"prompt": "x"})
        assert refused.status_code == 403 and "project key" in refused.json()["error"]["message"]
        made = admin.post(
            "/api/admin/keys",
            json={
                "type": "project",
                "organizationSlug": "acme",
                "projectSlug": "shop",
                "name": "ci",
            },
        )
        assert made.status_code == 201, made.text
        project_key = made.json()["data"]
        assert project_key["projectSlug"] == "shop" and project_key["expiresAt"] is not None
        bad = admin.post(
            "/api/admin/keys",
            json={"type": "project", "organizationSlug": "Acme Inc", "projectSlug": "shop"},
        )
        assert (
            bad.status_code == 400 and "Invalid organization slug" in bad.json()["error"]["message"]
        )
        listed = admin.get("/api/admin/keys").json()["data"]
        assert {k["id"] for k in listed} >= {master["id"], project_key["id"]}
        assert all("key" not in k for k in listed)

    with api_only.client(project_key["key"]) as project:
        created = project.post(
            "/api/v1/generations", json={"prompt": "queued while no worker runs"}
        )
        assert created.status_code == 201 and created.json()["data"]["status"] == "pending"
        assert project.get("/api/admin/keys").status_code == 403

    with api_only.client(master["key"]) as admin:
        revoked = admin.delete(f"/api/admin/keys/{project_key['id']}")
        assert revoked.status_code == 200 and revoked.json()["data"]["status"] == "revoked"
        assert admin.delete("/api/admin/keys/nope").status_code == 404
    with api_only.client(project_key["key"]) as project:
        gone = project.get("/api/v1/generations")
        assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]


def test_cli_keys_create_list_revoke(api_only: Server) -> None:
    key = create_key(api_only.env, "cli-org", "cli-proj")
    assert key.startswith("ims_")
    with api_only.client(key) as client:
        assert client.get("/api/v1/generations").status_code == 200
    listing = run_cli(api_only.env, "keys", "list")
    assert listing.returncode == 0 and key[:12] in listing.stdout
    revoked = run_cli(api_only.env, "keys", "revoke", key[:12])
    assert revoked.returncode == 0, revoked.stderr
    with api_only.client(key) as client:
        assert client.get("/api/v1/generations").status_code == 401
    bad = run_cli(api_only.env, "keys", "create", "--org", "Bad Org", "--project", "x")
    assert bad.returncode == 2 and "Invalid organization slug" in bad.stderr
    master = run_cli(api_only.env, "keys", "create", "--type", "master")
    assert master.returncode == 0 and master.stdout.strip().splitlines()[-1].startswith("ims_")


def test_expired_key_is_refused(api_only: Server) -> None:
    key = create_key(api_only.env, "exp-org", "exp-proj")
    api_only.sql(
        "UPDATE api_keys SET expires_at = :past WHERE key_prefix = :prefix",
        past=datetime(2020, 1, 1, tzinfo=UTC),
        prefix=key[:12],
    )
    with api_only.client(key) as client:
        response = client.get("/api/v1/generations")
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


def test_last_used_is_recorded(api_only: Server) -> None:
    key = create_key(api_only.env, "used-org", "used-proj")
    with api_only.client(key) as client:
        client.get("/api/v1/generations")
    deadline = time.monotonic() + 10  # written in the background (auth/last_used.py)
    while True:
        ((last_used,),) = api_only.sql(
            "SELECT last_used_at FROM api_keys WHERE key_prefix = :prefix", prefix=key[:12]
        )
        if last_used is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert last_used is not None
    assert httpx.get(f"{api_only.url}/health").status_code == 200


def test_two_bootstraps_at_once_make_one_master_key(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    # asyncio's own loop and h11: what `serve` runs on where uvloop and httptools are missing.
    srv = Server(
        tmp_path_factory.mktemp("bootstrap-race"),
        models_dir,
        event_loop="asyncio",
        http_parser="h11",
    ).start("--no-worker")
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda _: httpx.post(f"{srv.url}/api/bootstrap/initial-key"), range(8))
            )
        assert sorted(a.status_code for a in answers) == [201] + [403] * 7
        assert srv.sql("SELECT COUNT(*) FROM api_keys")[0][0] == 1
        master = next(a for a in answers if a.status_code == 201).json()["data"]["key"]
        ready = httpx.get(f"{srv.url}/health/ready", headers={"X-API-Key": master}).json()
        assert ready["runtime"] == {"eventLoop": "asyncio"}
        assert "[no embedded worker]  [asyncio, h11]" in srv.log()
    finally:
        srv.stop()
