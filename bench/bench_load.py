"""Load that a new user's traffic looks like: N clients, each creating a job and long-polling it
(`Prefer: wait=20`), then the next; a prober samples GET latency. Worker throughput with N
clients is compared with one client in the same run; every job must end terminal, with no errors.

    .venv/bin/python bench/bench_load.py [--clients 1000] [--seconds 60] [--steps 2]
        [--model demo]      # the README server's model (default tiny-sd, 2 steps)
        [--poll 0.5]        # clients GET every 0.5 s instead of long-polling
        [--batch 4]         # IMAGESMITH_WORKER_BATCH_SIZE
        [--no-worker-api]   # API with --no-worker + a separate `imagesmith worker` process
        [--backend postgres]  # PostgreSQL, Redis and S3 from `.ci/services.sh` (start it, eval env)
        [--dialect openai]  # clients call OpenAI's /v1/images/generations (b64_json), which
                            # answers when the images are ready; a job counts when its answer
                            # comes inside the window, and the drain waits for an empty queue

Bounded: 127.0.0.1 only, at most --seconds per phase plus the drain. Prints one line per phase and
a summary; `--out` appends the summary to a file."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import ssl
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serverproc import Server, WorkerProcess, create_key  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Phase:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.finished = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.settled: list[float] = []  # the GETs from BURST_SECONDS on
        self.peak_rss = 0.0


# Every client has its own connection (its own httpx client), as separate users do. One shared
# client with a pool of N connections made this script the bottleneck: httpcore's pool scans
# its connections for every idle one each time a request starts or ends (O(N^2), 1.0.9), so a
# burst of answers froze the load generator for seconds and the prober, on that same loop,
# measured the freeze (bench/RESULTS.md). The SSL context is shared: building one per client
# costs ~20 ms and ~0.8 MB.
SSL = ssl.create_default_context()
# Every client creates at once when a phase opens: the GETs of those first seconds time that
# burst, the later ones the steady state. Both are reported.
BURST_SECONDS = 5.0


def user(url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers={"X-API-Key": key},
        verify=SSL,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=httpx.Timeout(60.0, connect=30.0),
    )


async def openai_loop(
    url: str, key: str, body: dict[str, object], stop: float, phase: Phase
) -> None:
    """Ask for an image and wait for it in the one request, then the next."""
    auth = {"Authorization": f"Bearer {key}"}
    async with user(url, key) as api:
        while time.monotonic() < stop:
            try:
                phase.created.append("")
                made = await api.post("/v1/images/generations", json=body, headers=auth)
                if made.status_code != 200:
                    phase.errors.append(f"create {made.status_code} {made.text[:100]}")
                    await asyncio.sleep(1)
                elif time.monotonic() < stop:
                    phase.finished += 1
            except httpx.HTTPError as exc:
                phase.errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1)


async def client_loop(
    url: str, key: str, body: dict[str, object], stop: float, phase: Phase, poll: float
) -> None:
    """Create, then follow the job: long-polls (`Prefer: wait=20`), or with `poll` a plain GET
    every `poll` seconds, as clients that do not know the header do."""
    wait = {} if poll else {"Prefer": "wait=20"}
    async with user(url, key) as api:
        while time.monotonic() < stop:
            try:
                made = await api.post("/api/v1/generations", json=body, headers=wait)
                if made.status_code not in (200, 201):
                    phase.errors.append(f"create {made.status_code} {made.text[:100]}")
                    await asyncio.sleep(1)
                    continue
                data = made.json()["data"]
                phase.created.append(data["id"])
                while data["status"] not in ("success", "failed", "cancelled"):
                    if time.monotonic() >= stop:
                        return
                    if poll:
                        await asyncio.sleep(poll)
                    got = await api.get(f"/api/v1/generations/{data['id']}", headers=wait)
                    if got.status_code != 200:
                        phase.errors.append(f"get {got.status_code} {got.text[:100]}")
                        break
                    data = got.json()["data"]
                if data["status"] == "success":
                    phase.finished += 1
                else:
                    phase.errors.append(f"job {data['status']}: {data.get('errorMessage')}")
            except httpx.HTTPError as exc:
                phase.errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1)


def prober(url: str, key: str, probe_id: str, seconds: float, pid: int) -> dict[str, Any]:
    """In a process of its own (the load generator's loop must not time the server): a GET of
    a finished job every 0.1 s, and the API's peak RSS."""

    async def probe() -> dict[str, Any]:
        found: dict[str, Any] = {"latencies": [], "settled": [], "errors": [], "peak_rss": 0.0}
        opened = time.monotonic()
        stop = opened + seconds
        async with user(url, key) as api:
            while time.monotonic() < stop:
                start = time.perf_counter()
                try:
                    await api.get(f"/api/v1/generations/{probe_id}")
                    took = (time.perf_counter() - start) * 1000
                    found["latencies"].append(took)
                    if time.monotonic() - opened >= BURST_SECONDS:
                        found["settled"].append(took)
                except httpx.HTTPError as exc:
                    found["errors"].append(f"probe {exc!r}")
                found["peak_rss"] = max(found["peak_rss"], rss_mb(pid))
                await asyncio.sleep(0.1)
        return found

    return asyncio.run(probe())


async def run_phase(
    url: str,
    key: str,
    clients: int,
    seconds: float,
    body: dict[str, object],
    probe_id: str,
    pid: int,
    poll: float,
    dialect: str = "native",
) -> tuple[Phase, float]:
    phase = Phase()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Started (and its imports done) before the window opens.
        await loop.run_in_executor(pool, time.sleep, 0)
        start = time.monotonic()
        stop = start + seconds
        probing = loop.run_in_executor(pool, prober, url, key, probe_id, seconds, pid)
        tasks = [
            asyncio.ensure_future(
                openai_loop(url, key, body, stop, phase)
                if dialect == "openai"
                else client_loop(url, key, body, stop, phase, poll)
            )
            for _ in range(clients)
        ]
        await asyncio.wait(tasks, timeout=seconds)
        for task in tasks:  # clients mid-long-poll leave at the end of the window
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.monotonic() - start
        probed = await probing
    phase.latencies = probed["latencies"]
    phase.settled = probed["settled"]
    phase.errors += probed["errors"]
    phase.peak_rss = probed["peak_rss"]
    return phase, elapsed


def drain(url: str, key: str, ids: list[str], timeout: float = 900) -> tuple[int, list[float]]:
    """Wait until every job created is terminal; returns how many are not, and when (server
    clock, epoch seconds) each successful one completed."""
    deadline = time.monotonic() + timeout
    left = set(ids)
    completed: list[float] = []
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as api:
        while left and time.monotonic() < deadline:
            for generation_id in list(left)[:200]:
                data = api.get(f"/api/v1/generations/{generation_id}").json()["data"]
                if data["status"] in ("success", "failed", "cancelled"):
                    left.discard(generation_id)
                    if data["status"] == "success":
                        when = data["completedAt"].replace("Z", "+00:00")
                        completed.append(datetime.fromisoformat(when).timestamp())
            if left:
                time.sleep(1)
    return len(left), completed


def drain_queue(url: str, timeout: float = 900) -> int:
    """Wait until no job is pending or processing; returns how many still are."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=60) as api:
        while True:
            queue = api.get("/health/ready").json()["queue"]
            left = int(queue["pending"]) + int(queue["processing"])
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(1)


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[max(int(len(values) * 0.99) - 1, 0)] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--model",
        default="tiny-sd",
        help="the server's default model: tiny-sd (fast, random weights) or demo (the one a "
        "server started from the README serves)",
    )
    parser.add_argument("--steps", type=int, help="default: 2 for tiny-sd, the model's own else")
    parser.add_argument("--prompt", default="a red circle on a white background")
    parser.add_argument(
        "--poll",
        type=float,
        default=0,
        help="clients follow their job with a plain GET every POLL seconds instead of a long "
        "poll (Prefer: wait=20)",
    )
    parser.add_argument(
        "--batch", type=int, help="IMAGESMITH_WORKER_BATCH_SIZE (default: the server's own)"
    )
    parser.add_argument("--no-worker-api", action="store_true")
    parser.add_argument("--backend", choices=("embedded", "postgres"), default="embedded")
    parser.add_argument("--dialect", choices=("native", "openai"), default="native")
    parser.add_argument(
        "--loops",
        default="auto",
        help="comma-separated LOOP/PARSER pairs to run one after another in this run, e.g. "
        "asyncio/h11,uvloop/httptools (IMAGESMITH_EVENT_LOOP / IMAGESMITH_HTTP_PARSER); "
        "default: the server's own choice",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.steps is None and args.model == "tiny-sd":
        args.steps = 2
    # The test helpers give the server a fresh PostgreSQL database (and bucket, Redis) when
    # IMAGESMITH_TEST_POSTGRES is set (`eval "$(bash .ci/services.sh env)"`), SQLite otherwise.
    postgres = bool(os.environ.get("IMAGESMITH_TEST_POSTGRES"))
    assert postgres == (args.backend == "postgres"), "--backend postgres iff services env is set"
    lines: list[str] = []
    for variant in args.loops.split(","):
        loop, _, http = variant.partition("/")
        settings: dict[str, Any] = {"event_loop": loop or "auto", "http_parser": http or "auto"}
        lines += run_variant(args, settings)
    if args.out:
        with args.out.open("a") as out:
            out.write("\n".join(["", *lines, ""]))


def run_variant(args: argparse.Namespace, settings: dict[str, Any]) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="imagesmith-load-"))
    if args.batch is not None:
        settings = {**settings, "worker_batch_size": args.batch}
    server = Server(
        work / "srv", work / "models", lease_seconds=30, default_model=args.model, **settings
    )
    worker = None
    if args.no_worker_api:
        server.start("--no-worker")
        worker = WorkerProcess(server, "w1")
        worker.wait_ready()
    else:
        server.start()
    started = [line for line in server.log().splitlines() if "imagesmith: API on" in line]
    lines = [f"server: {started[-1].split('  ')[-1] if started else settings}"]
    print(lines[0], flush=True)
    try:
        key = create_key(server.env, "load", "run")
        body: dict[str, object] = {"prompt": args.prompt, "autoEnhance": False}
        if args.steps is not None:
            body["steps"] = args.steps
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=120) as api:
            probe = api.post("/api/v1/generations", json=body, headers={"Prefer": "wait=60"})
            probe_id = probe.json()["data"]["id"]
        asked = body
        if args.dialect == "openai":
            asked = {"model": args.model, "prompt": args.prompt, "response_format": "b64_json"}
            if args.steps is not None:
                asked["steps"] = args.steps
        results = {}
        for clients in (1, args.clients):
            window_start = time.time()
            phase, elapsed = asyncio.run(
                run_phase(
                    server.url,
                    key,
                    clients,
                    args.seconds,
                    asked,
                    probe_id,
                    server.pid,
                    args.poll,
                    args.dialect,
                )
            )
            if args.dialect == "openai":  # answered inside the window; the rest cancelled
                left, inside = drain_queue(server.url), phase.finished
            else:
                left, completed = drain(server.url, key, phase.created)
                # The worker's throughput: jobs the server completed inside the window.
                inside = sum(1 for t in completed if window_start <= t <= window_start + elapsed)
            rate = inside / elapsed
            results[clients] = rate
            line = (
                f"{clients:>5} clients: {inside} jobs completed in the {elapsed:.0f} s window = "
                f"{rate:.2f} jobs/s ({phase.finished} seen done by their client); created "
                f"{len(phase.created)}, not terminal after drain {left}, errors "
                f"{len(phase.errors)}; GET p50 "
                f"{statistics.median(phase.latencies or [0]):.1f} ms p99 "
                f"{p99(phase.latencies):.1f} ms (from {BURST_SECONDS:.0f} s on: p99 "
                f"{p99(phase.settled):.1f} ms); API RSS peak {phase.peak_rss:.0f} MB"
            )
            if phase.errors:
                line += f" (first error: {phase.errors[0]})"
            print(line, flush=True)
            lines.append(line)
        mode = "--no-worker API + worker process" if args.no_worker_api else "embedded worker"
        summary = (
            f"load ({args.backend}, {mode}, {args.dialect}, {args.model} at its default size, "
            f"{args.steps or 'default'} steps, {args.seconds:g} s a phase, "
            + (f"GET every {args.poll:g} s" if args.poll else "long polls")
            + f"): throughput with {args.clients} clients / with 1 = "
            f"{results[args.clients] / results[1]:.2f}"
        )
        print(summary)
        lines.append(summary)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    return lines


if __name__ == "__main__":
    main()
