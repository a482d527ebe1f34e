"""Jobs survive a killed model child and a killed server: every job ends `success`. A store that
refuses the images for a moment costs no rerun; one that keeps refusing fails the job with the
store's reason."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import break_store, repair_store
from tests.serverproc import Server, create_key, wait_dead

SLOW_JOB = {
    "prompt": "slow enough to be caught mid-run",
    "steps": 50,
    "aspectRatio": "21:9",
    "autoEnhance": False,
}
FAST_JOB = {"prompt": "quick", "autoEnhance": False}


def submit(api: httpx.Client, count: int) -> list[str]:
    """One slow job first (it is the one caught mid-run), then quick ones queued behind it."""
    jobs = [SLOW_JOB] + [FAST_JOB] * (count - 1)
    return [api.post("/api/v1/generations", json=job).json()["data"]["id"] for job in jobs]


def statuses(api: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    return [api.get(f"/api/v1/generations/{i}").json()["data"] for i in ids]


def wait_all_terminal(api: httpx.Client, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = statuses(api, ids)
        if all(r["status"] in ("success", "failed", "cancelled") for r in rows):
            return rows
        time.sleep(0.25)
    raise AssertionError([r["status"] for r in statuses(api, ids)])


def wait_processing(api: httpx.Client, ids: list[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in statuses(api, ids):
            if row["status"] == "processing":
                return str(row["id"])
        time.sleep(0.02)
    raise AssertionError("no job reached processing")


def test_killing_the_model_child_mid_run_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    srv = Server(tmp_path_factory.mktemp("child-kill"), models_dir, lease_seconds=5).start()
    try:
        key = create_key(srv.env, "crash", "child")
        with srv.client(key) as api:
            ids = submit(api, 20)
            victim = wait_processing(api, ids)
            child = srv.model_child()
            os.kill(child, signal.SIGKILL)
            wait_dead(child)
            rows = wait_all_terminal(api, ids, timeout=240)
            assert [r["status"] for r in rows] == ["success"] * 20, [
                r["errorMessage"] for r in rows
            ]
            by_id = {r["id"]: r for r in rows}
            assert by_id[victim]["retryCount"] == 1
            assert sum(r["retryCount"] for r in rows) == 1
            assert srv.model_child() != child  # a new child took over
            assert "the model process died" in srv.log()
    finally:
        srv.stop()


def test_killing_the_server_with_jobs_queued_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    data_dir = tmp_path_factory.mktemp("server-kill")
    srv = Server(data_dir, models_dir, lease_seconds=2).start()
    key = create_key(srv.env, "crash", "server")
    with srv.client(key) as api:
        ids = submit(api, 30)
        wait_processing(api, ids)
    srv.kill()
    # The jobs the dead server held, each group up to a batch (4 images by default): the batch
    # in its model process, the next one if it was already claimed and queued behind it (a
    # claim leads the batch's end by up to twice what a claim takes), and possibly one whose
    # images were still being stored while the next batch ran (the storage overlap).
    held = {row[0] for row in srv.sql("SELECT id FROM generations WHERE status = 'processing'")}
    assert 1 <= len(held) <= 3 * 4

    restarted = Server(data_dir, models_dir, backend=srv.backend, lease_seconds=2)
    restarted.port, restarted.url = srv.port, srv.url
    restarted.start()
    try:
        with restarted.client(key) as api:
            rows = wait_all_terminal(api, ids, timeout=300)
            assert [r["status"] for r in rows] == ["success"] * 30, [
                r["errorMessage"] for r in rows
            ]
            # Exactly the jobs the dead server held were retried, once, after their leases ran out.
            assert {r["id"] for r in rows if r["retryCount"]} == held
            assert all(r["retryCount"] <= 1 for r in rows)
    finally:
        restarted.stop()


def test_sigterm_hands_back_or_finishes_running_jobs(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    data_dir = tmp_path_factory.mktemp("graceful")
    srv = Server(data_dir, models_dir, lease_seconds=30, shutdown_grace_seconds=0).start()
    key = create_key(srv.env, "graceful", "stop")
    with srv.client(key) as api:
        ids = submit(api, 3)
        running = wait_processing(api, ids)
    srv.stop()  # SIGTERM with no grace: the running job goes back to the queue unharmed
    restarted = Server(data_dir, models_dir, backend=srv.backend, lease_seconds=30)
    restarted.start()
    try:
        with restarted.client(key) as api:
            rows = wait_all_terminal(api, ids, timeout=120)
        assert [r["status"] for r in rows] == ["success"] * 3
        # Handed back, not crashed: no retry was counted and no lease had to expire (30 s).
        assert {r["id"]: r["retryCount"] for r in rows}[running] == 0
        assert "worker shut down" in srv.log()
    finally:
        restarted.stop()


def test_a_store_that_refuses_the_images_is_retried_then_fails_the_job_with_its_reason(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    """Storage down for longer than `store_retry_seconds`: the worker keeps each batch's images
    and stores them again with growing waits, then the job goes back with the store's error,
    and its last attempt fails it with that. (It once waited out its lease, 60 s here, then
    read "worker … stopped renewing its lease", as if the worker had died.) Meanwhile the
    worker claims nothing while two batches are being stored (their images are in memory):
    with the one already queued behind them, three of the four jobs run, not all four.
    Storage down for a moment: the job succeeds without a rerun (before, it went back to the
    queue at once and was denoised again)."""
    srv = Server(
        tmp_path_factory.mktemp("store-down"),
        models_dir,
        lease_seconds=60,
        max_retries=1,
        worker_batch_size=1,
        storage_create_bucket=False,
        store_retry_seconds=4,  # tries at about 0, 0.5, 1.5, 3.5 and 4 s
    ).start()
    try:
        key = create_key(srv.env, "crash", "store")
        break_store(srv.env, srv.data_dir)  # before the first write: S3 makes no bucket then
        with srv.client(key) as api:
            jobs = [
                api.post("/api/v1/generations", json=FAST_JOB).json()["data"]["id"]
                for _ in range(4)
            ]
            peak, deadline = 0, time.monotonic() + 90
            while time.monotonic() < deadline:
                rows = statuses(api, jobs)
                peak = max(peak, sum(row["status"] == "processing" for row in rows))
                if all(row["status"] in ("success", "failed") for row in rows):
                    break
                time.sleep(0.2)
            assert peak == 3, peak
            for row in rows:
                assert row["status"] == "failed", row
                assert "storing its images failed" in row["errorMessage"], row["errorMessage"]
                assert "renewing" not in row["errorMessage"]
                assert row["retryCount"] == 2  # the first run and its one retry

            retries = srv.log().count("generation.store_retry")
            blip = api.post("/api/v1/generations", json=FAST_JOB).json()["data"]["id"]
            srv.wait_for_log("generation.store_retry", 60, count=retries + 1)
            repair_store(srv.env, srv.data_dir)
            row = wait_all_terminal(api, [blip], timeout=30)[0]
            assert row["status"] == "success", row
            assert row["retryCount"] == 0  # stored from the images in hand: no second run
            assert api.get(row["outputImage"]["storageUrl"]).status_code == 200
    finally:
        srv.stop()
