"""Where an embedded server's CPU goes a picture: N clients calling OpenAI's
`/v1/images/generations` (b64_json) against `serve` with its embedded worker (tiny-sd), and the
CPU of the API process split by thread.

    .venv/bin/python bench/bench_openai.py [--size 64] [--steps 1] [--clients 16] [--images 200]
        [--src old=/tmp/old/src,new=src]   # other checkouts' `src` folders, alternating

Per run: img/s; CPU ms a picture of the API process (its main thread: HTTP and the routes; its
busiest other thread: the embedded worker's loop; the rest: aiosqlite's and to_thread's threads)
and of the model child; the API process's context switches a picture; and from the worker's log
the medians of its claim, the child's idle time between batches, and storing a batch. At 64 px
and 1 step the model is cheap and the API is the bottleneck; at 512 px the size-dependent costs
show. CPU comes from /proc (10 ms clock ticks): use enough images. 127.0.0.1 only."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_peer import PROMPT, build_tiny, models_file, tree  # noqa: E402
from tests.serverproc import Server, cpu_seconds, create_key  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict[int, tuple[float, int]]:
    """Each thread of `pid`: (CPU seconds, voluntary + involuntary context switches)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text().splitlines()
            switches = sum(int(line.split(":")[1]) for line in status if "ctxt_switches" in line)
            out[int(task.name)] = ((int(fields[11]) + int(fields[12])) / TICK, switches)
    return out


async def drive(url: str, key: str, body: dict[str, object], clients: int, images: int) -> float:
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=600) as api:
        left = [images]

        async def one() -> None:
            answer = await api.post("/v1/images/generations", json=body)
            assert answer.status_code == 200, answer.text[:300]

        async def client() -> None:
            while left[0] > 0:
                left[0] -= 1
                await one()

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return images / (time.perf_counter() - start)


def median_of(log: str, pattern: str) -> float:
    values = [float(v) for v in re.findall(pattern, log)[1:]]  # not the warm-up batch
    return statistics.median(values) if values else float("nan")


def run(src: str | None, work: Path, models: Path, args: argparse.Namespace) -> dict[str, float]:
    server = Server(
        work,
        models,
        worker_batch_size=4,
        lease_seconds=60,
        models_file=models_file(work.parent / f"models-{args.steps}.toml", args.steps),
    )
    if src:
        server.env["PYTHONPATH"] = str(Path(src).resolve())
    server.start()
    api_pid = server.pid
    pids = [api_pid, *tree(api_pid)]
    try:
        key = create_key(server.env, "bench", "openai")
        size = f"{args.size}x{args.size}"
        body = {"model": "tiny-sd", "prompt": PROMPT, "size": size, "response_format": "b64_json"}
        asyncio.run(drive(server.url, key, body, args.clients, args.clients * 2))  # warm-up
        before, child_before = threads(api_pid), sum(cpu_seconds(p) for p in pids[1:])
        rate = asyncio.run(drive(server.url, key, body, args.clients, args.images))
        after, child_after = threads(api_pid), sum(cpu_seconds(p) for p in pids[1:])
        log = server.log()
    finally:
        server.stop()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    spent = {tid: after[tid][0] - before.get(tid, (0.0, 0))[0] for tid in after}
    switches = sum(after[tid][1] - before.get(tid, (0.0, 0))[1] for tid in after)
    main = spent.pop(api_pid, 0.0)
    worker = max(spent.values(), default=0.0)
    per = 1000 / args.images
    return {
        "img/s": rate,
        "main": main * per,
        "worker": worker * per,
        "rest": (sum(spent.values()) - worker) * per,
        "child": (child_after - child_before) * per,
        "switches": switches / args.images,
        "claim": median_of(log, r"claim_ms=([\d.]+)"),
        "idle": median_of(log, r"idle_ms=([\d.]+)"),
        "store": median_of(log, r"batch\.stored .*?store_ms=([\d.]+)"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--src", default="", help="NAME=PATH,… of src folders to compare")
    args = parser.parse_args()
    variants = [v.split("=", 1) for v in args.src.split(",")] if args.src else [["this", ""]]
    work = Path(tempfile.mkdtemp(prefix="imagesmith-openai-"))
    models = work / "models"
    build_tiny(models)
    columns = ("img/s", "main", "worker", "rest", "child", "switches", "claim", "idle", "store")
    rows = [
        f"command: .venv/bin/python bench/bench_openai.py {' '.join(sys.argv[1:])}",
        "",
        "| round | code | img/s | API main thread ms | API worker loop ms | API other threads ms "
        "| model child ms | API context switches | claim_ms | child idle_ms | store_ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for round_ in range(args.rounds):
        for name, src in variants if round_ % 2 == 0 else variants[::-1]:
            got = run(src or None, work / f"{name}-{round_}", models, args)
            cells = " | ".join(
                f"{got[c]:.1f}" if c != "img/s" else f"{got[c]:.2f}" for c in columns
            )
            rows.append(f"| {round_ + 1} | {name} | {cells} |")
            print(rows[-1], flush=True)
    print("(CPU and switches a picture; claim, idle and store: medians a batch)")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
