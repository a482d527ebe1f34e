"""Several processes on one queue: remote workers, API replicas, readiness and rate limits."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagesmith.worker.supervisor import HEARTBEAT_SECONDS
from tests.backends import POSTGRES, REDIS, S3_ENDPOINT
from tests.serverproc import Server, WorkerProcess, create_key

CLAIM = re.compile(r"generation\.claimed generation_id=(\S+) worker_id=(\S+)")


def wait_all(api: httpx.Client, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = api.get("/api/v1/generations", params={"limit": 100, "offset": 0}).json()
        total = rows["pagination"]["total"]
        done = api.get("/api/v1/generations", params={"status": "success", "limit": 1}).json()
        if done["pagination"]["total"] >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out = []
    for offset in range(0, total, 100):
        page = api.get("/api/v1/generations", params={"limit": 100, "offset": offset}).json()
        out.extend(page["data"])
    return out


def test_many_workers_one_killed_every_job_runs_once(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    """API without a worker + 3 `imagesmith worker` processes; one is SIGKILLed mid-run."""
    api_server = Server(
        tmp_path_factory.mktemp("fleet"), models_dir, lease_seconds=3, worker_batch_size=4
    ).start("--no-worker")
    workers = [
        WorkerProcess(api_server, f"w{i}", lease_seconds=3, worker_batch_size=4) for i in range(3)
    ]
    try:
        for worker in workers:
            worker.wait_ready()
        key = create_key(api_server.env, "fleet", "jobs")
        with api_server.client(key) as api:
            ids = [
                api.post(
                    "/api/v1/generations",
                    json={"prompt": f"job {i}", "autoEnhance": False, "steps": 30},
                ).json()["data"]["id"]
                for i in range(120)
            ]
            ids_of = {}
            for worker in workers:
                started = re.search(r"worker\.started worker_id=(\S+)", worker.log())
                assert started, worker.log()
                ids_of[started.group(1)] = worker
            holding = (
                "SELECT worker_id, count(*) FROM generations WHERE status = 'processing' "
                "GROUP BY worker_id"
            )
            deadline = time.monotonic() + 120
            # The victim is a worker the queue shows holding jobs right now (a fixed one may
            # hold nothing at the moment it is killed: on a loaded machine the others can drain
            # the queue while it waits for its child).
            victim = None
            while victim is None:
                assert time.monotonic() < deadline, [w.log()[-2000:] for w in workers]
                for worker_id, count in api_server.sql(holding):
                    if count and worker_id in ids_of:
                        victim = ids_of[worker_id]
                        break
                else:
                    time.sleep(0.02)
            victim.kill()
            killed_at = datetime.now(UTC)
            rows = wait_all(api, ids, timeout=300)
        by_id = {row["id"]: row for row in rows}
        assert sorted(by_id) == sorted(ids)
        assert [by_id[i]["status"] for i in ids] == ["success"] * 120
        # Every job has its own image in the store.
        images = {by_id[i]["outputImageId"] for i in ids}
        assert len(images) == 120
        stored = {key.split(".")[0] for key in api_server.stored_keys()}  # <id>.<attempt>
        assert {f"fleet/jobs/img/{image}" for image in images} <= stored
        # Each job was claimed once, except the ones the dead worker held (claimed twice).
        claims = Counter(match.group(1) for w in workers for match in CLAIM.finditer(w.log()))
        retried = {i for i in ids if by_id[i]["retryCount"] > 0}
        assert retried, "the killed worker held no job"
        victim_claims = {m.group(1) for m in CLAIM.finditer(victim.log())}
        assert retried <= victim_claims
        for generation_id in ids:
            expected = 1 + by_id[generation_id]["retryCount"]
            assert claims[generation_id] == expected, generation_id
        # The survivors did the work; readiness sees an empty queue, and only the survivors keep
        # sending heartbeats (a dead worker stays listed until its last one is 30 s old).
        since_kill = (datetime.now(UTC) - killed_at).total_seconds()
        time.sleep(max(0.0, HEARTBEAT_SECONDS + 1 - since_kill))
        ready = httpx.get(f"{api_server.url}/health/ready").json()
        assert ready["status"] == "ready" and ready["queue"] == {"pending": 0, "processing": 0}
        beating = [
            w for w in ready["workers"] if datetime.fromisoformat(w["heartbeatAt"]) > killed_at
        ]
        assert len(beating) == 2, ready["workers"]
    finally:
        for worker in workers:
            worker.stop()
        api_server.stop()


@pytest.mark.skipif(not POSTGRES, reason="LISTEN/NOTIFY needs PostgreSQL")
def test_remote_worker_wakes_on_notify(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    """With polling effectively off, only a NOTIFY can tell the worker that work arrived."""
    api_server = Server(tmp_path_factory.mktemp("notify"), models_dir).start("--no-worker")
    worker = WorkerProcess(api_server, "listener", poll_seconds=3600)
    try:
        worker.wait_ready()
        time.sleep(1)  # the worker has polled once and is now idle, listening
        key = create_key(api_server.env, "notify", "site")
        with api_server.client(key) as api:
            response = api.post(
                "/api/v1/generations", json={"prompt": "wake up"}, headers={"Prefer": "wait=60"}
            )
        assert response.json()["data"]["status"] == "success"
    finally:
        worker.stop()
        api_server.stop()


def test_readiness_reports_database_storage_workers_and_queue(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    api_server = Server(tmp_path_factory.mktemp("ready"), models_dir).start("--no-worker")
    try:
        key = create_key(api_server.env, "ready", "site")
        with api_server.client(key) as api:
            api.post("/api/v1/generations", json={"prompt": "waits for a worker"})
        body = httpx.get(f"{api_server.url}/health/ready").json()
        assert body["status"] == "ready"
        assert body["checks"]["database"]["ok"] and body["checks"]["storage"]["ok"]
        assert body["workers"] == [] and body["queue"]["pending"] == 1
        assert "No worker" in body["warnings"][0]
    finally:
        api_server.stop()


def test_rate_limit_per_key_with_headers(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    srv = Server(tmp_path_factory.mktemp("rate"), models_dir, rate_limit="5/minute")
    srv.start("--no-worker")
    try:
        key, other = create_key(srv.env, "rate", "a"), create_key(srv.env, "rate", "b")
        with srv.client(key) as api:
            seen = [api.get("/api/v1/generations") for _ in range(5)]
            assert [r.status_code for r in seen] == [200] * 5
            assert [r.headers["X-RateLimit-Remaining"] for r in seen] == ["4", "3", "2", "1", "0"]
            assert seen[0].headers["X-RateLimit-Limit"] == "5"
            # Seed 002: "Seconds until reset" (it used to be a Unix timestamp).
            assert 0 < int(seen[0].headers["X-RateLimit-Reset"]) <= 60
            refused = api.post("/api/v1/generations", json={"prompt": "one too many"})
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
            assert int(refused.headers["Retry-After"]) >= 1
        with srv.client(other) as api:  # another key has its own budget
            assert api.get("/api/v1/generations").status_code == 200
    finally:
        srv.stop()


@pytest.mark.skipif(not REDIS, reason="shared counters need Redis")
def test_rate_limit_is_exact_across_api_replicas(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    first = Server(tmp_path_factory.mktemp("replica-a"), models_dir, rate_limit="6/minute")
    first.start("--no-worker")
    second = Server(
        tmp_path_factory.mktemp("replica-b"),
        models_dir,
        backend=first.backend,
        rate_limit="6/minute",
    )
    second.env.update({k: v for k, v in first.env.items() if k.startswith("IMAGESMITH_")})
    second.env["IMAGESMITH_DATA_DIR"] = str(second.data_dir)
    second.start("--no-worker")
    try:
        key = create_key(first.env, "replicas", "shared")
        codes = []
        for i in range(7):
            with (first if i % 2 else second).client(key) as api:
                codes.append(api.get("/api/v1/generations").status_code)
        assert codes == [200] * 6 + [429]
    finally:
        first.stop()
        second.stop()


@pytest.mark.skipif(not S3_ENDPOINT, reason="presigned URLs need the S3 store")
def test_presigned_storage_urls(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> None:
    srv = Server(tmp_path_factory.mktemp("presign"), models_dir, storage_url_mode="presigned")
    srv.start()
    try:
        key = create_key(srv.env, "presign", "site")
        with srv.client(key) as api:
            data = api.post(
                "/api/v1/generations", json={"prompt": "signed"}, headers={"Prefer": "wait=60"}
            ).json()["data"]
        url = data["outputImage"]["storageUrl"]
        assert url.startswith(S3_ENDPOINT) and "X-Amz-Signature=" in url
        direct = httpx.get(url)
        cdn = httpx.get(f"{srv.url}/cdn/presign/site/img/{data['outputImageId']}")
        assert direct.status_code == 200 and direct.content == cdn.content
        tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
        assert httpx.get(tampered).status_code == 403  # the S3 server checks the signature
    finally:
        srv.stop()


@pytest.mark.skipif(not S3_ENDPOINT, reason="needs the S3 server")
async def test_the_s3_store_against_a_real_s3_server() -> None:
    """The S3 adapter on its own, against SeaweedFS: a bucket it may not create is a clear error,
    one it may is made once; what is put comes back with its type; missing keys are None/False,
    and deleting one is not an error. An independent client (boto3) sees what it wrote."""
    import uuid

    import boto3

    from imagesmith.config import Settings
    from imagesmith.storage.s3 import S3Store

    bucket = f"t-{uuid.uuid4().hex[:12]}"
    settings = Settings(storage_url=f"s3://{bucket}/p", aws_endpoint_url=S3_ENDPOINT)
    refused = S3Store(settings.model_copy(update={"storage_create_bucket": False}))
    with pytest.raises(RuntimeError, match="does not exist"):
        await refused.check()

    store = S3Store(settings)
    await store.check()
    await store.put("a/b.png", b"\x89PNG-bytes", "image/png")
    stored = await store.get("a/b.png")
    assert stored is not None and (stored.data, stored.content_type) == (
        b"\x89PNG-bytes",
        "image/png",
    )
    listed = boto3.client("s3", endpoint_url=S3_ENDPOINT, region_name="us-east-1").list_objects_v2(
        Bucket=bucket
    )
    assert [item["Key"] for item in listed["Contents"]] == ["p/a/b.png"]
    assert await store.exists("a/b.png") and not await store.exists("a/none.png")
    assert await store.get("a/none.png") is None
    await store.delete("a/b.png")
    await store.delete("a/b.png")  # already gone: not an error
    assert await store.get("a/b.png") is None
