"""What a key holder of another project, or a stranger with a URL, would try (issue 11): free
images, public routes, absurd numbers, huge bodies, work before payment. Each test is a
reproduction that failed before its fix. One real server for the module, with a model whose
weights are missing (so jobs can be made to fail) and private URLs allowed (so a fetch that
should not happen would reach the local stub and be counted)."""

from __future__ import annotations

import importlib.util
import random
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pictures import huge_png, png
from tests.serverproc import Server, create_key, run_cli, wait_terminal
from tests.stubs import QuietHandler, local_server

BROKEN_MODEL = """
[[models]]
id = "broken"
family = "tiny"
source = "/nonexistent/imagesmith-test-weights"
description = "Weights that are not there: every job fails"
min_side = 64
max_side = 512
min_steps = 1
default_width = 64
default_height = 64
default_steps = 2
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("abuse")
    models_file = data / "models.toml"
    models_file.write_text(BROKEN_MODEL)
    srv = Server(
        data, models_dir, lease_seconds=5, models_file=models_file, allow_private_urls="true"
    ).start()
    yield srv
    srv.stop()


def project(server: Server, name: str, credits: int | None = None) -> httpx.Client:
    key = create_key(server.env, "abuse", name)
    if credits is not None:
        args = ("credits", "set", "--org", "abuse", "--project", name, str(credits))
        assert run_cli(server.env, *args).returncode == 0
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=60)


def balance(client: httpx.Client) -> int | None:
    bearer = {"Authorization": f"Bearer {client.headers['X-API-Key']}"}
    body = httpx.get(f"{client.base_url}/v1/credits", headers=bearer).json()
    value: int | None = body["total_remaining_credits"]
    return value


def delivered_images(server: Server, generation_ids: set[str]) -> int:
    """Images the worker delivered for these generations, read from its log (one line per run
    that succeeded and was recorded), independently of the ledger."""
    count = 0
    for match in re.finditer(
        r"generation\.succeeded generation_id=(\S+) images=(\S+)", server.log()
    ):
        if match.group(1) in generation_ids:
            count += len(match.group(2).split(","))
    return count


def ledger(server: Server, project_slug: str) -> dict[str, int]:
    rows = server.sql(
        "SELECT e.kind, SUM(e.amount) FROM credit_entries e JOIN projects p ON p.id = e.project_id"
        " WHERE p.slug = :slug GROUP BY e.kind",
        slug=project_slug,
    )
    return {kind: int(total) for kind, total in rows}


def test_charged_minus_refunded_is_images_delivered_in_any_order(server: Server) -> None:
    """create / regenerate / PUT / cancel / delete / failing jobs / retry, in a seeded random
    order, racing the worker; afterwards the ledger, the balance and the worker's deliveries
    agree."""
    rng = random.Random(1101)
    with project(server, "ledger", credits=1000) as api:
        ids: list[str] = []
        for step in range(36):
            action = rng.choice(["create", "create", "fail", "regenerate", "put", "cancel"])
            action = "delete" if step % 9 == 8 else action
            target = rng.choice(ids) if ids else None
            if action in ("create", "fail") or target is None:
                body: dict[str, Any] = {"prompt": f"a red circle {step}", "autoEnhance": False}
                if action == "fail":
                    body["model"] = "broken"
                body["numOutputs"] = rng.choice([1, 2])
                created = api.post("/api/v1/generations", json=body)
                assert created.status_code == 201, created.text
                ids.append(created.json()["data"]["id"])
            elif action == "regenerate":
                path = rng.choice(["regenerate", "retry"])
                assert api.post(f"/api/v1/generations/{target}/{path}").status_code in (200, 404)
            elif action == "put":
                changed = api.put(f"/api/v1/generations/{target}", json={"prompt": f"p{step}"})
                assert changed.status_code in (200, 404)
            elif action == "cancel":
                assert api.post(f"/api/v1/generations/{target}/cancel").status_code in (
                    200,
                    404,
                    409,
                )
            else:
                assert api.delete(f"/api/v1/generations/{target}").status_code in (200, 404)
            time.sleep(rng.choice([0, 0, 0.05, 0.3]))
        for generation_id in ids:
            response = api.get(f"/api/v1/generations/{generation_id}")
            if response.status_code == 200:
                wait_terminal(api, generation_id)
        totals = ledger(server, "ledger")
        delivered = delivered_images(server, set(ids))
        assert delivered > 0 and totals.get("refund", 0) > 0  # both paths really happened
        assert totals["charge"] - totals.get("refund", 0) == delivered
        assert balance(api) == 1000 - delivered
        twice = server.sql(
            "SELECT generation_id, run FROM credit_entries WHERE kind = 'refund'"
            " GROUP BY generation_id, run HAVING COUNT(*) > 1"
        )
        assert twice == []


def test_a_cancelled_regeneration_does_not_refund_the_image_already_delivered(
    server: Server,
) -> None:
    """The review's repro: balance 2 → create (1) → regenerate (0) → cancel → balance was 2
    again, with the first image still served."""
    with project(server, "free-images", credits=2) as api:
        created = api.post(
            "/api/v1/generations", json={"prompt": "a blue square", "steps": 2}
        ).json()["data"]
        first = wait_terminal(api, created["id"])
        assert first["status"] == "success" and balance(api) == 1
        again = api.post(f"/api/v1/generations/{created['id']}/regenerate")
        assert again.status_code == 200 and balance(api) == 0
        cancel = api.post(f"/api/v1/generations/{created['id']}/cancel")
        # Cancelled in time: the second run is refunded, the delivered first run stays paid.
        # Too late (it finished): both runs delivered, both paid.
        assert balance(api) == (1 if cancel.status_code == 200 else 0)
        image = httpx.get(first["outputImage"]["storageUrl"])
        assert image.status_code == 200


def test_deleting_a_generation_that_never_ran_refunds_it(server: Server) -> None:
    with project(server, "delete-pending", credits=3) as api:
        # A flood of slow jobs keeps the last one pending while we delete it.
        blockers = [
            api.post("/api/v1/generations", json={"prompt": "slow", "steps": 50}).json()["data"]
            for _ in range(2)
        ]
        last = api.post("/api/v1/generations", json={"prompt": "never run", "steps": 50})
        doomed = last.json()["data"]
        assert balance(api) == 0
        assert api.delete(f"/api/v1/generations/{doomed['id']}").status_code == 200
        for blocker in blockers:
            wait_terminal(api, blocker["id"])
        statuses = [
            api.get(f"/api/v1/generations/{b['id']}").json()["data"]["status"] for b in blockers
        ]
        assert statuses == ["success", "success"] and balance(api) == 1


def test_deleting_a_flow_refunds_its_generations_that_never_ran(server: Server) -> None:
    with project(server, "delete-flow", credits=3) as api:
        blockers = [
            api.post("/api/v1/generations", json={"prompt": "slow", "steps": 50}).json()["data"]
            for _ in range(2)
        ]
        doomed = api.post("/api/v1/generations", json={"prompt": "never run", "steps": 50})
        assert balance(api) == 0
        flow = doomed.json()["data"]["flowId"]
        assert api.delete(f"/api/v1/flows/{flow}").status_code == 200
        assert balance(api) == 1  # the flow's pending generation came back
        for blocker in blockers:
            wait_terminal(api, blocker["id"])
        assert balance(api) == 1


class CountingImage(QuietHandler):
    hits = 0

    def do_GET(self) -> None:
        CountingImage.hits += 1
        self.send_body(200, png((64, 64), (0, 200, 0)), "image/png")


def test_no_credits_means_no_fetch_and_nothing_stored(server: Server) -> None:
    with project(server, "broke", credits=0) as api, local_server(CountingImage) as base:
        stored_before = len(server.stored_keys())
        body = {"prompt": "x", "initImage": f"{base}/green.png", "steps": 4}
        refused = api.post("/api/v1/generations", json=body)
        assert refused.status_code == 402
        assert refused.json()["error"]["code"] == "INSUFFICIENT_CREDITS"
        assert CountingImage.hits == 0 and len(server.stored_keys()) == stored_before
        upload = httpx.post(
            f"{server.url}/v1/image/upload",
            headers={"Authorization": f"Bearer {api.headers['X-API-Key']}"},
            files={"file": ("a.png", png(), "image/png")},
        )
        assert upload.status_code == 400 and upload.json()["error"] == "insufficient_credits"
        assert len(server.stored_keys()) == stored_before


HUGE = 10**300


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/generations", {"prompt": "x", "width": HUGE, "height": 64}),
        ("/api/v1/generations", {"prompt": "x", "height": -HUGE}),
        ("/api/v1/generations", {"prompt": "x", "numOutputs": HUGE}),
        ("/v1/image/generation/create", {"prompt": "x", "width": HUGE}),
        ("/v1/image/generation/create", {"prompt": "x", "inference_steps": HUGE}),
        ("/v1/image/generation/create", {"prompt": "x", "num_outputs": HUGE}),
        ("/v1/image/generation/create", {"prompt": "x", "seed": -HUGE}),
    ],
)
def test_absurd_integers_are_400_in_the_dialects_shape(
    server: Server, path: str, body: dict[str, Any]
) -> None:
    key = create_key(server.env, "abuse", "numbers")
    headers = {"X-API-Key": key, "Authorization": f"Bearer {key}"}
    response = httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert isinstance(error, dict) if path.startswith("/api") else isinstance(error, str)


def test_bodies_and_meta_are_capped_before_anything_is_stored(server: Server) -> None:
    with project(server, "bodies") as api:
        before = api.get("/api/v1/generations").json()["pagination"]["total"]
        huge = api.post("/api/v1/generations", json={"prompt": "x", "meta": {"a": "b" * 8_000_000}})
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        big_meta = api.post(
            "/api/v1/generations", json={"prompt": "x", "meta": {"a": "b" * 20_000}}
        )
        assert big_meta.status_code == 400 and "meta is" in big_meta.json()["error"]["message"]
        for constant in ("NaN", "Infinity", "1e999"):  # Python's parser takes them; JSON doesn't
            odd = api.post(
                "/api/v1/generations",
                content=f'{{"prompt": "x", "meta": {{"a": {constant}}}}}',
                headers={"Content-Type": "application/json"},
            )
            assert odd.status_code == 400 and "NaN" in odd.json()["error"]["message"], odd.text
        assert api.get("/api/v1/generations").json()["pagination"]["total"] == before
        bearer = {"Authorization": f"Bearer {api.headers['X-API-Key']}"}
        sc = httpx.post(
            f"{server.url}/v1/image/generation/create",
            headers=bearer,
            json={"prompt": "x" * 1_000_000},
        )
        assert sc.status_code == 413 and sc.json()["error"] == "file_too_large"  # Stablecog's code


def test_uploads_past_the_pixel_budget_are_refused_from_the_header(server: Server) -> None:
    with project(server, "bombs") as api:
        bomb = huge_png(6300, 6300)  # ~0.1 MB on disk, 160 MB decoded
        assert len(bomb) < 5 * 1024 * 1024
        response = api.post("/api/v1/images/upload", files={"file": ("b.png", bomb, "image/png")})
        assert response.status_code == 400 and "pixels" in response.json()["error"]["message"]


def test_the_public_cdn_never_resolves_computed_aliases(server: Server) -> None:
    with project(server, "private") as api:
        upload = api.post("/api/v1/images/upload", files={"file": ("p.png", png(), "image/png")})
        image = upload.json()["data"]
        generated = api.post("/api/v1/generations", json={"prompt": "x", "steps": 2})
        wait_terminal(api, generated.json()["data"]["id"])
        base = f"{server.url}/cdn/abuse/private/img"
        for alias in ("@upload", "@last", "@first"):
            assert httpx.get(f"{base}/{alias}").status_code == 404, alias
        assert httpx.get(f"{base}/{image['id']}").status_code == 200  # the capability URL works
        assert api.get("/api/v1/images/@upload").json()["data"]["id"] == image["id"]  # with a key


def test_deleting_a_flow_keeps_an_image_moved_out_of_it(server: Server) -> None:
    with project(server, "flows") as api:
        created = api.post("/api/v1/generations", json={"prompt": "x", "steps": 2}).json()["data"]
        done = wait_terminal(api, created["id"])
        old_flow = done["flowId"]
        other = api.post("/api/v1/generations", json={"prompt": "y", "steps": 2}).json()["data"]
        moved = api.patch(f"/api/v1/generations/{created['id']}", json={"flowId": other["flowId"]})
        assert moved.status_code == 200
        assert api.delete(f"/api/v1/flows/{old_flow}").status_code == 200
        after = api.get(f"/api/v1/generations/{created['id']}").json()["data"]
        assert after["status"] == "success" and after["outputImage"] is not None
        image = api.get(f"/api/v1/images/{after['outputImage']['id']}").json()["data"]
        assert image["flowId"] == other["flowId"]
        assert httpx.get(after["outputImage"]["storageUrl"]).status_code == 200


def test_every_listed_scheduler_runs(server: Server) -> None:
    key = create_key(server.env, "abuse", "schedulers")
    bearer = {"Authorization": f"Bearer {key}"}
    models = httpx.get(f"{server.url}/v1/image/generation/models", headers=bearer).json()
    tiny = next(m for m in models["models"] if m["id"] == "tiny-sd")

    def create(scheduler: str, steps: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/image/generation/create",
            headers=bearer,
            json={"prompt": "x", "scheduler_id": scheduler, "inference_steps": steps},
            timeout=120,
        )

    for scheduler in tiny["available_schedulers"]:
        steps = 4 if scheduler["id"] == "PNDM" else 2
        response = create(scheduler["id"], steps)
        assert response.status_code == 200, (scheduler["id"], response.text)
    # PNDM's warm-up fails below 4 steps: refused up front, never a failed job.
    too_few = create("PNDM", 2)
    assert too_few.status_code == 400 and "at least 4" in too_few.json()["description"]


def test_readiness_names_no_hosts_or_buckets_to_strangers(server: Server) -> None:
    anonymous = httpx.get(f"{server.url}/health/ready").json()
    assert anonymous["status"] == "ready" and len(anonymous["workers"]) == 1
    assert "store" not in anonymous["checks"]["storage"]
    assert set(anonymous["workers"][0]) == {"device", "heartbeatAt", "batchesRun"}
    master = create_key(server.env, "abuse", "ops", "--type", "master")
    project_bound = httpx.get(f"{server.url}/health/ready", headers={"X-API-Key": master}).json()
    assert "store" not in project_bound["checks"]["storage"]  # a project's master is not global
    result = run_cli(server.env, "keys", "create", "--type", "master")
    operator = result.stdout.strip().splitlines()[-1]
    detailed = httpx.get(f"{server.url}/health/ready", headers={"X-API-Key": operator}).json()
    assert "store" in detailed["checks"]["storage"] and "hostname" in detailed["workers"][0]
    # `serve` runs on uvloop where it is installed (not by default).
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert detailed["runtime"] == {"eventLoop": expected}
    worker_id = detailed["workers"][0]["id"]  # the embedded worker's loop is of the same kind
    assert f"worker.started worker_id={worker_id} loop={expected}" in server.log()
    assert "runtime" not in anonymous and "runtime" not in project_bound


def test_a_master_key_of_one_organization_administers_only_it(server: Server) -> None:
    result = run_cli(server.env, "keys", "create", "--type", "master", "--org", "tenant-a")
    assert result.returncode == 0, result.stderr
    with httpx.Client(
        base_url=server.url, headers={"X-API-Key": result.stdout.strip().splitlines()[-1]}
    ) as admin:
        mine = admin.post(
            "/api/admin/keys",
            json={"type": "project", "organizationSlug": "tenant-a", "projectSlug": "web"},
        )
        assert mine.status_code == 201, mine.text
        theirs = admin.post(
            "/api/admin/keys",
            json={"type": "project", "organizationSlug": "tenant-b", "projectSlug": "web"},
        )
        assert theirs.status_code == 403
        global_master = admin.post("/api/admin/keys", json={"type": "master"})
        assert global_master.status_code == 403
        other_key = create_key(server.env, "tenant-b", "web")
        listed = admin.get("/api/admin/keys").json()["data"]
        assert listed and {k["organizationId"] for k in listed} == {listed[0]["organizationId"]}
        other_id = run_cli(server.env, "keys", "list").stdout
        assert other_key[:12] in other_id
        prefix = other_key[:12]
        row = server.sql("SELECT id FROM api_keys WHERE key_prefix = :p", p=prefix)
        assert admin.delete(f"/api/admin/keys/{row[0][0]}").status_code == 404
        credits = admin.put("/api/admin/projects/tenant-b/web/credits", json={"balance": 5})
        assert credits.status_code == 403
        assert (
            admin.put("/api/admin/projects/tenant-a/web/credits", json={"balance": 5}).status_code
            == 200
        )


def keyed_routes() -> list[tuple[str, str]]:
    """Every (method, path) that names a record by id, alias or slug and needs a key: read from
    the app itself, so a new route is covered the day it is added."""
    from imagesmith.app import create_app

    schema = create_app(embedded_worker=False).openapi()
    return sorted(
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        # /cdn is public by design; a model id names the catalogue, not a tenant's record.
        if "{" in path and not path.startswith("/cdn/") and "{model_id}" not in path
        for method in operations
    )


BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/api/v1/generations/{generation_id}"): {"meta": {"x": 1}},
    ("PATCH", "/api/v1/generations/{generation_id}"): {"meta": {"x": 1}},
    ("PUT", "/api/v1/images/{ref}"): {"meta": {"x": 1}},
    ("PUT", "/api/v1/images/{ref}/alias"): {"alias": None},
    ("PUT", "/api/v1/flows/{flow_id}/aliases"): {"aliases": {}},
    ("PUT", "/api/v1/live/scopes/{slug}"): {"meta": {"x": 1}},
    ("PUT", "/api/admin/projects/{org}/{project}/credits"): {"balance": 1},
    ("PUT", "/api/admin/projects/{org}/{project}/live"): {"enabled": True},
    ("PUT", "/api/v1/webhooks/{endpoint_id}"): {"description": "x", "enabled": False},
    ("PATCH", "/api/v1/webhooks/{endpoint_id}"): {"description": "x", "enabled": False},
    ("PUT", "/api/admin/projects/{org}/{project}/webhooks/{endpoint_id}"): {"enabled": False},
    ("PATCH", "/api/admin/projects/{org}/{project}/webhooks/{endpoint_id}"): {"enabled": False},
    ("POST", "/api/admin/projects/{org}/{project}/webhooks"): {"url": "http://127.0.0.1:9/x"},
}


def test_no_route_gives_another_tenants_records_to_a_wrong_key(server: Server) -> None:
    """For every keyed route with an id: another project's key, a revoked key, an expired key
    and no key get 401/403/404 — never the record, never a change to it."""
    owner = create_key(server.env, "matrix", "owner")
    with httpx.Client(base_url=server.url, headers={"X-API-Key": owner}, timeout=60) as api:
        hook = api.post(
            "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/owner-hook", "description": "o"}
        ).json()["data"]
        made = api.post("/api/v1/generations", json={"prompt": "owner's secret", "steps": 2})
        generation = wait_terminal(api, made.json()["data"]["id"])
        delivery = api.get(f"/api/v1/generations/{generation['id']}/webhooks").json()["data"][0]
        upload = api.post(
            "/api/v1/images/upload",
            files={"file": ("o.png", png(), "image/png")},
            data={"alias": "@owned"},
        ).json()["data"]
        scope = api.post("/api/v1/live/scopes", json={"slug": "owned"}).json()["data"]
        key_id = api.get("/api/info").json()["auth"]
    owner_key_id = server.sql("SELECT id FROM api_keys WHERE key_prefix = :p", p=owner[:12])[0][0]
    values = {
        "generation_id": generation["id"],
        "ref": upload["id"],
        "flow_id": generation["flowId"],
        "slug": scope["slug"],
        "alias": "@owned",
        "key_id": owner_key_id,
        "org": "matrix",
        "project": "owner",
        "project_id": key_id["projectId"],
        "api_key_id": owner_key_id,
        "endpoint_id": hook["id"],
        "delivery_id": delivery["id"],
    }
    revoked = create_key(server.env, "matrix", "owner", "--name", "revoked")
    assert run_cli(server.env, "keys", "revoke", revoked[:12]).returncode == 0
    expired = create_key(server.env, "matrix", "owner", "--name", "expired")
    server.sql(
        "UPDATE api_keys SET expires_at = :t WHERE key_prefix = :p",
        t="2020-01-01 00:00:00",
        p=expired[:12],
    )
    credentials = {
        "another project's key": create_key(server.env, "matrix", "stranger"),
        "a revoked key": revoked,
        "an expired key": expired,
        "no key": None,
    }
    secrets = [
        generation["id"],
        upload["id"],
        "owner's secret",
        generation["flowId"],
        "owner-hook",
        delivery["webhookId"],
    ]
    routes = keyed_routes()
    assert len(routes) >= 20
    for method, template in routes:
        path = template.format(**values)
        for who, key in credentials.items():
            headers = {"X-API-Key": key} if key else {}
            response = httpx.request(
                method,
                f"{server.url}{path}",
                headers=headers,
                json=BODIES.get((method, template)),
                timeout=30,
            )
            assert response.status_code in (401, 403, 404), (who, method, template, response.text)
            leaked = [s for s in secrets if s in response.text and s not in path]
            assert not leaked, (who, method, template, leaked)
    with httpx.Client(base_url=server.url, headers={"X-API-Key": owner}, timeout=60) as api:
        still = api.get(f"/api/v1/generations/{generation['id']}").json()["data"]
        assert still["status"] == "success" and still["meta"] == {}
        assert api.get(f"/api/v1/images/{upload['id']}").json()["data"]["alias"] == "@owned"
        assert api.get(f"/api/v1/flows/{generation['flowId']}").status_code == 200
        assert api.get("/api/v1/live/scopes/owned").json()["data"]["meta"] == {}
        assert api.get(f"/api/v1/webhooks/{hook['id']}").json()["data"]["enabled"] is True
        assert [e["id"] for e in api.get("/api/v1/webhooks").json()["data"]] == [hook["id"]]
    assert key_id["projectSlug"] == "owner"


def test_nul_characters_are_bad_input_not_a_database_error(server: Server) -> None:
    """PostgreSQL text cannot hold NUL: the fuzzer's prompt with a \\u0000 was a 500 there."""
    key = create_key(server.env, "abuse", "nul")
    headers = {"X-API-Key": key, "Authorization": f"Bearer {key}"}
    for path in ("/api/v1/generations", "/v1/image/generation/create", "/v1/images/generations"):
        response = httpx.post(
            f"{server.url}{path}", json={"prompt": "a\u0000b"}, headers=headers, timeout=30
        )
        assert response.status_code == 400 and "NUL" in response.text, (path, response.text)


def test_an_idle_keep_alive_connection_outlives_a_client_pool_expiry(server: Server) -> None:
    """uvicorn closes idle connections after 5 s by default, exactly httpx's pool expiry: a
    polling client's request sent as the server closed its connection failed with a connection
    error (seen under load). Idle connections now stay open longer than clients' pools and load
    balancers keep them."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        first.read()
        assert first.status == 200 and first.getheader("connection") != "close"
        time.sleep(6)
        conn.request("GET", "/health")  # the same socket: http.client does not reconnect
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_names_with_a_trailing_newline_and_odd_text_are_bad_input(server: Server) -> None:
    """`$` in a pattern also matches before a final newline: "<uuid>\\n" passed as a flow id (a
    500 on PostgreSQL's 36-character column) and "@last\\n" as an alias. Deeply nested upload
    meta, and multipart text declared in a charset that decodes to lone surrogates, were 500s."""
    with project(server, "odd-names") as api:
        flow = f"{'0' * 8}-{'0' * 4}-{'0' * 4}-{'0' * 4}-{'0' * 12}\n"
        made = api.post("/api/v1/generations", json={"prompt": "x", "flowId": flow})
        assert made.status_code == 400, made.text
        files = {"file": ("a.png", png(), "image/png")}
        upload = api.post("/api/v1/images/upload", files=files).json()["data"]
        for alias in ("@last\n", "@hero\n"):
            renamed = api.put(f"/api/v1/images/{upload['id']}/alias", json={"alias": alias})
            assert renamed.status_code == 400, (alias, renamed.text)
        deep = api.post(
            "/api/v1/images/upload", files=files, data={"meta": "[" * 4000 + "]" * 4000}
        )
        assert deep.status_code == 400 and deep.json()["error"]["code"], deep.text
        bearer = {"Authorization": f"Bearer {api.headers['X-API-Key']}"}
        body = (
            b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png() + b"\r\n"
            b'--x\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\\ud800\r\n--x--\r\n'
        )
        edit = httpx.post(
            f"{server.url}/v1/images/edits",
            content=body,
            headers={
                **bearer,
                "Content-Type": "multipart/form-data; boundary=x; charset=unicode_escape",
            },
            timeout=60,
        )
        assert edit.status_code in (200, 400), edit.text  # UTF-8 text, never a 500
        assert edit.status_code == 400 or "\ud800" not in edit.text


def test_two_uploads_racing_for_one_alias_give_one_image_and_one_409(server: Server) -> None:
    with project(server, "alias-race") as api:
        files = {"file": ("a.png", png(), "image/png")}
        before = server.stored_keys()
        with ThreadPoolExecutor(6) as pool:
            answers = list(
                pool.map(
                    lambda _: api.post(
                        "/api/v1/images/upload", files=files, data={"alias": "@logo"}
                    ),
                    range(6),
                )
            )
        assert sorted(r.status_code for r in answers) == [201] + [409] * 5, [
            r.text for r in answers
        ]
        assert len(server.stored_keys() - before) == 1  # the losers' files are gone
